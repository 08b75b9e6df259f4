"""LR synthesis from HR, seeded per image. `degrade` is the one entry point used by training,
data preparation and the DIV2K-Val generator.

Kinds:
  bicubic              MATLAB bicubic downscale (the classic protocol).
  realesrgan           Real-ESRGAN's second-order degradation (Wang et al., ICCVW 2021), the original
                       parameter set (`REALESRGAN`).
  realesrgan_stablesr  the same pipeline with StableSR's softened parameter set (`REALESRGAN_STABLESR`).

For scale distillation the x2 and x4 LR of one HR image must share one degradation draw.
`degrade(hr, scales=(2, 4), seeds=...)` draws every random choice once, then runs the chain from the second
degradation on at each scale's own size (see `realesrgan_degrade`), so a seed gives the same draw whatever
`scales` is, and the x2 LR really is the easier input.

Determinism is per image (STYLE.md §7): image i uses only torch.Generator().manual_seed(seeds[i]); the
chain runs image by image because its random resizes give every image its own size, and all maths
inside one image is tensor ops (kernels built on a grid, grouped convolutions, noise fields).
Deviations from BasicSR's GPU pipeline, on purpose: JPEG is a real encoder (PIL, integer quality) rather
than DiffJPEG; the "bicubic" choice of the random resizes is MATLAB's antialiased imresize
(yonos.resize) rather than F.interpolate's a=-0.75 kernel; the GT is not USM-sharpened here.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from yonos.resize import bicubic_down, imresize

KINDS = ("bicubic", "realesrgan", "realesrgan_stablesr")
KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")

# Real-ESRGAN x4plus training options (train_realesrnet_x4plus.yml / realesrgan_dataset defaults).
REALESRGAN = {
    # kernels of the first and second blur; sizes are drawn from odd 7..21 and padded to 21
    "kernel_prob": [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],  # over KERNEL_TYPES
    "sinc_prob": 0.1,
    "blur_sigma": [0.2, 3.0],
    "betag_range": [0.5, 4.0],
    "betap_range": [1.0, 2.0],
    "kernel_prob2": [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    "sinc_prob2": 0.1,
    "blur_sigma2": [0.2, 1.5],
    "betag_range2": [0.5, 4.0],
    "betap_range2": [1.0, 2.0],
    "final_sinc_prob": 0.8,
    # first degradation
    "resize_prob": [0.2, 0.7, 0.1],  # up, down, keep
    "resize_range": [0.15, 1.5],
    "gaussian_noise_prob": 0.5,  # else Poisson
    "noise_range": [1.0, 30.0],  # sigma in 8-bit levels
    "poisson_scale_range": [0.05, 3.0],
    "gray_noise_prob": 0.4,
    "jpeg_range": [30, 95],
    # second degradation
    "second_blur_prob": 0.8,
    "resize_prob2": [0.3, 0.4, 0.3],
    "resize_range2": [0.3, 1.2],  # relative to HR / scale, like Real-ESRGAN's to the LR size
    "gaussian_noise_prob2": 0.5,
    "noise_range2": [1.0, 25.0],
    "poisson_scale_range2": [0.05, 2.5],
    "gray_noise_prob2": 0.4,
    "jpeg_range2": [30, 95],
}

# StableSR (configs/stableSRNew/v2-finetune_text_T_512.yaml): softer blur, noise and JPEG.
# Its blur_kernel_size2: 11 is read but unused by BasicSR's RealESRGANDataset (sizes come from 7..21),
# so it has no counterpart here.
REALESRGAN_STABLESR = {
    **REALESRGAN,
    "blur_sigma": [0.2, 1.5],
    "betag_range": [0.5, 2.0],
    "betap_range": [1.0, 1.5],
    "blur_sigma2": [0.2, 1.0],
    "betag_range2": [0.5, 2.0],
    "betap_range2": [1.0, 1.5],
    "resize_range": [0.3, 1.5],
    "noise_range": [1.0, 15.0],
    "poisson_scale_range": [0.05, 2.0],
    "jpeg_range": [60, 95],
    "second_blur_prob": 0.5,
    "resize_range2": [0.6, 1.2],
    "noise_range2": [1.0, 12.0],
    "poisson_scale_range2": [0.05, 1.0],
    "jpeg_range2": [60, 100],
}

PRESETS = {"realesrgan": REALESRGAN, "realesrgan_stablesr": REALESRGAN_STABLESR}
KERNEL_SIZES = tuple(range(7, 22, 2))  # Real-ESRGAN's kernel_range
PAD_SIZE = 21  # every kernel is zero-padded to 21x21 so blur support is comparable


def resolve_params(cfg: dict | None) -> dict:
    """The full parameter set for `cfg['kind']`: the named preset, overridden by any keys in cfg."""
    cfg = dict(cfg or {"kind": "bicubic"})
    kind = cfg.get("kind", "bicubic")
    if kind not in KINDS:
        raise ValueError(f"unknown degradation kind {kind!r}; choose one of {KINDS}")
    if kind == "bicubic":
        return {"kind": kind}
    unknown = set(cfg) - set(PRESETS[kind]) - {"kind"}
    if unknown:
        raise ValueError(f"unknown degradation keys {sorted(unknown)} for kind {kind!r}")
    return {**PRESETS[kind], **cfg}


def degrade(
    hr: torch.Tensor, scales: Sequence[int], seeds: Sequence[int], cfg: dict | None = None
) -> dict[int, torch.Tensor]:
    """hr: N x 3 x H x W in [0, 1]; one seed per image. Returns {scale: LR in [0, 1]} for each scale."""
    cfg = cfg or {"kind": "bicubic"}
    kind = cfg.get("kind", "bicubic")
    if len(seeds) != hr.shape[0]:
        raise ValueError(f"need one seed per image: {len(seeds)} seeds for {hr.shape[0]} images")
    if kind == "bicubic":
        return {s: bicubic_down(hr, s).clamp(0, 1) for s in scales}
    if kind in PRESETS:
        p = resolve_params(cfg)
        per_image = [realesrgan_degrade(hr[i : i + 1], scales, int(seeds[i]), p) for i in range(hr.shape[0])]
        return {s: torch.cat([d[s] for d in per_image]) for s in scales}
    raise ValueError(f"unknown degradation kind {kind!r}; choose one of {KINDS}")


# ---------------------------------------------------------------------------------------------
# Random draws: every draw of one image comes from its own generator, in a fixed order.


def uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64))


def choice(g: torch.Generator, probs: Sequence[float]) -> int:
    return int(torch.multinomial(torch.tensor(probs, dtype=torch.float64), 1, generator=g))


def beta_draw(g: torch.Generator, beta_range: Sequence[float]) -> float:
    """Shape parameter, half of the draws below 1 and half above, as Real-ESRGAN does."""
    lo, hi = beta_range
    return uniform(g, lo, 1.0) if uniform(g, 0, 1) < 0.5 else uniform(g, 1.0, hi)


# ---------------------------------------------------------------------------------------------
# Blur kernels. Each is a normalised 2-D kernel (sum 1), float64, zero-padded to PAD_SIZE.


def kernel_grid(size: int) -> torch.Tensor:
    """size x size x 2 coordinates (x, y) centred on the middle pixel."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([xx, yy], dim=-1)


