"""Causal language models: GPT-2 or Llama-style, built from a `transformers` config, or loaded from a local path.

    cfg = LMConfig(arch="llama", preset="tiny")
    model = build_lm(cfg, vocab_size=4097)          # random init from the config: no download
    save_lm(model, "runs/x/pretrained/model")       # Hugging Face layout: config.json + model.safetensors
    AutoModelForCausalLM.from_pretrained("runs/x/pretrained/model")   # what anyone else does with it

`name_or_path` loads a local directory (or a hub name when online) instead; `trust_remote_code` stays off unless
the config turns it on. Presets fix depth and width; `n_layer` / `n_head` / `d_model` override a preset's value.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from metaicl.core.errors import ConfigError, check_at_least
from metaicl.core.io import atomic_dir

ARCHS = ("gpt2", "llama")
ATTENTION = ("sdpa", "eager", "flash_attention_2", "flex_attention")
PRESETS = {
    "tiny": dict(n_layer=2, n_head=2, d_model=64),          # CPU tests and the synthetic pipeline
    "small": dict(n_layer=4, n_head=4, d_model=256),        # a laptop's overnight run
    "medium": dict(n_layer=8, n_head=8, d_model=512),
    "124m": dict(n_layer=12, n_head=12, d_model=768),       # GPT-2 small (Radford et al. 2019): 124M with 50k vocab
    "350m": dict(n_layer=24, n_head=16, d_model=1024),      # GPT-2 medium
}


@dataclass
class LMConfig:
    arch: str = "gpt2"
    """Backbone family: `gpt2` (learned positions, LayerNorm, GELU) or `llama` (RoPE, RMSNorm, SwiGLU)."""
    preset: str = "tiny"
    """Size preset: tiny | small | medium | 124m | 350m (depth, heads, width)."""
    n_layer: Optional[int] = None
    """Transformer blocks (overrides the preset)."""
    n_head: Optional[int] = None
    """Attention heads (overrides the preset)."""
    d_model: Optional[int] = None
    """Residual stream width (overrides the preset)."""
    mlp_ratio: int = 4
    """MLP hidden width as a multiple of d_model."""
    context_length: int = 512
    """Positions the model has (GPT-2 n_positions, Llama max_position_embeddings); episodes must fit."""
    dropout: float = 0.0
    """Dropout on embeddings, attention and residuals."""
    name_or_path: Optional[str] = None
    """Start from this model instead of a fresh one: a local Hugging Face directory (a run's `pretrained/model`,
    GPT-2 Large for the paper's table) or a hub name when online."""
    tokenizer: Optional[str] = None
    """Text tasks: a local tokenizer directory or tokenizer.json (default: the one saved with `name_or_path`).
    Synthetic tasks use the mixture's own ids (`ids:<vocab>`), set by the pipeline."""
    trust_remote_code: bool = False
    """Let `from_pretrained` run code shipped with the model. Off: weights only."""
    attn_implementation: Optional[str] = None
    """Attention kernel (`transformers`' attn_implementation): sdpa (PyTorch's fused scaled-dot-product attention,
    which picks FlashAttention / memory-efficient kernels on a GPU), eager, flash_attention_2 (needs the
    flash-attn package), flex_attention. Default: transformers' choice, sdpa for GPT-2 and Llama. A measurement
    that reads attention patterns switches to eager for its duration."""

    def validate(self, prefix: str = "lm") -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"{prefix}.arch", f"unknown arch {self.arch!r} (known: {', '.join(ARCHS)})")
        if self.preset not in PRESETS:
            raise ConfigError(f"{prefix}.preset", f"unknown preset {self.preset!r} (known: {', '.join(PRESETS)})")
        check_at_least(self, prefix, ("mlp_ratio", "context_length"), 1)
        for key in ("n_layer", "n_head", "d_model"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{prefix}.{key}", f"must be >= 1, got {getattr(self, key)}")
        size = self.size()
        if size["d_model"] % size["n_head"]:
            raise ConfigError(f"{prefix}.n_head", f"must divide d_model={size['d_model']}, got {size['n_head']}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{prefix}.dropout", f"must be in [0, 1), got {self.dropout}")
        if self.attn_implementation not in (None, *ATTENTION):
            raise ConfigError(f"{prefix}.attn_implementation", f"unknown kernel {self.attn_implementation!r} "
                                                               f"(known: {', '.join(ATTENTION)})")

    def size(self) -> dict:
        """Depth, heads and width: the preset's, with any explicit override."""
        return {k: getattr(self, k) if getattr(self, k) is not None else v for k, v in PRESETS[self.preset].items()}


def lm_config(cfg: LMConfig, vocab_size: int):
    """The `transformers` config of a fresh model."""
    from transformers import GPT2Config, LlamaConfig

    s = cfg.size()
    if cfg.arch == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_positions=cfg.context_length, n_embd=s["d_model"],
                          n_layer=s["n_layer"], n_head=s["n_head"], n_inner=cfg.mlp_ratio * s["d_model"],
                          resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                          bos_token_id=0, eos_token_id=0)
    return LlamaConfig(vocab_size=vocab_size, max_position_embeddings=cfg.context_length, hidden_size=s["d_model"],
                       num_hidden_layers=s["n_layer"], num_attention_heads=s["n_head"],
                       num_key_value_heads=s["n_head"], intermediate_size=cfg.mlp_ratio * s["d_model"],
                       attention_dropout=cfg.dropout, bos_token_id=0, eos_token_id=0, pad_token_id=0)


