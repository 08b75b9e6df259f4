"""One-to-many-step DDIM sampling conditioned on z_l, with noise seeded per image.

diffusers' DDIMScheduler with "trailing" timestep spacing: one step starts at t = T - 1 = 999 (SD's
schedule is not zero-terminal-SNR, so alpha_999 ~ 0.068 and z_T carries a little signal), and
`set_alpha_to_one=True` makes the last step return the network's z-hat exactly. eta = 0.

Two options of the one-step regime (issue 8; the report's diagnostics measure them): model
`rescale_betas_zero_snr` (Lin et al., 2024; diffusers' flag) makes alpha_999 = 0, so training at t = 999 sees
pure noise as inference does; `start="condition"` begins DDIM from z_T = alpha_T z_l + sigma_T eps (the
training distribution's t = T with the LR latent standing in for z_h) instead of z_T = eps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import DDIMScheduler

from yonos.schedule import add_noise, alpha_sigma, to_z0

STARTS = ("noise", "condition")


def make_scheduler(model_cfg: dict) -> DDIMScheduler:
    return DDIMScheduler(
        num_train_timesteps=model_cfg["num_train_timesteps"],
        beta_start=model_cfg["beta_start"],
        beta_end=model_cfg["beta_end"],
        beta_schedule=model_cfg["beta_schedule"],
        prediction_type=model_cfg["prediction_type"],
        timestep_spacing="trailing",
        set_alpha_to_one=True,
        clip_sample=False,
        steps_offset=0,
        rescale_betas_zero_snr=bool(model_cfg.get("rescale_betas_zero_snr", False)),
    )


def respaced_timesteps(steps: int, num_train_timesteps: int = 1000) -> list[int]:
    """StableSR's respacing (guided-diffusion `space_timesteps(T, [steps])`), descending.

    Taken steps: round(i * (T - 1) / (steps - 1)) accumulated as a float, i = 0 .. steps-1. For one step
    the original rule takes t = 0, which from pure noise returns noise; we take t = T - 1 [choice].
    """
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"steps must be in [1, {num_train_timesteps}], got {steps}")
    if steps == 1:
        return [num_train_timesteps - 1]
    stride, cur, taken = (num_train_timesteps - 1) / (steps - 1), 0.0, []
    for _ in range(steps):
        taken.append(round(cur))
        cur += stride
    return sorted(set(taken), reverse=True)


def per_image_generators(seeds: Sequence[int], device="cpu") -> list[torch.Generator]:
    """One generator per image id (EDM's StackedRandomGenerator idea): pixels don't depend on batching."""
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]


def stacked_randn(shape: Sequence[int], generators: Sequence[torch.Generator], device, dtype=torch.float32):
    """N independent draws of `shape`, the i-th from generators[i] (drawn on its device, then moved)."""
    return torch.stack([torch.randn(tuple(shape), generator=g, device=g.device) for g in generators]).to(
        device=device, dtype=dtype
    )


def denoise(unet, z_t, z_l, t, null_emb) -> torch.Tensor:
    """Raw network output for [z_t, z_l] at integer timesteps t (shape N)."""
    cond = null_emb.to(device=z_t.device, dtype=z_t.dtype).expand(z_t.shape[0], -1, -1)
    x = torch.cat([z_t, z_l.to(z_t.dtype)], dim=1)
    return unet(x, t, encoder_hidden_states=cond).sample


def predict_z0(unet, z_t, z_l, t, null_emb, *, alphas_cumprod: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """z-hat_theta(z_t, z_l, lambda_t): the clean-latent prediction, whatever the parameterisation."""
    alpha, sigma = alpha_sigma(alphas_cumprod, t)
    pred = denoise(unet, z_t, z_l, t, null_emb).float()
    return to_z0(prediction_type, pred, z_t.float(), alpha, sigma)


@torch.no_grad()
def sample(
    unet,
    scheduler: DDIMScheduler,
    z_l: torch.Tensor,
    null_emb: torch.Tensor,
    *,
    steps: int,
    generators: Sequence[torch.Generator],
    start: str = "noise",
) -> torch.Tensor:
    """DDIM from z_T to z-hat_0 in `steps` steps (1 <= steps <= num_train_timesteps); z_T = eps ~ N(0, I),
    or alpha_T z_l + sigma_T eps with start="condition" (module docstring)."""
    n_train = scheduler.config.num_train_timesteps
    if not 1 <= steps <= n_train:
        raise ValueError(f"steps must be in [1, {n_train}], got {steps}")
    if len(generators) != z_l.shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} for {z_l.shape[0]} images")
    scheduler.set_timesteps(steps, device=z_l.device)
    if start not in STARTS:
        raise ValueError(f"unknown start {start!r}; choose one of {STARTS}")
    z = stacked_randn(z_l.shape[1:], generators, z_l.device, torch.float32) * scheduler.init_noise_sigma
    if start == "condition":
        t0 = scheduler.timesteps[:1].long().repeat(z.shape[0])
        alpha, sigma = alpha_sigma(scheduler.alphas_cumprod, t0.cpu())
        z = add_noise(z_l.float(), z, alpha.to(z.device), sigma.to(z.device))
    for t in scheduler.timesteps:
        tt = torch.full((z.shape[0],), int(t), device=z.device, dtype=torch.long)
        out = denoise(unet, z.to(unet.dtype), z_l.to(unet.dtype), tt, null_emb).float()
        z = scheduler.step(out, int(t), z, eta=0.0).prev_sample
    return z
