"""The `text` source reads real corpora offline, names what is wrong, and tokenises losslessly and reproducibly."""
from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from metaicl.core.errors import ConfigError
from pretrain_data.text import (EOT, TextConfig, decode, encode, load_texts, load_tokenizer, text_vocab_size,
                                train_tokenizer)
from tests.conftest import ROOT

CORPUS = "data/text/dbpedia_abstracts.jsonl"  # relative to the repository root, as a config would name it
DOCS = ["The first document.", "Zweites Dokument: Größe, café, naïve — ünïcödé ✓.", "3rd doc\twith a tab"]


@pytest.fixture(scope="module")
def dbpedia() -> list[str]:
    return load_texts(TextConfig(path=CORPUS), base_dir=ROOT)


@pytest.fixture(scope="module")
def bpe(dbpedia):
    return load_tokenizer(TextConfig(path=CORPUS, vocab_size=1024), dbpedia)


def write_corpus(dir_, docs: list[str]) -> dict[str, str]:
    """The same documents as jsonl, a JSON array, parquet and txt; returns format -> file name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (dir_ / "docs.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(docs)))
    (dir_ / "docs.json").write_text(json.dumps([{"text": t} for t in docs], indent=2))
    pq.write_table(pa.table({"text": docs, "id": list(range(len(docs)))}), dir_ / "docs.parquet")
    (dir_ / "docs.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    return {"jsonl": "docs.jsonl", "json array": "docs.json", "parquet": "docs.parquet", "txt": "docs.txt"}


def test_jsonl_json_parquet_and_txt_files_load_to_the_same_documents_in_file_order(tmp_path):
    files = write_corpus(tmp_path, DOCS + ["   "])  # a blank document, dropped in every format
    loaded = {kind: load_texts(TextConfig(path=name), base_dir=tmp_path) for kind, name in files.items()}
    assert loaded == {kind: DOCS for kind in files}


def test_a_directory_is_read_file_by_file_in_name_order_and_max_docs_keeps_the_first(tmp_path):
    for name, docs in [("b.jsonl", DOCS[1:]), ("a.jsonl", DOCS[:1])]:
        (tmp_path / name).write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    assert load_texts(TextConfig(path=str(tmp_path))) == DOCS
    assert load_texts(TextConfig(path=str(tmp_path), max_docs=2)) == DOCS[:2]


def test_a_missing_file_is_a_config_error_on_path():
    with pytest.raises(ConfigError, match="not found") as err:
        load_texts(TextConfig(path="no/such/corpus.jsonl"), base_dir=ROOT, prefix="mixture.sources.wiki")
    assert err.value.key == "mixture.sources.wiki.path"


@pytest.mark.parametrize("name, columns", [("docs.jsonl", "['id', 'text']"), ("docs.parquet", "['text', 'id']")])
def test_a_missing_text_field_is_a_config_error_listing_the_columns(tmp_path, name, columns):
    write_corpus(tmp_path, DOCS)
    with pytest.raises(ConfigError) as err:
        load_texts(TextConfig(path=name, text_field="body"), base_dir=tmp_path)
    assert err.value.key == "source.text.text_field"
    assert err.value.message == f"no column 'body'; the columns are {columns}"


def test_a_malformed_jsonl_line_is_reported_with_its_file_and_line_number(tmp_path):
    lines = [json.dumps({"text": t}) for t in DOCS] + ['{"text": "unterminated}', json.dumps({"text": "after"})]
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as err:
        load_texts(TextConfig(path="bad.jsonl"), base_dir=tmp_path)
    assert err.value.key == "source.text.path" and err.value.where == f"{tmp_path / 'bad.jsonl'}:4"
    (tmp_path / "bad.jsonl").write_text("\n".join([lines[0], "not json"] + lines[1:3]) + "\n")
    with pytest.raises(ConfigError) as err:
        load_texts(TextConfig(path="bad.jsonl"), base_dir=tmp_path)
    assert err.value.where.endswith("bad.jsonl:2")


def test_validate_names_the_bad_key():
    for kw, key in [(dict(path=""), "path"), (dict(format="csv"), "format"), (dict(vocab_size=256), "vocab_size"),
                    (dict(max_docs=0), "max_docs"), (dict(text_field=""), "text_field")]:
        with pytest.raises(ConfigError) as err:
            TextConfig(**{"path": CORPUS, **kw}).validate("source.text")
        assert err.value.key == f"source.text.{key}"
    TextConfig(path=CORPUS).validate("source.text")


def test_the_shipped_corpus_is_1000_distinct_wikipedia_abstracts(dbpedia):
    assert len(dbpedia) == len(set(dbpedia)) == 1000
    assert dbpedia[0].startswith("Acantholimon karamanicum is a species of flowering plant.")


def test_trained_bpe_is_deterministic_has_eot_0_and_round_trips_the_corpus(dbpedia, bpe):
    tok, tok_json = bpe
    assert train_tokenizer(dbpedia, 1024).to_str() == tok_json  # same texts -> byte-identical tokenizer.json
    assert train_tokenizer(dbpedia[:500], 1024).to_str() != tok_json  # ... and the JSON does depend on them
    assert tok.token_to_id(EOT) == 0 and text_vocab_size(tok) == 1024
    docs = encode(tok, dbpedia)
    assert all(d.dtype == np.int32 for d in docs) and all(0 not in d for d in docs)  # no special tokens added
    assert max(int(d.max()) for d in docs) < 1024 and sum(map(len, docs)) < sum(map(len, dbpedia)) / 2
    assert [decode(tok_json, d) for d in docs] == dbpedia


def test_byte_level_bpe_round_trips_text_it_never_saw(bpe):
    tok, tok_json = bpe
    unseen = "Ελληνικά, 日本語, emoji 🤖, control \x07 and   spaces\n\nend"
    assert decode(tok_json, encode(tok, [unseen])[0]) == unseen


def test_a_literal_endoftext_in_a_document_is_text_not_a_boundary(bpe):
    tok, tok_json = bpe
    doc = f"one document{EOT}that mentions the marker"
    ids = encode(tok, [doc])[0]
    assert 0 not in ids and decode(tok_json, ids) == doc
    assert tok.encode(doc, add_special_tokens=False).ids.count(0) == 1  # what encode guards against


def test_min_doc_tokens_drops_short_documents(bpe):
    tok, _ = bpe
    docs = encode(tok, ["a", "a much longer document of several words"], min_tokens=3)
    assert len(docs) == 1 and len(docs[0]) >= 3


def test_a_local_hugging_face_tokenizer_directory_is_used_as_is(tmp_path, dbpedia, bpe):
    from transformers import PreTrainedTokenizerFast

    tok, tok_json = bpe
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT).save_pretrained(tmp_path / "tok")
    cfg = TextConfig(path=CORPUS, tokenizer="tok", vocab_size=4096)  # vocab_size is for bpe only
    hf, hf_json = load_tokenizer(cfg, dbpedia[:0], base_dir=tmp_path)  # no texts: nothing is trained
    assert text_vocab_size(hf) == 1024
    ids = encode(hf, dbpedia[:50])
    assert [list(d) for d in ids] == [list(d) for d in encode(tok, dbpedia[:50])]
    assert decode(hf_json, ids[7]) == dbpedia[7]
    with pytest.raises(ConfigError) as err:
        load_tokenizer(TextConfig(path=CORPUS, tokenizer="missing"), [], base_dir=tmp_path)
    assert err.value.key == "source.text.tokenizer"


def test_the_shipped_corpus_loads_offline_without_network_or_home_cache(monkeypatch, tmp_path):
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # the env vars are read at import time
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "home-cache")

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    texts = load_texts(TextConfig(path=CORPUS, max_docs=100), base_dir=ROOT)
    assert len(texts) == 100 and not (tmp_path / "home-cache").exists()


def test_hub_names_are_streamed_with_the_configured_split(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return iter([{"text": t, "url": "u"} for t in DOCS * 10])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = TextConfig(path="someone/corpus", hub=True, split="validation", max_docs=4)
    assert load_texts(cfg) == (DOCS * 2)[:4]
    assert calls == [("someone/corpus", {"split": "validation", "streaming": True})]
    with pytest.raises(ConfigError, match=r"columns are \['text', 'url'\]"):
        load_texts(TextConfig(path="someone/corpus", hub=True, text_field="content"))
