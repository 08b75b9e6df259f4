"""LDM-SR adapter: a train_ldmsr checkpoint folder, or the released diffusers folder, behind `upscale`.

    LDMSR(checkpoint="runs/embedded/train_ldmsr/checkpoint")   the miniature (KL f=4 autoencoder)
    LDMSR()   the released CompVis/ldm-super-resolution-4x-openimages folder: $YONOS_LDMSR_DIR, else
              weights/ldm_sr_x4 (`yonos download ldm_sr_x4`), sha256-checked; `sha256={file: hex}` pins
              files without a published hash (or overrides the published ones)
    LDMSR(checkpoint="weights/ldm_sr_x4_stablesr")   StableSR's fine-tuned LDM-SR, converted by
              `python -m yonos.baselines.ldmsr convert` into the released folder layout

`steps` is the number of DDIM steps (default: the checkpoint's, 100); `eta` (default 1, LDM's setting) is
stored in the checkpoint's config, may be overridden here, and is reported by describe().
"""

from __future__ import annotations

from typing import ClassVar

import torch

from yonos.baselines.ldmsr import LDMSRPipeline
from yonos.errors import UserError


class LDMSR:
    name: ClassVar[str] = "ldmsr"
    is_diffusion: ClassVar[bool] = True

    def __init__(self, checkpoint: str | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, sha256: dict[str, str] | None = None, **options):
        if checkpoint is None:
            self.pipe = LDMSRPipeline.from_released(None, device=device, dtype=dtype, sha256=sha256)
        else:
            self.pipe = LDMSRPipeline.from_pretrained(checkpoint, device=device, dtype=dtype, sha256=sha256)
        self.checkpoint = str(checkpoint) if checkpoint is not None else "released"
        self.pipe.set_options(**options)
        self.scales = (self.pipe.scale,)
        self.max_steps = int(self.pipe.scheduler.config.num_train_timesteps)

    def upscale(self, lr, *, scale: int, steps: int | None = None, generator=None):
        if scale != self.pipe.scale:
            raise UserError(f"{self.checkpoint}: an x{self.pipe.scale} LDM-SR model, asked for x{scale}; "
                            f"use --scale {self.pipe.scale}")
        return self.pipe.upscale_batch(lr, steps=steps, generator=generator)

    def describe(self) -> dict:
        return {"checkpoint": self.checkpoint, **self.pipe.describe()}
