"""The Ray data build is deterministic, content-keyed and resumable."""
from __future__ import annotations

import dataclasses
import json

import numpy as np

import pretrain_data.build

from pretrain_data.build import build, data_dir, plan, target_dir
from pretrain_data.manifest import Manifest
from pretrain_data.reader import FewShotReader


def shard_bytes(manifest: Manifest) -> dict[str, bytes]:
    return {s.file: (manifest.root / s.file).read_bytes() for s in manifest.shards}


def test_one_and_two_workers_build_identical_bytes(ray_session, tiny_data, tmp_path):
    one = build(tiny_data, tmp_path / "a", max_in_flight=1, progress=False)
    two = build(tiny_data, tmp_path / "b", max_in_flight=2, progress=False)
    assert shard_bytes(one) == shard_bytes(two)
    assert (one.root / "manifest.json").read_bytes() == (two.root / "manifest.json").read_bytes()
    assert (one.root / "classes.parquet").read_bytes() == (two.root / "classes.parquet").read_bytes()


def test_without_ray_a_build_runs_in_process_to_the_same_bytes(ray_session, tiny_data, tmp_path):
    """`metaicl data build` of a small config starts no Ray (it would cost more than the shards): the shard
    functions then run in the process itself. Same bytes as through Ray, few-shot data and a token mixture alike."""
    import subprocess
    import sys

    from pretrain_data.mixture_config import MixtureConfig, SourceConfig
    from pretrain_data.zipf_lm import ZipfLMConfig

    mixture = MixtureConfig(name="m", token_budget=8192, context_length=64, windows_per_shard=32, sources={
        "zipf": SourceConfig(kind="zipf_lm", weight=0.7, zipf_lm=ZipfLMConfig(vocab_size=256, doc_length=64,
                                                                              long_range=0.5, span_length=8,
                                                                              long_range_distance=8)),
        "ginc": SourceConfig(kind="ginc", weight=0.3)})
    code = ("import pickle, sys, ray; from pretrain_data.build import build; "
            "cfgs = pickle.loads(sys.stdin.buffer.read()); "
            f"[build(c, {str(tmp_path / 'local')!r}, progress=False) for c in cfgs]; "
            "assert not ray.is_initialized()")
    import pickle

    subprocess.run([sys.executable, "-c", code], input=pickle.dumps([tiny_data, mixture]), check=True, timeout=300)
    for cfg in (tiny_data, mixture):
        local = Manifest.read(target_dir(cfg, tmp_path / "local"))
        remote = build(cfg, tmp_path / "ray", progress=False)
        assert shard_bytes(local) == shard_bytes(remote) and len(local.shards) >= 2
        assert (local.root / "manifest.json").read_bytes() == (remote.root / "manifest.json").read_bytes()


def test_manifest_lists_every_shard_with_rows_and_sha(ray_session, tiny_data, tmp_path):
    manifest = build(tiny_data, tmp_path, progress=False)
    assert manifest.root == data_dir(tiny_data, tmp_path)
    assert [(s.split, s.index, s.rows) for s in manifest.shards] == plan(tiny_data)
    assert manifest.rows("train") == tiny_data.train_sequences
    assert manifest.config == dataclasses.asdict(tiny_data)
    on_disk = json.loads((manifest.root / "manifest.json").read_text())
    assert {s["file"]: s["sha256"] for s in on_disk["shards"]} == {s.file: s.sha256 for s in manifest.shards}


def test_data_dir_is_keyed_by_the_data_config(tiny_data, tmp_path):
    assert data_dir(tiny_data, tmp_path) == data_dir(dataclasses.replace(tiny_data), tmp_path)
    assert data_dir(tiny_data, tmp_path) != data_dir(dataclasses.replace(tiny_data, seed=1), tmp_path)
    assert data_dir(tiny_data, tmp_path) != data_dir(dataclasses.replace(tiny_data, burstiness=0), tmp_path)


def test_missing_shard_is_rebuilt_alone_with_the_same_hash(ray_session, tiny_data, tmp_path):
    first = build(tiny_data, tmp_path, progress=False)
    before = {s.file: ((first.root / s.file).stat().st_mtime_ns, s.sha256) for s in first.shards}
    (first.root / "manifest.json").unlink()
    (first.root / "train-00002.parquet").unlink()
    again = build(tiny_data, tmp_path, progress=False)
    for s in again.shards:
        mtime, sha = before[s.file]
        assert s.sha256 == sha
        assert ((again.root / s.file).stat().st_mtime_ns == mtime) == (s.file != "train-00002.parquet")


def test_complete_build_is_reused_without_ray_tasks(tiny_data, tmp_path, ray_session, monkeypatch):
    first = build(tiny_data, tmp_path, progress=False)

    def no_ray(*args, **kwargs):
        raise AssertionError("a finished data directory needs no Ray and writes no shard")

    # (not by shutting the session's Ray down: starting it again cost ~6 s and every warm worker of later tests)
    for module, name in ((ray_session, "remote"), (ray_session, "get"), (ray_session, "cluster_resources"),
                         (pretrain_data.build, "run_tasks"), (pretrain_data.build, "write_shard")):
        monkeypatch.setattr(module, name, no_ray)
    assert build(tiny_data, tmp_path, progress=False).to_dict() == first.to_dict()


def test_reader_materialises_the_same_items_every_time(ray_session, tiny_data, tmp_path):
    manifest = build(tiny_data, tmp_path, progress=False)
    a_items, a_labels = FewShotReader(manifest).split("icl_novel")
    b_items, b_labels = FewShotReader(Manifest.read(manifest.root)).split("icl_novel")
    assert a_items.shape == (tiny_data.eval_sequences, tiny_data.context_pairs + 1, tiny_data.item_dim)
    assert np.array_equal(a_items, b_items) and np.array_equal(a_labels, b_labels)
