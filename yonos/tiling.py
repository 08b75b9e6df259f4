"""Tiled inference for large images: peak memory bounded by the tile size, not the image size, and no seams.

    from yonos.tiling import Tiling, tiled_upscale_batch
    sr = tiled_upscale_batch(pipe, lr, steps=1, generator=per_image_generators([0]), tiling=Tiling())

Three parts, each the field's usual answer:
- U-Net: latent tiles with Gaussian-weighted overlap (MultiDiffusion, Bar-Tal et al. 2023; StableSR's
  "aggregation sampling", Wang et al. 2023). At every DDIM step the network runs on overlapping tiles of
  [z_t, z_l]; the outputs are blended with Gaussian weights and the scheduler steps on the full latent.
  It is done by wrapping the U-Net (`TiledDenoiser`), so `yonos.sampler.sample` runs unchanged: the
  initial noise is drawn once for the full latent from each image's generator (pixels are deterministic
  per image and do not depend on the tiling of the noise), and tiled == untiled wherever one tile covers
  the image. Blending the v-prediction blends z-hat_0 with the same weights (z-hat_0 = alpha z_t - sigma v).
- VAE encoder and decoder: diffusers' own AutoencoderKL tiling (`use_tiling`, overlapping tiles with a
  linear cross-fade over the shared quarter), with the tile size set from our knob instead of the
  config's `sample_size` (which is a meaningless 32 for our f=4 autoencoder). It works for any f. Known
  limit (diffusers says so too): GroupNorm statistics are each tile's own, not the image's, so a VAE tile
  is not exactly the crop of the untiled result; use a vae_tile as large as memory allows.
- bicubic up(x_l): computed in bands of LR rows with a margin, which is exact (the cubic kernel reads
  2 LR pixels either side) and avoids pyiqa's ~5x-the-output temporary on a whole large image.

Memory that still grows with the image: z_t, z_l and the blend buffers (latent-sized, 16 f^-2 bytes per
output pixel and channel) and the full-resolution up(x_l) and output images (12 bytes per pixel each,
plus diffusers' decoded tiles before it stitches them, about 2x the output).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from yonos.errors import UserError
from yonos.models import unet_multiple, vae_factor
from yonos.resize import bicubic_up
from yonos.sampler import per_image_generators, sample

# Gaussian blend weight, as StableSR's `_gaussian_weights`: var = 0.01, i.e. std = 0.1 x tile side, so a
# tile's edge weighs e^-12.5 of its centre and the boundary-padded outputs hardly count. Measured on the
# smoke-shaped model at one step (tile 48, overlap 16): 36.2 dB vs untiled with std 0.1, 34.2 dB with 0.25.
GAUSSIAN_STD = 0.1
# diffusers' AutoencoderKL blends the last quarter of each VAE tile into the next (tile_overlap_factor).
VAE_OVERLAP_FACTOR = 0.25
BICUBIC_BAND = 64  # LR rows per band of up(x_l); BICUBIC_MARGIN rows either side are computed and dropped
BICUBIC_MARGIN = 4


@dataclass(frozen=True)
class Tiling:
    """Tile knobs, in latent pixels (x f for image pixels). Every one changes pixels, so describe() reports it."""

    tile: int = 128        # U-Net tile side (embedded f=4: 512 image pixels)
    overlap: int = 32      # latent pixels shared by neighbouring U-Net tiles (at least; tiles spread evenly)
    vae_tile: int = 128    # VAE encoder/decoder tile side; the last quarter overlaps the next tile
    std: float = GAUSSIAN_STD  # Gaussian blend weight's std, as a fraction of the U-Net tile side

    def validate(self, multiple: int) -> Tiling:
        """Raise a one-line UserError for knobs the U-Net grid cannot take; return self."""
        if self.tile <= 0 or self.tile % multiple:
            raise UserError(f"tile={self.tile}: the U-Net tile must be a positive multiple of {multiple} latent pixels")
        if not 0 <= self.overlap < self.tile:
            raise UserError(f"overlap={self.overlap}: must be in [0, tile={self.tile}) latent pixels")
        if self.std <= 0:
            raise UserError(f"std={self.std}: the Gaussian blend weight's std must be > 0 (a fraction of the tile)")
        if self.vae_tile <= 0 or self.vae_tile % 4:
            raise UserError(f"vae_tile={self.vae_tile}: must be a positive multiple of 4 latent pixels "
                            f"(the VAE tiles overlap by a quarter)")
        return self

    def describe(self, f: int | None = None) -> dict:
        """The knobs and the fixed choices, for a method's describe() and the reports."""
        d = {**asdict(self), "unit": "latent pixels", "blend": "gaussian",
             "vae_overlap": int(self.vae_tile * VAE_OVERLAP_FACTOR),
             "vae_blend": "linear (diffusers AutoencoderKL tiling)"}
        if f is not None:
            d.update(tile_px=self.tile * f, overlap_px=self.overlap * f, vae_tile_px=self.vae_tile * f)
        return d


