"""Colour fixes applied to a diffusion SR output, with the (upsampled) LR image as the reference.

StableSR (Wang et al. 2024, `scripts/wavelet_color_fix.py`) offers two, both ours re-written from the
description: AdaIN maps each channel's mean and standard deviation to the reference's; the wavelet fix
keeps the output's high frequencies and takes the low frequencies (the colour) from the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COLOUR_FIXES = ("none", "adain", "wavelet")
WAVELET_LEVELS = 5  # StableSR: dilations 1, 2, 4, 8, 16
EPS = 1e-5


def _check(x: torch.Tensor, ref: torch.Tensor) -> None:
    if x.ndim != 4 or ref.shape[:2] != x.shape[:2]:
        raise ValueError(f"colour fix needs N x C x H x W tensors with the same N, C: {tuple(x.shape)}, "
                         f"{tuple(ref.shape)}")


def adain(x: torch.Tensor, ref: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """(x - mu_x) / sigma_x * sigma_ref + mu_ref per image and channel (unbiased std, as StableSR).

    StableSR adds eps to the variance; we floor the std at eps instead, so that the mapping is exact
    for any non-flat channel (the two differ by < 1e-3 relative for sigma > 0.05).
    """
    _check(x, ref)
    xf, rf = x.flatten(2).float(), ref.flatten(2).float()
    mu_x, mu_r = xf.mean(-1, keepdim=True), rf.mean(-1, keepdim=True)
    sd_x, sd_r = xf.std(-1, keepdim=True).clamp_min(eps), rf.std(-1, keepdim=True)
    return ((xf - mu_x) / sd_x * sd_r + mu_r).view_as(x).to(x.dtype)


def wavelet_lowpass(x: torch.Tensor, levels: int = WAVELET_LEVELS) -> torch.Tensor:
    """The low-frequency residual of an a-trous decomposition: `levels` passes of the 3x3 binomial
    kernel [1 2 1]^T [1 2 1] / 16 at dilation 2^i, replicate padding (StableSR's wavelet_decomposition)."""
    c = x.shape[1]
    k1 = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float32, device=x.device) / 4
    kernel = (k1[:, None] * k1[None, :]).expand(c, 1, 3, 3).contiguous()
    low = x.float()
    for i in range(levels):
        d = 2 ** i
        low = F.conv2d(F.pad(low, (d, d, d, d), mode="replicate"), kernel, groups=c, dilation=d)
    return low.to(x.dtype)


def wavelet(x: torch.Tensor, ref: torch.Tensor, levels: int = WAVELET_LEVELS) -> torch.Tensor:
    """x's high frequencies (x - lowpass(x)) + ref's low frequencies (lowpass(ref))."""
    _check(x, ref)
    if ref.shape != x.shape:
        raise ValueError(f"wavelet colour fix needs equal shapes, got {tuple(x.shape)} and {tuple(ref.shape)}")
    return x - wavelet_lowpass(x, levels) + wavelet_lowpass(ref, levels)


def colour_fix(x: torch.Tensor, ref: torch.Tensor, kind: str) -> torch.Tensor:
    """Dispatch on `kind` in COLOUR_FIXES; the caller clamps to its range afterwards."""
    if kind == "none":
        return x
    if kind == "adain":
        return adain(x, ref)
    if kind == "wavelet":
        return wavelet(x, ref)
    raise ValueError(f"colour fix {kind!r} is not one of {', '.join(COLOUR_FIXES)}")