def build_lm(cfg: LMConfig, vocab_size: int | None = None, init: str | Path | None = None):
    """A causal LM: loaded from `init` (or cfg.name_or_path) when given, else freshly initialised for vocab_size."""
    from transformers import AutoModelForCausalLM

    source = init or cfg.name_or_path
    kernel = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
    if source is not None:
        return load_lm(source, cfg.trust_remote_code, **kernel)
    if not vocab_size:
        raise ConfigError("lm.name_or_path", "a fresh model needs a vocabulary: give `pretrain:` data or a tokenizer, "
                                             "or start from a saved model")
    return AutoModelForCausalLM.from_config(lm_config(cfg, vocab_size), **kernel)


WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
"""The files a Hugging Face model directory keeps its weights in (one of them)."""


def check_source(source: str, key: str = "lm.name_or_path") -> None:
    """A model to start from is a local Hugging Face directory, or a hub name `transformers` can load: online, or
    offline (HF_HUB_OFFLINE=1, as locally) from the Hugging Face cache. Anything else is one ConfigError before
    anything runs, not transformers' traceback from inside a Ray task."""
    import os

    path = Path(source)
    if path.exists():
        if not (path / "config.json").exists():
            raise ConfigError(key, f"{source} is not a Hugging Face model directory (no config.json)")
        if not any((path / name).is_file() for name in WEIGHTS):
            raise ConfigError(key, f"{source} has no weights ({' or '.join(WEIGHTS[:2])})")
        return
    if path.is_absolute() or source.startswith(".") or source.count("/") > 1:  # a path, not a hub name
        raise ConfigError(key, f"{source}: no such directory")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(source, "config.json"), str):
            raise ConfigError(key, f"{source}: no such directory, and not a model in the Hugging Face cache "
                                   f"(offline: HF_HUB_OFFLINE=1)")


def load_lm(path: str | Path, trust_remote_code: bool = False, **kwargs):
    from transformers import AutoModelForCausalLM

    if Path(path).exists() and not (Path(path) / "config.json").exists():
        raise ConfigError("lm.name_or_path", f"{path} is not a Hugging Face model directory (no config.json)")
    return AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=trust_remote_code, **kwargs)


def save_lm(model, path: str | Path) -> Path:
    """Save in Hugging Face format (safetensors), atomically: the directory appears complete or not at all."""
    with atomic_dir(path) as tmp:
        getattr(model, "module", model).save_pretrained(str(tmp), safe_serialization=True)
    return Path(path)


def lm_loss(model, batch):
    """Mean next-token cross-entropy over the positions the mask marks as targets (all tokens when pretraining;
    the query's output only in MetaICL episodes). Right padding needs no attention mask: the model is causal.
    The objective of every stage that trains a causal LM (pretraining, meta-training, the Fine-tune baselines).

    Where only some positions are targets (episodes), the output layer and the softmax run at those positions
    alone (issue 18): the model returns its final hidden states (`logits_to_keep=1`: it projects one position
    instead of all), and the targets' rows are projected onto the vocabulary here. For a small model with a
    large vocabulary the output layer is most of the step (`bench/lm_loss.py`: a step 3.5x faster at
    metaicl_synthetic's meta-training shape on 2 cores). The model is called through its wrapper, so DDP still
    syncs every gradient. Every position a target (pretraining): full logits, as before."""
    import torch.nn.functional as F

    ids, mask = batch
    weight = mask[:, 1:].float()
    if bool((weight == 1).all()):
        logits = model(input_ids=ids).logits[:, :-1].float()
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction="none")
        return (nll * weight.reshape(-1)).sum() / weight.sum().clamp(min=1)
    targets = weight > 0
    hidden = final_states(model, input_ids=ids)[1][:, :-1][targets]  # (targets, width)
    head = getattr(model, "module", model).get_output_embeddings()
    nll = F.cross_entropy(head(hidden).float(), ids[:, 1:][targets], reduction="none")
    return (nll * weight[targets]).sum() / weight.sum().clamp(min=1)


def cache_kwarg(model) -> str:
    """The keyword a model's forward takes its key/value cache by: transformers 5.x renamed `past_key_values` to
    `cache` (the old name is deprecated)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def final_states(model, **inputs):
    """(the model's output, its final hidden states): the states after the last norm, which the output layer reads,
    for callers that project only some positions onto the vocabulary; the model itself projects just one
    (`logits_to_keep=1`: it cannot project none)."""
    out = model(**inputs, output_hidden_states=True, logits_to_keep=1)
    return out, out.hidden_states[-1]


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
