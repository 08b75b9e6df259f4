"""Resizing used everywhere in the project: MATLAB-compatible bicubic `imresize`.

We use pyiqa's port of MATLAB's imresize (cubic kernel a = -0.5, antialiased when downscaling,
symmetric boundary) rather than `F.interpolate(mode="bicubic")`, whose kernel is a = -0.75 and
whose antialias differs; the classic SR tables (Set5 28.42 dB bicubic x4) are made with MATLAB's.
"""

from __future__ import annotations

import torch
from pyiqa.matlab_utils import imresize as _pyiqa_imresize


def imresize(x: torch.Tensor, scale: float | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
    """MATLAB `imresize(x, scale)` / `imresize(x, [h, w])`, bicubic, antialiased. x: (N)CHW float."""
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale or size")
    x = x.contiguous()  # pyiqa's port reshapes with .view: a channels-last tensor (Real-ESRGAN's LR) would fail
    if size is not None:
        return _pyiqa_imresize(x, sizes=tuple(int(s) for s in size))
    return _pyiqa_imresize(x, scale=float(scale))


def bicubic_up(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """up(x_l) of the paper: the LR image brought back to the HR grid (unclamped, as the encoder sees it)."""
    h, w = lr.shape[-2:]
    return imresize(lr, size=(h * scale, w * scale))


def bicubic_down(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Antialiased MATLAB bicubic downscale by an integer factor (HR size must be divisible)."""
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not divisible by scale {scale}")
    return imresize(hr, size=(h // scale, w // scale))
