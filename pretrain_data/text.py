"""`text`: real corpora through Hugging Face `datasets`, tokenised locally (issue: pretrain_data mixtures).

    cfg = TextConfig(path="data/text/dbpedia_abstracts.jsonl", vocab_size=2048)
    texts = load_texts(cfg, base_dir=".")                 # 1000 Wikipedia abstracts, in file order
    tok, tok_json = load_tokenizer(cfg, texts)            # byte-level BPE trained on them; tok_json -> tokenizer.json
    docs = encode(tok, texts, min_tokens=cfg.min_doc_tokens)   # list of int32 arrays, no special tokens
    decode(tok_json, docs[0]) == texts[0]                 # True: byte-level BPE is lossless

- Corpus: a local jsonl/json, parquet or txt file (txt: one document per line), or a directory of them (sorted
  by name), read offline by `datasets`' packaged builders into a throwaway cache; with `hub: true`, `path` is a
  hub dataset name, streamed (needs network, never used by the tests or the default run).
- Tokenizer: `bpe` trains a byte-level BPE on the corpus itself (deterministic, `<|endoftext|>` = id 0), else
  `tokenizer` is a local Hugging Face tokenizer directory (never remote code). Either way the tokenizer used is
  a `tokenizers.Tokenizer`, whose JSON the data directory saves so the data can be decoded later.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Optional

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from metaicl.core.errors import ConfigError, check_at_least

EOT = "<|endoftext|>"
FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text"}


@dataclass
class TextConfig:
    path: str = ""
    """Local file or directory (jsonl/json, parquet, txt), relative to the config's base dir; or, with
    `hub: true`, a hub dataset name."""
    format: str = "auto"
    """auto (from the file suffix) | json | parquet | text."""
    text_field: str = "text"
    """Column holding the document text (txt files: one document per line, column `text`)."""
    split: str = "train"
    """Dataset split, slices allowed (`train[:10%]`); local files form the one split `train`."""
    hub: bool = False
    """Treat `path` as a hub dataset name (needs network)."""
    max_docs: Optional[int] = None
    """Keep the first max_docs non-empty documents (file order); None = all."""
    tokenizer: str = "bpe"
    """`bpe` = train a byte-level BPE on the corpus itself, locally; else a local HF tokenizer directory."""
    vocab_size: int = 2048
    """Vocabulary of the trained BPE: 256 byte tokens + 1 special + merges (fewer if the corpus runs out)."""
    min_doc_tokens: int = 1
    """Documents with fewer tokens are dropped."""

    def validate(self, prefix: str) -> None:
        def bad(key: str, msg: str) -> ConfigError:
            return ConfigError(f"{prefix}.{key}", msg)

        if not self.path:
            raise bad("path", "must name a local file or directory (or a hub dataset with hub: true)")
        if self.format not in ("auto", *FORMATS.values()):
            raise bad("format", f"unknown format {self.format!r} (known: auto, json, parquet, text)")
        if not self.text_field:
            raise bad("text_field", "must name a column")
        if not self.tokenizer:
            raise bad("tokenizer", "must be `bpe` or a local tokenizer directory")
        check_at_least(self, prefix, ("vocab_size",), 257)  # 256 byte tokens + <|endoftext|>
        check_at_least(self, prefix, ("min_doc_tokens",), 0)
        if self.max_docs is not None:
            check_at_least(self, prefix, ("max_docs",), 1)


def _files(cfg: TextConfig, base_dir: Path, prefix: str) -> tuple[str, list[Path]]:
    """(datasets builder, files in read order) of a local corpus: the file, or a directory's files by name."""
    path = Path(cfg.path) if Path(cfg.path).is_absolute() else base_dir / cfg.path
    if not path.exists():
        raise ConfigError(f"{prefix}.path", f"corpus {str(path)!r} not found")
    files = sorted(p for p in path.iterdir() if p.suffix in FORMATS) if path.is_dir() else [path]
    formats = {FORMATS.get(p.suffix) if cfg.format == "auto" else cfg.format for p in files}
    if not files:
        raise ConfigError(f"{prefix}.path", f"no {'/'.join(FORMATS)} files in {str(path)!r}")
    if len(formats) != 1 or None in formats:
        raise ConfigError(f"{prefix}.format", f"cannot tell one format from {[p.name for p in files]}; set format")
    return formats.pop(), files


def _check_json(file: Path, prefix: str) -> None:
    """datasets' JSON error names neither file nor line, so find the first bad line here (cheap)."""
    text = file.read_text(encoding="utf-8")
    try:
        json.loads(text)  # one JSON document: an array of records, or a one-line jsonl
        return
    except json.JSONDecodeError as whole:
        message, line_no = whole.msg, whole.lineno
    lines = [(no, line) for no, line in enumerate(text.splitlines(), 1) if line.strip()]
    for i, (no, line) in enumerate(lines):
        try:
            json.loads(line)
        except json.JSONDecodeError as e:
            if i > 0:  # an earlier line is a whole record, so this is jsonl and this line is the bad one
                message, line_no = e.msg, no
            break
    else:
        return  # jsonl, every line a record
    raise ConfigError(f"{prefix}.path", f"malformed JSON: {message}", where=f"{file}:{line_no}")


