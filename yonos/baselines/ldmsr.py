"""LDM-SR (Rombach et al., CVPR 2022), the CompVis x4 "BSR" model, on diffusers blocks.

    z_t = alpha_t z_h + sigma_t eps                    z_h = E(HR), a latent with f = 4
    c   = resize(2 x_l - 1, latent size)                the LR *pixels* in [-1, 1] (no resize when f = scale)
    L   = || eps - eps_theta([z_t, c], t) ||^2          eps-prediction, L2, UNet2DModel (in = C + 3, out = C)
    sample: DDIM (eta = 1 by default) from z_T ~ N(0, I), then x = D(z_0)

Schedule: LDM's "linear" betas, linspace(sqrt(0.0015), sqrt(0.0155), 1000)^2 = diffusers' `scaled_linear`.
Code names: alpha = alpha_t = sqrt(abar_t), sigma = sigma_t, z_h = z_0, c = the concatenated LR condition.

Two codecs behind one sampler:
- the miniature: the profile's KL autoencoder (runs/<profile>/train_autoencoder/vae, an AutoencoderKL, via
  `LatentCodec`: posterior mode, scaled by its scaling_factor). It STANDS IN for LDM's VQ-f4 (VQModel,
  3 latent channels, no latent scaling): training a VQ-f4 does not fit the embedded budget, and the
  embedded autoencoder already has f = 4 (16 channels). With another f (smoke: f = 2) the LR is resized
  to the latent size (MATLAB bicubic), as LDM does when its LR is not at latent resolution.
- the release: a diffusers `LDMSuperResolutionPipeline` folder (CompVis/ldm-super-resolution-4x-openimages:
  model_index.json, unet/, vqvae/, scheduler/), read with its own VQModel (`VQCodec`: encode -> .latents,
  unquantised; decode quantises, as diffusers' pipeline does) and its own scheduler config.

diffusers' pipeline is matched step for step (tests check it at eta = 0): input [latents, image] in that
order, image = the LR tensor in [-1, 1] as is, scale_model_input on the concatenation, `unet(x, t)`,
scheduler.step(eta), decode, clamp to [-1, 1]. It is not called directly because it draws the eta > 0 step
noise from the global RNG (it does not pass `generator` to scheduler.step), so an image's pixels would
depend on its batch; here every draw (z_T and each step's noise) comes from the image's own generator
(`variance_noise`). Its PIL path also resizes the LR down to a multiple of 32 (Lanczos); here the LR is
padded (replicate) to the U-Net's multiple and the output cropped back.

The released weight files are .bin (PyTorch zip): their sha256 is checked against the pins (the registry
entry "ldm_sr_x4", yonos/data/pins/hf_files.tsv, values from BASELINES.md; the fp16 branch's too) before
diffusers reads them, which it does with torch.load(weights_only=True): tensors only, nothing executed.
The small JSON configs have no published hash; they are checked for the expected classes and shapes.

StableSR's fine-tuned LDM-SR (`ldmsr4x_finetune_119.ckpt`, the "LDM" of StableSR's and CCSR's tables; CompVis key
layout) is converted into the same folder layout by `convert_finetune` (`python -m yonos.baselines.ldmsr convert`;
key mapping at the end of this file); the converted folder records the hashes it wrote in conversion.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, LDMSuperResolutionPipeline, UNet2DModel, VQModel
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

from yonos.checkpoint import read_folder_config
from yonos.data.degradations import degrade
from yonos.errors import UserError
from yonos.io import atomic_folder, write_json
from yonos.models import LatentCodec, lr_multiple, vae_factor
from yonos.resize import imresize
from yonos.sampler import per_image_generators, stacked_randn
from yonos.schedule import add_noise, alpha_sigma
from yonos.weights import sha256 as file_sha256

FORMAT = 1
CONFIG_NAME = "ldmsr_config.json"
# Inference knobs stored in the checkpoint config (each changes pixels; describe() reports them).
DEFAULTS = {"steps": 100, "eta": 1.0}  # LDM's SR notebook and the model card: 100 DDIM steps, eta = 1

# --- the released folder ----------------------------------------------------------------------------
RELEASED_ENTRY = "ldm_sr_x4"  # `yonos download ldm_sr_x4` installs it into weights/ldm_sr_x4/
RELEASED_REPO = "CompVis/ldm-super-resolution-4x-openimages"
RELEASED_DIR = Path("weights") / RELEASED_ENTRY
ENV_DIR = "YONOS_LDMSR_DIR"  # overrides RELEASED_DIR
RELEASED_CONFIGS = ("model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "vqvae/config.json")
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")  # first found is read
# The fp16 branch of the same repository (BASELINES.md 2.2, Hub "Git LFS Details"); same file names.
FP16_PINS = {"unet/diffusion_pytorch_model.bin": "25c18026fb493704d09efa42f97ca055be7358696ebc5608380d487903d35d63",
             "vqvae/diffusion_pytorch_model.bin": "44f7514eabac64d28a0c4aec66c878653cc2eb0a0b1056a490ab3b3fa50e4a05"}


# ------------------------------------------------------------------------------------------------
# Schedule, condition, loss


def make_scheduler(lcfg: dict) -> DDIMScheduler:
    """LDM-SR's schedule (scaled-linear beta 0.0015 -> 0.0155 over 1000 steps), eps-prediction, DDIM.

    Spacing [choice]: "trailing" (default) starts every step count at t = T - 1, so 1..4 steps begin from
    noise as the sampler assumes; LDM's own DDIM is "leading" + offset 1 (t = 991 ... 1 for 100 steps), which
    at one step would denoise only t = 1. The released folder keeps its own config (leading, offset 1).
    """
    spacing = lcfg.get("timestep_spacing", "trailing")
    return DDIMScheduler(num_train_timesteps=lcfg["num_train_timesteps"], beta_start=lcfg["beta_start"],
                         beta_end=lcfg["beta_end"], beta_schedule="scaled_linear", prediction_type="epsilon",
                         clip_sample=False, set_alpha_to_one=True, timestep_spacing=spacing,
                         steps_offset=1 if spacing == "leading" else 0)


def lr_condition(lr: torch.Tensor, latent_size: Sequence[int]) -> torch.Tensor:
    """c: LR pixels [0, 1] -> [-1, 1], MATLAB-bicubic resized to the latent grid when not already on it."""
    c = lr * 2 - 1
    return c if tuple(c.shape[-2:]) == tuple(latent_size) else imresize(c, size=tuple(latent_size))


@dataclass
class LDMSRTask:
    """What the LDM-SR loss needs besides the U-Net (all frozen)."""

    codec: LatentCodec  # encodes HR crops when the batch carries no z_h (no latent bank)
    alphas_cumprod: torch.Tensor  # abar_t of LDM-SR's own schedule
    scale: int
    degradation: dict


def ldmsr_loss(unet, batch: dict, *, task: LDMSRTask) -> torch.Tensor:
    """E || eps - eps_theta([z_t, c], t) ||^2 with the example's own t and eps (L2, unweighted)."""
    with torch.no_grad():
        z_h = batch["z_h"] if "z_h" in batch else task.codec.encode(batch["hr"])
        lr = degrade(batch["hr"], [task.scale], [int(s) for s in batch["seed"]], task.degradation)[task.scale]
        c = lr_condition(lr, z_h.shape[-2:])
    t, eps = batch["t"], batch["eps"]
    alpha, sigma = alpha_sigma(task.alphas_cumprod, t)
    z_t = add_noise(z_h.float(), eps, alpha, sigma)
    eps_hat = unet(torch.cat([z_t, c.to(z_t.dtype)], 1), t).sample
    return F.mse_loss(eps_hat.float(), eps.float())


