"""Pictures <-> the [-1, 1] tensors VAEs read and write: one conversion for engine, trainer and judge."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image


def to_model_range(batch_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (any shape) -> float32 in [-1, 1]."""
    return batch_uint8.float() / 127.5 - 1.0


def from_pil(images: Sequence[Image.Image]) -> torch.Tensor:
    """Same-sized pictures -> (N, 3, H, W) float32 in [-1, 1]."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
    return to_model_range(torch.from_numpy(arr).permute(0, 3, 1, 2))


def to_pil(batch: torch.Tensor) -> list[Image.Image]:
    """(N, 3, H, W) in [-1, 1] -> RGB pictures (values outside the range are clipped)."""
    arr = ((batch.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]
