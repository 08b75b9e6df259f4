"""Training with HF accelerate: one loop (`fit`) and one loss per stage.

Examples are a pure function of (seed, stream, example index): crop, flip, timestep t, noise eps and
degradation seed all come from a per-example generator. With accelerate's batch sharding, process k
of n gets micro-batch k of each global batch, so n processes at batch B see exactly the examples of
one process at batch n*B, and DDP's gradient mean equals the big batch's mean: results match up to
float rounding, whatever the process count (tested in tests/test_multiprocess.py).
"""

from __future__ import annotations

import math
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from yonos.checkpoint import discard_state, display_path, load_state, save_state
from yonos.data.degradations import degrade
from yonos.errors import UserError
from yonos.models import LatentCodec
from yonos.resize import bicubic_up
from yonos.sampler import per_image_generators, predict_z0, sample
from yonos.schedule import add_noise, alpha_sigma, implied_eps, loss_weight

# --- examples -------------------------------------------------------------------------------------
T_SAMPLING = ("uniform", "high")


def draw_noise(item: dict, g: torch.Generator, shape, *, num_timesteps: int, t_sampling: str = "uniform",
               teacher_noise: bool = False) -> None:
    """An example's diffusion timestep t and noise eps, drawn from its own generator `g`, into `item`.
    t_sampling "uniform" (Eq. 1) or "high": density rising linearly with t, p(t) ~ t, so half the draws
    lie above 0.71 T (Claim 1's mechanism check: the one step starts at t = T). teacher_noise: a second,
    independent noise `eps_teacher` for the distillation teacher (another mechanism check)."""
    if t_sampling == "uniform":
        item["t"] = torch.randint(0, num_timesteps, (), generator=g)
    elif t_sampling == "high":
        u = float(torch.rand((), generator=g))
        item["t"] = torch.tensor(min(int(num_timesteps * math.sqrt(u)), num_timesteps - 1))
    else:
        raise UserError(f"params.yaml: t_sampling must be one of {', '.join(T_SAMPLING)}, got {t_sampling!r}")
    item["eps"] = torch.randn(shape, generator=g)
    if teacher_noise:
        item["eps_teacher"] = torch.randn(shape, generator=g)


