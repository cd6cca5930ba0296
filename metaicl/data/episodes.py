"""MetaICL episodes: k demonstrations and one query, as token ids (Min et al. 2022, Sec. 3).

    cfg = EpisodeConfig(method="direct", max_length=1024)
    seq = train_sequence(demos, query, cfg, tok)                  # meta-training: loss on the answer only
    req = score_request(demos, query.input, query.options, cfg, tok)
    req.ids(0)                                                     # prefix + condition + target of option 0

An episode is built on token ids, each piece encoded on its own so every boundary is exact:

    [bos] + demo_1 + example_sep + ... + demo_k + example_sep + condition + input_sep + target

direct (P(output | demos, input)): demo = input + input_sep + output, condition = the query's input, target = an
option. channel (P(input | demos, output), the noisy channel of Min et al. 2022): roles swap, demo = output +
input_sep + input, condition = an option, target = the query's input.

Truncation, in this order:
 1. Per example (every demonstration and the query): input + input_sep + output is cut to max_length_per_example
    tokens by cutting the *input* from its end; the output (label word) is never cut (MetaICL does the same).
    For the query the longest option is reserved, so every option sees the same query input.
 2. Per episode, when bos + demonstrations + the longest (condition + target) exceeds max_length:
    drop_demos drops whole demonstrations, the farthest from the query (the first) first; trim_left cuts tokens
    from the left of the demonstration block, as MetaICL does. Decided once for the longest option, so every
    option is scored after the same demonstrations.
 3. If even no demonstrations leave room, the condition is cut from its left; the target is never cut (a target
    that alone does not fit is a ConfigError on max_length).
`dropped_demos` counts the demonstrations not shown whole.
"""
from __future__ import annotations

from dataclasses import dataclass

from metaicl.core.errors import ConfigError, check_at_least
from metaicl.data.tasks import Example

METHODS = ("direct", "channel")
TRUNCATIONS = ("drop_demos", "trim_left")


@dataclass
class EpisodeConfig:
    method: str = "direct"
    """direct: score P(output | demos, input); channel: P(input | demos, output), the "noisy channel" variant
    (Min et al. 2022, Sec. 3)."""
    input_sep: str = "\n"
    """Between an example's input and output (MetaICL: a newline)."""
    example_sep: str = "\n\n\n"
    """Between examples (MetaICL: blank lines)."""
    max_length_per_example: int = 256
    """Tokens of one example (input + input_sep + output); the input is cut from its end to fit, the output is
    never cut (MetaICL's max_length_per_example)."""
    max_length: int = 1024
    """Tokens of the whole episode: bos + demonstrations + query + answer (MetaICL's max_length)."""
    truncation: str = "drop_demos"
    """When an episode exceeds max_length: drop_demos = drop whole demonstrations, farthest from the query
    first; trim_left = cut tokens from the left of the demonstration block (MetaICL's way). Never the target."""

    def validate(self, prefix: str = "episodes") -> None:
        if self.method not in METHODS:
            raise ConfigError(f"{prefix}.method", f"must be one of {list(METHODS)}, got {self.method!r}")
        if self.truncation not in TRUNCATIONS:
            raise ConfigError(f"{prefix}.truncation", f"must be one of {list(TRUNCATIONS)}, got {self.truncation!r}")
        for key in ("input_sep", "example_sep"):
            if not isinstance(getattr(self, key), str):
                raise ConfigError(f"{prefix}.{key}", f"must be a string, got {getattr(self, key)!r}")
        check_at_least(self, prefix, ("max_length_per_example",), 1)
        check_at_least(self, prefix, ("max_length",), 2)  # bos + one target token


@dataclass
class TrainSequence:
    ids: list[int]
    loss_mask: list[int]
    """1 exactly on the target tokens: the answer (direct) or the query's input (channel)."""
    dropped_demos: int = 0


@dataclass
class ScoreRequest:
    prefix: list[int]
    """[bos] + demonstrations (each followed by example_sep), shared by every option (one KV cache)."""
    rows: list[tuple[list[int], list[int]]]
    """Per option: (condition, target); its score is sum log p(target | prefix + condition)."""
    dropped_demos: int

    def ids(self, i: int) -> list[int]:
        condition, target = self.rows[i]
        return self.prefix + condition + target


def _fit_example(x: list[int], sep: list[int], reserve: int, cfg: EpisodeConfig) -> list[int]:
    """The input cut from its end so that input + sep + an output of `reserve` tokens fits one example."""
    return x[: max(0, cfg.max_length_per_example - len(sep) - reserve)]


def _demo(demo: Example, sep: list[int], cfg: EpisodeConfig, tok) -> tuple[list[int], list[int]]:
    """A demonstration's tokens, and 1 on those its method predicts (the output, direct; the input, channel)."""
    y = tok.encode(demo.output)
    x = _fit_example(tok.encode(demo.input), sep, len(y), cfg)
    if not demo.output:  # a demonstration without its label (eval.demos.labels=none): the input alone
        return x, [0] * len(x)
    if cfg.method == "direct":
        return x + sep + y, [0] * (len(x) + len(sep)) + [1] * len(y)
    return y + sep + x, [0] * (len(y) + len(sep)) + [1] * len(x)