# ------------------------------------------------------------------------------------------------
# Sampler


@torch.no_grad()
def sample(unet: UNet2DModel, scheduler: DDIMScheduler, c: torch.Tensor, *, latent_channels: int, steps: int,
           eta: float, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """DDIM from z_T ~ N(0, I) to z_0 in `steps` steps, conditioned on c (N x 3 x h x w at latent size).

    As diffusers' LDMSuperResolutionPipeline, except that z_T and each step's noise (eta > 0) come from
    the image's own generator, so an image's result does not depend on its batch.
    """
    if len(generators) != c.shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} for {c.shape[0]} images")
    scheduler.set_timesteps(steps, device=c.device)
    shape = (latent_channels, *c.shape[-2:])
    z = stacked_randn(shape, generators, c.device, torch.float32) * scheduler.init_noise_sigma
    c = c.to(unet.dtype)
    for t in scheduler.timesteps:
        x = scheduler.scale_model_input(torch.cat([z.to(unet.dtype), c], 1), t)  # diffusers: [latents, image]
        eps = unet(x, t).sample.float()
        noise = stacked_randn(shape, generators, c.device, torch.float32) if eta > 0 else None
        z = scheduler.step(eps, t, z, eta=eta, variance_noise=noise).prev_sample
    return z


