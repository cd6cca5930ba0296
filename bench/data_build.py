"""Token-mixture data build: 1 vs 2 Ray workers, and the shard generator vs raw numpy sampling, side by side in one run.

    python bench/data_build.py [--shards 8] [--windows-per-shard 4096] [--repeats 3]

1. Ray scaling: the same zipf_lm mixture built with `build(..., max_in_flight=1)` and `max_in_flight=2` into fresh
   directories, in one local Ray session of 2 CPUs whose workers a throwaway build has already started and warmed.
   Reported per side: the whole build, its shard tasks alone (the `run_tasks` call that writes the shards) and its
   statistics card (also Ray tasks). Runs alternate 1/2 workers; best of `--repeats`. The manifests (every shard's
   sha256 included) and cards must be byte-identical, since worker count never changes the data. For reference, the
   same shards written by 1 or 2 plain forked processes (multiprocessing, no Ray): what this machine allows.
2. Generator cost: in this process, tokens/s of writing one shard the way a build task does
   (`write_synthetic_shard`: synthetic_docs + pack + write_parquet) vs raw numpy sampling of as many tokens from the
   source's unigram: zipf_lm's Zipf law (`rng.choice(V, p=unigram)`); GINC has no closed-form unigram, so its
   baseline is `rng.choice(V, p=uniform)` over its vocabulary (`rng.integers` is printed too). Best of 3, interleaved.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metaicl.core.ray_local import ClusterConfig, init_ray, prepare_env  # noqa: E402

prepare_env()

import numpy as np  # noqa: E402

from metaicl.core.io import write_parquet  # noqa: E402
from pretrain_data import mixture, mixture_stats  # noqa: E402
from pretrain_data.build import build  # noqa: E402
from pretrain_data.ginc import GINCConfig  # noqa: E402
from pretrain_data.mixture_config import MixtureConfig, SourceConfig  # noqa: E402
from pretrain_data.pack import pack  # noqa: E402
from pretrain_data.sources import source_vocab  # noqa: E402
from pretrain_data.zipf_lm import ZipfLMConfig, unigram  # noqa: E402

ZIPF = SourceConfig(kind="zipf_lm", docs_per_batch=512,
                    zipf_lm=ZipfLMConfig(vocab_size=4096, zipf_alpha=1.1, doc_length=512, long_range=0.2))
GINC = SourceConfig(kind="ginc", docs_per_batch=512, ginc=GINCConfig(doc_length=512))
CONTEXT = 512


def mixture_cfg(source: SourceConfig, shards: int, per_shard: int) -> MixtureConfig:
    return MixtureConfig(name="bench", sources={"src": source}, token_budget=shards * per_shard * CONTEXT,
                         context_length=CONTEXT, windows_per_shard=per_shard)


@contextlib.contextmanager
def phase_timer(times: dict):
    """Time the build's two Ray phases without changing them: mixture.run_tasks is the shard phase only (the card
    imports run_tasks from pretrain_data.tasks itself), mixture_stats.mixture_stats the card."""
    run_tasks, card = mixture.run_tasks, mixture_stats.mixture_stats

    def timed(key, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[key] = time.perf_counter() - t
        return wrapper

    mixture.run_tasks, mixture_stats.mixture_stats = timed("shards", run_tasks), timed("stats", card)
    try:
        yield times
    finally:
        mixture.run_tasks, mixture_stats.mixture_stats = run_tasks, card


def _plain_shard(job: tuple) -> None:
    source, cfg, index, vocab, path = job
    mixture.write_synthetic_shard(source, cfg, "src", index, cfg.windows_per_shard, 1, vocab, path)


def plain_scaling(args, root: Path) -> float:
    """The build's shards written by a pool of 1 or 2 plain processes forked from this warm one (no Ray): the
    speed-up this machine allows 2 workers, against which Ray's is read. Best of `--repeats`, alternating."""
    import multiprocessing

    cfg, vocab = mixture_cfg(ZIPF, args.shards, args.windows_per_shard), source_vocab(ZIPF)
    best = {1: float("inf"), 2: float("inf")}
    pools = {w: multiprocessing.get_context("fork").Pool(w) for w in best}
    try:
        for i in range(args.repeats):
            for workers, pool in pools.items():
                jobs = [(ZIPF, cfg, k, vocab, root / f"plain{workers}-{i}" / f"src-{k:05d}.parquet")
                        for k in range(args.shards)]
                t = time.perf_counter()
                pool.map(_plain_shard, jobs, chunksize=1)
                best[workers] = min(best[workers], time.perf_counter() - t)
                shutil.rmtree(root / f"plain{workers}-{i}")
    finally:
        for pool in pools.values():
            pool.close()
            pool.join()
    print(f"same {args.shards} shards in plain processes (no Ray), best of {args.repeats}: {best[1]:.2f} s with 1, "
          f"{best[2]:.2f} s with 2", flush=True)
    return best[1] / best[2]


