"""Multi-choice scoring by a causal LM: log p(option | demonstrations, input), the MetaICL inference rule.

    raw = score(model, requests)                        # per request an (n_options, 2) array: [sum log p, n tokens]
    pred = [int(option_scores(r, length_normalize=False).argmax()) for r in raw]

Min et al. (2022, Sec. 3) score every option c of a test input x by the conditional likelihood of c given the k
demonstrations and x, and predict the argmax; they feed each option as its own full sequence (`score_slow`).
All options of a query, and all queries of a seed (the same k demonstrations are reused for every test input),
share that demonstration prefix, so `score_fast` encodes it once and reuses its key/value cache for every row:
the same numbers (within float error) for a fraction of the compute.

A request is any object with `.prefix` ([bos] + demonstrations, token ids) and `.rows` (per option a pair
(condition, target) of token-id lists; the score is the sum of log p(target | prefix + condition)), such as
`metaicl.data.episodes.ScoreRequest`. Calibration (`pmi_scores`) scores the same options after a null input.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch

from metaicl.core.errors import ConfigError
from metaicl.models.lm import cache_kwarg, final_states


def score(model, requests, fast: bool = True, batch_size: int | None = None, device="cpu") -> list[np.ndarray]:
    """`score_fast` (default) or `score_slow`; both give per request an (n_rows, 2) array [sum log p, n tokens]."""
    if fast:
        return score_fast(model, requests, batch_size or 64, device)
    return score_slow(model, requests, batch_size or 16, device)


def option_scores(raw: np.ndarray, length_normalize: bool) -> np.ndarray:
    """The score of each option: the summed log-likelihood (MetaICL), or its per-token mean when
    `length_normalize` (Brown et al. 2020 normalise by length so long options are not penalised)."""
    raw = np.asarray(raw, dtype=np.float64)
    return raw[:, 0] / raw[:, 1] if length_normalize else raw[:, 0]


def pmi_scores(cond: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Calibrated option scores: log p(option | demos, input) - log p(option | demos, null input), the domain-
    conditional PMI of Holtzman et al. (2021); the null input is the "content-free input" of Zhao et al. (2021).
    Subtracting removes the options' prior under the demonstrations (surface-form competition, label bias)."""
    cond, null = np.asarray(cond, dtype=np.float64), np.asarray(null, dtype=np.float64)
    if cond.shape != null.shape:
        raise ConfigError("pmi", f"scores with and without the input differ in shape: {cond.shape} vs {null.shape}")
    return cond - null


# --- the two scorers ---------------------------------------------------------------------------------------------


def score_slow(model, requests, batch_size: int = 16, device="cpu") -> list[np.ndarray]:
    """MetaICL's way: every row is one full sequence prefix + condition + target, right-padded into batches."""
    requests = _checked(requests)
    device = torch.device(device)
    rows = [(i, j, [*r.prefix, *cond, *target], len(target))
            for i, r in enumerate(requests) for j, (cond, target) in enumerate(r.rows)]
    sums = [np.zeros((len(r.rows), 2)) for r in requests]
    with _inference(model):
        for chunk in _chunks(rows, batch_size):
            ids, mask = _right_pad([seq for _, _, seq, _ in chunk], device)
            positions = torch.arange(ids.shape[1], device=device).expand_as(ids)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
            flat = logits.reshape(-1, logits.shape[-1])
            # token t of a sequence is predicted by the logits at t - 1 (flat row b * width + t - 1)
            where = [b * ids.shape[1] + t - 1 for b, (_, _, seq, n) in enumerate(chunk)
                     for t in range(len(seq) - n, len(seq))]
            _accumulate(flat, where, chunk, sums, device)
    return sums


def score_fast(model, requests, batch_size: int = 64, device="cpu") -> list[np.ndarray]:
    """The prefix is encoded once; its key/value cache serves every row of every consecutive request that shares
    it (MetaICL reuses one seed's k demonstrations for all test inputs). Rows are batched across those requests."""
    requests = _checked(requests)
    device = torch.device(device)
    sums = [np.zeros((len(r.rows), 2)) for r in requests]
    with _inference(model):
        for group in _same_prefix_runs(requests):
            prefix = requests[group[0]].prefix
            kv, last = _encode_prefix(model, prefix, device)
            rows = [(i, j, [*cond, *target], len(target)) for i in group for j, (cond, target) in
                    enumerate(requests[i].rows)]
            rows.sort(key=lambda row: -len(row[2]))  # similar lengths share a batch: less padding
            for chunk in _chunks(rows, batch_size):
                _score_rows(model, kv, last, len(prefix), chunk, sums, device)
    return sums


