"""Diffusion maths in the paper's notation.

    z_t = alpha_t * z_h + sigma_t * eps          forward process (variance preserving)
    lambda_t = log(alpha_t^2 / sigma_t^2)        log signal-to-noise ratio; SNR = exp(lambda_t)
    v = alpha_t * eps - sigma_t * z_h            v-prediction target (Salimans & Ho, 2022)
    omega(lambda_t) = max(SNR, 1)                "truncated SNR" loss weight in clean-latent space

Code names: alpha = alpha_t, sigma = sigma_t, z0 / x0 = z_h (clean latent), z0_hat = z-hat_theta.
All functions broadcast a per-example (N,) alpha/sigma over N x C x H x W latents.
"""

from __future__ import annotations

import torch

PREDICTION_TYPES = ("v_prediction", "epsilon", "sample")  # diffusers' names for v, eps, x0
WEIGHTINGS = ("truncated_snr", "snr", "constant")


def alpha_sigma(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), for integer timesteps t (shape N)."""
    abar = alphas_cumprod.to(t.device)[t].float()
    return abar.sqrt(), (1.0 - abar).sqrt()


def log_snr(alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """lambda_t = log(alpha_t^2 / sigma_t^2)."""
    return 2.0 * (alpha.log() - sigma.log())


def snr(alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return (alpha / sigma) ** 2


def _b(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-example (N,) tensor over the remaining dims of `like`."""
    return x.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def add_noise(z0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """z_t = alpha_t z0 + sigma_t eps."""
    return _b(alpha, z0) * z0 + _b(sigma, z0) * eps


def implied_eps(z_t: torch.Tensor, z0: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The noise that makes z_t = alpha_t z0 + sigma_t eps hold (DDIM's eps-hat for a predicted z0)."""
    return (z_t - _b(alpha, z0) * z0) / _b(sigma, z0)


def target_for(prediction_type: str, z0, eps, alpha, sigma) -> torch.Tensor:
    """What a network with this parameterisation should output for (z0, eps) at (alpha, sigma)."""
    if prediction_type == "v_prediction":
        return _b(alpha, z0) * eps - _b(sigma, z0) * z0
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "sample":
        return z0
    raise ValueError(f"unknown prediction_type {prediction_type!r}; choose one of {PREDICTION_TYPES}")


def to_z0(prediction_type: str, pred: torch.Tensor, z_t: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """z-hat: the clean-latent estimate implied by a network output of the given type."""
    a, s = _b(alpha, z_t), _b(sigma, z_t)
    if prediction_type == "v_prediction":
        return a * z_t - s * pred  # z0 = alpha z_t - sigma v
    if prediction_type == "epsilon":
        return (z_t - s * pred) / a  # ill-conditioned at t = T: 1/alpha_T ~ 15 for SD's schedule
    if prediction_type == "sample":
        return pred
    raise ValueError(f"unknown prediction_type {prediction_type!r}; choose one of {PREDICTION_TYPES}")


def loss_weight(kind: str, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """omega(lambda_t) for the clean-latent loss ||z-hat - target||^2."""
    if kind == "truncated_snr":
        return snr(alpha, sigma).clamp(min=1.0)
    if kind == "snr":
        return snr(alpha, sigma)
    if kind == "constant":
        return torch.ones_like(alpha)
    raise ValueError(f"unknown weighting {kind!r}; choose one of {WEIGHTINGS}")
