"""SR3 (Saharia et al., "Image Super-Resolution via Iterative Refinement", 2021) on diffusers blocks.

    x_0 = 2 HR - 1,  c = 2 bicubic_up(LR) - 1           pixel space, images in [-1, 1]
    t ~ U{1..T},  gamma ~ U(gamma_t, gamma_{t-1})       SR3's piecewise-uniform noise level (gamma_0 = 1)
    x_t = sqrt(gamma) x_0 + sqrt(1 - gamma) eps          eps ~ N(0, I)
    L   = || f([c, x_t], sqrt(gamma)) - eps ||_1         eps-prediction, L1 (the unofficial code's loss)

Notation: gamma_t = alphas_cumprod[t - 1] of diffusers' schedulers (paper t = 1..T is diffusers' index
t - 1), linear beta 1e-6 -> 1e-2 over T = 2000. The network is a diffusers UNet2DModel with 6 input
channels ([c, x_t], condition first as in the unofficial code) and 3 output channels. It is conditioned
on the continuous noise level sqrt(gamma), WaveGrad-style, never on the integer t: UNet2DModel's
sinusoidal timestep embedding is fed the float NOISE_LEVEL_MULTIPLE x sqrt(gamma) (1000 x: the range
0 .. 1000 that the embedding's frequencies are laid out for), so training at any gamma inside an interval
and sampling on any respaced schedule use the same conditioning.

Sampling: ancestral DDPM (posterior variance beta-tilde, x_0 clipped to [-1, 1] as the unofficial code's
clip_denoised) respaced to any step count with diffusers' DDPMScheduler on custom timesteps, which
recomputes each step's beta from the two neighbouring kept gammas (guided-diffusion's respacing; DDIM with
eta = 1 on the same timesteps is the same chain). Timesteps follow StableSR's respacing: one step is
the last timestep from pure noise, two or more steps end at t = 0. At each step the network sees
sqrt(gamma) of that respaced timestep. The start x_T and every step's noise come from the image's own
generator, so an image's result does not depend on its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from torch.utils.data import Dataset

from yonos.checkpoint import read_folder_config
from yonos.data.degradations import degrade
from yonos.errors import UserError
from yonos.io import atomic_folder, write_json
from yonos.models import lr_multiple
from yonos.resize import bicubic_up
from yonos.sampler import per_image_generators, respaced_timesteps, stacked_randn
from yonos.schedule import add_noise
from yonos.train import example_seed

FORMAT = 1
CONFIG_NAME = "sr3_config.json"
# UNet2DModel timestep = NOISE_LEVEL_MULTIPLE * sqrt(gamma), a float in (0, 1000]. A Python scalar would be
# cast to an integer by UNet2DModel, so the level is always passed as a float tensor.
NOISE_LEVEL_MULTIPLE = 1000.0


# ------------------------------------------------------------------------------------------------
# Model and schedule


def build_unet(unet_cfg: dict) -> UNet2DModel:
    """UNet2DModel over [bicubic_up(LR), x_t]: 6 channels in, eps (3 channels) out, sinusoidal level embedding."""
    kwargs = dict(unet_cfg)
    for key in ("block_out_channels", "down_block_types", "up_block_types"):
        kwargs[key] = tuple(kwargs[key])
    return UNet2DModel(in_channels=6, out_channels=3, time_embedding_type="positional", flip_sin_to_cos=True,
                       freq_shift=0, **kwargs)


def make_scheduler(sr3_cfg: dict) -> DDPMScheduler:
    """Linear beta schedule, eps-prediction, beta-tilde variance, x_0 clipped to [-1, 1] (clip_denoised)."""
    return DDPMScheduler(num_train_timesteps=sr3_cfg["num_train_timesteps"], beta_start=sr3_cfg["beta_start"],
                         beta_end=sr3_cfg["beta_end"], beta_schedule="linear", prediction_type="epsilon",
                         variance_type="fixed_small", clip_sample=True, clip_sample_range=1.0)


def gammas(scheduler: DDPMScheduler) -> torch.Tensor:
    """gamma_0 .. gamma_T in float64, gamma_0 = 1 (paper indexing: gamma_t = alphas_cumprod[t - 1])."""
    return torch.cat([torch.ones(1, dtype=torch.float64), scheduler.alphas_cumprod.double()])


def predict_eps(unet: UNet2DModel, x_t: torch.Tensor, c: torch.Tensor, sqrt_gamma: torch.Tensor,
                multiple: float = NOISE_LEVEL_MULTIPLE) -> torch.Tensor:
    """f([c, x_t], sqrt(gamma)): the network's eps for each image at its own noise level (shape N)."""
    x = torch.cat([c, x_t], dim=1).to(unet.dtype)
    level = (multiple * sqrt_gamma.to(x.device, torch.float32)).reshape(-1).expand(x.shape[0])
    return unet(x, level).sample.float()


