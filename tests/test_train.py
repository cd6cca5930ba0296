"""Training without Ray: the loop learns, checkpoints, resumes exactly, and shards batches by rank."""
from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from metaicl.core.errors import ConfigError
from metaicl.core.io import read_json
from metaicl.data.fewshot import GlobalBatches
from metaicl.eval.icl import EvalConfig
from metaicl.models.config import ModelConfig
from metaicl.train.arm import ArmSpec, run_arm
from metaicl.train.config import TrainConfig
from metaicl.train.loop import lr_lambda
from pretrain_data.build import data_dir, plan, write_class_table, write_shard
from pretrain_data.manifest import Manifest
from pretrain_data.reader import FewShotReader

TINY_MODEL = ModelConfig(d_model=16, mlp_ratio=1, readout_hidden=16)


@pytest.fixture
def manifest(tiny_data, tmp_path):
    """A data directory built in-process (the same functions the Ray tasks run)."""
    out = data_dir(tiny_data, tmp_path / "data")
    out.mkdir(parents=True)
    entries = [write_shard(tiny_data, *p, out) for p in plan(tiny_data)]
    m = Manifest(kind=tiny_data.kind, config=dataclasses.asdict(tiny_data), config_hash="test", shards=entries,
                 class_table=write_class_table(tiny_data, out))
    return m.write(out / "manifest.json")


def spec(manifest, out, **train):
    cfg = TrainConfig(**{"steps": 20, "batch_size": 16, "eval_every": 10, "ckpt_every": 10, "log_every": 5, **train})
    return ArmSpec("arm", str(manifest.path), str(out), TINY_MODEL, cfg, EvalConfig(batch_size=64))


def test_rank_slices_partition_the_global_batch(manifest):
    reader = FewShotReader(manifest)
    whole = GlobalBatches(reader, 16).get(70)  # wraps past the end of the 1000 training rows
    halves = [GlobalBatches(reader, 16, rank=r, world=2).get(70) for r in (0, 1)]
    for t in range(2):
        merged = torch.empty_like(whole[t])
        merged[0::2], merged[1::2] = halves[0][t], halves[1][t]
        assert torch.equal(merged, whole[t])


def test_arm_writes_metrics_model_and_checkpoints(manifest, tmp_path):
    history = run_arm(spec(manifest, tmp_path / "arm"))
    metrics = pd.read_parquet(tmp_path / "arm" / "metrics.parquet")
    assert list(metrics.columns) == ["step", "eval", "metric", "value"]
    assert sorted(metrics.step.unique()) == [0, 10, 20] and len(metrics) == len(history)
    assert set(metrics["eval"]) == {"icl_novel", "icl_swap", "iwl", "train"}
    assert ((metrics.metric != "accuracy") | metrics.value.between(0, 1)).all()
    assert sorted(p.name for p in (tmp_path / "arm" / "checkpoints").iterdir()) == ["step_0000010", "step_0000020"]
    assert "item_in.weight" in load_file(tmp_path / "arm" / "model" / "model.safetensors")


