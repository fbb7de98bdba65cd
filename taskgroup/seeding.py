"""Seeds and devices: the two things every computation that draws random numbers or places
tensors needs, kept apart from training so that projection and designs do not depend on it."""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def derived_seed(*parts: int | str) -> int:
    """A 63-bit seed derived from integers and strings, stable across runs and platforms."""
    entropy = [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]
    return int(np.random.SeedSequence(entropy).generate_state(2, np.uint64)[0] >> np.uint64(1))


def pick_device() -> torch.device:
    """CUDA when available (respecting CUDA_VISIBLE_DEVICES), else the CPU."""
    import torch  # lazily: the designs use derived_seed without torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
