"""Image and file I/O: explicit mode conversion, atomic writes.

Conversion rules (documented in README "Image modes"): greyscale (L, I;16, I) is replicated to RGB;
RGBA/LA/P are composited onto black after converting to RGBA (alpha is dropped, not blended with
white, so transparent pixels do not brighten); 16-bit images are scaled to [0, 1] by 65535 before any
8-bit step. Tensors are float32 RGB in [0, 1], CHW.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from yonos.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the result should look like any other file
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj, **kwargs) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str, **kwargs) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def pil_to_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> float32 HxWx3 in [0, 1], by the rules in the module docstring."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        arr = arr / (65535.0 if arr.max() > 255 or img.mode.startswith("I;16") else 255.0)
        arr = np.repeat(arr[..., None], 3, axis=2)
    elif img.mode == "F":
        arr = np.repeat(np.asarray(img, dtype=np.float64)[..., None], 3, axis=2)
    elif img.mode in ("RGBA", "LA", "P", "PA"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64) / 255.0
        arr = rgba[..., :3] * rgba[..., 3:4]
    else:
        arr = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    return np.clip(arr, 0.0, 1.0).astype(np.float32)


def read_image(path: str | os.PathLike):
    """Read an image file as a float32 tensor 3xHxW in [0, 1]; UserError names the file on failure."""
    import torch

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected an image file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (0 bytes); re-export or re-download it")
    try:
        with Image.open(path) as img:
            img.load()
            arr = pil_to_array(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not a readable image ({reason}); replace or remove the file") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def to_uint8(img) -> np.ndarray:
    """3xHxW float in [0, 1] -> HxWx3 uint8, rounding half to even as torchvision/pyiqa do."""
    arr = img.detach().float().clamp(0, 1).mul(255.0).round().to(dtype=__import__("torch").uint8)
    return arr.permute(1, 2, 0).cpu().numpy()


def save_image(img, path: str | os.PathLike) -> None:
    """Write a 3xHxW float tensor in [0, 1] as an 8-bit RGB image, atomically."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: unknown image suffix; use one of {', '.join(IMAGE_SUFFIXES)}")
    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(img)).save(tmp, format=fmt)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in `folder`, sorted by name; UserError if unreadable or empty."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder; check the path")
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except PermissionError:
        raise UserError(f"{folder}: folder is not readable; fix its permissions") from None
    if not files:
        raise UserError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return files