@pytest.mark.parametrize("ckpt_every", [10, 5])
def test_resume_continues_from_the_latest_checkpoint(manifest, tmp_path, ckpt_every):
    """Killed between two checkpoints, the run resumes at the latest one and ends as an uninterrupted run ends:
    the same weights and the same history, also when that checkpoint fell between two evaluations (the train-loss
    row being averaged resumes with it)."""
    torch.set_num_threads(1)
    straight = run_arm(spec(manifest, tmp_path / "straight", ckpt_every=ckpt_every))
    out = tmp_path / "crashed"
    run_arm(spec(manifest, out, ckpt_every=ckpt_every))
    (out / "metrics.parquet").unlink()
    killed_after = 10 if ckpt_every == 10 else 15
    for later in (out / "checkpoints").iterdir():  # as if killed right after the checkpoint at killed_after
        if int(later.name.split("_")[1]) > killed_after:
            shutil.rmtree(later)
    history = run_arm(spec(manifest, out, ckpt_every=ckpt_every))
    assert read_json(out / "progress.json")["resumed_from"] == killed_after
    assert [r["step"] for r in history if r["eval"] == "train"] == [10, 20]
    assert history == straight
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(out / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before_it_and_the_result_is_the_same(manifest, tmp_path,
                                                                                                 capsys):
    """Issue 19: integrity on read. The latest checkpoint truncated (a disk that filled up): the one before it is
    restored with a warning and the steps since are trained again, to the same weights; every one damaged: one
    error naming the directory."""
    from metaicl.core.errors import RunFailed

    torch.set_num_threads(1)
    run_arm(spec(manifest, tmp_path / "straight", steps=30))
    out = tmp_path / "damaged"
    run_arm(spec(manifest, out, steps=20))
    (out / "metrics.parquet").unlink()
    weights = out / "checkpoints" / "step_0000020" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    history = run_arm(spec(manifest, out, steps=30))
    err = capsys.readouterr().err
    assert "warning: checkpoint" in err and "step_0000020 cannot be read" in err
    assert [r["step"] for r in history if r["eval"] == "train"] == [10, 20, 30]
    a, b = (load_file(d / "model" / "model.safetensors") for d in (tmp_path / "straight", out))
    assert all(torch.equal(a[k], b[k]) for k in a)
    (out / "metrics.parquet").unlink()
    for step in ("step_0000020", "step_0000030"):
        (out / "checkpoints" / step / "optim.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunFailed, match="every checkpoint in .*damaged"):
        run_arm(spec(manifest, out, steps=40))


def test_checkpoint_from_other_data_is_refused(manifest, tmp_path):
    run_arm(spec(manifest, tmp_path / "arm", steps=10))
    (tmp_path / "arm" / "metrics.parquet").unlink()
    with pytest.raises(RuntimeError, match="other data"):
        run_arm(spec(manifest, tmp_path / "arm", steps=20, batch_size=32))


def test_schedule_warms_up_then_decays_to_min_ratio():
    f = lr_lambda(TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(100) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(10, 100))


def test_llama_backbone_and_linear_readout_train(manifest, tmp_path):
    s = spec(manifest, tmp_path / "llama", steps=10)
    s = dataclasses.replace(s, model=ModelConfig(arch="llama", d_model=16, mlp_ratio=1, readout_hidden=0))
    history = run_arm(s)
    weights = load_file(tmp_path / "llama" / "model" / "model.safetensors")
    assert "backbone.layers.0.mlp.gate_proj.weight" in weights  # SwiGLU: Llama, not GPT-2
    assert "readout.weight" in weights and "readout.0.weight" not in weights  # readout_hidden=0: linear
    assert all(np.isfinite(r["value"]) for r in history)


def test_eval_sets_select_what_is_measured(manifest, tmp_path):
    s = spec(manifest, tmp_path / "arm", steps=10)
    run_arm(dataclasses.replace(s, eval=EvalConfig(sets=["iwl"])))
    metrics = pd.read_parquet(tmp_path / "arm" / "metrics.parquet")
    assert set(metrics["eval"]) == {"iwl", "train"}


@pytest.mark.parametrize("precision, expect_bf16", [("auto", False), ("fp32", False), ("bf16", True)])
def test_precision_picks_bf16_autocast_on_cpu_only_when_asked(precision, expect_bf16):
    from metaicl.train.loop import autocast

    with autocast(TrainConfig(precision=precision), torch.device("cpu")):
        out = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert (out.dtype == torch.bfloat16) == expect_bf16


def test_asking_for_gpus_the_cluster_lacks_is_a_config_error_not_a_hang():
    from metaicl.core.errors import ConfigError
    from metaicl.train.arm import ArmSpec
    from metaicl.train.config import TrainConfig
    from metaicl.train.ray_train import check_resources

    gpu = ArmSpec("a", "m.json", "out", None, TrainConfig(use_gpu=True, num_workers=2, gpus_per_worker=0.5), None)
    check_resources([gpu], {"CPU": 4, "GPU": 1})  # two half-GPU workers fit on one GPU
    with pytest.raises(ConfigError, match=r"train.use_gpu: arm 'a' needs 1 GPU \(2 workers\) but the Ray cluster has 0"):
        check_resources([gpu], {"CPU": 4})
    cpu = ArmSpec("b", "m.json", "out", None, TrainConfig(num_workers=2, cpus_per_worker=2), None)
    with pytest.raises(ConfigError, match="train.cpus_per_worker: arm 'b' needs 4 CPU"):
        check_resources([cpu], {"CPU": 2})


def test_unsized_workers_share_the_cluster_cpus_and_explicit_sizes_win(monkeypatch):
    """Issue 20: a stage that trains alone gets every CPU of the cluster; stages that train together split them per
    worker (a fraction each when they outnumber the CPUs); an explicit train.cpus_per_worker is kept and leaves the
    rest to the others; never more than the largest node has (one worker's CPUs come from one node)."""
    from metaicl.train import ray_train

    def arm(name, **train):
        return ArmSpec(name, "m.json", "out", None, TrainConfig(**train), None)

    def sized(specs, total=2.0, largest=2.0, cpus=None):
        monkeypatch.setattr(ray_train, "cluster_cpus", lambda: (total, largest))
        return [s.train.cpus_per_worker for s in ray_train.size_workers(specs, cpus)]

    assert sized([arm("alone")]) == [2]
    assert sized([arm("a"), arm("b")]) == [1, 1]  # the quickstart's two arms: one CPU each, as before
    assert sized([arm("a"), arm("b"), arm("c")]) == [0.66] * 3  # all three at once, none waits while a core idles
    assert ray_train.threads(0.66) == 1 and ray_train.threads(2.0) == 2
    assert sized([arm("ddp", num_workers=2, batch_size=128)], total=8, largest=8) == [4]
    assert sized([arm("fixed", cpus_per_worker=3), arm("rest")], total=8, largest=8) == [3, 5]
    assert sized([arm("alone")], total=12, largest=4) == [4]  # three 4-CPU nodes: a worker fits on one
    assert sized([arm("trial")], total=2, cpus=1.0) == [1]  # a sweep trial's share, not the whole cluster
    assert sized([arm("none")], total=0) == [1]  # nothing to share: 1, and Ray queues it
    assert ray_train.size_workers([arm("fixed", cpus_per_worker=2)])[0].train.cpus_per_worker == 2
    for bad in (0, -1):
        with pytest.raises(ConfigError, match=r"train.cpus_per_worker: must be > 0"):
            TrainConfig(cpus_per_worker=bad).validate()


def test_progress_gives_the_rate_of_the_last_steps_without_the_evaluations(tmp_path):
    """progress.json's recent_steps_per_s is the rate of the last log_every steps alone (what bench/gpu_throughput.py
    reads: no torch.compile warm-up, evaluation or checkpoint in it); steps_per_s is the whole loop's. A slow
    evaluation at the last step moves the latter only."""
    import time

    from metaicl.train.checkpoint import Checkpointer
    from metaicl.train.loop import train_loop

    class Batches:
        def get(self, step):
            return (torch.ones(4, 2),)

    def evaluate():
        time.sleep(0.0 if seen == [] else 0.5)  # the step-0 evaluation is fast, the last one slow
        return {}

    seen: list[dict] = []
    model = torch.nn.Linear(2, 1)
    cfg = TrainConfig(steps=20, batch_size=4, eval_every=20, ckpt_every=20, log_every=10, warmup_steps=1)
    train_loop(cfg, model, Batches(), evaluate, Checkpointer(tmp_path), loss_fn=lambda m, b: m(b[0]).pow(2).mean(),
               progress=seen.append)
    assert [p["step"] for p in seen] == [10, 20]
    last = seen[-1]
    assert last["steps_per_s"] < 20 / 0.5  # the evaluation's half second is in the whole loop's rate
    assert last["recent_steps_per_s"] > 10 * last["steps_per_s"]  # ... and not in the last steps' rate