def example_seed(seed: int, stream: str, index: int) -> int:
    """A well-mixed 63-bit seed for one example of one named stream."""
    ss = np.random.SeedSequence([int(seed), zlib.crc32(stream.encode()), int(index)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class CropStream(Dataset):
    """Random HR crops (with flips and 90-degree rotations) of RGB images, by example index. `images` is a
    list of tensors, or a lazy sequence with `sizes` (h, w) that decodes one image per access
    (yonos.stages._common.StreamedImages: the paper profile streams its training folder from disk).

    If `latent_shape` is given, each example also carries its diffusion timestep t and noise eps.
    """

    def __init__(self, images: Sequence[torch.Tensor], crop: int, length: int, *, seed: int, stream: str,
                 latent_shape: tuple[int, ...] | None = None, num_timesteps: int = 1000, **noise):
        sizes = getattr(images, "sizes", None) or [tuple(im.shape[-2:]) for im in images]
        self.images, self.keep = images, [i for i, hw in enumerate(sizes) if min(hw) >= crop]
        if not self.keep:
            raise ValueError(f"no training image is at least {crop} px on each side")
        areas = torch.tensor([sizes[i][0] * sizes[i][1] for i in self.keep], dtype=torch.float64)
        self.weights = areas / areas.sum()  # sample images by area: every pixel equally likely
        self.crop, self.length, self.seed, self.stream = crop, length, seed, stream
        self.latent_shape, self.num_timesteps, self.noise = latent_shape, num_timesteps, noise

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        s = example_seed(self.seed, self.stream, i)
        g = torch.Generator().manual_seed(s)
        im = self.images[self.keep[int(torch.multinomial(self.weights, 1, generator=g))]]
        h, w = im.shape[-2:]
        y = int(torch.randint(0, h - self.crop + 1, (1,), generator=g))
        x = int(torch.randint(0, w - self.crop + 1, (1,), generator=g))
        hr = im[:, y : y + self.crop, x : x + self.crop]
        k, flip = int(torch.randint(0, 4, (1,), generator=g)), bool(torch.randint(0, 2, (1,), generator=g))
        hr = torch.rot90(hr, k, dims=(1, 2))
        hr = hr.flip(-1) if flip else hr
        item = {"hr": hr.contiguous(), "seed": s % (2**31)}
        if self.latent_shape is not None:
            draw_noise(item, g, self.latent_shape, num_timesteps=self.num_timesteps, **self.noise)
        return item


class LatentBank(Dataset):
    """Examples drawn from a precomputed bank of HR crops and their latents (stage encode_latents).

    Encoding z_h and every z_l costs more than the U-Net step on a CPU, so the embedded profile
    encodes a fixed bank of crops once; each example picks a crop and draws its own t and eps.
    Bank tensors: hr (uint8), seed, z_h, z_l_x<s> for each scale.
    """

    def __init__(self, bank: dict[str, torch.Tensor], length: int, *, seed: int, stream: str,
                 num_timesteps: int = 1000, with_noise: bool = True, **noise):
        self.bank, self.length, self.seed, self.stream = bank, length, seed, stream
        self.num_timesteps, self.with_noise, self.noise = num_timesteps, with_noise, noise
        self.size = len(bank["seed"])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(example_seed(self.seed, self.stream, i))
        j = int(torch.randint(0, self.size, (), generator=g))
        item = {k: v[j] for k, v in self.bank.items() if k.startswith("z_")}
        item["hr"] = self.bank["hr"][j].float() / 255.0
        item["seed"] = self.bank["seed"][j]
        if self.with_noise:
            draw_noise(item, g, item["z_h"].shape, num_timesteps=self.num_timesteps, **self.noise)
        return item


# --- the loop -------------------------------------------------------------------------------------
@dataclass
class FitResult:
    steps: int  # optimiser steps the model has had, including those of a resumed state
    seconds: float  # of this call
    final_loss: float
    losses: list[float]
    earlier_seconds: float = 0.0  # training seconds of the earlier calls whose saved state this call resumed


def make_accelerator(cfg: dict, grad_accum: int = 1) -> Accelerator:
    device = cfg.get("device", "auto")
    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    return Accelerator(mixed_precision=cfg.get("mixed_precision", "no"), cpu=cpu,
                       gradient_accumulation_steps=grad_accum)


def fit(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor],
    dataset_factory: Callable[[int], Dataset],
    *,
    accelerator: Accelerator,
    steps: int,
    batch_size: int,
    lr: float,
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    grad_clip: float | None = 1.0,
    state_dir: str | Path | None = None,
    identity: dict | None = None,
    fresh: bool = False,
    checkpoint_every: int = 0,
    ema_decay: float = 0.0,
    on_done: Callable[[torch.nn.Module, int], None] | None = None,
    desc: str = "train",
) -> FitResult:
    """Train the requires-grad parameters of `model` for `steps` optimiser steps.

    `dataset_factory(n_examples)` builds the example stream; `batch_size` is per process.
    With `state_dir`, the whole trainer state (weights, optimizer, step, losses) is saved atomically
    every `checkpoint_every` steps and at the end, with `identity` (yonos/checkpoint.py). A previous
    state is resumed exactly if its identity is the same, refused (UserError) if not, and discarded
    first if `fresh`. `on_done(model, step)` exports the trained weights at the end.

    `ema_decay` > 0 keeps an exponential moving average of the trained parameters (diffusers' EMAModel,
    whose decay ramps up as (1 + step) / (10 + step) to `ema_decay`); it is part of the trainer state,
    and `on_done` exports the averaged weights instead of the last ones.
    """
    if state_dir is not None and identity is None:
        raise ValueError("fit: a state_dir needs the training identity it is saved with")
    accum = accelerator.gradient_accumulation_steps
    n_examples = steps * accum * batch_size * accelerator.num_processes
    loader = DataLoader(dataset_factory(n_examples), batch_size=batch_size, shuffle=False, drop_last=True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup_steps, steps)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    ema = EMAModel(params, decay=ema_decay) if ema_decay > 0 else None

    done, losses, earlier = 0, [], 0.0
    if state_dir is not None:
        if fresh and accelerator.is_main_process:
            discard_state(state_dir)
        accelerator.wait_for_everyone()
        meta = load_state(state_dir, accelerator.unwrap_model(model), optimizer, identity=identity)
        if meta is not None:
            done, losses = int(meta["step"]), [float(v) for v in meta.get("losses", [])]
            earlier = float(meta.get("train_seconds", 0.0))  # absent in states saved before it was recorded
            if ema is not None:
                _restore_ema(ema, meta, state_dir)
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(done):  # the LR schedule is a pure function of the step
            scheduler.step()
    batches = accelerator.skip_first_batches(loader, done * accum) if done else loader

    t0 = time.perf_counter()
    bar = tqdm(total=steps, initial=done, desc=desc, disable=not accelerator.is_local_main_process,
               dynamic_ncols=True, mininterval=2.0)
    model.train()
    step = done
    for batch in batches if done < steps else ():
        with accelerator.accumulate(model):
            loss = loss_fn(model, batch)
            accelerator.backward(loss)
            if accelerator.sync_gradients and grad_clip:
                accelerator.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if accelerator.sync_gradients:
            scheduler.step()
            if ema is not None:
                ema.step(params)
            step += 1
            losses.append(float(accelerator.reduce(loss.detach(), reduction="mean")))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4g}", refresh=False)
            if state_dir is not None and (step >= steps or (checkpoint_every and step % checkpoint_every == 0)):
                _save_state(accelerator, model, optimizer, step, state_dir, identity, losses, ema,
                            train_seconds=earlier + time.perf_counter() - t0)
            if step >= steps:
                break
    bar.close()
    if ema is not None:
        ema.copy_to(params)  # the exported weights are the average (the trainer state keeps the last ones)
    if on_done is not None:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            on_done(accelerator.unwrap_model(model), step)
        accelerator.wait_for_everyone()
    seconds = time.perf_counter() - t0
    final_loss = float(np.mean(losses[-20:])) if losses else math.nan
    return FitResult(steps=step, seconds=seconds, final_loss=final_loss, losses=losses, earlier_seconds=earlier)