# ------------------------------------------------------------------------------------------------
# Training: examples and loss


class NoiseLevels(Dataset):
    """SR3's draws added to each example of `base` (items with `hr` in [0, 1] and `seed`): paper t ~ U{1..T},
    gamma ~ U(gamma_t, gamma_{t-1}) and eps ~ N(0, I) of the HR crop's shape, all from the example's own
    generator (seed, stream, index), so training is deterministic and resumes exactly."""

    def __init__(self, base: Dataset, gamma: torch.Tensor, *, seed: int, stream: str):
        self.base, self.gamma, self.seed, self.stream = base, gamma.double(), seed, stream
        self.T = len(gamma) - 1

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = {k: v for k, v in self.base[i].items() if not k.startswith("z_")}  # SR3 never sees a latent
        g = torch.Generator().manual_seed(example_seed(self.seed, self.stream, i))
        t = int(torch.randint(1, self.T + 1, (), generator=g))
        u = torch.rand((), generator=g, dtype=torch.float64)
        item["t"] = torch.tensor(t)
        item["gamma"] = self.gamma[t - 1] + u * (self.gamma[t] - self.gamma[t - 1])
        item["eps"] = torch.randn(item["hr"].shape, generator=g)
        return item


def lr_condition(hr: torch.Tensor, seeds: Sequence[int], scale: int, degradation: dict) -> torch.Tensor:
    """c = 2 bicubic_up(LR) - 1, the LR made from the HR crop with the example's degradation draw."""
    lr = degrade(hr, [scale], [int(s) for s in seeds], degradation)[scale]
    return bicubic_up(lr, scale) * 2 - 1


def sr3_loss(unet: UNet2DModel, batch: dict, *, scale: int, degradation: dict,
             multiple: float = NOISE_LEVEL_MULTIPLE) -> torch.Tensor:
    """L1 between f([c, x_t], sqrt(gamma)) and eps, mean over pixels and batch (the unofficial code sums;
    with Adam only grad_clip sees the difference)."""
    hr, eps, gamma = batch["hr"].float(), batch["eps"].float(), batch["gamma"].double()
    c = lr_condition(hr, batch["seed"], scale, degradation)
    sqrt_gamma, sigma = gamma.sqrt().float(), (1 - gamma).sqrt().float()
    x_t = add_noise(hr * 2 - 1, eps, sqrt_gamma, sigma)
    return F.l1_loss(predict_eps(unet, x_t, c, sqrt_gamma, multiple), eps)


# ------------------------------------------------------------------------------------------------
# Sampling


@torch.no_grad()
def sample(unet: UNet2DModel, scheduler: DDPMScheduler, c: torch.Tensor, *, steps: int,
           generators: Sequence[torch.Generator], multiple: float = NOISE_LEVEL_MULTIPLE) -> torch.Tensor:
    """Ancestral DDPM respaced to `steps`, from x_T ~ N(0, I) to x_0 in [-1, 1], conditioned on c."""
    if len(generators) != c.shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} for {c.shape[0]} images")
    scheduler.set_timesteps(timesteps=respaced_timesteps(steps, scheduler.config.num_train_timesteps))
    x = stacked_randn(c.shape[1:], generators, c.device, torch.float32)
    sqrt_gamma = scheduler.alphas_cumprod.double().sqrt()
    for t in scheduler.timesteps:
        eps = predict_eps(unet, x, c, sqrt_gamma[int(t)].expand(x.shape[0]), multiple)
        # diffusers draws the step noise per image when given a list of generators (randn_tensor)
        x = scheduler.step(eps, int(t), x, generator=list(generators)).prev_sample
    return x


# ------------------------------------------------------------------------------------------------
# Pipeline: checkpoint folder + upscale