def tile_starts(length: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Start offsets of tiles of side `tile` covering [0, length), sharing >= `overlap`, on a `multiple` grid.

    Tiles are spread evenly between 0 and length - tile (so the first and last touch the borders) and
    snapped to the U-Net's down-sampling grid, so a tile sees the same pixel phases as the whole image.
    """
    if length <= tile:
        return [0]
    n = math.ceil((length - tile) / (tile - overlap)) + 1
    span = (length - tile) // multiple
    return sorted({round(i * span / (n - 1)) * multiple for i in range(n)})


def gaussian_weights(h: int, w: int, std: float = GAUSSIAN_STD) -> torch.Tensor:
    """(h, w) separable Gaussian centred on the tile, std = `std` x side (StableSR/MultiDiffusion weights)."""

    def g(n: int) -> torch.Tensor:
        x = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
        return torch.exp(-0.5 * (x / (std * n)) ** 2)

    return (g(h)[:, None] * g(w)[None, :]).float()


def tile_windows(h: int, w: int, tiling: Tiling, multiple: int) -> list[tuple[slice, slice]]:
    """The (rows, cols) slices of every U-Net tile of an h x w latent."""
    th, tw = min(tiling.tile, h), min(tiling.tile, w)
    return [(slice(y, y + th), slice(x, x + tw))
            for y in tile_starts(h, tiling.tile, tiling.overlap, multiple)
            for x in tile_starts(w, tiling.tile, tiling.overlap, multiple)]


class TiledDenoiser:
    """The U-Net seen through overlapping latent tiles: same call signature, Gaussian-blended output.

    Each call runs the network tile by tile (all images of the batch at once) on the concatenated
    [z_t, z_l] input, so the activations never exceed one tile's; the output is the weighted mean of
    the tiles' outputs with weights normalised per latent pixel.
    """

    def __init__(self, unet, tiling: Tiling):
        self.unet = unet
        self.tiling = tiling.validate(unet_multiple(unet))
        self.multiple = unet_multiple(unet)

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kwargs) -> UNet2DConditionOutput:
        h, w = x.shape[-2:]
        windows = tile_windows(h, w, self.tiling, self.multiple)
        out = norm = None
        for rows, cols in windows:
            y = self.unet(x[..., rows, cols], t, **kwargs).sample.float()
            if out is None:  # output channels differ from the input's (8 in, 4 out); every tile has one shape
                out = torch.zeros(*y.shape[:2], h, w, device=y.device)
                norm = torch.zeros(h, w, device=y.device)
                wt = gaussian_weights(*y.shape[-2:], self.tiling.std).to(y.device)
            out[..., rows, cols] += y * wt
            norm[rows, cols] += wt
        return UNet2DConditionOutput(sample=(out / norm).to(x.dtype))


@contextmanager
def vae_tiling(vae, tiling: Tiling) -> Iterator[None]:
    """Switch on diffusers' VAE tiling with our tile size for the duration; restore the VAE's settings after.

    diffusers derives its tile sizes from `config.sample_size` (32 by default, meaningless for our
    autoencoder), so we set the three attributes its `_encode`/`_decode` read: the image-space tile,
    the latent-space tile (image tile / f) and the overlap factor. With vae_tile a multiple of 4 and
    factor 1/4 every size diffusers derives with int() is exact.
    """
    f = vae_factor(vae)
    names = ("use_tiling", "tile_sample_min_size", "tile_latent_min_size", "tile_overlap_factor")
    saved = {n: getattr(vae, n) for n in names}
    vae.use_tiling = True
    vae.tile_latent_min_size = tiling.vae_tile
    vae.tile_sample_min_size = tiling.vae_tile * f
    vae.tile_overlap_factor = VAE_OVERLAP_FACTOR
    try:
        yield
    finally:
        for n, v in saved.items():
            setattr(vae, n, v)


def banded_bicubic_up(lr: torch.Tensor, scale: int, band: int = BICUBIC_BAND, margin: int = BICUBIC_MARGIN):
    """bicubic_up(lr, scale), computed BAND LR rows at a time: equal to the one-shot result, less memory.

    Each band is resized with `margin` extra LR rows on each side (the cubic kernel reads 2), which are
    cropped away; bands touching the image border see the border itself, so the boundary rule matches.
    """
    h = lr.shape[-2]
    if h <= band + 2 * margin:
        return bicubic_up(lr, scale)
    parts = []
    for y0 in range(0, h, band):
        a, b = max(0, y0 - margin), min(h, y0 + band + margin)
        up = bicubic_up(lr[..., a:b, :], scale)
        parts.append(up[..., (y0 - a) * scale: (min(h, y0 + band) - a) * scale, :])
    return torch.cat(parts, dim=-2)


@torch.no_grad()
def tiled_upscale_latents(pipe, lr: torch.Tensor, *, steps: int = 1,
                          generator: Sequence[torch.Generator] | None = None, tiling: Tiling = Tiling()):
    """z-hat_0 for LR images already padded to `pipe.lr_multiple`: tiled encoder, tiled U-Net, full-latent DDIM."""
    lr = lr.to(pipe.device, torch.float32)
    generator = generator if generator is not None else per_image_generators([0] * lr.shape[0])
    denoiser = TiledDenoiser(pipe.unet, tiling)
    with vae_tiling(pipe.vae, tiling):
        z_l = pipe.codec.encode(banded_bicubic_up(lr, pipe.scale))
    return sample(denoiser, pipe.scheduler, z_l, pipe.null_emb, steps=steps, generators=generator,
                  start=getattr(pipe, "start", "noise"))


@torch.no_grad()
def tiled_upscale_batch(pipe, lr: torch.Tensor, *, steps: int = 1,
                        generator: Sequence[torch.Generator] | None = None, tiling: Tiling = Tiling(),
                        return_latents: bool = False):
    """`YonosPipeline.upscale_batch` with every network run in tiles: NCHW [0, 1] LR -> scale x SR."""
    if lr.ndim != 4 or lr.shape[1] != 3:
        raise ValueError(f"expected N x 3 x H x W, got {tuple(lr.shape)}")
    h, w = lr.shape[-2:]
    m = pipe.lr_multiple
    ph, pw = (-h) % m, (-w) % m
    padded = F.pad(lr, (0, pw, 0, ph), mode="replicate") if (ph or pw) else lr  # as upscale_batch pads
    z0 = tiled_upscale_latents(pipe, padded, steps=steps, generator=generator, tiling=tiling)
    with vae_tiling(pipe.vae, tiling):
        sr = pipe.codec.decode(z0)[..., : h * pipe.scale, : w * pipe.scale].clamp(0, 1)
    return (sr, z0) if return_latents else sr


def needs_tiling(pipe, lr_hw: tuple[int, int], tiling: Tiling = Tiling()) -> bool:
    """True when the output's latent is larger than one U-Net tile on either side (auto-tiling rule)."""
    f = vae_factor(pipe.vae)
    return any(math.ceil(s * pipe.scale / f) > tiling.tile for s in lr_hw)


def seam_lines(length_latent: int, tiling: Tiling, multiple: int, f: int) -> list[int]:
    """Image-pixel positions p where a tile edge or overlap centre falls (the seam lies between p-1 and p).

    Used by the seam test: U-Net tile starts, ends and overlap midpoints, and the VAE tiles' starts
    and blend ends (diffusers cross-fades from a tile's start over vae_tile/4 latent pixels).
    """
    lines = set()
    starts = tile_starts(length_latent, tiling.tile, tiling.overlap, multiple)
    ends = [s + min(tiling.tile, length_latent) for s in starts]
    lines.update(starts[1:])
    lines.update(ends[:-1])
    lines.update((s + e) // 2 for s, e in zip(starts[1:], ends[:-1], strict=True))
    stride = tiling.vae_tile - int(tiling.vae_tile * VAE_OVERLAP_FACTOR)
    for s in range(stride, length_latent, stride):
        lines.update((s, s + int(tiling.vae_tile * VAE_OVERLAP_FACTOR)))
    return sorted(p * f for p in lines if 0 < p < length_latent)
