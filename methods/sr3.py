"""SR3 adapter: a checkpoint folder written by train_sr3 behind `upscale`.

`steps` is the number of respaced ancestral (DDPM) steps; None takes the checkpoint's default
(params.yaml `sr3.steps`). SR3 has no public natural-image weights, so only trained miniatures load.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from yonos.baselines.sr3 import SR3Pipeline
from yonos.errors import UserError


class SR3:
    name: ClassVar[str] = "sr3"
    is_diffusion: ClassVar[bool] = True

    def __init__(self, checkpoint: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.checkpoint = str(checkpoint)
        self.pipe = SR3Pipeline.from_pretrained(checkpoint, device=device, dtype=dtype)
        self.scales = (self.pipe.scale,)

    def upscale(self, lr, *, scale: int, steps: int | None = None, generator=None):
        if scale != self.pipe.scale:
            raise UserError(f"{self.checkpoint}: a x{self.pipe.scale} model, asked for x{scale}; "
                            f"use a x{scale} checkpoint or --scale {self.pipe.scale}")
        return self.pipe.upscale_batch(lr, steps=steps, generator=generator)

    def describe(self) -> dict:
        return {"checkpoint": self.checkpoint, **self.pipe.describe()}
