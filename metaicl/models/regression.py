"""Garg et al. 2022's model for real-valued prompts: (x, y) pairs read into a `transformers` backbone by one linear
layer, y predicted at every x position.

    model = build_regressor(LMConfig(preset="small"), n_dims=5, n_points=11)
    pred = model(xs, ys)          # xs (B, P, d), ys (B, P) -> (B, P): pred[:, i] sees (x_1, y_1) ... (x_{i-1}, y_{i-1}), x_i
    save_regressor(model, "runs/data/pretrain-1a2b3c4d/model")

The prompt x_1, y_1, x_2, y_2, ... is one sequence of 2P vectors in R^d: x_i as it is, y_i as (y_i, 0, ..., 0)
(Garg et al. Sec. 2, their `_combine`); the backbone is the language model's (GPT-2 or Llama blocks, `lm.*`'s size)
with no token embeddings used. The prediction for x_i is read out at x_i's position: a causal model sees the i - 1
examples before it and nothing after, so one forward pass scores every number of in-context examples at once.

Saved as a directory: the backbone's config.json, `regression.json` (d) and model.safetensors (weights only).
"""
from __future__ import annotations

from pathlib import Path

import torch

from metaicl.core.io import atomic_dir, read_json, write_json
from metaicl.models.lm import LMConfig, lm_config

META_FILE = "regression.json"


class RegressionTransformer(torch.nn.Module):
    def __init__(self, backbone_config, n_dims: int):
        from transformers import AutoModel

        super().__init__()
        self.n_dims = n_dims
        width = backbone_config.hidden_size
        self.read_in = torch.nn.Linear(n_dims, width)
        self.backbone = AutoModel.from_config(backbone_config)
        self.read_out = torch.nn.Linear(width, 1)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        b, p, d = xs.shape
        wide = torch.cat([ys.unsqueeze(-1), xs.new_zeros(b, p, d - 1)], dim=-1)
        seq = torch.stack([xs, wide], dim=2).reshape(b, 2 * p, d)  # x_1, y_1, x_2, y_2, ...
        hidden = self.backbone(inputs_embeds=self.read_in(seq)).last_hidden_state
        return self.read_out(hidden[:, 0::2]).squeeze(-1)


def build_regressor(cfg: LMConfig, n_dims: int, n_points: int) -> RegressionTransformer:
    """A fresh model for prompts of up to n_points pairs in R^n_dims (2 n_points positions)."""
    from metaicl.core.errors import ConfigError

    if 2 * n_points > cfg.context_length:
        raise ConfigError("lm.context_length", f"{cfg.context_length} positions < 2 x {n_points} (x, y) pairs")
    return RegressionTransformer(lm_config(cfg, vocab_size=1), n_dims)


def save_regressor(model, path: str | Path) -> Path:
    """config.json + regression.json + model.safetensors, atomically."""
    from safetensors.torch import save_file

    model = getattr(model, "module", model)
    with atomic_dir(path) as tmp:
        model.backbone.config.save_pretrained(str(tmp))
        write_json(tmp / META_FILE, {"n_dims": model.n_dims})
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    return Path(path)


def is_regressor(path: str | Path) -> bool:
    return (Path(path) / META_FILE).exists()


def load_regressor(path: str | Path) -> RegressionTransformer:
    """The saved model, weights only (safetensors: no code runs on load)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    path = Path(path)
    model = RegressionTransformer(AutoConfig.from_pretrained(str(path)), read_json(path / META_FILE)["n_dims"])
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model


def regression_loss(model, batch, underdetermined_weight: float = 1.0) -> torch.Tensor:
    """Squared error of every prefix's prediction, divided by d (Garg et al.'s objective, on their scale: 1 for
    predicting 0 on a linear function with w ~ N(0, I)). `underdetermined_weight` (train.underdetermined_weight)
    weights the predictions from k < d examples, d = the coordinates in use (a dimension curriculum zeroes the rest),
    the weights rescaled to mean 1."""
    xs, ys = batch
    err = (model(xs, ys) - ys).pow(2)
    if underdetermined_weight != 1.0:
        used = int((xs != 0).any(dim=1).any(dim=0).sum())
        weight = torch.ones(xs.shape[1], device=xs.device)
        weight[:used] = underdetermined_weight
        err = err * (weight / weight.mean())
    return err.mean() / xs.shape[-1]