def inverse_covariance(sigma_x: float, sigma_y: float, theta: float) -> torch.Tensor:
    """Sigma^-1 for principal std devs (sigma_x, sigma_y) rotated by theta."""
    c, s = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    cov = rot @ torch.diag(torch.tensor([sigma_x**2, sigma_y**2], dtype=torch.float64)) @ rot.T
    return torch.linalg.inv(cov)


def mahalanobis_sq(size: int, inv_cov: torch.Tensor) -> torch.Tensor:
    """x^T Sigma^-1 x on the kernel grid."""
    grid = kernel_grid(size)
    return torch.einsum("hwi,ij,hwj->hw", grid, inv_cov, grid)


def gaussian_kernel(size: int, inv_cov: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Generalised Gaussian exp(-0.5 (x^T S^-1 x)^beta); beta = 1 is the ordinary Gaussian."""
    k = torch.exp(-0.5 * mahalanobis_sq(size, inv_cov) ** beta)
    return k / k.sum()


def plateau_kernel(size: int, inv_cov: torch.Tensor, beta: float) -> torch.Tensor:
    """Plateau-shaped 1 / (1 + (x^T S^-1 x)^beta)."""
    k = 1.0 / (1.0 + mahalanobis_sq(size, inv_cov) ** beta)
    return k / k.sum()


def sinc_kernel(size: int, omega_c: float) -> torch.Tensor:
    """Circular low-pass (2-D sinc) with cutoff omega_c: omega_c J1(omega_c r) / (2 pi r)."""
    r = kernel_grid(size).norm(dim=-1)
    safe_r = torch.where(r == 0, torch.ones_like(r), r)
    k = omega_c * torch.special.bessel_j1(omega_c * safe_r) / (2 * math.pi * safe_r)
    k = torch.where(r == 0, torch.full_like(r, omega_c**2 / (4 * math.pi)), k)
    return k / k.sum()


def pad_kernel(k: torch.Tensor, size: int = PAD_SIZE) -> torch.Tensor:
    pad = (size - k.shape[-1]) // 2
    return F.pad(k, (pad, pad, pad, pad))


def identity_kernel(size: int = PAD_SIZE) -> torch.Tensor:
    k = torch.zeros(size, size, dtype=torch.float64)
    k[size // 2, size // 2] = 1.0
    return k


def random_blur_kernel(g: torch.Generator, p: dict, suffix: str = "") -> torch.Tensor:
    """One blur kernel of the first (suffix '') or second (suffix '2') degradation."""
    size = KERNEL_SIZES[choice(g, [1.0] * len(KERNEL_SIZES))]
    if uniform(g, 0, 1) < p["sinc_prob" + suffix]:
        # Small kernels get a higher minimum cutoff so the ringing stays inside the support.
        omega_c = uniform(g, math.pi / 3, math.pi) if size < 13 else uniform(g, math.pi / 5, math.pi)
        return pad_kernel(sinc_kernel(size, omega_c))
    kind = KERNEL_TYPES[choice(g, p["kernel_prob" + suffix])]
    lo, hi = p["blur_sigma" + suffix]
    if kind.endswith("iso") and not kind.endswith("aniso"):
        sigma = uniform(g, lo, hi)
        sigma_x, sigma_y, theta = sigma, sigma, 0.0
    else:
        sigma_x, sigma_y, theta = uniform(g, lo, hi), uniform(g, lo, hi), uniform(g, -math.pi, math.pi)
    inv_cov = inverse_covariance(sigma_x, sigma_y, theta)
    if kind.startswith("generalized"):
        k = gaussian_kernel(size, inv_cov, beta_draw(g, p["betag_range" + suffix]))
    elif kind.startswith("plateau"):
        k = plateau_kernel(size, inv_cov, beta_draw(g, p["betap_range" + suffix]))
    else:
        k = gaussian_kernel(size, inv_cov)
    return pad_kernel(k)


def random_final_sinc(g: torch.Generator, p: dict) -> torch.Tensor:
    """The last low-pass before the final JPEG: a sinc with probability final_sinc_prob, else identity."""
    if uniform(g, 0, 1) < p["final_sinc_prob"]:
        size = KERNEL_SIZES[choice(g, [1.0] * len(KERNEL_SIZES))]
        return pad_kernel(sinc_kernel(size, uniform(g, math.pi / 3, math.pi)))
    return identity_kernel()


# ---------------------------------------------------------------------------------------------
# Operators on one image 1 x 3 x h x w (float32).


def blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise convolution with reflect padding, so borders are not darkened."""
    k = kernel.to(x.dtype)
    pad = k.shape[-1] // 2
    mode = "reflect" if min(x.shape[-2:]) > pad else "replicate"
    xp = F.pad(x, (pad, pad, pad, pad), mode=mode)
    weight = k.expand(x.shape[1], 1, *k.shape)
    return F.conv2d(xp, weight, groups=x.shape[1])


def resize_to(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize with one of RESIZE_MODES; 'bicubic' is MATLAB's antialiased imresize."""
    size = (max(1, int(size[0])), max(1, int(size[1])))
    if tuple(x.shape[-2:]) == size:
        return x
    if mode == "bicubic":
        return imresize(x, size=size)
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def gaussian_noise(x: torch.Tensor, g: torch.Generator, sigma: float, gray: bool) -> torch.Tensor:
    """Additive white Gaussian noise; grey noise is one field shared by the three channels."""
    shape = (1, 1, *x.shape[-2:]) if gray else x.shape
    return x + torch.randn(shape, generator=g, dtype=x.dtype) * (sigma / 255.0)


def poisson_noise(x: torch.Tensor, g: torch.Generator, scale: float, gray: bool) -> torch.Tensor:
    """Shot noise on the 8-bit image, levels rounded up to a power of two, scaled by `scale`."""
    src = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]) if gray else x
    q = (src.clamp(0, 1) * 255).round() / 255
    levels = 2 ** math.ceil(math.log2(max(2, len(torch.unique(q)))))
    noise = torch.poisson(q * levels, generator=g) / levels - q
    return x + noise * scale


