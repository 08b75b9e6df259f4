"""StableSR adapter: a StableSR checkpoint folder (trained miniature or converted release) behind `upscale`.

`steps` is the number of respaced DDPM steps (StableSR's benchmark setting is 200). Every other knob
that changes pixels (CFW weight, colour fix, tiling) is stored in the checkpoint's config, may be
overridden here, and is reported by describe().
"""

from __future__ import annotations

from typing import ClassVar

import torch

from yonos.baselines.stablesr import StableSRPipeline


class StableSR:
    name: ClassVar[str] = "stablesr"
    is_diffusion: ClassVar[bool] = True

    def __init__(self, checkpoint: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 **options):
        self.checkpoint = str(checkpoint)
        self.pipe = StableSRPipeline.from_pretrained(checkpoint, device=device, dtype=dtype)
        self.pipe.set_options(**options)
        self.scales = (self.pipe.scale,)

    def upscale(self, lr, *, scale: int, steps: int = 200, generator=None):
        if scale != self.pipe.scale:
            raise ValueError(f"{self.checkpoint} is a x{self.pipe.scale} model, asked for x{scale}")
        return self.pipe.upscale_batch(lr, steps=steps, generator=generator)

    def describe(self) -> dict:
        return {"checkpoint": self.checkpoint, **self.pipe.describe()}