# ------------------------------------------------------------------------------------------------
# Codecs


class VQCodec(torch.nn.Module):
    """LDM's VQ-f4 as diffusers' VQModel: z = E(2x - 1) unquantised (LDM's encode), x = (clamp(D(z)) + 1) / 2
    with D quantising first (VQModel.decode's default, as diffusers' pipeline decodes). No latent scaling."""

    def __init__(self, vae: VQModel):
        super().__init__()
        self.vae = vae

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x.to(self.vae.dtype) * 2 - 1).latents

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (self.vae.decode(z.to(self.vae.dtype)).sample.float().clamp(-1, 1) + 1) / 2


def _codec(vae) -> LatentCodec | VQCodec:
    return VQCodec(vae) if isinstance(vae, VQModel) else LatentCodec(vae)


# ------------------------------------------------------------------------------------------------
# Pipeline: checkpoint folder + upscale


def build_unet(unet_cfg: dict, latent_channels: int) -> UNet2DModel:
    """UNet2DModel from the params' kwargs: in = [z_t (C), LR (3)], out = eps (C)."""
    kwargs = dict(unet_cfg)
    kwargs.update(in_channels=latent_channels + 3, out_channels=latent_channels)
    for key in ("block_out_channels", "down_block_types", "up_block_types"):
        kwargs[key] = tuple(kwargs[key])
    return UNet2DModel(**kwargs)


