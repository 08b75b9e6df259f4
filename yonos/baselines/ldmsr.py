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
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DModel, VQModel

from yonos.data.degradations import degrade
from yonos.errors import UserError
from yonos.io import atomic_folder, write_json
from yonos.models import LatentCodec, vae_factor
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


def unet_multiple(unet: UNet2DModel) -> int:
    return 2 ** (len(unet.config.block_out_channels) - 1)


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
        cfg = json.loads((path / CONFIG_NAME).read_text())
        if cfg.get("format") != FORMAT:
            raise UserError(f"{path / CONFIG_NAME}: checkpoint format {cfg.get('format')} is not {FORMAT}; "
                            f"re-export it with train_ldmsr")
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
        """LR sizes are padded to this so the latent grid (LR x scale / f) is a multiple of the U-Net's."""
        m = vae_factor(self.vae) * unet_multiple(self.unet)
        return m // math.gcd(m, self.scale)

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
    given, else the published ones. Returns {"unet": file, "vqvae": file}."""
    pins = {**released_pins(), **{k: {v.lower()} for k, v in (user_pins or {}).items()}}
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