def fit_timing(result: FitResult) -> dict:
    """A training stage's timing.json entries. run_stage adds every `earlier_seconds` to the stage's seconds,
    so a stage resumed from a saved state reports all its training, not only its last call."""
    return {"train_seconds": round(result.seconds, 2), "steps": result.steps,
            "earlier_seconds": round(result.earlier_seconds, 2)}


def _save_state(accelerator, model, optimizer, step, state_dir, identity, losses, ema=None,
                train_seconds: float = 0.0) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        extra = ({"extra_tensors": {f"ema.{i}": p for i, p in enumerate(ema.shadow_params)},
                  "ema_step": ema.optimization_step} if ema is not None else {})
        save_state(state_dir, accelerator.unwrap_model(model), optimizer, step, identity=identity, losses=losses,
                   train_seconds=train_seconds, **extra)
    accelerator.wait_for_everyone()


def _restore_ema(ema: EMAModel, meta: dict, state_dir) -> None:
    """The EMA weights and step of a resumed state; the identity (which holds ema_decay) guarantees they exist."""
    saved = meta.get("extra_tensors") or {}
    if len(saved) != len(ema.shadow_params):
        raise UserError(f"{display_path(state_dir)}: trainer state has no EMA weights for this model; "
                        "start fresh with --fresh")
    ema.shadow_params = [saved[f"ema.{i}"].to(p.device, p.dtype) for i, p in enumerate(ema.shadow_params)]
    ema.optimization_step = int(meta["ema_step"])