def _fit_demos(blocks: list[list[int]], budget: int, truncation: str) -> tuple[list[int], int]:
    """(demonstration block within `budget` tokens, demonstrations not shown whole)."""
    if truncation == "drop_demos":
        dropped = 0
        while dropped < len(blocks) and sum(map(len, blocks[dropped:])) > budget:
            dropped += 1  # the first demonstration is the farthest from the query
        return [t for b in blocks[dropped:] for t in b], dropped
    flat = [t for b in blocks for t in b]
    cut = max(0, len(flat) - max(0, budget))
    starts = [sum(map(len, blocks[:i])) for i in range(len(blocks))]
    return flat[cut:], sum(1 for s in starts if s < cut)


def _rows(query_input: str, options: list[str], sep: list[int], cfg: EpisodeConfig, tok):
    ys = [tok.encode(o) for o in options]
    x = _fit_example(tok.encode(query_input), sep, max(map(len, ys)), cfg)  # the same input for every option
    if cfg.method == "direct":
        return [(x + sep, y) for y in ys]
    return [(y + sep, x) for y in ys]


def score_request(demos: list[Example], query_input: str, options: list[str], cfg: EpisodeConfig,
                  tok) -> ScoreRequest:
    """The shared prefix and one (condition, target) row per option, truncated once for the longest row."""
    sep = tok.encode(cfg.input_sep)
    return _request([_demo(d, sep, cfg, tok)[0] for d in demos], query_input, options, cfg, tok)


def _request(shown: list[list[int]], query_input: str, options: list[str], cfg: EpisodeConfig,
             tok) -> ScoreRequest:
    """score_request from the demonstrations' tokens (`_demo`'s first part, each without its example separator)."""
    cfg.validate()
    if not options:
        raise ValueError("a query needs at least one option")
    sep, example_sep = tok.encode(cfg.input_sep), tok.encode(cfg.example_sep)
    rows = _rows(query_input, options, sep, cfg, tok)
    if any(not target for _, target in rows):
        raise ValueError(f"an empty target among the rows of query {query_input[:50]!r}: nothing to score")
    need = max(len(c) + len(t) for c, t in rows)
    blocks = [ids + example_sep for ids in shown]
    block, dropped = _fit_demos(blocks, cfg.max_length - 1 - need, cfg.truncation)
    prefix = [tok.bos_id] + block
    room = cfg.max_length - len(prefix) - max(len(t) for _, t in rows)
    if room < 0:
        raise ConfigError("episodes.max_length", f"{cfg.max_length} tokens leave no room for a target of "
                                                 f"{max(len(t) for _, t in rows)} tokens after bos")
    rows = [(c[len(c) - room:] if len(c) > room else c, t) for c, t in rows]  # only without demonstrations
    return ScoreRequest(prefix, rows, dropped)


def max_demos(demos: list[Example], queries: list[tuple[str, list[str]]], cfg: EpisodeConfig, tok) -> int:
    """The most demonstrations of the pool's mean length (`demos`, each with its example separator) that fit in
    max_length beside bos and the longest (query input, option) row of `queries`, at most len(demos): many-shot's
    "as many as the context holds" (a drawn set that runs over is cut by the truncation rule)."""
    sep, example_sep = tok.encode(cfg.input_sep), tok.encode(cfg.example_sep)
    need = max(len(c) + len(t) for x, options in queries for c, t in _rows(x, options, sep, cfg, tok))
    mean = sum(len(_demo(d, sep, cfg, tok)[0]) + len(example_sep) for d in demos) / max(1, len(demos))
    return min(len(demos), int((cfg.max_length - 1 - need) // max(mean, 1)))


LOSS_ON = ("query", "all_outputs")


def train_sequence(demos: list[Example], query: Example, cfg: EpisodeConfig, tok,
                   loss_on: str = "query") -> TrainSequence:
    """One meta-training episode. loss_on="query": the loss is on the target only (query output, or query input for
    channel; MetaICL). "all_outputs": also on each demonstration's target, as far as it is shown (Garg et al. 2022
    and Kirsch et al. 2022 train every prefix: k + 1 answers per episode, the first of them unpredictable from the
    context). Its ids equal score_request(...).ids(gold) when truncation does not depend on the other options."""
    sep, example_sep = tok.encode(cfg.input_sep), tok.encode(cfg.example_sep)
    blocks = [_demo(d, sep, cfg, tok) for d in demos]  # each demonstration encoded once: its ids and its targets
    request = _request([ids for ids, _ in blocks], query.input, [query.output], cfg, tok)
    condition, target = request.rows[0]
    shown = [0] * len(request.prefix)
    if loss_on == "all_outputs":
        flat = [m for _, mask in blocks for m in mask + [0] * len(example_sep)]
        block = len(request.prefix) - 1  # either truncation keeps a suffix of the demonstrations after bos
        shown = [0] + flat[len(flat) - block:] if block else [0]
    elif loss_on != "query":
        raise ValueError(f"loss_on must be one of {list(LOSS_ON)}, got {loss_on!r}")
    mask = shown + [0] * len(condition) + [1] * len(target)
    return TrainSequence(request.ids(0), mask, request.dropped_demos)


def pad(sequences: list[list[int]], masks: list[list[int]]):
    """A batch (ids, mask) of sequences and their loss masks, right-padded with zeros to the longest."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.zeros(len(sequences), width, dtype=torch.long)
    for i, (s, m) in enumerate(zip(sequences, masks)):
        ids[i, : len(s)], mask[i, : len(m)] = torch.tensor(s), torch.tensor(m)
    return ids, mask