def random_noise(x: torch.Tensor, g: torch.Generator, p: dict, suffix: str = "") -> torch.Tensor:
    gray = uniform(g, 0, 1) < p["gray_noise_prob" + suffix]
    if uniform(g, 0, 1) < p["gaussian_noise_prob" + suffix]:
        return gaussian_noise(x, g, uniform(g, *p["noise_range" + suffix]), gray)
    return poisson_noise(x, g, uniform(g, *p["poisson_scale_range" + suffix]), gray)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode and decode with a real JPEG encoder (libjpeg through PIL, 4:2:0 chroma)."""
    arr = (x[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    out = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(out).permute(2, 0, 1)[None].to(x.dtype)


def random_jpeg(x: torch.Tensor, g: torch.Generator, quality_range: Sequence[int]) -> torch.Tensor:
    lo, hi = quality_range
    return jpeg(x.clamp(0, 1), int(round(uniform(g, lo, hi))))


def draw_resize(g: torch.Generator, probs, factor_range) -> tuple[float, str]:
    """Resize factor drawn up (>1), down (<1) or kept, and the interpolation mode."""
    direction = choice(g, probs)
    lo, hi = factor_range
    factor = uniform(g, 1.0, hi) if direction == 0 else uniform(g, lo, 1.0) if direction == 1 else 1.0
    return factor, RESIZE_MODES[choice(g, [1.0] * len(RESIZE_MODES))]


def draw_noise(g: torch.Generator, p: dict, suffix: str = "") -> dict:
    """Noise type and level; the noise field itself comes from its own seed, so the same draw can be
    applied at several sizes (the x2 and x4 branches of one image)."""
    gray = uniform(g, 0, 1) < p["gray_noise_prob" + suffix]
    if uniform(g, 0, 1) < p["gaussian_noise_prob" + suffix]:
        kind, level = "gaussian", uniform(g, *p["noise_range" + suffix])
    else:
        kind, level = "poisson", uniform(g, *p["poisson_scale_range" + suffix])
    return {"gray": gray, "kind": kind, "level": level, "seed": int(torch.randint(0, 2**62, (), generator=g))}


def apply_noise(x: torch.Tensor, noise: dict) -> torch.Tensor:
    g = torch.Generator().manual_seed(noise["seed"])
    if noise["kind"] == "gaussian":
        return gaussian_noise(x, g, noise["level"], noise["gray"])
    return poisson_noise(x, g, noise["level"], noise["gray"])


# ---------------------------------------------------------------------------------------------
# The second-order chain.


def draw_chain(g: torch.Generator, p: dict) -> dict:
    """Every random choice of one image's chain, drawn in a fixed order before any pixel work."""
    d = {"kernel1": random_blur_kernel(g, p), "resize1": draw_resize(g, p["resize_prob"], p["resize_range"]),
         "noise1": draw_noise(g, p), "jpeg1": int(round(uniform(g, *p["jpeg_range"])))}
    d["kernel2"] = random_blur_kernel(g, p, "2")
    d["blur2"] = uniform(g, 0, 1) < p["second_blur_prob"]
    d["resize2"] = draw_resize(g, p["resize_prob2"], p["resize_range2"])
    d["noise2"] = draw_noise(g, p, "2")
    d["final_sinc"] = random_final_sinc(g, p)
    d["sinc_first"] = uniform(g, 0, 1) < 0.5
    d["final_mode"] = RESIZE_MODES[choice(g, [1.0] * len(RESIZE_MODES))]
    d["jpeg2"] = int(round(uniform(g, *p["jpeg_range2"])))
    return d


