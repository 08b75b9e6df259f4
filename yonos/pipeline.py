"""YonosPipeline: LR image -> SR image in `steps` DDIM steps (one by default).

    pipe = YonosPipeline.from_pretrained("runs/embedded/finetune_decoder/checkpoint")
    sr = pipe.upscale(Image.open("lr.png"))              # PIL in, PIL out, exactly 4x the size

Checkpoint layout (diffusers-style, safetensors + JSON only; nothing is pickled):
    yonos_config.json   scale, format version          unet/   UNet2DConditionModel
    vae/                AutoencoderKL                    scheduler/  DDIMScheduler config
    null_text_embedding.safetensors                      the fixed cross-attention context
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from PIL import Image
from safetensors.torch import load_file, save_file

from yonos.checkpoint import read_folder_config
from yonos.errors import UserError
from yonos.fastpath import FastPath
from yonos.io import atomic_folder, to_tensor, to_uint8, write_json
from yonos.models import (
    LatentCodec,
    build_autoencoder,
    build_unet,
    lr_multiple,
    null_text_embedding,
    unet_multiple,
)
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
    cfg = read_folder_config(path, CONFIG_NAME, FORMAT, what="a YONOS checkpoint",
                             fix="pass a folder written by a training stage, e.g. "
                                 "runs/embedded/finetune_decoder/checkpoint")
    try:
        sched = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable checkpoint ({type(exc).__name__}); re-export it") from None
    missing = [d for d in ("unet", "vae") if not (path / d).is_dir()]
    if missing or not (path / NULL_NAME).is_file():
        raise UserError(f"{path}: incomplete checkpoint (missing {', '.join(missing) or NULL_NAME}); re-export it")
    try:
        vae_cfg = json.loads((path / "vae" / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable vae/config.json ({type(exc).__name__}); re-export it") from None
    return {**cfg, "num_train_timesteps": int(sched.get("num_train_timesteps", 1000)),
            "memory": MemorySpec.from_vae_config(vae_cfg, cfg["scale"])}


# --- memory guard ------------------------------------------------------------------------------
# An untiled upscale's peak memory is set by the autoencoder at full output resolution, where every
# activation has `vae_width` channels: the widest of block_out_channels[:2] (the decoder's last
# upsampler brings block 1's width up to full resolution; the encoder's first block is block 0). The
# U-Net runs on f^2 times fewer pixels and stayed below the VAE in every measurement. So
#     peak ~= UNTILED_FLOATS * bytes_per_element * batch * H_out * W_out * vae_width.
# Calibrated on CPU (float32, one image, peak RSS above the loaded model; MALLOC_MMAP_THRESHOLD_ fixed so
# freed blocks go back to the OS): the smoke autoencoder ([16, 32], width 32) at 128 and 256 px inputs,
# 3.6 floats per output pixel and channel; the embedded one ([32, 64, 64], width 64) gave the same 3.6
# between 64, 128 and 192 px. Rounded up for margin. A 1920x1080 input to the embedded x4 model: ~34 GB
# untiled by this estimate (30 GB by the measured slope); tiled (the default above one tile) ~1.1 GB.
UNTILED_FLOATS = 4.0
# Tiled (`yonos.tiling`): one tile's untiled peak plus float32 buffers that grow with the whole image:
# image-sized (up(x_l), decoded tiles, output) and latent-sized (z_t, z_l, blend sums), so per output pixel
#     TILED_IMAGE_BYTES + TILED_LATENT_BYTES / f^2.
# Measured slopes between 256 and 512 px inputs, default Tiling(): 52.8 B/px (smoke, f=2) and 23.9 B/px
# (embedded, f=4), i.e. about 14 + 154 / f^2; rounded up. The tile terms measured 6 and 224 MiB, under
# the untiled estimate of one tile (32 and 256 MiB). Every measured peak lies 10-16% under its estimate.
TILED_IMAGE_BYTES = 16.0
TILED_LATENT_BYTES = 160.0


@dataclass(frozen=True)
class MemorySpec:
    """What the memory estimate needs from a checkpoint; readable from its JSON without loading weights."""

    scale: int
    vae_factor: int   # f: output pixels per latent pixel, per side
    vae_width: int    # channels of the widest activation at full output resolution

    @classmethod
    def from_vae_config(cls, vae_config: dict, scale: int) -> MemorySpec:
        widths = list(vae_config["block_out_channels"])
        return cls(int(scale), 2 ** (len(widths) - 1), max(widths[:2]))


def estimate_peak_bytes(spec: MemorySpec, h: int, w: int, *, batch: int = 1, tiling: Tiling | None = None,
                        bytes_per_element: int = 4) -> int:
    """Estimated peak memory (bytes) of upscaling `batch` LR images of h x w, by the formula above."""
    def untiled(out_h: int, out_w: int) -> float:
        return UNTILED_FLOATS * bytes_per_element * batch * out_h * out_w * spec.vae_width

    out_h, out_w = h * spec.scale, w * spec.scale
    if tiling is None:
        return int(untiled(out_h, out_w))
    side = max(tiling.tile, tiling.vae_tile) * spec.vae_factor  # the largest network input, image pixels
    per_pixel = TILED_IMAGE_BYTES + TILED_LATENT_BYTES / spec.vae_factor**2
    return int(untiled(min(out_h, side), min(out_w, side)) + per_pixel * batch * out_h * out_w)


def device_memory_bytes(device: str | torch.device = "cpu") -> int | None:
    """Total memory of `device` (GPU memory for CUDA, physical RAM otherwise); None if unknown."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # not POSIX
        return None


