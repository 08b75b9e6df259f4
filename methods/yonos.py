"""YONOS-SR adapter: a trained checkpoint folder behind the common `upscale` contract.

Besides pixels it offers latents (`has_latents`), so the evaluator can report the latent error
against E(HR) and the autoencoder's own reconstruction ceiling without knowing the method's name.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from yonos.errors import UserError
from yonos.fastpath import FastPath
from yonos.models import vae_factor
from yonos.pipeline import YonosPipeline
from yonos.tiling import Tiling


class Yonos:
    name: ClassVar[str] = "yonos"
    is_diffusion: ClassVar[bool] = True
    has_latents: ClassVar[bool] = True

    def __init__(self, checkpoint: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 fast: str | None = None):
        """fast: speed-ups, e.g. "bf16,channels_last" or "auto" (yonos/fastpath.py); default none (fp32)."""
        self.checkpoint = str(checkpoint)
        self.pipe = YonosPipeline.from_pretrained(checkpoint, device=device, dtype=dtype)
        self.pipe.set_fast(FastPath.parse(fast, device))
        self.scales = (self.pipe.scale,)

    def upscale(self, lr, *, scale: int, steps: int = 1, generator=None, return_latents: bool = False):
        if scale != self.pipe.scale:
            raise UserError(f"{self.checkpoint}: a x{self.pipe.scale} model, asked for x{scale}; "
                            f"use a x{scale} checkpoint or --scale {self.pipe.scale}")
        return self.pipe.upscale_batch(lr, steps=steps, generator=generator, return_latents=return_latents)

    @torch.no_grad()
    def encode(self, hr: torch.Tensor) -> torch.Tensor:
        """E(HR): the latent the U-Net is trained to predict (z_h)."""
        return self.pipe.codec.encode(hr.to(self.pipe.device))

    @torch.no_grad()
    def reconstruct(self, hr: torch.Tensor) -> torch.Tensor:
        """D(E(HR)): the best any latent prediction can decode to."""
        return self.pipe.codec.decode(self.encode(hr)).clamp(0, 1)

    def describe(self) -> dict:
        cfg = self.pipe.scheduler.config
        return {"checkpoint": self.checkpoint, "sampler": "DDIM eta=0, trailing spacing",
                "prediction_type": cfg.prediction_type, "encode": "posterior mode",
                "dtype": str(self.pipe.unet.dtype), **self.pipe.fast.describe(), "colour_fix": "none",
                # upscale_batch's default: untiled up to one U-Net tile of output latent, tiled above it
                "tiling": {"when": "output latent larger than one U-Net tile",
                           **Tiling().describe(vae_factor(self.pipe.vae))}}