class SR3Pipeline:
    """LR -> SR with SR3: ancestral sampling in pixel space conditioned on the bicubic-upsampled LR."""

    def __init__(self, unet: UNet2DModel, scheduler: DDPMScheduler, scale: int, *, steps: int = 100,
                 multiple: float = NOISE_LEVEL_MULTIPLE, info: dict | None = None):
        self.unet, self.scheduler, self.scale = unet.eval(), scheduler, int(scale)
        self.steps, self.multiple = int(steps), float(multiple)
        self.info = dict(info or {})  # training facts read from the checkpoint (trained_steps, budget)

    @classmethod
    def from_params(cls, cfg: dict, scale: int, *, seed: int = 0) -> SR3Pipeline:
        """A fresh, seeded miniature of the profile's `sr3` section (the global RNG is left untouched)."""
        scfg = cfg["sr3"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet = build_unet(scfg["unet"])
        return cls(unet, make_scheduler(scfg), scale, steps=scfg["steps"])

    # --- persistence ----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> SR3Pipeline:
        path = Path(path)
        cfg = read_folder_config(path, CONFIG_NAME, FORMAT, what="an SR3 checkpoint",
                                 fix="pass the checkpoint/ folder written by train_sr3 "
                                     "(`python -m yonos.stages.train_sr3`)")
        missing = [name for name in ("unet", "scheduler") if not (path / name).is_dir()]
        if missing:
            raise UserError(f"{path}: incomplete SR3 checkpoint ({', '.join(missing)}/ missing); copy the whole "
                            f"checkpoint/ folder written by train_sr3")
        unet = UNet2DModel.from_pretrained(path / "unet", torch_dtype=dtype, use_safetensors=True)
        scheduler = DDPMScheduler.from_pretrained(path / "scheduler")
        own = ("format", "method", "scale", "steps", "noise_level_multiple", "conditioning")
        info = {k: v for k, v in cfg.items() if k not in own}
        pipe = cls(unet, scheduler, cfg["scale"], steps=cfg["steps"], multiple=cfg["noise_level_multiple"], info=info)
        return pipe.to(device)

    def save_pretrained(self, path: str | Path, **extra_config) -> None:
        """Write the folder beside `path`, then rename it into place (never half-written)."""
        with atomic_folder(path) as tmp:
            self.unet.save_pretrained(tmp / "unet", safe_serialization=True)
            self.scheduler.save_pretrained(tmp / "scheduler")
            write_json(tmp / CONFIG_NAME, {
                "format": FORMAT, "method": "sr3", "scale": self.scale, "steps": self.steps,
                "noise_level_multiple": self.multiple,
                "conditioning": f"UNet2DModel timestep = {self.multiple:g} x sqrt(gamma)",
                **self.info, **extra_config})

    def to(self, device) -> SR3Pipeline:
        self.unet.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.unet.device

    # --- the method -----------------------------------------------------------------------------
    @property
    def lr_multiple(self) -> int:
        return lr_multiple(self.scale, self.unet)

    @torch.no_grad()
    def upscale_batch(self, lr: torch.Tensor, *, steps: int | None = None,
                      generator: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """NCHW float [0, 1] LR -> NCHW float [0, 1] SR of exactly scale x the size (pad, then crop)."""
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise ValueError(f"expected N x 3 x H x W, got {tuple(lr.shape)}")
        steps = int(steps or self.steps)
        lr = lr.to(self.device, torch.float32)
        generator = generator if generator is not None else per_image_generators([0] * lr.shape[0])
        h, w = lr.shape[-2:]
        m = self.lr_multiple
        ph, pw = (-h) % m, (-w) % m
        # Replicate, not reflect: reflect fails when the pad is larger than a tiny image.
        padded = F.pad(lr, (0, pw, 0, ph), mode="replicate") if (ph or pw) else lr
        c = bicubic_up(padded, self.scale) * 2 - 1
        x0 = sample(self.unet, self.scheduler, c, steps=steps, generators=generator, multiple=self.multiple)
        return ((x0 + 1) / 2)[..., : h * self.scale, : w * self.scale].clamp(0, 1)

    def describe(self) -> dict:
        cfg = self.scheduler.config
        return {
            "sampler": "DDPM ancestral, StableSR respacing (space_timesteps), from pure noise",
            "default_steps": self.steps, "eta": 1.0, "prediction_type": "epsilon",
            "variance": cfg.variance_type, "clip_denoised": bool(cfg.clip_sample),
            "schedule": f"linear beta {cfg.beta_start:g} -> {cfg.beta_end:g}, T = {cfg.num_train_timesteps}",
            "conditioning": f"sqrt(gamma); UNet2DModel timestep = {self.multiple:g} x sqrt(gamma)",
            "space": "pixel", "upsample": "matlab-bicubic", "colour_fix": "none", "tiling": "none",
            "dtype": str(self.unet.dtype),
            "weights": "trained re-implementation (no public natural-image SR3 weights exist)",
            **{k: self.info[k] for k in ("trained_steps", "budget") if k in self.info},
        }
