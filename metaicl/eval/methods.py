"""The methods of MetaICL's main table (Min et al. 2022, Table 3), as rows of one results table.

    METHODS["channel_metaicl"]   # Method(row="Channel MetaICL", model="channel_metaicl", method="channel", ...)
    variants_needed(["metaicl", "zero_shot"])   # {"pretrained", "metaicl"}: the models the methods score with

A method = which model scores (the pretrained LM, or one of the meta-trained variants), how (direct or noisy channel,
optionally PMI-calibrated), and with what context (k demonstrations, or none: the 0-shot rows, and fine-tuning on
the k examples then scoring 0-shot).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    row: str
    """Name in the paper's table."""
    model: str
    """Scoring model: `pretrained`, or the meta-trained variant of the same name."""
    method: str = "direct"
    """direct: argmax P(option | context, input); channel: argmax P(input | context, option)."""
    demos: bool = True
    """k demonstrations in the context (False: 0-shot)."""
    pmi: bool = False
    """Calibrate with a null input: score - score(null input) (Holtzman et al. 2021; Zhao et al. 2021)."""
    finetune: bool = False
    """Fine-tune the model on the k examples first, then score 0-shot."""


METHODS = {
    "zero_shot": Method("0-shot", "pretrained", demos=False),
    "pmi_zero_shot": Method("PMI 0-shot", "pretrained", demos=False, pmi=True),
    "channel_zero_shot": Method("Channel 0-shot", "pretrained", "channel", demos=False),
    "in_context": Method("In-context", "pretrained"),
    "pmi_in_context": Method("PMI In-context", "pretrained", pmi=True),
    "channel_in_context": Method("Channel In-context", "pretrained", "channel"),
    "multitask_zero_shot": Method("Multi-task 0-shot", "multitask_zero_shot", demos=False),
    "metaicl": Method("MetaICL", "metaicl"),
    "channel_metaicl": Method("Channel MetaICL", "channel_metaicl", "channel"),
    "finetune": Method("Fine-tune", "pretrained", demos=False, finetune=True),
    "finetune_metatrain": Method("Fine-tune w/ meta-train", "multitask_zero_shot", demos=False, finetune=True),
}

META_VARIANTS = {"metaicl": ("direct", True), "channel_metaicl": ("channel", True),
                 "multitask_zero_shot": ("direct", False)}
"""Meta-trained models: variant -> (episode method, with demonstrations). Multi-task 0-shot trains on the same
tasks without demonstrations (k = 0)."""


def variants_needed(methods: list[str]) -> list[str]:
    """The models `methods` score with, pretrained first, meta-trained variants in table order."""
    wanted = {METHODS[m].model for m in methods}
    return [v for v in ("pretrained", *META_VARIANTS) if v in wanted]
