"""bench/gpu_throughput.py (issue 18): its arithmetic against closed forms, and the whole script on this CPU (the
table a GPU prints, from the tiny preset), so it is tested where no GPU is. Named to run after the LM modules, whose
Ray tasks leave the session's workers with torch and transformers imported."""
from __future__ import annotations

import json

import pytest
import torch

from bench.gpu_throughput import PEAK_BF16_TFLOPS, counted_params, main, peak_flops
from metaicl.models.lm import LMConfig


def test_n_is_gpt2_small_without_its_position_embeddings():
    """GPT-2 124M (Radford et al. 2019): 124,439,808 parameters with a 50,257-token vocabulary and tied embeddings,
    of which 1,024 x 768 are learned positions, which 6N leaves out (as nanoGPT's MFU does)."""
    assert counted_params(LMConfig(preset="124m", context_length=1024), 50257) == 124_439_808 - 1024 * 768


def test_the_peak_is_the_longest_matching_name_or_the_flag(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 PCIe")
    assert peak_flops("cuda", None) == PEAK_BF16_TFLOPS["H100 PCIe"] * 1e12 != PEAK_BF16_TFLOPS["H100"] * 1e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    assert peak_flops("cuda", None) == 989e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Some Future GPU")
    assert peak_flops("cuda", None) is None and peak_flops("cuda", 100.0) == 100e12
    assert peak_flops("cpu", None) is None


def test_on_cpu_the_bench_prints_the_table_of_bare_and_ray_and_both_scorers(ray_session, tmp_path, capsys):
    rows = main(["--steps", "6", "--warmup", "2", "--batch", "4", "--seq", "64", "--queries", "4",
                 "--peak-tflops", "1", "--out", str(tmp_path / "rows.json")])
    assert json.loads((tmp_path / "rows.json").read_text()) == rows
    trained = [r for r in rows if "side" in r]
    assert [(r["preset"], r["side"], r["compile"]) for r in trained] == [("tiny", "bare", False),
                                                                        ("tiny", "ray", False)]
    for r in trained:  # MFU is 6 N tokens/s over the peak given
        assert r["tokens_per_s"] > 0 and r["mfu"] == pytest.approx(6 * r["params"] * r["tokens_per_s"] / 1e12)
    [scoring] = [r["scoring"] for r in rows if "scoring" in r]
    assert scoring["fast"] > 0 and scoring["slow"] > 0
    table = capsys.readouterr().out
    assert "| tiny | 0.4M | eager |" in table and "| preset | fast scorer options/s |" in table
