"""In-context learning against fine-tuning on the same demonstrations, inside a causal language model (Dai et al.
2023, "Why Can GPT Learn In-Context? Language Models Implicitly Perform Gradient Descent as Meta-Optimizers", Sec. 4).

    rows = icl_vs_ft_rows(model, tuned, task, demos, cfg, episodes, tok, "cpu")

For each test query the model reads the query alone (ZSL), the demonstrations then the query (ICL), and the copy
fine-tuned on the demonstrations (MetaICL's Fine-tune baseline) reads the query alone (FT). At the answer slot (the
query's last token), in every layer:
- `simaou`: cosine between ICL's update and FT's update of the attention output (h_ICL - h_ZSL and h_FT - h_ZSL),
  mean over layers and queries; `simaou_random`: the same cosine with a random update (a Gaussian vector), the
  control Dai et al. compare with (near 0);
- `simam_ft`: cosine between ICL's attention weights over the query's own tokens (renormalised over them) and FT's,
  mean over heads, layers and queries; `simam_zsl`: ICL against ZSL's, the control (fine-tuning moves attention
  towards ICL's if simam_ft > simam_zsl).
Direct prompts (the answer follows the query), as Dai et al.
"""
from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import torch

from metaicl.core.seeding import rng_for
from metaicl.data.episodes import score_request


def attention_modules(model) -> list[torch.nn.Module]:
    """Each block's self-attention (GPT-2's `attn`, Llama's `self_attn`), in depth order."""
    return [m for m in model.modules() if type(m).__name__.endswith("Attention")]


@contextlib.contextmanager
def eager_attention(model):
    """The model with `transformers`' eager attention for the duration (sdpa does not return attention weights)."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        model.set_attn_implementation(before)


@torch.no_grad()
def answer_slot(model, ids: list[int], query_tokens: int, device) -> tuple[np.ndarray, np.ndarray]:
    """At the last position: every layer's attention output (layers, width) and its attention weights over the last
    `query_tokens` positions, renormalised (layers, heads, query_tokens)."""
    outputs = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out[0][0, -1].float().cpu()))
             for m in attention_modules(model)]
    try:
        with eager_attention(model):
            result = model(input_ids=torch.tensor([ids], device=device), output_attentions=True)
    finally:
        for h in hooks:
            h.remove()
    weights = torch.stack([a[0, :, -1, -query_tokens:].float().cpu() for a in result.attentions])
    weights = weights / weights.sum(-1, keepdim=True).clamp(min=1e-12)
    return torch.stack(outputs).numpy(), weights.numpy()


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of matching rows (last axis)."""
    norm = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return (a * b).sum(-1) / np.maximum(norm, 1e-12)


def icl_vs_ft_rows(model, tuned, task, demos, cfg, episodes, tok, device, k: int, seed: int) -> list[dict]:
    """The four similarities of one (task, k, seed), means over the scored test queries (eval.max_test_examples)."""
    from metaicl.eval.evaluate import scored_queries

    ep = dataclasses.replace(episodes, method="direct")
    rng = rng_for(seed, "simaou", task.name, k)
    sims = {"simaou": [], "simaou_random": [], "simam_ft": [], "simam_zsl": []}
    for ex in scored_queries(task, cfg):
        icl, zsl = score_request(demos, ex.input, task.options, ep, tok), score_request([], ex.input,
                                                                                        task.options, ep, tok)
        condition = icl.rows[0][0]  # the query's input + separator: the same for every option
        n = len(condition)
        h_icl, a_icl = answer_slot(model, icl.prefix + condition, n, device)
        h_zsl, a_zsl = answer_slot(model, zsl.prefix + zsl.rows[0][0], n, device)
        h_ft, a_ft = answer_slot(tuned, zsl.prefix + zsl.rows[0][0], n, device)
        icl_update = h_icl - h_zsl
        sims["simaou"].append(cosine_rows(icl_update, h_ft - h_zsl).mean())
        sims["simaou_random"].append(cosine_rows(icl_update, rng.standard_normal(icl_update.shape)).mean())
        sims["simam_ft"].append(cosine_rows(a_icl, a_ft).mean())
        sims["simam_zsl"].append(cosine_rows(a_icl, a_zsl).mean())
    return [{"method": "finetune", "task": task.name, "k": k, "seed": seed, "metric": metric,
             "value": float(np.mean(values))} for metric, values in sims.items()]