def _read_local(cfg: TextConfig, base_dir: Path, prefix: str):
    import datasets

    builder, files = _files(cfg, base_dir, prefix)
    if cfg.split.split("[")[0] != "train":  # slices such as train[:10%] are fine
        raise ConfigError(f"{prefix}.split", f"local files form the one split `train`, got {cfg.split!r}")
    for file in files if builder == "json" else ():
        _check_json(file, prefix)
    bars_off = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:  # a throwaway cache: nothing lands in ~/.cache; keep_in_memory leaves no file mapped once it is gone
        with tempfile.TemporaryDirectory(prefix="metaicl-text-") as cache:
            return datasets.load_dataset(builder, data_files=[str(f) for f in files], split=cfg.split,
                                         cache_dir=cache, keep_in_memory=True)
    except (ValueError, OSError, datasets.exceptions.DatasetGenerationError) as e:
        why = f"{e}: {e.__cause__}" if e.__cause__ else str(e)  # DatasetGenerationError hides the reason
        raise ConfigError(f"{prefix}.path", f"datasets could not read {[str(f) for f in files]}: {why}") from e
    finally:
        if not bars_off:
            datasets.enable_progress_bars()


def load_texts(cfg: TextConfig, base_dir: str | Path = ".", prefix: str = "source.text") -> list[str]:
    """The corpus' documents in file order, empty ones dropped, the first `max_docs` of them."""
    if cfg.hub:  # streamed: max_docs documents of a large corpus cost about max_docs, not the corpus
        import datasets

        try:
            rows = iter(datasets.load_dataset(cfg.path, split=cfg.split, streaming=True))
        except (ConnectionError, FileNotFoundError, ValueError) as e:  # offline, unknown name, unknown split
            raise ConfigError(f"{prefix}.path", f"cannot stream hub dataset {cfg.path!r}: {e}") from e
        first = next(rows, {})
        columns, values = list(first), (row.get(cfg.text_field) for row in chain([first], rows))
    else:
        ds = _read_local(cfg, Path(base_dir), prefix)
        columns = ds.column_names
        values = iter(ds[cfg.text_field]) if cfg.text_field in columns else iter(())
    if cfg.text_field not in columns:
        raise ConfigError(f"{prefix}.text_field", f"no column {cfg.text_field!r}; the columns are {columns}")
    texts: list[str] = []
    for text in values:
        if text is not None and not isinstance(text, str):
            raise ConfigError(f"{prefix}.text_field", f"{cfg.text_field!r} holds {type(text).__name__}, not text")
        if text and text.strip():
            texts.append(text)
            if len(texts) == cfg.max_docs:
                break
    return texts


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE (GPT-2 pre-tokenisation, lossless) trained on `texts`; `<|endoftext|>` is id 0."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def load_tokenizer(cfg: TextConfig, texts: list[str], base_dir: str | Path = ".",
                   prefix: str = "source.text") -> tuple[Tokenizer, str]:
    """(tokenizers.Tokenizer, its JSON): trained on `texts` for `bpe`, else read from a local HF directory."""
    if cfg.tokenizer == "bpe":
        tok = train_tokenizer(texts, cfg.vocab_size)
    else:
        from transformers import AutoTokenizer

        where = Path(cfg.tokenizer) if Path(cfg.tokenizer).is_absolute() else Path(base_dir) / cfg.tokenizer
        if not where.is_dir():
            raise ConfigError(f"{prefix}.tokenizer", f"{str(where)!r} is not `bpe` nor a tokenizer directory")
        try:
            hf = AutoTokenizer.from_pretrained(str(where), local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError) as e:
            raise ConfigError(f"{prefix}.tokenizer", f"cannot load a tokenizer from {str(where)!r}: {e}") from e
        tok = getattr(hf, "backend_tokenizer", None)
        if tok is None:
            raise ConfigError(f"{prefix}.tokenizer", f"{str(where)!r} has no fast tokenizer (tokenizer.json)")
    return tok, tok.to_str()


def encode(tokenizer: Tokenizer, texts: list[str], min_tokens: int = 0) -> list[np.ndarray]:
    """int32 ids per document, no special tokens (the packer adds boundaries); shorter than min_tokens dropped.
    A literal `<|endoftext|>` in a document is encoded as the text it is, not as a boundary."""
    batch = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    literal, tokenizer.encode_special_tokens = tokenizer.encode_special_tokens, True  # not saved in the JSON
    try:
        ids = [np.asarray(e.ids, dtype=np.int32) for e in batch(list(texts), add_special_tokens=False)]
    finally:
        tokenizer.encode_special_tokens = literal
    return [a for a in ids if len(a) >= min_tokens]


_from_json = lru_cache(maxsize=4)(Tokenizer.from_str)  # `data show` decodes many rows with one tokenizer


def decode(tokenizer_json: str, ids) -> str:
    """Text of `ids` under the tokenizer saved as `tokenizer_json` (special tokens kept visible)."""
    return _from_json(tokenizer_json).decode([int(i) for i in ids], skip_special_tokens=False)


def text_vocab_size(tokenizer: Tokenizer) -> int:
    """Number of token ids the tokenizer can emit (added tokens included)."""
    return tokenizer.get_vocab_size(with_added_tokens=True)
