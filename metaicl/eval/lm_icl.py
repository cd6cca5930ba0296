"""In-context ability of any causal LM, cheap and sensitive at CPU scale: the rows of suite `lm_icl` (issue 14).

    rows = lm_icl_rows(model, windows)      # windows: held-out windows of the model's own mixture (or None)
    rows = measure_model("pretrained", "runs/data/pretrain-1a2b3c4d/model", "runs/data/zipf-9f8e7d6c", cfg)

Three families of measurements, each a known quantity of the literature:

- **ICL score** (Olsson et al. 2022, "In-context Learning and Induction Heads", Sec. 2): the mean next-token loss
  at late positions of held-out windows minus at early positions. Olsson et al. take the 500th token against the
  50th of 512+-token windows; a window here may be 64 tokens, so the positions scale with the window length L:
  targets in [3L/4, L) against [L/16, 3L/16) (48–63 vs 4–11 at 64), skipping the first tokens, whose loss is
  dominated by the lack of any context. Negative = later tokens are easier *because of* the context. The same on
  an order control (task `shuffled`: each window's tokens shuffled within the window, which keeps what the window is
  made of — its source, its words — and removes every order and dependency): a bag of context tokens (a unigram
  cache) would still help there, while a model whose copying relies on order is misled late in the window
  (measured: +0.08 to +0.74 on tiny GPT-2s pretrained on zipf_lm mixtures); read the mixture's score against
  it. (Shuffling
  across windows was tried first: it mixes sources that never share a window, and the model's confusion at late
  positions gave +0.3 to +1.5 on two-source mixtures — a measurement of that confusion, not a control.)
- **Repeated-sequence gap**: sequences `[bos] r_1 … r_n [between] r_1 … r_n` of tokens drawn uniformly from the
  vocabulary (the bos id excluded); the mean loss over the first copy minus over the second (r_2 … r_n in each:
  r_1's successor is unknowable from a first occurrence), and the second copy's top-1 copy accuracy. A model that
  copies from context has gap ≈ the first copy's loss (≈ ln V), one that does not ≈ 0. Variants (`task`):
  `repeat` (adjacent copies), `repeat_boundary` (a bos/document-boundary token between them: does copying cross
  a document boundary?) and `repeat_lag` (n random tokens between: a longer lag). n = (L - 1) // 3.
- **Head scores** (the definitions of TransformerLens' head detector): on the adjacent repeated sequences, a head's
  induction score is its mean attention from each second-copy token to the position just after that token's
  previous occurrence; its previous-token score, the mean attention from each token (after the first) to the one
  before it. Reported as the max over layers and heads (and which head).

Every number is a row `{task, metric, value}` (cluster.results.tidy adds the rest: suite `lm_icl`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metaicl.core.seeding import rng_for

REPEAT_VARIANTS = ("repeat", "repeat_boundary", "repeat_lag")


@dataclass
class LMICLConfig:
    sequences: int = 32
    """Random repeated sequences per variant."""
    windows: int = 128
    """Held-out windows of the mixture for the ICL score (the stream's last; pretraining tracks the same ones). 32
    left the ICL score's SD over seeds at up to 0.2 nats on the mixture sweep's tiny models; the forward is cheap."""
    seed: int = 0
    """Draws of the random sequences and of the order control's shuffle."""


def positions(length: int) -> tuple[range, range]:
    """(early, late) target positions of a window of `length` tokens: [L/16, 3L/16) and [3L/4, L)."""
    return range(max(1, length // 16), max(2, 3 * length // 16)), range(3 * length // 4, length)


def device_of(model):
    """Where the model's weights are (sequences are drawn on the CPU and moved there)."""
    import torch

    return next(iter(model.parameters()), torch.zeros(0)).device


def token_losses(model, ids) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(logits, losses): the loss of predicting token t from tokens < t is losses[:, t] (column 0 = nan)."""
    import torch
    import torch.nn.functional as F

    ids = ids.to(device_of(model))
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    return logits, torch.cat([torch.full_like(nll[:, :1], float("nan")), nll], dim=1)


def losses_at(model, ids, targets: list[int]):
    """(batch, len(targets)) loss of predicting ids[:, t] from ids[:, :t], for t in `targets` only: a Hugging Face
    model's output layer applied to just the hidden states that predict them (the vocabulary projection is most
    of a small model's cost; the ICL score needs 24 of 64 positions). Other models: their full logits."""
    import torch
    import torch.nn.functional as F

    ids = ids.to(device_of(model))
    head, base = getattr(model, "get_output_embeddings", lambda: None)(), getattr(model, "base_model", None)
    if head is None or base is None or base is model:
        return token_losses(model, ids)[1][:, targets]
    before = torch.tensor(targets, device=ids.device) - 1
    with torch.no_grad():
        logits = head(base(input_ids=ids).last_hidden_state[:, before]).float()
    return F.cross_entropy(logits.transpose(1, 2), ids[:, targets], reduction="none")


def icl_score(model, windows) -> float:
    """Mean loss at late positions minus at early positions (Olsson et al. 2022)."""
    early, late = positions(windows.shape[1])
    losses = losses_at(model, windows, [*early, *late])
    return float(losses[:, len(early):].mean() - losses[:, : len(early)].mean())


def shuffled(windows, seed: int):
    """The order control: each window's tokens in a random order (its own permutation)."""
    import torch

    rng = rng_for(seed, "lm_icl", "shuffled")
    order = torch.from_numpy(np.stack([rng.permutation(windows.shape[1]) for _ in range(windows.shape[0])]))
    return torch.gather(windows, 1, order.to(windows.device))


def repeated(vocab_size: int, length: int, variant: str, count: int, seed: int, bos: int = 0):
    """(ids, n, start of the second copy): `count` sequences of the variant, each `bos r [between] r`."""
    import torch

    n = (length - 1) // 3
    rng = rng_for(seed, "lm_icl", variant)
    draw = lambda size: (rng.integers(0, vocab_size - 1, size=(count, size)) + bos + 1) % vocab_size  # never bos
    first = draw(n)
    between = {"repeat": np.zeros((count, 0), np.int64), "repeat_boundary": np.full((count, 1), bos),
               "repeat_lag": draw(n)}[variant]
    ids = np.concatenate([np.full((count, 1), bos), first, between, first], axis=1)
    return torch.from_numpy(ids.astype(np.int64)), n, 1 + n + between.shape[1]


def repeat_rows(model, vocab_size: int, length: int, variant: str, count: int, seed: int, bos: int = 0) -> list[dict]:
    """Loss over each copy (r_2 … r_n), their gap, and the second copy's top-1 copy accuracy."""
    ids, n, second = repeated(vocab_size, length, variant, count, seed, bos)
    logits, losses = token_losses(model, ids)
    ids = ids.to(logits.device)
    first_loss = losses[:, 2 : 1 + n].mean()
    second_loss = losses[:, second + 1 : second + n].mean()
    guess = logits[:, second : second + n - 1].argmax(-1)  # the prediction of r_2 … r_n of the second copy
    accuracy = (guess == ids[:, second + 1 : second + n]).float().mean()
    return [{"task": variant, "metric": "first_copy_loss", "value": float(first_loss)},
            {"task": variant, "metric": "second_copy_loss", "value": float(second_loss)},
            {"task": variant, "metric": "gap", "value": float(first_loss - second_loss)},
            {"task": variant, "metric": "copy_accuracy", "value": float(accuracy)}]


def head_scores(attentions, n: int, second: int) -> tuple[np.ndarray, np.ndarray]:
    """(induction, previous-token) scores, (layers, heads) each, from attention patterns of sequences
    `bos r bos? r` (`attentions`: one (batch, heads, L, L) tensor per layer, rows = queries). Induction: the
    second copy's token i (i = 0 … n-2 of that copy) attends to first-copy position i + 1, just after its previous
    occurrence; previous token: every position t ≥ 1 attends to t - 1."""
    import torch

    stack = torch.stack([a.float().cpu() for a in attentions])  # (layers, batch, heads, L, L)
    queries = torch.arange(second, second + n - 1)
    induction = stack[..., queries, queries - second + 2].mean(dim=(1, 3))  # first copy starts at position 1
    t = torch.arange(1, stack.shape[-1])
    previous = stack[..., t, t - 1].mean(dim=(1, 3))
    return induction.numpy(), previous.numpy()


def head_rows(model, vocab_size: int, length: int, count: int, seed: int, bos: int = 0) -> list[dict]:
    """Max induction and previous-token score over heads (and the head: layer * heads + head)."""
    import torch

    ids, n, second = repeated(vocab_size, length, "repeat", count, seed, bos)
    impl = model.config._attn_implementation
    model.set_attn_implementation("eager")  # fused kernels return no attention patterns
    try:
        with torch.no_grad():
            attentions = model(input_ids=ids.to(device_of(model)), output_attentions=True).attentions
    finally:
        model.set_attn_implementation(impl)
    rows = []
    for name, scores in zip(("induction", "previous_token"), head_scores(attentions, n, second)):
        rows += [{"task": "heads", "metric": f"{name}_score", "value": float(scores.max())},
                 {"task": "heads", "metric": f"{name}_head", "value": float(scores.argmax())}]
    return rows


def lm_icl_rows(model, windows=None, cfg: LMICLConfig | None = None, bos: int = 0) -> list[dict]:
    """Every measurement of the suite on `model` (evaluation mode is the caller's): the ICL scores when held-out
    `windows` (batch, L) are given, then the repeated-sequence variants and head scores at the model's context
    length (the windows' length when given)."""
    cfg = cfg or LMICLConfig()
    vocab = model.config.vocab_size
    length = windows.shape[1] if windows is not None else model.config.max_position_embeddings
    rows = []
    if windows is not None:
        windows = windows[: cfg.windows]
        rows += [{"task": "mixture", "metric": "icl_score", "value": icl_score(model, windows)},
                 {"task": "shuffled", "metric": "icl_score", "value": icl_score(model, shuffled(windows, cfg.seed))}]
    for variant in REPEAT_VARIANTS:
        rows += repeat_rows(model, vocab, length, variant, cfg.sequences, cfg.seed, bos)
    return rows + head_rows(model, vocab, length, cfg.sequences, cfg.seed, bos)


def heldout_windows(stream_root: str | Path, count: int):
    """The last `count` windows of a mixture's blended stream (the stream has no validation split: these are
    seen last in training, if at all; LMStage tracks its held-out loss on the same windows)."""
    import torch

    from pretrain_data.manifest import Manifest
    from pretrain_data.token_reader import TokenStream

    stream = TokenStream(Manifest.read(stream_root))
    n = len(stream)
    return torch.from_numpy(stream.windows(np.arange(max(0, n - count), n)).astype(np.int64))


def measure_model(variant: str, model_dir: str, stream_root: str | None, cfg: LMICLConfig, device: str = "cpu",
                  threads: int | None = None) -> list[dict]:
    """The suite's rows for one saved model (a Ray task of an LM run's evaluation); `method` names the model
    (pretrained, metaicl, ...). Without a mixture (`stream_root` None) there is no ICL score; with GINC sources in
    it, their k-shot curves too."""
    import torch

    from metaicl.eval.kshot import mixture_kshot_rows
    from metaicl.models.lm import load_lm
    from pretrain_data.manifest import Manifest

    if threads:
        torch.set_num_threads(threads)
    model = load_lm(model_dir).to(device).eval()
    windows = heldout_windows(stream_root, cfg.windows).to(device) if stream_root else None
    rows = lm_icl_rows(model, windows, cfg)
    if stream_root:  # GINC sources: the k-shot curve against the Bayes reader (metaicl/eval/kshot.py)
        manifest = Manifest.read(stream_root)  # prompts no longer than the windows it was pretrained on
        length = min(model.config.max_position_embeddings, manifest.config["context_length"])
        rows += mixture_kshot_rows(model, manifest, length)
    return [{**row, "method": variant} for row in rows]
