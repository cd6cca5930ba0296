"""Task metrics and their summary over seeds, as MetaICL reports them.

    accuracy([0, 1, 1], [0, 1, 0])                  # 0.667
    macro_f1([0, 1, 1], [0, 1, 0], labels=[0, 1])    # (2/3 + 2/3) / 2 = 0.667
    summarize([0.61, 0.55, 0.58])                    # (0.58, 0.55): mean and worst over seeds

Min et al. (2022, Sec. 4.2) report Macro-F1 on classification tasks and accuracy on the others, averaged over
5 seeds of demonstration sampling, and also the worst seed, since ICL varies a lot with the demonstrations
chosen (Zhao et al. 2021).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from metaicl.core.errors import ConfigError


def accuracy(pred: Sequence, gold: Sequence) -> float:
    """Fraction of examples whose predicted option is the gold one."""
    pred, gold = _paired(pred, gold)
    return float(np.mean(pred == gold))


def macro_f1(pred: Sequence, gold: Sequence, labels: Sequence) -> float:
    """Mean over the task's labels of per-class F1 = 2 TP / (2 TP + FP + FN). A class that is neither predicted nor
    gold has no F1 and is left out; one never predicted but gold scores 0 (precision undefined, recall 0)."""
    pred, gold = _paired(pred, gold)
    f1s = []
    for label in labels:
        tp = int(np.sum((pred == label) & (gold == label)))
        fp = int(np.sum((pred == label) & (gold != label)))
        fn = int(np.sum((pred != label) & (gold == label)))
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    if not f1s:
        raise ConfigError("labels", f"none of the labels {list(labels)} is predicted or gold")
    return float(np.mean(f1s))


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """(mean, worst) over seeds: MetaICL's average and worst-case performance."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ConfigError("seeds", "no values to summarize")
    return float(values.mean()), float(values.min())


def _paired(pred: Sequence, gold: Sequence) -> tuple[np.ndarray, np.ndarray]:
    pred, gold = np.asarray(pred), np.asarray(gold)
    if pred.shape != gold.shape or pred.ndim != 1 or pred.size == 0:
        raise ConfigError("predictions", f"need equal, non-empty 1-D predictions and gold labels, got shapes "
                                         f"{pred.shape} and {gold.shape}")
    return pred, gold