def would_tile(spec: MemorySpec, h: int, w: int, tiling: Tiling = Tiling()) -> bool:
    """yonos.tiling.needs_tiling's rule from a MemorySpec (the CLI decides before loading the model)."""
    return any(math.ceil(s * spec.scale / spec.vae_factor) > tiling.tile for s in (h, w))


def check_size(spec: MemorySpec, h: int, w: int, *, batch: int = 1, tiling: Tiling | None = None,
               max_bytes: int | None = None, device: str | torch.device = "cpu", bytes_per_element: int = 4,
               name: str = "input") -> int:
    """Refuse (one-line UserError) an upscale whose estimated peak exceeds `max_bytes` (default: the
    device's memory), before anything is allocated. Returns the estimate in bytes."""
    need = estimate_peak_bytes(spec, h, w, batch=batch, tiling=tiling, bytes_per_element=bytes_per_element)
    limit = max_bytes if max_bytes is not None else device_memory_bytes(device)
    if limit is not None and need > limit:
        how = "a tiled" if tiling is not None else "an untiled"
        fix = ("use a smaller input or smaller tiles" if tiling is not None else
               "let it tile (tiling='auto', yonos/tiling.py) or use a smaller input")
        raise UserError(f"{name} {w}x{h}: {how} x{spec.scale} upscale needs about {need / 2**30:.1f} GiB "
                        f"(estimate), over the {limit / 2**30:.1f} GiB limit (--max-memory; default: the "
                        f"device's memory); {fix}")
    return need