class LDMSRPipeline:
    """LR -> SR with LDM-SR: DDIM over the latent, the LR pixels concatenated at every step, then decode."""

    def __init__(self, unet: UNet2DModel, vae: AutoencoderKL | VQModel, scheduler: DDIMScheduler, scale: int,
                 options: dict | None = None, source: str = "trained"):
        self.unet, self.vae, self.scheduler = unet.eval(), vae.eval(), scheduler
        self.codec = _codec(vae)
        self.scale, self.source = int(scale), source
        self.latent_channels = int(unet.config.out_channels)
        if unet.config.in_channels != self.latent_channels + 3 or vae.config.latent_channels != self.latent_channels:
            raise UserError(f"LDM-SR U-Net takes {unet.config.in_channels} channels and predicts "
                            f"{self.latent_channels}, but needs latent ({vae.config.latent_channels}) + 3 in; "
                            f"the checkpoint's unet/ and autoencoder do not belong together")
        self.options = dict(DEFAULTS)
        self.set_options(**(options or {}))

    def set_options(self, **options) -> None:
        """Override inference knobs (steps, eta); None keeps the value."""
        unknown = set(options) - set(DEFAULTS)
        if unknown:
            raise UserError(f"unknown LDM-SR option(s) {sorted(unknown)}; known: {', '.join(DEFAULTS)}")
        self.options.update({k: v for k, v in options.items() if v is not None})
        if not 0 <= float(self.options["eta"]) <= 1:
            raise UserError(f"eta={self.options['eta']}: DDIM's eta must be in [0, 1] (1 = LDM's setting)")
        self._check_steps(int(self.options["steps"]))

    def _check_steps(self, steps: int) -> None:
        n = self.scheduler.config.num_train_timesteps
        if not 1 <= steps <= n:
            raise UserError(f"steps={steps}: must be between 1 and {n}")

    @classmethod
    def from_params(cls, cfg: dict, scale: int, *, seed: int = 0, vae: AutoencoderKL | None = None,
                    options: dict | None = None) -> LDMSRPipeline:
        """A fresh miniature of the profile's `ldmsr` section in the profile's autoencoder's latent space."""
        from yonos.models import build_autoencoder

        lcfg = cfg["ldmsr"]
        torch.manual_seed(seed)
        vae = vae if vae is not None else build_autoencoder(cfg["autoencoder"])
        unet = build_unet(lcfg["unet"], vae.config.latent_channels)
        opts = {"steps": lcfg.get("steps"), "eta": lcfg.get("eta"), **(options or {})}
        return cls(unet, vae, make_scheduler(lcfg), scale, opts)

    # --- persistence ----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, sha256: dict[str, str] | None = None) -> LDMSRPipeline:
        """A folder written by train_ldmsr (ldmsr_config.json), or the released diffusers folder (model_index.json)."""
        path = Path(path)
        if (path / CONFIG_NAME).is_file():
            return cls._from_trained(path, device=device, dtype=dtype)
        if (path / "model_index.json").is_file():
            return cls.from_released(path, device=device, dtype=dtype, sha256=sha256)
        raise UserError(f"{path}: not an LDM-SR checkpoint (no {CONFIG_NAME}) nor the released {RELEASED_REPO} "
                        f"folder (no {', '.join(RELEASED_CONFIGS)}); pass a folder written by train_ldmsr or "
                        f"run `yonos download {RELEASED_ENTRY}`")

    @classmethod
    def _from_trained(cls, path: Path, *, device, dtype) -> LDMSRPipeline:
        cfg = read_folder_config(path, CONFIG_NAME, FORMAT, what="an LDM-SR checkpoint",
                                 fix="re-export it with train_ldmsr")
        kw = {"torch_dtype": dtype, "use_safetensors": True}
        unet = UNet2DModel.from_pretrained(path / "unet", **kw)
        vae = AutoencoderKL.from_pretrained(path / "vae", **kw)
        scheduler = DDIMScheduler.from_pretrained(path / "scheduler")
        return cls(unet, vae, scheduler, cfg["scale"], cfg.get("options")).to(device)

    @classmethod
    def from_released(cls, path: str | Path | None = None, *, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32, sha256: dict[str, str] | None = None) -> LDMSRPipeline:
        """The released LDMSuperResolutionPipeline folder: `path`, else $YONOS_LDMSR_DIR, else weights/ldm_sr_x4.

        Every weight file read is checked first against `sha256` ({file relative to the folder: hex}, the
        user's pins) or else the published pins; a file without either is refused."""
        folder = released_dir(path)
        index = json.loads((folder / "model_index.json").read_text())
        if index.get("_class_name") != "LDMSuperResolutionPipeline":
            raise UserError(f"{folder / 'model_index.json'}: a {index.get('_class_name')} folder, not "
                            f"LDMSuperResolutionPipeline; point to the {RELEASED_REPO} folder")
        files = verify_released(folder, sha256)
        kw = {"torch_dtype": dtype, "use_safetensors": files["unet"].endswith(".safetensors")}
        unet = UNet2DModel.from_pretrained(folder / "unet", **kw)
        kw["use_safetensors"] = files["vqvae"].endswith(".safetensors")
        vqvae = VQModel.from_pretrained(folder / "vqvae", **kw)
        scheduler = DDIMScheduler.from_pretrained(folder / "scheduler")
        if not isinstance(scheduler, DDIMScheduler):
            raise UserError(f"{folder / 'scheduler'}: expected a DDIMScheduler config; restore the released file")
        # the U-Net sees the LR at latent resolution, so the magnification is the VQ's f (x4 for VQ-f4)
        return cls(unet, vqvae, scheduler, vae_factor(vqvae), source=f"released {RELEASED_REPO}").to(device)

    def save_pretrained(self, path: str | Path, **extra_config) -> None:
        """Write the folder beside `path`, then rename it into place (never half-written)."""
        if isinstance(self.vae, VQModel):
            raise UserError("the released LDM-SR pipeline is read from its own folder; it is not re-saved")
        with atomic_folder(path) as tmp:
            self.unet.save_pretrained(tmp / "unet", safe_serialization=True)
            self.vae.save_pretrained(tmp / "vae", safe_serialization=True)
            self.scheduler.save_pretrained(tmp / "scheduler")
            write_json(tmp / CONFIG_NAME, {"format": FORMAT, "method": "ldmsr", "scale": self.scale,
                                           "options": self.options, **extra_config})

    def to(self, device) -> LDMSRPipeline:
        self.unet.to(device)
        self.vae.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.unet.device

    # --- the method -----------------------------------------------------------------------------
    @property
    def lr_multiple(self) -> int:
        return lr_multiple(self.scale, self.unet, self.vae)

    @torch.no_grad()
    def upscale_batch(self, lr: torch.Tensor, *, steps: int | None = None,
                      generator: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """NCHW float [0, 1] LR -> NCHW float [0, 1] SR of exactly scale x the size (pad, then crop)."""
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise ValueError(f"expected N x 3 x H x W, got {tuple(lr.shape)}")
        steps = int(self.options["steps"] if steps is None else steps)
        self._check_steps(steps)
        lr = lr.to(self.device, torch.float32)
        generator = generator if generator is not None else per_image_generators([0] * lr.shape[0])
        h, w = lr.shape[-2:]
        m = self.lr_multiple
        ph, pw = (-h) % m, (-w) % m
        padded = F.pad(lr, (0, pw, 0, ph), mode="replicate") if (ph or pw) else lr
        f = vae_factor(self.vae)
        latent = (padded.shape[-2] * self.scale // f, padded.shape[-1] * self.scale // f)
        z0 = sample(self.unet, self.scheduler, lr_condition(padded, latent), latent_channels=self.latent_channels,
                    steps=steps, eta=float(self.options["eta"]), generators=generator)
        sr = self.codec.decode(z0)
        return sr[..., : h * self.scale, : w * self.scale].clamp(0, 1)

    def describe(self) -> dict:
        s = self.scheduler.config
        f = vae_factor(self.vae)
        released = isinstance(self.vae, VQModel)
        return {
            "weights": self.source,
            "sampler": f"DDIM eta={float(self.options['eta']):g}, {s.timestep_spacing} spacing, "
                       f"steps_offset {s.steps_offset}, from pure noise, noise per image",
            "default_steps": self.options["steps"], "eta": float(self.options["eta"]),
            "prediction_type": s.prediction_type,
            "schedule": f"{s.beta_schedule} beta {s.beta_start:g} -> {s.beta_end:g}, T={s.num_train_timesteps}",
            "condition": "LR pixels in [-1, 1] concatenated after z_t" + (
                " (at latent resolution)" if f == self.scale else
                f" (MATLAB-bicubic x{self.scale / f:g} to latent size)"),
            "autoencoder": ("VQ-f4 (VQModel), decode quantises, no latent scaling" if released else
                            f"KL f={f}, {self.latent_channels} ch, posterior mode, x{self.codec.scaling_factor:.4g} "
                            f"(stands in for LDM's VQ-f4)"),
            "padding": f"replicate to a multiple of {self.lr_multiple} LR px, cropped back",
            "tiling": "none", "colour_fix": "none", "dtype": str(self.unet.dtype),
        }


# ------------------------------------------------------------------------------------------------
# The released folder: where, and pinned


def released_dir(path: str | Path | None = None) -> Path:
    """`path`, else $YONOS_LDMSR_DIR, else weights/ldm_sr_x4; a UserError naming what is missing where."""
    folder = Path(path or os.environ.get(ENV_DIR) or RELEASED_DIR).expanduser()
    missing = [f for f in RELEASED_CONFIGS if not (folder / f).is_file()]
    missing += [f"{sub}/{WEIGHT_NAMES[1]}" for sub in ("unet", "vqvae") if _weight_file(folder, sub) is None]
    if missing:
        raise UserError(f"{folder}: LDM-SR x4 weights missing ({', '.join(missing)}); run `yonos download "
                        f"{RELEASED_ENTRY}` or put the diffusers folder of {RELEASED_REPO} there "
                        f"(or set {ENV_DIR}=/path/to/it)")
    return folder


def _weight_file(folder: Path, sub: str) -> str | None:
    return next((f"{sub}/{n}" for n in WEIGHT_NAMES if (folder / sub / n).is_file()), None)


def released_pins() -> dict[str, set[str]]:
    """{file: accepted sha256s}: the registry's pins (main branch) and the fp16 branch's."""
    from yonos.data.sources import file_pins

    pins: dict[str, set[str]] = {}
    for p in file_pins(RELEASED_ENTRY):
        if p.sha256:
            pins.setdefault(p.path, set()).add(p.sha256)
    for rel, h in FP16_PINS.items():
        pins.setdefault(rel, set()).add(h)
    return pins


def verify_released(folder: Path, user_pins: dict[str, str] | None = None) -> dict[str, str]:
    """sha256 of the weight file of unet/ and vqvae/ that will be read, against the user's pin for it if
    given, else the published ones (or, in a folder written by `convert_finetune`, the hashes it recorded
    after checking its source's pin). Returns {"unet": file, "vqvae": file}."""
    converted = folder / CONVERSION_NAME
    recorded = json.loads(converted.read_text())["files"] if converted.is_file() else {}
    pins = {**released_pins(), **{k: {v} for k, v in recorded.items()},
            **{k: {v.lower()} for k, v in (user_pins or {}).items()}}
    files = {}
    for sub in ("unet", "vqvae"):
        rel = _weight_file(folder, sub)
        if rel not in pins:
            raise UserError(f"{folder / rel}: no published sha256 for this file; pass your own pin "
                            f"(sha256={{'{rel}': '<hex of a copy you trust>'}}) or use the released .bin files")
        got = file_sha256(folder / rel)
        if got not in pins[rel]:
            want = "/".join(h[:12] + "..." for h in sorted(pins[rel]))
            raise UserError(f"{folder / rel}: sha256 {got[:12]}... is not the pinned {want}; re-download it "
                            f"with `yonos download {RELEASED_ENTRY}`")
        files[sub] = rel
    return files


# ------------------------------------------------------------------------------------------------
# StableSR's fine-tuned LDM-SR (the "LDM" of StableSR's and CCSR's tables) -> the released folder layout
#
#     python -m yonos.baselines.ldmsr convert [weights/stablesr_ldm_x4/ldmsr4x_finetune_119.ckpt] OUT_DIR
#
# Input: IceClear/LDM-SRtuning's Lightning checkpoint (HF Iceclear/StableSR, registry entry "stablesr_ldm_x4",
# sha256 a4977665...), the bsr_sr architecture. Read with torch.load(weights_only=True) after its sha256 check.
# Key mapping (k counts input_blocks from 1 and output_blocks from 0, level by level as openaimodel builds them):
#   model.diffusion_model.time_embed.{0,2}        unet/time_embedding.linear_{1,2}
#   ...input_blocks.0.0                           unet/conv_in
#   ...input_blocks.k.0 (ResBlock)                unet/down_blocks.<level>.resnets.<j>: in_layers.0 -> norm1,
#                                                 in_layers.2 -> conv1, emb_layers.1 -> time_emb_proj, out_layers.0
#                                                 -> norm2, out_layers.3 -> conv2, skip_connection -> conv_shortcut
#   ...input_blocks.k.1 (AttentionBlock)          unet/down_blocks.<level>.attentions.<j>: norm -> group_norm,
#                                                 qkv (legacy order: per head q, k, v) -> to_q, to_k, to_v,
#                                                 proj_out -> to_out.0
#   ...input_blocks.k.0.op                        unet/down_blocks.<level>.downsamplers.0.conv
#   ...middle_block.{0,1,2}                       unet/mid_block.resnets.0, attentions.0, resnets.1
#   ...output_blocks.k.{0,1}                      unet/up_blocks.<u>.resnets.<j>, attentions.<j> (u = reversed level)
#   ...output_blocks.k.{1|2}.conv                 unet/up_blocks.<u>.upsamplers.0.conv (last block of a level)
#   ...out.{0,2}                                  unet/conv_norm_out, conv_out
#   first_stage_model.{encoder,decoder,quant_conv,post_quant_conv}.*   vqvae/ (diffusers' convert_ldm_vae_checkpoint)
#   first_stage_model.quantize.embedding.weight   vqvae/quantize.embedding.weight
#   betas                                         checked against the scheduler written (LDM's linear 0.0015 -> 0.0155)
# The trained weights (model.diffusion_model.*) are converted; an EMA copy (model_ema.*), if any, is not.

FINETUNE_ENTRY = "stablesr_ldm_x4"
FINETUNE_CKPT = "ldmsr4x_finetune_119.ckpt"
FINETUNE_DIR = Path("weights") / FINETUNE_ENTRY
CONVERSION_NAME = "conversion.json"
UNET_PREFIX, VQ_PREFIX = "model.diffusion_model.", "first_stage_model."
# CompVis bsr_sr (= LDM-SRtuning) in diffusers terms: the released unet/ and vqvae/ config.json (BASELINES.md 2.2)
LDM_SR_UNET = dict(
    in_channels=6, out_channels=3, sample_size=64, block_out_channels=(160, 320, 320, 640), layers_per_block=2,
    down_block_types=("DownBlock2D",) * 3 + ("AttnDownBlock2D",),
    up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * 3,
    attention_head_dim=32, norm_num_groups=32, norm_eps=1e-5, flip_sin_to_cos=True, freq_shift=0, downsample_padding=1,
    time_embedding_type="positional", act_fn="silu")
LDM_SR_VQ = dict(
    block_out_channels=(128, 256, 512), down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=2, latent_channels=3, num_vq_embeddings=8192,
    norm_num_groups=32, sample_size=256)
LDM_SR_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0155, beta_schedule="scaled_linear",
                        clip_sample=False, set_alpha_to_one=True, steps_offset=1)  # the released scheduler_config.json

_RESNET = (("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("emb_layers.1", "time_emb_proj"),
           ("out_layers.0", "norm2"), ("out_layers.3", "conv2"), ("skip_connection", "conv_shortcut"))


def convert_unet(sd: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """model.diffusion_model.* (openaimodel UNetModel) -> UNet2DModel state dict (mapping above)."""
    src = {k[len(UNET_PREFIX):]: v for k, v in sd.items() if k.startswith(UNET_PREFIX)}
    out, used = {}, set()

    def take(s: str, d: str) -> None:
        for p in ("weight", "bias"):
            out[f"{d}.{p}"] = src[f"{s}.{p}"]
            used.add(f"{s}.{p}")

    def resnet(s: str, d: str) -> None:
        for k in [k for k in src if k.startswith(s + ".")]:
            rest = k[len(s) + 1:]
            old, new = next((o, n) for o, n in _RESNET if rest.startswith(o + "."))
            out[f"{d}.{new}{rest[len(old):]}"] = src[k]
            used.add(k)

    def attention(s: str, d: str, channels: int) -> None:
        heads = channels // config["attention_head_dim"]
        w, b = src[f"{s}.qkv.weight"][..., 0], src[f"{s}.qkv.bias"]  # Conv1d (3C, C, 1)
        w, b = w.reshape(heads, 3, channels // heads, channels), b.reshape(heads, 3, channels // heads)
        for i, name in enumerate(("to_q", "to_k", "to_v")):
            out[f"{d}.{name}.weight"] = w[:, i].reshape(channels, channels).clone()
            out[f"{d}.{name}.bias"] = b[:, i].reshape(channels).clone()
        out[f"{d}.to_out.0.weight"] = src[f"{s}.proj_out.weight"][..., 0]
        out[f"{d}.to_out.0.bias"] = src[f"{s}.proj_out.bias"]
        take(f"{s}.norm", f"{d}.group_norm")
        used.update(f"{s}.{n}.{p}" for n in ("qkv", "proj_out") for p in ("weight", "bias"))

    chans, lpb = config["block_out_channels"], config["layers_per_block"]
    n = len(chans)
    down_attn = ["Attn" in t for t in config["down_block_types"]]
    up_attn = ["Attn" in t for t in config["up_block_types"]]
    take("time_embed.0", "time_embedding.linear_1")
    take("time_embed.2", "time_embedding.linear_2")
    take("input_blocks.0.0", "conv_in")
    k = 1
    for level in range(n):
        for j in range(lpb):
            resnet(f"input_blocks.{k}.0", f"down_blocks.{level}.resnets.{j}")
            if down_attn[level]:
                attention(f"input_blocks.{k}.1", f"down_blocks.{level}.attentions.{j}", chans[level])
            k += 1
        if level < n - 1:
            take(f"input_blocks.{k}.0.op", f"down_blocks.{level}.downsamplers.0.conv")
            k += 1
    resnet("middle_block.0", "mid_block.resnets.0")
    attention("middle_block.1", "mid_block.attentions.0", chans[-1])
    resnet("middle_block.2", "mid_block.resnets.1")
    k = 0
    for u in range(n):
        for j in range(lpb + 1):
            resnet(f"output_blocks.{k}.0", f"up_blocks.{u}.resnets.{j}")
            if up_attn[u]:
                attention(f"output_blocks.{k}.1", f"up_blocks.{u}.attentions.{j}", chans[n - 1 - u])
            if j == lpb and u < n - 1:
                take(f"output_blocks.{k}.{2 if up_attn[u] else 1}.conv", f"up_blocks.{u}.upsamplers.0.conv")
            k += 1
    take("out.0", "conv_norm_out")
    take("out.2", "conv_out")
    left = sorted(set(src) - used)
    if left:
        raise UserError(f"LDM-SR U-Net: {len(left)} unmapped keys (e.g. {UNET_PREFIX}{left[0]}); the checkpoint's "
                        f"U-Net differs from the configured architecture")
    return out


def convert_vq(sd: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """first_stage_model.* (LDM's VQModelInterface) -> VQModel state dict."""
    vq = {k: v for k, v in sd.items() if k.startswith(VQ_PREFIX) and not k.startswith(VQ_PREFIX + "loss.")}
    out = convert_ldm_vae_checkpoint(vq, config)
    out["quantize.embedding.weight"] = vq[VQ_PREFIX + "quantize.embedding.weight"]
    return out


def read_ckpt(path: Path, want: str | None) -> dict[str, torch.Tensor]:
    """sha256 check, then torch.load(weights_only=True)["state_dict"]: tensors and containers only."""
    if want is not None and file_sha256(path) != want:
        raise UserError(f"{path}: sha256 is not the pinned {want[:12]}...; re-download it with "
                        f"`yonos download {FINETUNE_ENTRY}`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for anything outside the safe set, or a truncated file
        raise UserError(f"{path}: cannot be read as plain tensors ({type(exc).__name__}); it is not the released "
                        f"{FINETUNE_CKPT}") from None
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not any(k.startswith(UNET_PREFIX) for k in sd):
        raise UserError(f"{path}: no {UNET_PREFIX}* weights inside; expected an LDM Lightning checkpoint")
    return sd


def finetune_pin() -> str | None:
    from yonos.data.sources import file_pins

    return next((p.sha256 for p in file_pins(FINETUNE_ENTRY) if p.path == FINETUNE_CKPT), None)


def convert_finetune(ckpt: str | os.PathLike, out: str | os.PathLike, *, sha256: str | None = None,
                     unet_config: dict = LDM_SR_UNET, vq_config: dict = LDM_SR_VQ,
                     scheduler_config: dict = LDM_SR_SCHEDULER) -> Path:
    """StableSR's fine-tuned LDM-SR checkpoint -> an LDMSuperResolutionPipeline folder at `out` (safetensors),
    which `LDMSRPipeline.from_pretrained` / the ldmsr adapter read like the released one. `sha256` overrides
    the registry's pin of the source file."""
    ckpt, out = Path(ckpt), Path(out)
    if not ckpt.is_file():
        raise UserError(f"{ckpt}: missing; run `yonos download {FINETUNE_ENTRY}` or put {FINETUNE_CKPT} from "
                        f"huggingface.co/Iceclear/StableSR in {ckpt.parent}/")
    if out.exists():
        raise UserError(f"{out}: already exists; choose a new output folder (an existing one is never overwritten)")
    want = sha256 or finetune_pin()
    sd = read_ckpt(ckpt, want)
    unet, vqvae = UNet2DModel.from_config(unet_config), VQModel.from_config(vq_config)
    scheduler = DDIMScheduler.from_config(scheduler_config)
    for model, conv, what in ((unet, convert_unet, "U-Net"), (vqvae, convert_vq, "VQ autoencoder")):
        missing, unexpected = model.load_state_dict(conv(sd, dict(model.config)), strict=False)
        if missing or unexpected:
            raise UserError(f"{ckpt}: {what} does not match the configured architecture ({len(missing)} missing, "
                            f"e.g. {missing[:1]}; {len(unexpected)} unexpected, e.g. {unexpected[:1]})")
    if "betas" in sd and not torch.allclose(sd["betas"].double(), scheduler.betas.double(), rtol=1e-4, atol=1e-7):
        raise UserError(f"{ckpt}: its beta schedule is not LDM-SR's linear 0.0015 -> 0.0155; not an LDM-SR checkpoint")
    with atomic_folder(out) as tmp:
        LDMSuperResolutionPipeline(vqvae=vqvae, unet=unet, scheduler=scheduler).save_pretrained(
            tmp, safe_serialization=True)
        files = {rel: file_sha256(tmp / rel) for rel in (f"{sub}/{WEIGHT_NAMES[0]}" for sub in ("unet", "vqvae"))}
        write_json(tmp / CONVERSION_NAME, {"source": FINETUNE_CKPT if ckpt.name == FINETUNE_CKPT else ckpt.name,
                                            "source_sha256": want, "files": files,
                                            "weights": "model.diffusion_model (not EMA)"})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m yonos.baselines.ldmsr",
                                 description="convert StableSR's fine-tuned LDM-SR checkpoint into a diffusers folder")
    sub = ap.add_subparsers(dest="cmd", required=True)
    conv = sub.add_parser("convert", help=f"{FINETUNE_CKPT} -> LDMSuperResolutionPipeline folder")
    conv.add_argument("ckpt", nargs="?", default=str(FINETUNE_DIR / FINETUNE_CKPT))
    conv.add_argument("out", help="new folder, e.g. weights/ldm_sr_x4_stablesr")
    conv.add_argument("--sha256", default=None, help="pin of the source file (default: the registry's)")
    args = ap.parse_args(argv)
    try:
        convert_finetune(args.ckpt, args.out, sha256=args.sha256)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}; use it with LDMSR(checkpoint=...) or {ENV_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
