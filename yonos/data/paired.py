"""Paired LR/HR evaluation sets, listed through HF `datasets` and paired by file name.

Listing: each folder is read with `datasets.load_dataset("imagefolder", data_dir=...)`, whose Arrow
index is cached under $HF_HOME/datasets (re-listing a big folder is then instant). Images are decoded
by us, not by `datasets`, so the mode conversion is the project's one rule set (`yonos.io.pil_to_array`):
greyscale -> RGB by replication; RGBA/LA/P composited on black; 16-bit scaled by 1/65535.

Pairing: by file stem (name without suffix), never by sorted index. Any name in one folder and not the
other, or a stem present twice in one folder, is a hard error listing the names.

HR-only sets (classic protocol): HR is modcropped to a multiple of the scale, LR = MATLAB bicubic
downscale quantised to 8 bit, as MATLAB's imresize on a uint8 image returns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image

from yonos.errors import UserError
from yonos.io import IMAGE_SUFFIXES, read_image
from yonos.resize import imresize

GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")  # single-channel storage


@dataclass
class PairedSet:
    """Sequence of (id, lr 3xhxw, hr 3xHxW), float32 RGB in [0, 1], ordered by id."""

    name: str
    ids: list[str]
    scale: int | None
    hr_paths: list[Path]
    lr_paths: list[Path] | None = None  # None: LR synthesised from HR (classic protocol)
    grey_ids: frozenset[str] = field(default_factory=frozenset)  # stored single-channel (see docs/data.md)
    protocol: str = "paired"  # paired | classic
    border: int = 0  # pixels cropped per side before PSNR/SSIM (classic: the scale)
    degradation: str = ""  # how the LR was made, for the report
    other_lr: dict[int, list[Path]] = field(default_factory=dict)  # LR at other scales, same ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        hr = read_image(self.hr_paths[i])
        if self.lr_paths is None:
            hr = modcrop(hr, self.scale)
            return self.ids[i], matlab_lr(hr, self.scale), hr
        return self.ids[i], read_image(self.lr_paths[i]), hr

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def spread(self, n: int) -> PairedSet:
        """n images evenly spaced in id order (all when n >= len): a subset that spans a set's sources
        (RealSR's ids run Canon_001.. then Nikon_001..), not only its first camera."""
        if n >= len(self):
            return self
        keep = [round(i * len(self) / n) for i in range(n)]
        return replace(self, ids=[self.ids[i] for i in keep], hr_paths=[self.hr_paths[i] for i in keep],
                       lr_paths=None if self.lr_paths is None else [self.lr_paths[i] for i in keep],
                       grey_ids=self.grey_ids & {self.ids[i] for i in keep},
                       other_lr={s: [paths[i] for i in keep] for s, paths in self.other_lr.items()})

    def pairs_at(self, scale: int) -> PairedSet | None:
        """The same images with LR at `scale`; None when this set has no LR at that scale."""
        if scale == self.scale:
            return self
        if self.lr_paths is None:
            return replace(self, scale=scale, border=scale if self.border else 0)
        if scale in self.other_lr:
            return replace(self, scale=scale, lr_paths=self.other_lr[scale], other_lr={})
        return None


def modcrop(img: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop bottom/right so both sides are multiples of `scale` (the classic benchmarks' convention)."""
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]


def matlab_lr(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB imresize(hr, 1/scale, 'bicubic') on uint8 input: antialiased, rounded to 8 bit."""
    lr = imresize(hr[None], scale=1.0 / scale)[0]
    return lr.clamp(0, 1).mul(255).round().div(255)


def list_folder(folder: str | os.PathLike) -> dict[str, Path]:
    """stem -> image path for the images directly in `folder`, listed via HF `datasets` imagefolder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder; check the path")
    paths = _imagefolder_paths(folder.resolve())
    by_stem: dict[str, list[Path]] = {}
    for p in paths:
        if p.parent == folder.resolve() and p.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(p.stem, []).append(p)
    if not by_stem:
        raise UserError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    dupes = sorted(s for s, ps in by_stem.items() if len(ps) > 1)
    if dupes:
        raise UserError(f"{folder}: several files share a name (differing suffix only): {', '.join(dupes[:10])}")
    return {s: ps[0] for s, ps in sorted(by_stem.items())}


def _imagefolder_paths(folder: Path) -> list[Path]:
    import datasets

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train")
    except (FileNotFoundError, ValueError) as exc:  # no images, or no loadable files
        raise UserError(f"{folder}: no images found ({str(exc).splitlines()[0][:120]})") from None
    column = ds.cast_column("image", datasets.Image(decode=False))["image"]
    return [Path(item["path"]) for item in column]


def _names(stems, limit: int = 10) -> str:
    stems = sorted(stems)
    more = f" and {len(stems) - limit} more" if len(stems) > limit else ""
    return ", ".join(stems[:limit]) + more


def pair_by_name(lr: dict[str, Path], hr: dict[str, Path], lr_dir, hr_dir) -> list[str]:
    """Ids present in both; any difference is a UserError naming the files."""
    missing, extra = set(hr) - set(lr), set(lr) - set(hr)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no LR for {_names(missing)} (in {hr_dir}, not in {lr_dir})")
        if extra:
            parts.append(f"no HR for {_names(extra)} (in {lr_dir}, not in {hr_dir})")
        raise UserError("LR/HR pairing failed: " + "; ".join(parts) + "; images are paired by file name")
    return sorted(hr)


def image_mode(path: Path) -> str:
    with Image.open(path) as img:
        return img.mode


def check_sizes(ids, lr: dict[str, Path], hr: dict[str, Path], scale: int | None) -> int:
    """Every HR must be exactly `scale` times its LR (scale inferred from the first pair if None)."""
    bad = []
    for i in ids:
        with Image.open(lr[i]) as a, Image.open(hr[i]) as b:
            (lw, lh), (hw, hh) = a.size, b.size
        if scale is None:
            scale = hw // lw if lw else 0
        if (hw, hh) != (lw * scale, lh * scale):
            bad.append(f"{i} ({lw}x{lh} -> {hw}x{hh})")
    if bad or not scale:
        raise UserError(f"HR is not x{scale} of LR for: {_names(bad)}")
    return scale


def load_paired_folder(lr_dir, hr_dir, *, name: str | None = None, scale: int | None = None,
                       other_lr_dirs: dict[int, str | os.PathLike] | None = None, degradation: str = "") -> PairedSet:
    """LR/HR folders with the same file names -> PairedSet; checks pairing and sizes up front.
    `other_lr_dirs` {scale: folder} adds LR of the same images at other scales (see `pairs_at`)."""
    lr, hr = list_folder(lr_dir), list_folder(hr_dir)
    ids = pair_by_name(lr, hr, lr_dir, hr_dir)
    scale = check_sizes(ids, lr, hr, scale)
    other = {}
    for s, folder in (other_lr_dirs or {}).items():
        extra = list_folder(folder)
        pair_by_name(extra, hr, folder, hr_dir)
        check_sizes(ids, extra, hr, s)
        other[s] = [extra[i] for i in ids]
    grey = frozenset(i for i in ids if image_mode(hr[i]) in GREY_MODES)
    return PairedSet(name or Path(hr_dir).parent.name, ids, scale, [hr[i] for i in ids], [lr[i] for i in ids], grey,
                     degradation=degradation, other_lr=other)


def load_hr_folder(hr_dir, *, scale: int, name: str | None = None) -> PairedSet:
    """HR-only folder -> PairedSet for the classic protocol (modcrop + MATLAB bicubic LR)."""
    if scale < 1:
        raise UserError(f"scale must be a positive integer, got {scale}")
    hr = list_folder(hr_dir)
    ids = list(hr)
    grey = frozenset(i for i in ids if image_mode(hr[i]) in GREY_MODES)
    return PairedSet(name or Path(hr_dir).name, ids, scale, [hr[i] for i in ids], None, grey, protocol="classic",
                     border=scale, degradation="MATLAB bicubic")
