"""Randomness keyed by content, never by worker count or rank (STYLE principle 7).

    rng = rng_for(seed, "train", shard_index)   # same stream on any worker, in any order
"""
from __future__ import annotations

import hashlib
import random

import numpy as np


def key_int(key: int | str) -> int:
    """A string key becomes a stable 64-bit int (Python's hash() is salted per process, so it cannot be used)."""
    if isinstance(key, (int, np.integer)):
        if key < 0:
            raise ValueError(f"rng keys must be >= 0, got {key}")
        return int(key)
    return int.from_bytes(hashlib.sha256(str(key).encode()).digest()[:8], "little")


def seed_sequence(seed: int, *keys: int | str) -> list[int]:
    return [key_int(seed), *(key_int(k) for k in keys)]


def rng_for(seed: int, *keys: int | str) -> np.random.Generator:
    """A numpy Generator determined by (seed, *keys) alone."""
    return np.random.default_rng(seed_sequence(seed, *keys))


def derived_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit int seed determined by (seed, *keys), e.g. for torch.Generator.manual_seed."""
    return int(np.random.SeedSequence(seed_sequence(seed, *keys)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def seed_all(seed: int) -> None:
    """Seed Python, numpy and torch global generators (model init, dropout)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
