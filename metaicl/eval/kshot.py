"""k-shot curves of a language model on GINC prompts, with the Bayes-optimal reader's ceiling (issue 14).

    rows = kshot_rows(model, ginc_cfg, offset=513, length=64)     # rows {task, k, metric, value}
    rows = mixture_kshot_rows(model, manifest)                    # every GINC source of the model's mixture

A mixture with a GINC source (Xie et al. 2022, "An Explanation of In-context Learning as Implicit Bayesian
Inference") lets a model pretrained on it be asked the GINC question: given k examples `x_1 y_1 / … / x_k y_k / x`
of one concept, is the next token y? Prompts come from `pretrain_data.ginc.few_shot_prompts` in the source's ids
(shifted by its vocabulary offset, after a document boundary, as in the stream), at every k of (0, 1, 2, 4, 8, …)
whose prompt fits the context. For each k:

- `accuracy`: the option (one of the source's symbols, the delimiter included: an example may end on it) with
  the highest probability is y.
- `accuracy_calibrated`: the same after dividing each option's probability by its mean over the k's prompts
  (batch calibration, Zhou et al. 2024, "Batch Calibration": the contextual prior over the options that PMI's null
  prompt estimates, Zhao et al. 2021 / Holtzman et al. 2021, taken from the prompts themselves).
- `bayes_accuracy`: the Bayes-optimal reader's accuracy on the same prompts (pretrain_data/ginc_bayes.py: the true
  HMMs, the concept and start property marginalised) — the ceiling of in-context inference at that k.
- `label_mass`: the model's total probability on the options at the answer slot (low = it does not know an answer
  comes next), and `context_label_share`: the share of that mass on options that occur in the prompt (the
  "answer-vocabulary prior" / copying plateau: mass on what the context shows, whether or not it is y).

and per curve (k null) the least-squares slope of `accuracy`, `accuracy_calibrated` and `bayes_accuracy` against
log2(k + 1) (`*_slope`): how much each doubling of the examples helps.
"""
from __future__ import annotations

import numpy as np

from metaicl.core.seeding import rng_for

KS = (0, 1, 2, 4, 8, 16, 32)
"""The k of a curve, up to what the context holds."""
EXAMPLE_LENGTH = 3
"""Tokens per example, y included (GINC's prompts use 3 to 10; 3 keeps k = 8 inside 64 tokens)."""
PROMPTS = 256
"""Prompts per k (the Bayes accuracy's standard error is then <= 0.03)."""


def fitting_ks(length: int, example_length: int = EXAMPLE_LENGTH) -> list[int]:
    """The k whose prompt ([bos] + (k + 1) examples of example_length + 1 tokens, less the answer and its
    delimiter) fits a context of `length` tokens."""
    return [k for k in KS if 1 + (k + 1) * (example_length + 1) - 2 <= length]


def slope(ks, values) -> float:
    """Least-squares slope of values against log2(k + 1)."""
    x = np.log2(np.asarray(ks, float) + 1)
    return float(np.polyfit(x, np.asarray(values, float), 1)[0]) if len(x) >= 2 else float("nan")


def kshot_rows(model, ginc_cfg, offset: int, length: int, name: str = "ginc", prompts: int = PROMPTS,
               example_length: int = EXAMPLE_LENGTH, seed: int = 0, bos: int = 0) -> list[dict]:
    """The curve's rows (task `kshot/<name>`) for a model whose vocabulary holds the source at `offset`."""
    import torch

    from metaicl.eval.lm_icl import device_of
    from pretrain_data.ginc import few_shot_prompts, vocab_size
    from pretrain_data.ginc_bayes import bayes_answer

    task, options = f"kshot/{name}", vocab_size(ginc_cfg)
    rows, curve = [], {"accuracy": [], "accuracy_calibrated": [], "bayes_accuracy": []}
    ks = fitting_ks(length, example_length)
    for k in ks:
        p = few_shot_prompts(ginc_cfg, rng_for(seed, "kshot", name, k), prompts, k, example_length)
        tokens, answer = p["tokens"].astype(np.int64), p["answer"]
        ids = torch.from_numpy(np.concatenate([np.full((prompts, 1), bos), tokens + offset], axis=1))
        with torch.no_grad():
            logits = model(input_ids=ids.to(device_of(model))).logits[:, -1].float()
        probs = torch.softmax(logits, -1)[:, offset : offset + options].cpu().numpy().astype(np.float64)
        mass = probs.sum(1)
        seen = np.zeros_like(probs, bool)
        np.put_along_axis(seen, tokens, True, axis=1)
        calibrated = probs / probs.mean(0, keepdims=True)
        bayes, _, _ = bayes_answer(ginc_cfg, p["tokens"], k, example_length)
        values = {"accuracy": (probs.argmax(1) == answer).mean(),
                  "accuracy_calibrated": (calibrated.argmax(1) == answer).mean(),
                  "bayes_accuracy": (bayes == answer).mean(),
                  "label_mass": mass.mean(),
                  "context_label_share": ((probs * seen).sum(1) / np.maximum(mass, 1e-30)).mean()}
        for metric, value in values.items():
            rows.append({"task": task, "k": k, "metric": metric, "value": float(value)})
            if metric in curve:
                curve[metric].append(value)
    rows += [{"task": task, "k": None, "metric": f"{metric}_slope", "value": slope(ks, values)}
             for metric, values in curve.items()]
    return rows


def ginc_sources(manifest) -> list[tuple[str, object, int]]:
    """(name, GINCConfig, vocabulary offset) of each GINC source of a token mixture's manifest."""
    from pretrain_data.ginc import GINCConfig

    return [(name, GINCConfig(**manifest.config["sources"][name].get("ginc", {})), source["offset"])
            for name, source in manifest.sources.items() if source["kind"] == "ginc"]


def mixture_kshot_rows(model, manifest, length: int) -> list[dict]:
    """kshot_rows for every GINC source of the mixture the model was pretrained on (none: no rows)."""
    return [row for name, ginc_cfg, offset in ginc_sources(manifest)
            for row in kshot_rows(model, ginc_cfg, offset, length, name)]
