"""Token mixtures: packing, blending, quotas, determinism, resume, and a card that measures what was dialled."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from metaicl.core.errors import ConfigError
from pretrain_data.build import build
from pretrain_data.mixture import mixture_dir
from pretrain_data.mixture_config import MixtureConfig, SourceConfig, TransformConfig
from pretrain_data.pack import BOUNDARY, pack
from pretrain_data.reader import fixed_list
from pretrain_data.sources import Docs
from pretrain_data.zipf_lm import ZipfLMConfig


def zipf_source(weight: float = 1.0, **zipf) -> SourceConfig:
    zipf = {"vocab_size": 512, "doc_length": 64, "span_length": 8, "long_range_distance": 16, **zipf}
    return SourceConfig(kind="zipf_lm", weight=weight, docs_per_batch=64, zipf_lm=ZipfLMConfig(**zipf))


def few_shot_source(weight: float) -> SourceConfig:
    source = SourceConfig(kind="bursty_fewshot", weight=weight, docs_per_batch=128)
    source.bursty_fewshot.num_classes, source.bursty_fewshot.num_novel_classes = 64, 16
    return source


def two_sources(**kw) -> MixtureConfig:
    return MixtureConfig(name="two", sources={"zipf": zipf_source(0.7), "fewshot": few_shot_source(0.3)},
                         token_budget=64 * 128, context_length=128, windows_per_shard=16, **kw)


def test_packing_ends_every_document_with_the_boundary_and_records_where_documents_start():
    docs = Docs([np.arange(1, 6, dtype=np.int32), np.arange(1, 4, dtype=np.int32), np.arange(1, 9, dtype=np.int32)],
                np.array([7, -1, 9], np.int32), np.array([10, 11, 12]))
    table = pack(docs, offset=100, context_length=4, windows=4)
    ids = fixed_list(table.column("input_ids")).ravel()
    assert ids.tolist() == [101, 102, 103, 104, 105, 0, 101, 102, 103, 0, 101, 102, 103, 104, 105, 106]
    assert table.column("doc_ids").to_pylist() == [[10], [10, 11], [11, 12], [12]]
    assert table.column("doc_starts").to_pylist() == [[0], [-1, 2], [-1, 2], [-1]]
    assert table.column("doc_groups").to_pylist() == [[7], [7, -1], [-1, 9], [9]]
    with pytest.raises(ValueError, match="19 tokens, 20 needed"):
        pack(docs, offset=100, context_length=4, windows=5)


def test_every_prefix_of_the_stream_has_the_declared_shares(ray_session, tmp_path):
    manifest = build(two_sources(), tmp_path, progress=False)
    blend = pq.read_table(manifest.root / "blend.parquet").to_pandas()
    zipf = manifest.sources["zipf"]["ordinal"]
    in_zipf = np.cumsum(blend["source"].to_numpy() == zipf)
    assert np.abs(in_zipf - 0.7 * np.arange(1, len(blend) + 1)).max() <= 1.0
    for name, info in manifest.sources.items():  # windows are numbered 0.. per source, each used once
        mine = blend[blend["source"] == info["ordinal"]]["window"].to_numpy()
        assert mine.tolist() == list(range(info["windows"]))
        assert sum(s.tokens for s in manifest.shards if s.source == name) == info["tokens"]
    assert manifest.sources["zipf"]["windows"] + manifest.sources["fewshot"]["windows"] == 64


def test_sources_get_disjoint_id_ranges_after_the_boundary_token(ray_session, tmp_path):
    manifest = build(two_sources(), tmp_path, progress=False)
    for name, info in manifest.sources.items():
        ids = np.concatenate([fixed_list(pq.read_table(manifest.root / s.file).column("input_ids")).ravel()
                              for s in manifest.shards if s.source == name])
        body = ids[ids != BOUNDARY]
        assert body.min() >= info["offset"] and body.max() < info["offset"] + info["vocab_size"]
    assert manifest.sources["fewshot"]["offset"] == 1  # sorted names: fewshot before zipf, whatever the YAML order
    assert manifest.vocab_size == 1 + sum(i["vocab_size"] for i in manifest.sources.values())


def test_one_and_two_workers_write_identical_bytes(ray_session, tmp_path):
    one = build(two_sources(), tmp_path / "a", max_in_flight=1, progress=False)
    two = build(two_sources(), tmp_path / "b", max_in_flight=2, progress=False)
    for name in [s.file for s in one.shards] + ["blend.parquet", "manifest.json", "stats.json"]:
        assert (one.root / name).read_bytes() == (two.root / name).read_bytes(), name


def test_a_removed_shard_is_rebuilt_alone_with_the_same_hash(ray_session, tmp_path):
    first = build(two_sources(), tmp_path, progress=False)
    before = {s.file: (first.root / s.file).stat().st_mtime_ns for s in first.shards}
    victim = first.shards[1].file
    (first.root / "manifest.json").unlink()
    (first.root / victim).unlink()
    again = build(two_sources(), tmp_path, progress=False)
    assert [s.sha256 for s in again.shards] == [s.sha256 for s in first.shards]
    for s in again.shards:
        assert ((again.root / s.file).stat().st_mtime_ns == before[s.file]) == (s.file != victim)


def test_shards_load_with_hugging_face_datasets(ray_session, tmp_path):
    import datasets

    manifest = build(two_sources(), tmp_path, progress=False)
    files = [str(manifest.root / s.file) for s in manifest.shards if s.source == "zipf"]
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == manifest.sources["zipf"]["windows"] and len(ds[0]["input_ids"]) == 128


@pytest.mark.parametrize("alpha", [0.8, 1.2, 1.6])
def test_card_recovers_the_dialled_zipf_exponent(ray_session, tmp_path, alpha):
    cfg = MixtureConfig(sources={"z": zipf_source(zipf_alpha=alpha, vocab_size=2048, doc_length=256)},
                        token_budget=256 * 512, context_length=256, windows_per_shard=256)
    card = json.loads((build(cfg, tmp_path, progress=False).root / "stats.json").read_text())
    assert abs(card["sources"]["z"]["zipf_alpha_mle"] - alpha) < 0.1


def test_card_sees_the_long_tail_and_long_range_copies_that_were_dialled(ray_session, tmp_path):
    def card(**zipf):
        cfg = MixtureConfig(sources={"z": zipf_source(vocab_size=2048, doc_length=256, span_length=8,
                                                      long_range_distance=32, **zipf)},
                            token_budget=128 * 256, context_length=256, windows_per_shard=64)
        return json.loads((build(cfg, tmp_path, progress=False).root / "stats.json").read_text())["sources"]["z"]

    head, tail = card(rare_token_density=0.05, rare_rank_cutoff=256), card(rare_token_density=0.4, rare_rank_cutoff=256)
    # measured with the card's cutoff (1024 types), so compare direction and size, not the dialled number
    assert tail["rare_token_density"] > head["rare_token_density"] + 0.1
    flat, copied = card(long_range=0.0), card(long_range=0.5)
    assert flat["long_range_info_gain_bits"] < 0.02 < 0.3 < copied["long_range_info_gain_bits"]
    assert copied["doc_burstiness"] > flat["doc_burstiness"]


def test_dependency_order_puts_related_documents_next_to_each_other(ray_session, tmp_path):
    def card(order: str):
        source = SourceConfig(kind="ginc", docs_per_batch=128, transforms=[TransformConfig(name=order)])
        source.ginc.doc_length = 64
        cfg = MixtureConfig(sources={"g": source}, token_budget=64 * 130, context_length=130, windows_per_shard=32)
        return json.loads((build(cfg, tmp_path, progress=False).root / "stats.json").read_text())["sources"]["g"]

    ordered, shuffled = card("dependency_order"), card("random_order")
    assert ordered["adjacent_doc_similarity"] > ordered["random_order_similarity"] + 0.05
    assert abs(shuffled["adjacent_doc_similarity"] - shuffled["random_order_similarity"]) < 0.03
    assert ordered["distinct_groups"] == shuffled["distinct_groups"] == 5  # GINC's five concepts, all present


def test_a_transform_target_out_of_reach_is_one_error_and_leaves_nothing(ray_session, tmp_path):
    source = zipf_source(zipf_alpha=1.0)
    source.transforms = [TransformConfig(name="zipf_reweight", target=3.0)]
    cfg = MixtureConfig(sources={"z": source}, token_budget=4096, context_length=128, windows_per_shard=16)
    with pytest.raises(ConfigError, match=r"pretrain\.sources\.z\.transforms\.0\.target: .*out of reach"):
        build(cfg, tmp_path, progress=False)
    assert not mixture_dir(cfg, tmp_path).exists()


@pytest.mark.parametrize("change, key", [
    (dict(sources={}), "pretrain.sources"),
    (dict(token_budget=10), "pretrain.token_budget"),
    (dict(sources={"z": SourceConfig(kind="wiki")}), "pretrain.sources.z.kind"),
    (dict(sources={"z": SourceConfig(weight=0)}), "pretrain.sources.z.weight"),
    (dict(sources={"z": SourceConfig(transforms=[TransformConfig(name="sort")])}), "pretrain.sources.z.transforms.0.name"),
])
def test_invalid_mixture_names_the_key(change, key):
    cfg = MixtureConfig(**{**dict(sources={"z": SourceConfig()}), **change})
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert err.value.key == key


def test_token_stream_follows_the_blend_and_reads_every_window_once(ray_session, tmp_path):
    from pretrain_data.token_reader import TokenStream

    manifest = build(two_sources(), tmp_path, progress=False)
    stream = TokenStream(manifest)
    everything = stream.windows(range(len(stream)))
    assert everything.shape == (64, 128)
    by_source = {name: np.concatenate([fixed_list(pq.read_table(manifest.root / s.file).column("input_ids"))
                                       for s in manifest.shards if s.source == name])
                 for name in manifest.sources}
    for name, rows in by_source.items():
        mine = everything[stream.source == manifest.sources[name]["ordinal"]]
        assert np.array_equal(mine, rows)  # each source's windows, in order, none lost or repeated


def test_few_shot_pairs_with_separators_are_written_as_episodes_are(ray_session, tmp_path):
    """bursty_fewshot.separators (issue 15): every pair is class, input separator, label, example separator, with
    two reserved ids after the labels, recorded in the manifest for the episodes (tasks.separators). Off, the
    data keeps the name it had before the knob existed."""
    from metaicl.core.hashing import config_hash
    from pretrain_data.build import data_hash
    from pretrain_data.config import BurstyDataConfig

    cfg = two_sources()
    cfg.sources["fewshot"].bursty_fewshot.separators = True
    manifest = build(cfg, tmp_path, progress=False)
    info = manifest.sources["fewshot"]
    sep, end = info["separators"]["input"], info["separators"]["example"]
    assert (sep, end) == (info["offset"] + info["vocab_size"] - 2, info["offset"] + info["vocab_size"] - 1)
    ids = np.concatenate([fixed_list(pq.read_table(manifest.root / s.file).column("input_ids")).ravel()
                          for s in manifest.shards if s.source == "fewshot"])
    cuts = np.flatnonzero(ids == BOUNDARY)
    whole = [ids[a + 1:b] for a, b in zip(cuts, cuts[1:]) if b - a - 1 == 4 * 9]  # 8 context pairs and the query
    assert len(whole) > 10
    for doc in whole:
        assert (doc[1::4] == sep).all() and (doc[3::4] == end).all()
        assert not np.isin(doc[0::4], [sep, end]).any() and not np.isin(doc[2::4], [sep, end]).any()
    assert "separators" not in build(two_sources(), tmp_path, progress=False).sources["fewshot"]
    plain = BurstyDataConfig()
    assert data_hash(plain) == config_hash({k: v for k, v in plain.__dict__.items() if k != "separators"})