# --- losses ---------------------------------------------------------------------------------------
class AutoencoderObjective(torch.nn.Module):
    """L1 on posterior-mode reconstructions + a small KL term (keeps the latent space SD-like)."""

    def __init__(self, vae, kl_weight: float):
        super().__init__()
        self.vae, self.kl_weight = vae, kl_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        posterior = self.vae.encode(x * 2 - 1).latent_dist
        rec = (self.vae.decode(posterior.mode()).sample + 1) / 2
        return F.l1_loss(rec, x) + self.kl_weight * posterior.kl().mean()


def autoencoder_loss(model, batch) -> torch.Tensor:
    return model(batch["hr"])


@dataclass
class LatentSR:
    """Everything a U-Net loss needs besides the network being trained (all frozen)."""

    codec: LatentCodec
    alphas_cumprod: torch.Tensor
    null_emb: torch.Tensor
    prediction_type: str
    weighting: str
    degradation: dict
    start: str = "noise"  # where the one-step latents of decoder fine-tuning begin (the pipeline's start)

    @torch.no_grad()
    def latents(self, batch: dict, scales: Sequence[int]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """(z_h, {s: z_l at s}) for a batch: from the latent bank when the batch carries them, else
        encoded now. Every z_l comes from ONE degradation draw per image; only the last downscale differs."""
        if "z_h" in batch:
            return batch["z_h"], {s: batch[f"z_l_x{s}"] for s in scales}
        hr = batch["hr"]
        lrs = degrade(hr, scales, [int(s) for s in batch["seed"]], self.degradation)
        return self.codec.encode(hr), {s: self.codec.encode(bicubic_up(lrs[s], s)) for s in scales}

    def noisy(self, z_h: torch.Tensor, batch: dict) -> torch.Tensor:
        """z_t = alpha_t z_h + sigma_t eps with the example's own t and eps."""
        alpha, sigma = alpha_sigma(self.alphas_cumprod, batch["t"])
        return add_noise(z_h, batch["eps"], alpha, sigma)

    def predict_z0(self, unet, z_t, z_l, t) -> torch.Tensor:
        return predict_z0(unet, z_t, z_l, t, self.null_emb, alphas_cumprod=self.alphas_cumprod,
                          prediction_type=self.prediction_type)


def base_loss(unet, batch: dict, *, task: LatentSR, scale: int) -> torch.Tensor:
    """Eq. 1: E[ omega(lambda_t) || z-hat_theta(z_t, z_l, lambda_t) - z_h ||^2 ]."""
    z_h, z_l = task.latents(batch, [scale])
    return _weighted_latent_loss(unet, task, task.noisy(z_h, batch), z_l[scale], batch["t"], target=z_h)


def distillation_loss(unet, batch: dict, *, task: LatentSR, scale: int, teacher, teacher_scale: int,
                      target_steps: int = 1, target_from_t: int = 0) -> torch.Tensor:
    """Eq. 2: E[ omega || z-hat_theta(z_t, z_l, .) - z-hat_phi(z_t, z'_l, .) ||^2 ].

    Teacher and student see the same z_t and t; the teacher's z'_l is the easier x(scale/2) LR of
    the same HR image with the same degradation draw. A batch with `eps_teacher` (distill.teacher_noise:
    independent, a mechanism check) gives the teacher z'_t = alpha_t z_h + sigma_t eps' instead: its target
    then carries no error tied to the student's own z_t. target_steps > 1 (another mechanism check) replaces
    the target of every example with t >= target_from_t by the teacher's own `target_steps`-step DDIM sample
    from its z_t (teacher_sample): a sharp sample instead of the blurred mean that one step predicts at high t.
    """
    t = batch["t"]
    z_h, z_ls = task.latents(batch, [scale, teacher_scale])
    z_t = task.noisy(z_h, batch)
    z_t_teacher = task.noisy(z_h, {**batch, "eps": batch["eps_teacher"]}) if "eps_teacher" in batch else z_t
    with torch.no_grad():
        target = task.predict_z0(teacher, z_t_teacher, z_ls[teacher_scale], t)
        high = t >= target_from_t if target_steps > 1 else None  # mechanism check: the teacher's own sample
        if high is not None and bool(high.any()):
            target[high] = teacher_sample(teacher, task, z_t_teacher[high], z_ls[teacher_scale][high], t[high],
                                          target[high], steps=target_steps)
    return _weighted_latent_loss(unet, task, z_t, z_ls[scale], t, target=target)


def teacher_sample(teacher, task: LatentSR, z_t, z_l, t, z0, *, steps: int) -> torch.Tensor:
    """The teacher's z-hat_0 after `steps` DDIM steps (eta = 0) from each example's own (z_t, t) down to 0,
    at t, (steps-1) t / steps, ..., t / steps; `z0` is its prediction at t (the first step's).
    Written here because diffusers' DDIMScheduler.step takes one timestep for the whole batch, and each example
    starts from its own t: the update is DDIM's, z_s = alpha_s z0 + sigma_s (z_t - alpha_t z0) / sigma_t."""
    start = t
    for k in range(1, steps):
        s = start * (steps - k) // steps
        eps = implied_eps(z_t, z0, *alpha_sigma(task.alphas_cumprod, t))
        z_t, t = add_noise(z0, eps, *alpha_sigma(task.alphas_cumprod, s)), s
        z0 = task.predict_z0(teacher, z_t, z_l, t)
    return z0


def _weighted_latent_loss(unet, task: LatentSR, z_t, z_l, t, *, target) -> torch.Tensor:
    alpha, sigma = alpha_sigma(task.alphas_cumprod, t)
    z0_hat = task.predict_z0(unet, z_t, z_l, t)
    per_example = (z0_hat - target).pow(2).mean(dim=(1, 2, 3))
    return (loss_weight(task.weighting, alpha, sigma) * per_example).mean()


class DecoderOnly(torch.nn.Module):
    """D(z / scaling_factor) as a module, so DDP sees a forward through the trained parameters."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.vae.decode(z / self.vae.config.scaling_factor).sample + 1) / 2


def decoder_loss(decoder, batch: dict, *, task: LatentSR, unet, scheduler, scale: int,
                 perceptual: Callable | None, perceptual_weight: float, latents: str = "onestep") -> torch.Tensor:
    """Decoder fine-tuning: one-step latents from the frozen U-Net (latents "onestep", the paper's), or the
    autoencoder's own E(HR) ("autoencoder": the control that gives the decoder the same extra training
    without the one-step latents), decoded and compared with HR."""
    hr = batch["hr"]
    z_h, z_l = task.latents(batch, [scale])
    if latents == "autoencoder":
        z0 = z_h
    elif latents == "onestep":
        with torch.no_grad():
            z0 = sample(unet, scheduler, z_l[scale], task.null_emb, steps=1,
                        generators=per_image_generators(batch["seed"].tolist(), device="cpu"), start=task.start)
    else:
        raise ValueError(f"decoder latents must be onestep or autoencoder, got {latents!r}")
    rec = decoder(z0)
    loss = F.l1_loss(rec, hr)
    if perceptual is not None and perceptual_weight > 0:
        loss = loss + perceptual_weight * perceptual(rec.clamp(0, 1), hr)
    return loss


__all__ = [
    "CropStream", "LatentBank", "FitResult", "fit", "make_accelerator", "example_seed", "AutoencoderObjective",
    "autoencoder_loss", "LatentSR", "base_loss", "distillation_loss", "DecoderOnly", "decoder_loss",
]
