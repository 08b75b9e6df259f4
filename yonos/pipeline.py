"""YonosPipeline: LR image -> SR image in `steps` DDIM steps (one by default).

    pipe = YonosPipeline.from_pretrained("runs/embedded/student_x4_decoder")
    sr = pipe.upscale(Image.open("lr.png"))              # PIL in, PIL out, exactly 4x the size

Checkpoint layout (diffusers-style, safetensors + JSON only; nothing is pickled):
    yonos_config.json   scale, format version          unet/   UNet2DConditionModel
    vae/                AutoencoderKL                    scheduler/  DDIMScheduler config
    null_text_embedding.safetensors                      the fixed cross-attention context
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from PIL import Image
from safetensors.torch import load_file, save_file

from yonos.errors import UserError
from yonos.io import to_tensor, to_uint8, write_json
from yonos.models import LatentCodec, build_autoencoder, build_unet, null_text_embedding, unet_multiple, vae_factor
from yonos.resize import bicubic_up
from yonos.sampler import make_scheduler, per_image_generators, sample
from yonos.tiling import Tiling, needs_tiling, tiled_upscale_batch

FORMAT = 1
CONFIG_NAME = "yonos_config.json"
NULL_NAME = "null_text_embedding.safetensors"


def checkpoint_info(path: str | Path) -> dict:
    """Check a checkpoint folder without loading weights; return its config plus the scheduler's
    `num_train_timesteps` (the most DDIM steps it can take). One-line UserError naming the folder."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such checkpoint folder; pass a folder written by a training stage, "
                        f"e.g. runs/embedded/finetune_decoder/checkpoint")
    cfg_file = path / CONFIG_NAME
    if not cfg_file.is_file():
        raise UserError(f"{path}: not a YONOS checkpoint ({CONFIG_NAME} missing); pass a folder written by a "
                        f"training stage, e.g. runs/embedded/finetune_decoder/checkpoint")
    try:
        cfg = json.loads(cfg_file.read_text())
        sched = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable checkpoint ({type(exc).__name__}); re-export it") from None
    if cfg.get("format") != FORMAT:
        raise UserError(f"{cfg_file}: checkpoint format {cfg.get('format')} is not {FORMAT}; re-export it")
    missing = [d for d in ("unet", "vae") if not (path / d).is_dir()]
    if missing or not (path / NULL_NAME).is_file():
        raise UserError(f"{path}: incomplete checkpoint (missing {', '.join(missing) or NULL_NAME}); re-export it")
    return {**cfg, "num_train_timesteps": int(sched.get("num_train_timesteps", 1000))}


