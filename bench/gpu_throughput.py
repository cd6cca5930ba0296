"""Language-model pretraining on the device it runs on (issue 18): tokens/s and MFU through Ray next to the same
loop bare, eager and compiled; and evaluation's option scoring, fast vs slow scorer.

    python bench/gpu_throughput.py [--presets tiny,small,124m,350m] [--steps 40] [--batch 16] [--seq 1024]

On a GPU (the defaults above): GPT-2 presets (metaicl.models.lm.PRESETS) with a 50,257-token vocabulary, 16 windows
of 1,024 tokens a step, bf16 autocast, fused AdamW, the `transformers` default attention kernel (sdpa), as
`metaicl train` runs them with `train.use_gpu=true`. On CPU (nothing to pass): the tiny preset, 8 windows of 256
tokens, a 4,096-token vocabulary, eager only (`train.compile` is refused on CPU), so the script runs, and is
tested, everywhere. Each row is `LMStage.run`, the stage's own code, on a token mixture built here:
  bare  - a plain `python` subprocess (bench/lm_throughput.py's bare side): no Ray;
  ray   - the same spec through `fit_arm`, as the pipeline trains it (one worker: a Ray task holding the GPU).
Throughput is progress.json's `recent_steps_per_s`: the last `--steps` minus `--warmup` steps, so torch.compile's
first steps, evaluations and checkpoints are left out; tokens/s = that x batch x seq. MFU = 6 N tokens/s / peak
(Kaplan et al. 2020's 6N FLOPs per token, forward and backward; N = parameters without the position embeddings,
as nanoGPT counts them; attention's own FLOPs are left out, so at seq 1,024 MFU reads a few percent low). Peak:
the device's dense bf16 tensor FLOP/s from the table below, or --peak-tflops; none on CPU.
Scoring: options scored per second by score_fast (prefix KV cache) and score_slow (a sequence per option) on
bench/scoring.py's MetaICL-shaped requests (k = 16 shared demonstrations), float32, on the same device.
Goals (issue 18, GPU): GPT-2 124m through Ray >= 40 % MFU with ray/bare >= 0.97.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metaicl.core.ray_local import init_ray, prepare_env  # noqa: E402

prepare_env()
ROOT = Path(__file__).resolve().parents[1]

PEAK_BF16_TFLOPS = {  # dense (no sparsity) bf16 tensor-core peak, from the vendors' data sheets
    "B200": 2250, "H200": 989, "H100 SXM": 989, "H100 NVL": 835, "H100 PCIe": 756, "H100": 989, "GH200": 989,
    "A100": 312, "L40S": 362, "L40": 181, "L4": 121, "A10G": 70, "A10": 125, "RTX 4090": 165, "RTX 3090": 71,
}
"""Longest matching name first: `torch.cuda.get_device_name()` is e.g. "NVIDIA H100 80GB HBM3" (an SXM part)."""

MIXTURE = """\
name: gpu-bench
pretrain:
  name: gpu-bench
  token_budget: {budget}
  context_length: {seq}
  windows_per_shard: {windows}
  sources:
    zipf: {{kind: zipf_lm, weight: 1.0, zipf_lm: {{vocab_size: {vocab}, doc_length: 256}}}}
lm: {{arch: gpt2, context_length: {seq}}}
eval: {{methods: []}}
episodes: {{max_length: {seq}}}
"""
"""One Zipfian synthetic language (pretrain_data/zipf_lm.py): the tokens' content does not change the speed."""


def peak_flops(device: str, override: float | None) -> float | None:
    """The device's dense bf16 peak in FLOP/s; None where it is not known (a CPU, a GPU not in the table)."""
    if override:
        return override * 1e12
    if device == "cpu":
        return None
    import torch

    name = torch.cuda.get_device_name()
    found = [k for k in PEAK_BF16_TFLOPS if k in name]
    return PEAK_BF16_TFLOPS[max(found, key=len)] * 1e12 if found else None


def counted_params(lm, vocab_size: int) -> int:
    """N of 6N: every parameter but the learned position embeddings (tied input/output embedding counted once);
    built on the meta device, so a 350M model costs no memory here."""
    import torch

    from metaicl.models.lm import build_lm

    with torch.device("meta"):
        model = build_lm(lm, vocab_size=vocab_size)
    wpe = getattr(getattr(model, "transformer", None), "wpe", None)  # GPT-2's; Llama's RoPE has no parameters
    return sum(p.numel() for p in model.parameters()) - (wpe.weight.numel() if wpe is not None else 0)


def options_per_s(lm, vocab_size: int, device: str, queries: int) -> dict[str, float]:
    """Options scored per second by each scorer on MetaICL-shaped requests (bench/scoring.py's), random weights."""
    import torch

    from bench.scoring import requests
    from metaicl.eval.scoring import score_fast, score_slow
    from metaicl.models.lm import build_lm

    model = build_lm(dataclasses.replace(lm, context_length=1024), vocab_size=vocab_size).to(device).eval()
    batch = requests(queries, shared=True)
    options = sum(len(r.rows) for r in batch)
    rates = {}
    for name, fn in (("fast", score_fast), ("slow", score_slow)):
        with torch.no_grad():
            fn(model, batch[:2], device=device)  # warm-up: kernels, allocator
            if device != "cpu":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn(model, batch, device=device)
            if device != "cpu":
                torch.cuda.synchronize()
        rates[name] = options / (time.perf_counter() - start)
    del model
    if device != "cpu":
        torch.cuda.empty_cache()
    return rates