class YonosPipeline:
    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, scheduler: DDIMScheduler,
                 null_emb: torch.Tensor, scale: int, start: str = "noise"):
        self.unet, self.vae, self.scheduler = unet.eval(), vae.eval(), scheduler
        self.start = start  # where DDIM begins: "noise" or "condition" (yonos/sampler.py)
        self.codec = LatentCodec(vae)
        self.null_emb = null_emb
        self.scale = int(scale)
        self.max_memory: int | None = None  # bytes an upscale may need (check_size); None: the device's memory
        self.fast = FastPath()  # opt-in speed-ups (yonos/fastpath.py); set with set_fast

    def set_fast(self, fast: FastPath) -> YonosPipeline:
        """Use `fast` from now on: NHWC weights and compiled forwards are applied to the networks in place."""
        fast.prepare(self.unet, self.vae.encoder, self.vae.decoder)
        self.fast = fast
        return self

    @classmethod
    def from_params(cls, cfg: dict, scale: int, *, seed: int = 0, vae: AutoencoderKL | None = None) -> YonosPipeline:
        """A freshly initialised pipeline of a profile's architecture (embedded/smoke params)."""
        torch.manual_seed(seed)
        vae = vae if vae is not None else build_autoencoder(cfg["autoencoder"])
        unet = build_unet(cfg["model"]["unet"], latent_channels=vae.config.latent_channels)
        null_emb = null_text_embedding(unet, cfg["model"].get("null_text_tokens", 1))
        return cls(unet, vae, make_scheduler(cfg["model"]), null_emb, scale, cfg["model"].get("start", "noise"))

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
        return cls(unet, vae, scheduler, null_emb, cfg["scale"], cfg.get("start", "noise")).to(device)

    def save_pretrained(self, path: str | Path, **extra_config) -> None:
        """Write the whole folder beside `path`, then rename it into place (never half-written)."""
        with atomic_folder(path) as tmp:
            self.unet.save_pretrained(tmp / "unet", safe_serialization=True)
            self.vae.save_pretrained(tmp / "vae", safe_serialization=True)
            self.scheduler.save_pretrained(tmp / "scheduler")
            save_file({"null_text_embedding": self.null_emb.detach().cpu().contiguous()}, tmp / NULL_NAME)
            write_json(tmp / CONFIG_NAME, {"format": FORMAT, "scale": self.scale, "start": self.start,
                                            **extra_config})

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
        return lr_multiple(self.scale, self.unet, self.vae)

    @property
    def memory_spec(self) -> MemorySpec:
        return MemorySpec.from_vae_config(dict(self.vae.config), self.scale)

    def check_size(self, h: int, w: int, *, batch: int = 1, tiling: Tiling | str | None = "auto") -> int:
        """Refuse, with one line and before allocating, an h x w LR input whose estimated peak memory
        (`estimate_peak_bytes`) exceeds `self.max_memory` (default: the device's memory). "auto" decides
        tiling as upscale_batch does. Returns the estimate in bytes."""
        if tiling == "auto":
            tiling = Tiling() if needs_tiling(self, (h, w)) else None
        return check_size(self.memory_spec, h, w, batch=batch, tiling=tiling, max_bytes=self.max_memory,
                          device=self.device, bytes_per_element=torch.finfo(self.unet.dtype).bits // 8)

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
        return sample(self.unet, self.scheduler, z_l, self.null_emb, steps=steps, generators=generator,
                      start=self.start)

    def upscale_batch(self, lr: torch.Tensor, *, steps: int = 1,
                      generator: Sequence[torch.Generator] | None = None,
                      return_latents: bool = False, tiling: Tiling | str | None = "auto"):
        """NCHW float [0, 1] LR -> NCHW float [0, 1] SR of exactly scale x the size (pad, then crop).

        tiling: "auto" (default) runs in tiles (`yonos.tiling`, Gaussian-blended latent tiles plus VAE
        tiling, memory bounded by the tile) when the output latent exceeds one U-Net tile on a side
        (128 latent pixels: a 512 px output with the embedded f=4 autoencoder); a `Tiling` always tiles
        with those knobs; None never tiles. The networks run under `self.fast` (no_grad by default)."""
        with self.fast.context(self.device):
            return self._upscale_batch(lr, steps=steps, generator=generator, return_latents=return_latents,
                                       tiling=tiling)

    def _upscale_batch(self, lr, *, steps, generator, return_latents, tiling):
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise ValueError(f"expected N x 3 x H x W, got {tuple(lr.shape)}")
        if not 1 <= steps <= self.scheduler.config.num_train_timesteps:
            raise UserError(f"steps={steps}: must be between 1 and {self.scheduler.config.num_train_timesteps}")
        if tiling == "auto":
            tiling = Tiling() if needs_tiling(self, tuple(lr.shape[-2:])) else None
        self.check_size(*lr.shape[-2:], batch=lr.shape[0], tiling=tiling)  # before anything is allocated
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
