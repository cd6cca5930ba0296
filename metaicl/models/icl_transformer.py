"""A small causal transformer that reads x_1 l_1 ... x_N l_N x_q and predicts l_q.

    model = ICLTransformer(ModelConfig(), item_dim=63, num_labels=32, context_pairs=8)
    logits = model(items, labels)      # items (b, N+1, D) float, labels (b, N+1) long -> (b, L)

Fed through `inputs_embeds`, not tokens: items are continuous D-dimensional vectors (Reddy 2023; Chan et al. 2022
embed Omniglot images with a ResNet), so there is no vocabulary to tokenise them into. Items enter through a
linear map, labels through an embedding table, and they are interleaved as 2N+1 positions. The backbone is a stock
`transformers` model built from its config, so the attention, positions and norms are the library's.
"""
from __future__ import annotations

import torch
from torch import nn

from metaicl.models.config import ModelConfig


def backbone_config(cfg: ModelConfig, n_positions: int):
    from transformers import GPT2Config, LlamaConfig

    if cfg.arch == "gpt2":
        return GPT2Config(vocab_size=1, n_positions=n_positions, n_embd=cfg.d_model, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_inner=cfg.mlp_ratio * cfg.d_model, resid_pdrop=cfg.dropout,
                          embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout)
    return LlamaConfig(vocab_size=1, max_position_embeddings=n_positions, hidden_size=cfg.d_model,
                       num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                       num_key_value_heads=cfg.n_head, intermediate_size=cfg.mlp_ratio * cfg.d_model,
                       attention_dropout=cfg.dropout)


class ICLTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig, item_dim: int, num_labels: int, context_pairs: int):
        super().__init__()
        from transformers import AutoModel

        self.context_pairs = context_pairs
        self.item_in = nn.Linear(item_dim, cfg.d_model)
        self.label_in = nn.Embedding(num_labels, cfg.d_model)
        self.backbone = AutoModel.from_config(backbone_config(cfg, 2 * context_pairs + 1))
        # Inputs arrive as embeddings, so the backbone's token table is never used: freeze it, or DDP would wait
        # forever for its gradient.
        self.backbone.get_input_embeddings().requires_grad_(False)
        d, h = cfg.d_model, cfg.readout_hidden
        self.readout = (nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, num_labels)) if h
                        else nn.Linear(d, num_labels))

    def forward(self, items: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n = self.context_pairs
        x = self.item_in(items)                                   # (b, N+1, d)
        pairs = torch.stack([x[:, :n], self.label_in(labels[:, :n])], dim=2).flatten(1, 2)  # (b, 2N, d)
        seq = torch.cat([pairs, x[:, n:]], dim=1)                 # (b, 2N+1, d): x1 l1 ... xN lN xq
        hidden = self.backbone(inputs_embeds=seq).last_hidden_state
        return self.readout(hidden[:, -1])
