"""The one tokenizer interface that episodes and scoring use: encode, decode, bos_id, vocab_size.

    tok = load_tokenizer(TokenizerSpec("ids", vocab_size=1024))   # the synthetic language: "17 503\n22" -> [17, 503, 0, 22]
    tok = load_tokenizer(TokenizerSpec("local", path="runs/tok/tokenizer.json"))   # or a local HF tokenizer directory
    ids = tok.encode("great movie")           # never adds special tokens: episodes place bos themselves

`IdTokenizer` reads text that *is* token ids, so a model pretrained on a synthetic mixture can be given MetaICL
episodes written as text; its newline is by default the document-boundary token (id 0) of those mixtures, so the
default separators of MetaICL (newlines, Min et al. 2022) become boundary tokens, unless the collection names
separator ids of their own (newline_id, tab_id: tasks.separators, issue 15). `HFTokenizer` wraps a local Hugging
Face tokenizer (never downloaded, never remote code).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from metaicl.core.errors import ConfigError

BOS_CANDIDATES = ("<|endoftext|>", "<s>", "</s>", "<bos>", "<eos>", "<|begin_of_text|>")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")
"""Files of a Hugging Face tokenizer directory (one of them at least)."""


class Tokenizer(Protocol):
    bos_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids) -> str: ...


class IdTokenizer:
    """Text of whitespace-separated integer ids; every "\\n" is the token `newline_id`, every "\\t" the token
    `tab_id` (if >= 0; else a tab is a space), spaces make no token. bos is id 0, the document boundary. A mixture
    whose bursty source writes episode separators (tasks.separators) gives newline and tab their ids; by default
    "\\n" is the boundary itself."""

    def __init__(self, vocab_size: int, newline_id: int = 0, tab_id: int = -1):
        for name, i in (("newline_id", newline_id), ("tab_id", tab_id)):
            if not (0 <= i < vocab_size or (name == "tab_id" and i == -1)):
                raise ValueError(f"{name} {i} is outside the vocabulary [0, {vocab_size})")
        self.vocab_size, self.newline_id, self.tab_id, self.bos_id = vocab_size, newline_id, tab_id, 0

    def _id(self, word: str) -> int:
        if not (word.isascii() and word.isdigit()) or int(word) >= self.vocab_size:
            raise ValueError(f"{word!r} is not a token id in [0, {self.vocab_size})")
        return int(word)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for i, line in enumerate(text.split("\n")):
            if i:
                ids.append(self.newline_id)
            parts = line.split("\t") if self.tab_id >= 0 else [line]
            for j, part in enumerate(parts):
                if j:
                    ids.append(self.tab_id)
                ids.extend(self._id(word) for word in part.split())
        return ids

    def decode(self, ids) -> str:
        """Inverse of encode up to spacing: encode(decode(ids)) == ids."""
        out = []
        for i in map(int, ids):
            if i in (self.newline_id, self.tab_id):
                out.append("\n" if i == self.newline_id else "\t")
            else:
                out.append(f" {i}" if out and out[-1] not in "\n\t" else str(i))
        return "".join(out)


class HFTokenizer:
    """A local `tokenizers.Tokenizer` (the engine of every fast Hugging Face tokenizer)."""

    def __init__(self, tokenizer, bos_id: int | None = None):
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        if bos_id is None:  # a bare tokenizers JSON has no bos notion: take the first known boundary token
            found = (tokenizer.token_to_id(t) for t in BOS_CANDIDATES)
            bos_id = next((i for i in found if i is not None), 0)
        self.bos_id = bos_id

    @classmethod
    def from_json(cls, path: str | Path) -> "HFTokenizer":
        from tokenizers import Tokenizer as RawTokenizer

        try:
            return cls(RawTokenizer.from_file(str(path)))
        except Exception as e:  # tokenizers raises its own Exception type on bad JSON
            raise ConfigError("tokenizer", f"cannot read a tokenizer from {str(path)!r}: {e}") from e

    @classmethod
    def from_dir(cls, path: str | Path) -> "HFTokenizer":
        from transformers import AutoTokenizer

        if not any((Path(path) / name).is_file() for name in TOKENIZER_FILES):  # transformers would make an
            raise ConfigError("tokenizer", f"no tokenizer in {str(path)!r} "  # empty one from config.json alone
                                           f"({', '.join(TOKENIZER_FILES[:2])}, ...)")
        try:
            hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError) as e:
            raise ConfigError("tokenizer", f"cannot load a tokenizer from {str(path)!r}: {e}") from e
        if getattr(hf, "backend_tokenizer", None) is None:
            raise ConfigError("tokenizer", f"{str(path)!r} has no fast tokenizer (tokenizer.json)")
        bos = hf.bos_token_id if hf.bos_token_id is not None else hf.eos_token_id
        return cls(hf.backend_tokenizer, 0 if bos is None else bos)

    def encode(self, text: str) -> list[int]:
        # A literal "<|endoftext|>" in task text is text, not a boundary (as pretrain_data.text.encode does).
        literal, self.tokenizer.encode_special_tokens = self.tokenizer.encode_special_tokens, True
        try:
            return self.tokenizer.encode(text, add_special_tokens=False).ids
        finally:
            self.tokenizer.encode_special_tokens = literal

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)


@dataclass(frozen=True)
class TokenizerSpec:
    """Which tokenizer reads a task collection's text. A synthetic collection says so itself (families.json):
    `ids`, text that is token ids below `vocab_size`; a collection of real text is read by `local`, the tokenizer
    at `path` (lm.tokenizer, or the one saved with lm.name_or_path)."""
    kind: str
    """`ids` or `local`."""
    vocab_size: int = 0
    """ids: every id of the text is below it."""
    path: str = ""
    """local: a tokenizer directory or a tokenizers *.json file."""
    newline_id: int = 0
    """ids: the id "\\n" reads as (0: the document boundary; a mixture's example separator with tasks.separators)."""
    tab_id: int = -1
    """ids: the id "\\t" reads as (-1: none, a tab is a space; a mixture's input separator with tasks.separators)."""


def load_tokenizer(spec: TokenizerSpec | str) -> IdTokenizer | HFTokenizer:
    """`ids` -> IdTokenizer; `local` (or a path alone): a directory -> HFTokenizer.from_dir, a *.json file ->
    from_json."""
    if isinstance(spec, str):
        spec = TokenizerSpec("local", path=spec)
    if spec.kind == "ids":
        if spec.vocab_size < 1:
            raise ConfigError("tokenizer", f"an ids tokenizer needs vocab_size >= 1, got {spec.vocab_size}")
        return IdTokenizer(spec.vocab_size, spec.newline_id, spec.tab_id)
    path = Path(spec.path)
    if spec.kind == "local" and path.is_dir():
        return HFTokenizer.from_dir(path)
    if spec.kind == "local" and path.is_file() and path.suffix == ".json":
        return HFTokenizer.from_json(path)
    raise ConfigError("tokenizer", f"{spec.path!r} is not a tokenizer directory or a *.json file")
