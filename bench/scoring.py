"""Multi-choice scoring: score_slow (one full sequence per option) vs score_fast (prefix KV cache), side by side.

    python bench/scoring.py [--queries 64] [--repeats 3] [--threads 1]

Model: a GPT-2-style LM built from its config (4 layers, d 256, 4 heads, vocab 4096, random weights: speed and
agreement do not depend on training). Requests follow the MetaICL protocol (Min et al. 2022): k = 16
demonstrations of 20-30 tokens after [bos] make the prefix; each query has an input of 8-24 tokens (the row's
condition) and 2-14 options of 1-6 tokens (the targets), like the real tasks. Two request sets:
  shared  - all queries use the demonstrations of one seed (MetaICL: the same k examples for every test input),
  own     - every query has its own demonstrations (the fast scorer then encodes one prefix per query).
Throughput is tokens/s of the sequences scored, counted the same for both sides: per option, the length of
prefix + condition + target (what the slow side feeds the model). Best of `--repeats`, slow/fast interleaved, after
one warm-up call of each; the last line checks that fast equals slow within 1e-4 on every option. One torch
thread by default: with 2 threads on a shared machine the fast side's many small ops wait at thread barriers
whenever another process takes a core, and its timing swung 8x between runs (the slow side's large ops far less).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from metaicl.core.seeding import rng_for  # noqa: E402
from metaicl.eval.scoring import score_fast, score_slow  # noqa: E402

VOCAB, K_DEMOS = 4096, 16


@dataclass
class Request:  # the fields of metaicl.data.episodes.ScoreRequest that the scorers read
    prefix: list[int]
    rows: list[tuple[list[int], list[int]]]
    dropped_demos: int = 0


def tokens(rng: np.random.Generator, low: int, high: int) -> list[int]:
    return rng.integers(1, VOCAB, size=int(rng.integers(low, high + 1))).tolist()


def demos(seed: int) -> list[int]:
    rng = rng_for(seed, "bench-demos")
    return [0] + [t for _ in range(K_DEMOS) for t in tokens(rng, 20, 30)]


def requests(n: int, shared: bool) -> list[Request]:
    out = []
    for q in range(n):
        rng = rng_for(0, "bench-query", q)
        query = tokens(rng, 8, 24)
        options = [tokens(rng, 1, 6) for _ in range(int(rng.integers(2, 15)))]
        out.append(Request(demos(0 if shared else 1 + q), [(query, option) for option in options]))
    return out


def model():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=1024, n_embd=256, n_layer=4, n_head=4, bos_token_id=0,
                     eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def compare(lm, reqs: list[Request], repeats: int) -> dict:
    n_tokens = sum(len(r.prefix) + len(c) + len(t) for r in reqs for c, t in r.rows)
    score_slow(lm, reqs[:2]), score_fast(lm, reqs[:2])  # warm-up: first-call allocations, kernel selection
    times = {"slow": float("inf"), "fast": float("inf")}
    outs = {}
    for _ in range(repeats):
        for side, fn in (("slow", score_slow), ("fast", score_fast)):
            t = time.perf_counter()
            outs[side] = fn(lm, reqs)
            times[side] = min(times[side], time.perf_counter() - t)
    diff = max(np.abs(f - s).max() for f, s in zip(outs["fast"], outs["slow"]))
    return {"tokens": n_tokens, "rows": sum(len(r.rows) for r in reqs), "diff": diff, **times}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--queries", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    lm, load, start = model(), os.getloadavg()[0], time.perf_counter()
    results = {}
    for name, shared in (("shared", True), ("own", False)):
        reqs = requests(args.queries, shared)
        r = results[name] = compare(lm, reqs, args.repeats)
        print(f"{name:6s} {args.queries} queries, {r['rows']} options, {r['tokens'] / 1e3:.0f} k tokens: "
              f"slow {r['slow']:6.2f} s, fast {r['fast']:6.2f} s", flush=True)
    print(f"\n{'requests':8s} {'slow tok/s':>11s} {'fast tok/s':>11s} {'ratio':>7s} {'goal':>6s} met? "
          f"{'max |fast - slow|':>18s}")
    for name, r in results.items():
        ratio = r["slow"] / r["fast"]
        print(f"{name:8s} {r['tokens'] / r['slow']:11.0f} {r['tokens'] / r['fast']:11.0f} {ratio:7.2f} "
              f"{'>= 5':>6s} {'yes' if ratio >= 5 else 'NO':4s} {r['diff']:18.2e}")
    identical = all(r["diff"] <= 1e-4 for r in results.values())
    print(f"fast == slow within 1e-4 on every option: {identical}; model GPT-2 4 layers d 256 vocab {VOCAB}, "
          f"k = {K_DEMOS} demos; torch threads {args.threads}, {os.cpu_count()} cores, 1-min load average "
          f"{load:.2f} before, {os.getloadavg()[0]:.2f} after; {time.perf_counter() - start:.0f} s in all")
    if load > 0.5 * os.cpu_count():
        print("the machine was busy when this run started: absolute tokens/s are low, the ratio is less affected")


if __name__ == "__main__":
    main()
