"""Bicubic interpolation baseline: MATLAB-compatible `imresize` (a = -0.5), as the classic SR
tables use, through pyiqa's port. Deterministic, so `steps` and `generator` are ignored."""

from __future__ import annotations

from typing import ClassVar

import torch

from yonos.resize import imresize


class Bicubic:
    name: ClassVar[str] = "bicubic"
    is_diffusion: ClassVar[bool] = False

    def __init__(self, scales: tuple[int, ...] = (2, 3, 4, 8)):
        self.scales = tuple(scales)

    def upscale(self, lr: torch.Tensor, *, scale: int, steps: int = 1, generator=None) -> torch.Tensor:
        return imresize(lr, scale=scale).clamp(0, 1)

    def describe(self) -> dict:
        return {"kernel": "matlab-bicubic (a=-0.5)", "clamp": "[0, 1]"}