def ray_scaling(args, root: Path) -> dict:
    init_ray(ClusterConfig(num_cpus=2))
    cfg = mixture_cfg(ZIPF, args.shards, args.windows_per_shard)
    build(mixture_cfg(ZIPF, 4, 64), root / "warmup", max_in_flight=2, progress=False)  # starts and warms both workers
    best: dict = {}
    outputs = []
    for i in range(args.repeats):
        for workers in (1, 2):
            with phase_timer({}) as times:
                t = time.perf_counter()
                manifest = build(cfg, root / f"w{workers}-{i}", max_in_flight=workers, progress=False)
                times["build"] = time.perf_counter() - t
            outputs.append(tuple((manifest.root / f).read_bytes() for f in ("manifest.json", "stats.json")))
            shutil.rmtree(root / f"w{workers}-{i}")
            driver = times["build"] - times["shards"] - times["stats"]
            print(f"{workers} worker(s) run {i}: build {times['build']:6.2f} s = shards {times['shards']:6.2f} s "
                  f"+ stats {times['stats']:5.2f} s + driver {driver:5.2f} s", flush=True)
            for k, v in times.items():
                best[workers, k] = min(best.get((workers, k), float("inf")), v)
    tokens = cfg.windows() * CONTEXT
    print(f"mixture: zipf_lm V=4096 long_range=0.2, {args.shards} shards x {args.windows_per_shard} windows x "
          f"{CONTEXT} tokens = {tokens / 1e6:.1f} M tokens; best of {args.repeats}: shards "
          f"{tokens / best[1, 'shards'] / 1e6:.1f} vs {tokens / best[2, 'shards'] / 1e6:.1f} M tokens/s (1 vs 2)")
    identical = all(o == outputs[0] for o in outputs)
    print(f"manifest.json and stats.json byte-identical across all {len(outputs)} builds: {identical}")
    return {"build": best[1, "build"] / best[2, "build"], "shards": best[1, "shards"] / best[2, "shards"],
            "stats": best[1, "stats"] / best[2, "stats"], "identical": identical}


def generator_cost(args, root: Path) -> dict:
    """Seconds (best of 3, interleaved) to write one shard like a build task, and to sample as many raw tokens."""
    rows, out = args.windows_per_shard, {}
    for name, source in (("zipf_lm", ZIPF), ("ginc", GINC)):
        cfg = mixture_cfg(source, 1, rows)
        vocab, n = source_vocab(source), rows * CONTEXT
        p = unigram(source.zipf_lm) if name == "zipf_lm" else np.full(vocab, 1.0 / vocab)
        rng = np.random.default_rng(0)
        sides = {
            "shard": lambda k: mixture.write_synthetic_shard(source, cfg, "src", 0, rows, 1, vocab,
                                                             root / f"{name}-{k}.parquet"),
            "raw": lambda k: rng.choice(vocab, size=n, p=p),
            "integers": lambda k: rng.integers(0, vocab, size=n),
        }
        # The shard's three steps on their own, for the breakdown (write_synthetic_shard's body).
        parts: dict = {}
        sides["docs"] = lambda k: parts.__setitem__("docs", mixture.synthetic_docs(
            source, cfg.seed, "src", 0, n, vocab, "bench"))
        sides["pack"] = lambda k: parts.__setitem__("table", pack(parts["docs"], 1, CONTEXT, rows))
        sides["write"] = lambda k: write_parquet(root / f"{name}-part-{k}.parquet", parts["table"])
        best = {side: float("inf") for side in sides}
        for k in range(4):  # run 0 warms up (caches, pyarrow's first calls); runs 1..3 count
            for side, fn in sides.items():
                t = time.perf_counter()
                fn(k)
                if k:
                    best[side] = min(best[side], time.perf_counter() - t)
        out[name] = best
        print(f"{name:7s} one shard ({n / 1e6:.2f} M tokens): write_synthetic_shard {best['shard'] * 1e3:7.1f} ms "
              f"[docs {best['docs'] * 1e3:.1f} + pack {best['pack'] * 1e3:.1f} + parquet {best['write'] * 1e3:.1f}]; "
              f"raw choice(p) {best['raw'] * 1e3:6.1f} ms, integers {best['integers'] * 1e3:5.1f} ms", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--windows-per-shard", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="metaicl-bench-data-"))
    start, load = time.perf_counter(), os.getloadavg()[0]
    try:
        gen = generator_cost(args, root)
        plain = plain_scaling(args, root)  # before Ray starts: forks this process
        ray = ray_scaling(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [("build shards, 1 -> 2 Ray workers (speed-up)", ray["shards"], 1.8),
            ("whole build incl. stats card, 1 -> 2 workers", ray["build"], 1.8),
            ("stats card alone, 1 -> 2 workers", ray["stats"], None),
            ("shards in plain processes, 1 -> 2 (no Ray)", plain, None),
            ("zipf_lm shard tokens/s / raw choice(p=Zipf)", gen["zipf_lm"]["raw"] / gen["zipf_lm"]["shard"], 0.30),
            ("ginc shard tokens/s / raw choice(p=uniform)", gen["ginc"]["raw"] / gen["ginc"]["shard"], 0.30),
            ("ginc shard tokens/s / raw integers (uniform)", gen["ginc"]["integers"] / gen["ginc"]["shard"], None)]
    print(f"\n{'benchmark':48s} {'ratio':>7s} {'goal':>7s}  met?")
    for name, ratio, goal in rows:
        print(f"{name:48s} {ratio:7.3f} {'>= ' + format(goal, 'g') if goal else '-':>7s}  "
              f"{('yes' if ratio >= goal else 'NO') if goal else '-'}")
    print(f"outputs identical for 1 and 2 workers: {ray['identical']}; {os.cpu_count()} cores, 1-min load average "
          f"{load:.2f} before, {os.getloadavg()[0]:.2f} after; {time.perf_counter() - start:.0f} s in all")
    if load > 0.5 * os.cpu_count():
        print("the machine was busy when this run started: the 1 vs 2 worker ratios need an otherwise idle machine")


if __name__ == "__main__":
    main()