def _score_rows(model, kv, last: torch.Tensor, p: int, chunk, sums, device) -> None:
    """One batch of rows on top of the prefix cache. Position ids continue from p (GPT-2's learned positions and
    Llama's RoPE both need the true offset); the mask covers the prefix and each row's own tokens."""
    ids, row_mask = _right_pad([seq for _, _, seq, _ in chunk], device)
    b, width = ids.shape
    mask = torch.cat([row_mask.new_ones(b, p), row_mask], dim=1)
    positions = (p + torch.arange(width, device=device)).expand(b, width)
    _, hidden = final_states(model, input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                             **{cache_kwarg(model): _expanded_cache(kv, b)})
    # A row's token t is predicted by the row's state at t - 1, or, for t = 0 (an empty condition), by the
    # prefix's last state: it sits in front of the flattened row states as flat row 0. Only the rows that predict
    # an option's token are projected onto the vocabulary (issue 18: not every row's every position).
    flat = torch.cat([last[None], hidden.reshape(-1, hidden.shape[-1])])
    where = [1 + k * width + t - 1 if t else 0 for k, (_, _, seq, n) in enumerate(chunk)
             for t in range(len(seq) - n, len(seq))]
    _accumulate(flat, where, chunk, sums, device, head=model.get_output_embeddings())


def _accumulate(flat: torch.Tensor, where: list[int], chunk, sums, device, head=None) -> None:
    """Log-softmax (in float32, whatever the model's dtype) of the logits rows in `where` (or of the output layer
    `head` at those rows, when `flat` holds final hidden states), gathered at the target tokens in the same order,
    summed per row into sums[request][row] = [sum log p, n tokens]."""
    targets = torch.tensor([tok for _, _, seq, n in chunk for tok in seq[len(seq) - n:]], device=device)
    picked = flat[torch.tensor(where, device=device)]
    picked = (picked if head is None else head(picked)).float().log_softmax(-1)
    logp = picked.gather(1, targets[:, None])[:, 0].double().cpu().numpy()
    start = 0
    for i, j, _, n in chunk:
        sums[i][j] = (logp[start:start + n].sum(), n)
        start += n


# --- the prefix cache ----------------------------------------------------------------------------------------------


def _encode_prefix(model, prefix: Sequence[int], device) -> tuple[list, torch.Tensor]:
    """The prefix's per-layer (keys, values), each (1, heads, p, head_dim), and its last position's final hidden
    state (no logits over the prefix: nothing reads them)."""
    ids = torch.tensor([list(prefix)], device=device)
    out, hidden = final_states(model, input_ids=ids, position_ids=torch.arange(ids.shape[1], device=device)[None],
                               use_cache=True)
    cache = getattr(out, "cache", None)
    cache = out.past_key_values if cache is None else cache
    return _kv_pairs(cache), hidden[0, -1]


def _kv_pairs(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):  # transformers >= 4.56: a list of cache layers
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [tuple(kv[:2]) for kv in (cache.to_legacy_cache() if hasattr(cache, "to_legacy_cache") else cache)]


def _expanded_cache(kv, batch: int):
    """A fresh cache per batch: transformers' DynamicCache grows in place (update concatenates onto its layers),
    so a cache reused across batches would carry the previous rows. The stored prefix tensors are never written:
    updates build new tensors by concatenation. The batch dimension is an `expand` view (no copy): the model's
    own concatenation is then the only copy of the prefix per batch."""
    from transformers import DynamicCache

    legacy = getattr(DynamicCache, "from_legacy_cache", None)
    if legacy is not None:  # transformers 4.x
        return legacy(tuple((k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in kv))
    cache = DynamicCache(kv)  # copies the batch-1 tensors: 1/batch of the cost of copying expanded ones
    for layer in cache.layers:
        layer.keys, layer.values = (t.expand(batch, -1, -1, -1) for t in (layer.keys, layer.values))
    return cache


# --- helpers ------------------------------------------------------------------------------------------------------


def _checked(requests) -> list:
    """Every request needs a non-empty prefix (the first scored token must be predicted by something: [bos]) and
    non-empty targets (an empty option has no likelihood)."""
    requests = list(requests)
    for i, r in enumerate(requests):
        if len(r.prefix) == 0:
            raise ConfigError(f"requests[{i}].prefix", "must hold at least one token ([bos])")
        for j, (_, target) in enumerate(r.rows):
            if len(target) == 0:
                raise ConfigError(f"requests[{i}].rows[{j}]", "target (the option) must hold at least one token")
    return requests


def _same_prefix_runs(requests) -> Iterator[list[int]]:
    """Indices of consecutive requests with an identical prefix."""
    run: list[int] = []
    for i, r in enumerate(requests):
        if run and list(r.prefix) != list(requests[run[0]].prefix):
            yield run
            run = []
        run.append(i)
    if run:
        yield run


def _chunks(items: list, size: int) -> Iterator[list]:
    if size < 1:
        raise ConfigError("batch_size", f"must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _right_pad(seqs: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right padding keeps every real token at its true position; pads (id 0) come after them, so under causal
    attention no real token sees a pad, and the mask hides them anyway."""
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[b, :len(s)] = 1
    return ids.to(device), mask.to(device)


@contextlib.contextmanager
def _inference(model):
    """eval mode (no dropout) and no autograd for the call; the model's training flag is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