def main(argv: list[str] | None = None) -> list[dict]:
    import torch

    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="tiny,small,124m,350m" if gpu else "tiny")
    p.add_argument("--steps", type=int, default=40 if gpu else 110, help="steps per row, warm-up included")
    p.add_argument("--warmup", type=int, default=10, help="first steps left out of the rate (compilation)")
    p.add_argument("--batch", type=int, default=16 if gpu else 8, help="windows per step")
    p.add_argument("--seq", type=int, default=1024 if gpu else 256, help="tokens per window")
    p.add_argument("--vocab", type=int, default=50257 if gpu else 4096)
    p.add_argument("--compile", default="both" if gpu else "no", choices=["no", "yes", "both"])
    p.add_argument("--queries", type=int, default=64 if gpu else 16, help="scoring requests per scorer")
    p.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, if not in the table")
    p.add_argument("--out", help="also write the rows here as JSON")
    args = p.parse_args(argv)
    if args.steps <= args.warmup:
        p.error("--steps must be larger than --warmup")
    if args.compile != "no" and not gpu:
        p.error("--compile yes/both needs a GPU (train.compile is refused on CPU)")

    with tempfile.TemporaryDirectory(prefix="metaicl-bench-gpu-") as tmp:
        rows = measure(args, gpu, Path(tmp))
    print(table(rows, "cuda" if gpu else "cpu", args))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return rows


def measure(args, gpu: bool, root: Path) -> list[dict]:
    """Every row: (preset, mode, side) tokens/s and MFU, and each preset's scoring rates."""
    from bench.lm_throughput import run_bare
    from metaicl.core.config import load_config
    from metaicl.experiment import ExperimentConfig
    from metaicl.train.lm import LMStage
    from metaicl.train.ray_train import fit_arm
    from pretrain_data.build import build

    device = "cuda" if gpu else "cpu"
    cores = os.cpu_count()
    config = root / "bench.yaml"
    windows = args.batch * 4  # four distinct batches; the stream cycles
    config.write_text(MIXTURE.format(budget=windows * args.seq, seq=args.seq, windows=windows, vocab=args.vocab - 1))
    cfg, _ = load_config(ExperimentConfig, config, [f"data_root={root / 'data'}"])
    init_ray(cfg.cluster)
    manifest = build(cfg.pretrain, cfg.data_root, progress=False)
    peak = peak_flops(device, args.peak_tflops)
    compiled = {"no": [False], "yes": [True], "both": [False, True]}[args.compile]
    rows = []
    for preset in args.presets.split(","):
        lm = dataclasses.replace(cfg.lm, preset=preset)
        n = counted_params(lm, manifest.vocab_size)
        for compile_ in compiled:
            train = dataclasses.replace(
                cfg.train, steps=args.steps, batch_size=args.batch, eval_every=args.steps, ckpt_every=args.steps,
                log_every=args.steps - args.warmup, use_gpu=gpu, compile=compile_,
                cpus_per_worker=cores, lr=1e-4, warmup_steps=1)
            for side in ("bare", "ray"):
                out = root / f"{preset}-{side}-{'compiled' if compile_ else 'eager'}"
                spec = LMStage("pretrain", str(out), lm, train, stream=str(manifest.path),
                               vocab_size=manifest.vocab_size)
                if side == "bare":
                    run_bare(spec, root, cores)
                else:
                    fit_arm(spec, root / "ray")
                rate = json.loads((out / "progress.json").read_text())["recent_steps_per_s"]
                tokens = rate * args.batch * args.seq
                rows.append({"preset": preset, "params": n, "compile": compile_, "side": side, "tokens_per_s": tokens,
                             "mfu": 6 * n * tokens / peak if peak else None})
        rows.append({"preset": preset, "params": n, "scoring": options_per_s(lm, manifest.vocab_size, device,
                                                                            args.queries)})
    return rows


def table(rows: list[dict], device: str, args) -> str:
    """The rows as README's Markdown table: one line per preset and kernel mode, ray/bare beside."""
    import torch

    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {os.cpu_count()} cores"
    lines = [f"{name}, torch {torch.__version__}: {args.batch} x {args.seq} tokens a step, vocabulary {args.vocab}, "
             f"rate over steps {args.warmup + 1}-{args.steps}", "",
             "| preset | N (no wpe) | mode | bare tokens/s | ray tokens/s | ray/bare | bare MFU | ray MFU |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    mfu = lambda r: f"{r['mfu'] * 100:.1f} %" if r["mfu"] is not None else "n/a"  # noqa: E731
    trained = [r for r in rows if "side" in r]
    for preset, compile_ in dict.fromkeys((r["preset"], r["compile"]) for r in trained):
        bare, ray = (next(r for r in trained if (r["preset"], r["compile"], r["side"]) == (preset, compile_, s))
                     for s in ("bare", "ray"))
        lines.append(f"| {preset} | {bare['params'] / 1e6:.1f}M | {'compiled' if compile_ else 'eager'} | "
                     f"{bare['tokens_per_s']:,.0f} | {ray['tokens_per_s']:,.0f} | "
                     f"{ray['tokens_per_s'] / bare['tokens_per_s']:.3f} | {mfu(bare)} | {mfu(ray)} |")
    lines += ["", "| preset | fast scorer options/s | slow scorer options/s | fast/slow |", "|---|---:|---:|---:|"]
    for r in rows:
        if "scoring" in r:
            fast, slow = r["scoring"]["fast"], r["scoring"]["slow"]
            lines.append(f"| {r['preset']} | {fast:,.0f} | {slow:,.0f} | {fast / slow:.1f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