class YonosPipeline:
    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, scheduler: DDIMScheduler,
                 null_emb: torch.Tensor, scale: int):
        self.unet, self.vae, self.scheduler = unet.eval(), vae.eval(), scheduler
        self.codec = LatentCodec(vae)
        self.null_emb = null_emb
        self.scale = int(scale)

    @classmethod
    def from_params(cls, cfg: dict, scale: int, *, seed: int = 0, vae: AutoencoderKL | None = None) -> YonosPipeline:
        """A freshly initialised pipeline of a profile's architecture (embedded/smoke params)."""
        torch.manual_seed(seed)
        unet = build_unet(cfg["model"]["unet"])
        vae = vae if vae is not None else build_autoencoder(cfg["autoencoder"])
        null_emb = null_text_embedding(unet, cfg["model"].get("null_text_tokens", 1))
        return cls(unet, vae, make_scheduler(cfg["model"]), null_emb, scale)

    # --- persistence ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> YonosPipeline:
        path = Path(path)
        cfg = checkpoint_info(path)
        unet = UNet2DConditionModel.from_pretrained(path / "unet", torch_dtype=dtype, use_safetensors=True)
        vae = AutoencoderKL.from_pretrained(path / "vae", torch_dtype=dtype, use_safetensors=True)
        scheduler = DDIMScheduler.from_pretrained(path / "scheduler")
        null_emb = load_file(path / NULL_NAME)["null_text_embedding"]
        return cls(unet, vae, scheduler, null_emb, cfg["scale"]).to(device)

    def save_pretrained(self, path: str | Path, **extra_config) -> None:
        """Write the whole folder beside `path`, then rename it into place (never half-written)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.unet.save_pretrained(tmp / "unet", safe_serialization=True)
        self.vae.save_pretrained(tmp / "vae", safe_serialization=True)
        self.scheduler.save_pretrained(tmp / "scheduler")
        save_file({"null_text_embedding": self.null_emb.detach().cpu().contiguous()}, tmp / NULL_NAME)
        write_json(tmp / CONFIG_NAME, {"format": FORMAT, "scale": self.scale, **extra_config})
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)

    def to(self, device) -> YonosPipeline:
        self.unet.to(device)
        self.vae.to(device)
        self.null_emb = self.null_emb.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.unet.device

    # --- the method -------------------------------------------------------------------------
    @property
    def lr_multiple(self) -> int:
        """LR sizes are padded to this so scale * size is divisible by the latent grid's multiple."""
        m = vae_factor(self.vae) * unet_multiple(self.unet)
        return m // math.gcd(m, self.scale)

    @torch.no_grad()
    def encode_condition(self, lr: torch.Tensor) -> torch.Tensor:
        """z_l = E(up(x_l)): bicubic to the HR grid, then the encoder's posterior mode."""
        return self.codec.encode(bicubic_up(lr, self.scale))

    @torch.no_grad()
    def upscale_latents(self, lr: torch.Tensor, *, steps: int = 1,
                        generator: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """z-hat_0 for a batch of LR images whose size is already a multiple of `lr_multiple`."""
        lr = lr.to(self.device, torch.float32)
        generator = generator if generator is not None else per_image_generators([0] * lr.shape[0])
        z_l = self.encode_condition(lr)
        return sample(self.unet, self.scheduler, z_l, self.null_emb, steps=steps, generators=generator)

    @torch.no_grad()
    def upscale_batch(self, lr: torch.Tensor, *, steps: int = 1,
                      generator: Sequence[torch.Generator] | None = None,
                      return_latents: bool = False, tiling: Tiling | str | None = "auto"):
        """NCHW float [0, 1] LR -> NCHW float [0, 1] SR of exactly scale x the size (pad, then crop).

        tiling: "auto" (default) runs in tiles (`yonos.tiling`, Gaussian-blended latent tiles plus VAE
        tiling, memory bounded by the tile) when the output latent exceeds one U-Net tile on a side
        (128 latent pixels: a 512 px output with the embedded f=4 autoencoder); a `Tiling` always tiles
        with those knobs; None never tiles."""
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise ValueError(f"expected N x 3 x H x W, got {tuple(lr.shape)}")
        if not 1 <= steps <= self.scheduler.config.num_train_timesteps:
            raise UserError(f"steps={steps}: must be between 1 and {self.scheduler.config.num_train_timesteps}")
        if tiling == "auto":
            tiling = Tiling() if needs_tiling(self, tuple(lr.shape[-2:])) else None
        if tiling is not None:
            return tiled_upscale_batch(self, lr, steps=steps, generator=generator,
                                       tiling=tiling.validate(unet_multiple(self.unet)),
                                       return_latents=return_latents)
        h, w = lr.shape[-2:]
        m = self.lr_multiple
        ph, pw = (-h) % m, (-w) % m
        # Replicate, not reflect: reflect fails when the pad is larger than a tiny image.
        padded = F.pad(lr, (0, pw, 0, ph), mode="replicate") if (ph or pw) else lr
        z0 = self.upscale_latents(padded, steps=steps, generator=generator)
        sr = self.codec.decode(z0)[..., : h * self.scale, : w * self.scale].clamp(0, 1)
        return (sr, z0) if return_latents else sr

    def upscale(self, image, *, steps: int = 1, seed: int = 0):
        """One image -> scale x larger. A path or PIL image gives a PIL image; a numpy array gives an
        HxWx3 uint8 array; a 3xHxW tensor gives a float tensor in [0, 1]. Input rules: `yonos.io.to_tensor`
        (range from the dtype or bit depth, EXIF orientation, alpha onto black); others are refused."""
        x = to_tensor(image)
        sr = self.upscale_batch(x[None], steps=steps, generator=per_image_generators([seed]))[0].cpu()
        if isinstance(image, (Image.Image, str, PathLike)):
            return Image.fromarray(to_uint8(sr))
        if isinstance(image, np.ndarray):
            return to_uint8(sr)
        return sr
