"""Deterministic interleaving of sources by weight: a blended index in the manner of Megatron-LM / OLMo.

    blended_index([0.7, 0.3], 10)  ->  [0 1 0 0 1 0 0 1 0 0]

Position i goes to the source whose count lags its share the most, so every prefix of the stream holds each
source's declared proportion within one item (tests/test_transforms.py checks all prefixes).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def blended_index(weights: Sequence[float], n: int) -> np.ndarray:
    w = np.asarray(weights, np.float64)
    if len(w) == 0 or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {list(weights)}")
    w = w / w.sum()
    counts = np.zeros(len(w))
    out = np.empty(n, np.int32)
    for i in range(n):
        k = int(np.argmax(w * (i + 1) - counts))  # ties go to the lower index: deterministic
        out[i] = k
        counts[k] += 1
    return out
