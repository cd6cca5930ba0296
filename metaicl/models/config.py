"""Model knobs. The backbone is a `transformers` causal transformer built from a config (no hub access)."""
from __future__ import annotations

from dataclasses import dataclass

from metaicl.core.errors import ConfigError, check_at_least

ARCHS = ("gpt2", "llama")


@dataclass
class ModelConfig:
    arch: str = "gpt2"
    """Backbone family: `gpt2` (learned positions, LayerNorm, GELU MLP) or `llama` (RoPE, RMSNorm, SwiGLU)."""
    n_layer: int = 2
    """Transformer blocks. Reddy 2023 shows two attention layers suffice for the induction-head solution."""
    n_head: int = 1
    """Attention heads per block."""
    d_model: int = 128
    """Residual stream width."""
    mlp_ratio: int = 4
    """MLP hidden width as a multiple of d_model."""
    readout_hidden: int = 128
    """Hidden width of the MLP that reads the label off the query position (Reddy 2023); 0 = a linear readout."""
    dropout: float = 0.0
    """Dropout on embeddings, attention and residuals."""

    def validate(self, prefix: str = "model") -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"{prefix}.arch", f"unknown arch {self.arch!r} (known: {', '.join(ARCHS)})")
        check_at_least(self, prefix, ("n_layer", "n_head", "d_model", "mlp_ratio"), 1)
        if self.d_model % self.n_head:
            raise ConfigError(f"{prefix}.n_head", f"must divide d_model={self.d_model}, got {self.n_head}")
        if self.readout_hidden < 0:
            raise ConfigError(f"{prefix}.readout_hidden", f"must be >= 0, got {self.readout_hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{prefix}.dropout", f"must be in [0, 1), got {self.dropout}")