def realesrgan_degrade(hr: torch.Tensor, scales: Sequence[int], seed: int, p: dict) -> dict[int, torch.Tensor]:
    """One image 1 x 3 x H x W -> {scale: LR}, all scales from one draw.

    The first degradation works at HR size and is shared. From the second degradation on, each scale s
    runs the chain at its own size, as Real-ESRGAN does when trained for scale s: the second resize is
    relative to HR / s, then the final resize goes to HR / s. So the x2 LR of a draw keeps the detail the
    x4 LR loses (the teacher's task is easier), while kernels, noise levels, JPEG qualities and resize
    factors are the same. A scale's output does not depend on which other scales are requested.
    """
    H, W = hr.shape[-2:]
    for s in scales:
        if H % s or W % s:
            raise ValueError(f"HR size {H}x{W} is not divisible by scale {s}")
    d = draw_chain(torch.Generator().manual_seed(seed), p)
    # first degradation (shared): blur, resize relative to HR, noise, JPEG
    x = blur(hr.float(), d["kernel1"])
    factor, mode = d["resize1"]
    x = resize_to(x, (round(H * factor), round(W * factor)), mode)
    x = apply_noise(x, d["noise1"]).clamp(0, 1)
    x = jpeg(x, d["jpeg1"])
    out = {}
    for s in scales:
        y = blur(x, d["kernel2"]) if d["blur2"] else x
        factor, mode = d["resize2"]
        y = resize_to(y, (round(H / s * factor), round(W / s * factor)), mode)
        y = apply_noise(y, d["noise2"]).clamp(0, 1)
        # final: [resize + sinc, JPEG] or [JPEG, resize + sinc]
        if not d["sinc_first"]:
            y = jpeg(y, d["jpeg2"])
        y = blur(resize_to(y, (H // s, W // s), d["final_mode"]), d["final_sinc"])
        if d["sinc_first"]:
            y = jpeg(y.clamp(0, 1), d["jpeg2"])
        # LR is stored as 8-bit, like the released test sets
        out[s] = ((y.clamp(0, 1) * 255).round() / 255).to(hr.dtype)
    return out
