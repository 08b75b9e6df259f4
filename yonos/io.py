"""Image and file I/O: exact, explicit conversion to float RGB, atomic writes.

Every image enters through `to_tensor` (files through `read_image`), so the CLI, the API and the
evaluator convert alike. The rules (README "Using a model"):
- the value range comes from the declared dtype or bit depth, never from the content: uint8 / 255,
  uint16 and 16-bit PIL modes / 65535, bool as 0/1, floats must already be in [0, 1]; any other integer
  dtype, 32-bit integer images (PIL mode I) and out-of-range floats are rejected with one line;
- EXIF orientation is applied (a rotated photo stays upright);
- greyscale is replicated to RGB; alpha (RGBA, LA, P with transparency) is composited onto black:
  rgb * alpha, alpha dropped, the same for PIL images and numpy arrays.
Tensors are float32 RGB in [0, 1], CHW.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from yonos.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    overwrite=False never replaces an existing `path`, even one created while the block ran: the
    temporary file is hard-linked into place (fails if the name exists), then its own name removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the result should look like any other file
    try:
        yield Path(tmp)
        exists = UserError(f"{path}: exists; pass --overwrite to replace it, or choose another output")
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise exists from None
            except OSError:  # no hard links on this filesystem: check, then rename (not race-free)
                if os.path.lexists(path):
                    raise exists from None
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike):
    """Yield an empty temporary folder beside `path`; if the block succeeds, it replaces `path` (the old
    folder is renamed aside first and removed last), so `path` is never half-written. On failure the
    temporary folder is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj, **kwargs) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str, **kwargs) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _reject(what: str, fix: str):
    raise UserError(f"{what}; {fix}")


def pil_to_array(img: Image.Image, name: str = "image") -> np.ndarray:
    """Any PIL image -> float32 HxWx3 in [0, 1] by the module's rules (EXIF orientation applied)."""
    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I;16"):  # I;16, I;16B, I;16L unsigned; a signed I;16S is refused by its dtype
        return array_to_float(np.asarray(img), name)
    if img.mode == "I":
        _reject(f"{name}: 32-bit integer image (PIL mode I) has no declared white level",
                "save it as an 8- or 16-bit image")
    if img.mode == "F":
        return array_to_float(np.asarray(img, dtype=np.float32), name)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return array_to_float(np.asarray(img.convert("RGBA")), name)
    return array_to_float(np.asarray(img.convert("RGB")), name)


def array_to_float(arr: np.ndarray, name: str = "array") -> np.ndarray:
    """HxW, HxWx1, HxWx3 or HxWx4 array -> float32 HxWx3 in [0, 1], scaled by its dtype."""
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        pass
    elif arr.ndim == 2:
        arr = arr[..., None]
    else:
        _reject(f"{name}: shape {arr.shape} is not HxW, HxWx1, HxWx3 or HxWx4", "pass one image, channels last")
    # By kind and size, not `== np.uint16`: a big-endian array (">u2", as 16-bit PIL modes give) is
    # still 16-bit unsigned.
    kind, size = arr.dtype.kind, arr.dtype.itemsize
    if kind == "u" and size == 1:
        x = arr.astype(np.float64) / 255.0
    elif kind == "u" and size == 2:
        x = arr.astype(np.float64) / 65535.0
    elif kind == "b":
        x = arr.astype(np.float64)
    elif kind == "f":
        x = arr.astype(np.float64)
        if not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0:
            _reject(f"{name}: {arr.dtype} values span [{np.nanmin(x):g}, {np.nanmax(x):g}], expected [0, 1]",
                    "divide 8-bit values by 255 (16-bit by 65535) or pass a uint8/uint16 array")
    else:
        _reject(f"{name}: dtype {arr.dtype} has no declared white level",
                "pass uint8, uint16, bool or float in [0, 1]")
    if x.shape[2] == 4:  # composited onto black, exactly as PIL RGBA input
        x = x[..., :3] * x[..., 3:4]
    elif x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    return x.astype(np.float32)


def to_tensor(image, name: str | None = None):
    """One image -> float32 3xHxW tensor in [0, 1]: a path, PIL image, numpy array (HxW[xC]) or tensor
    (CxHxW with C in 1, 3, 4; uint8 / 255, floats in [0, 1]). Anything else is a one-line UserError."""
    import torch

    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        arr = pil_to_array(image, name or "PIL image")
    elif isinstance(image, np.ndarray):
        arr = array_to_float(image, name or "numpy array")
    elif torch.is_tensor(image):
        t = image.detach().cpu()
        if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
            _reject(f"{name or 'tensor'}: shape {tuple(t.shape)} is not CxHxW with C in 1, 3, 4",
                    "pass one image, channels first")
        if t.dtype == torch.bool:
            t = t.to(torch.uint8) * 255
        if t.dtype.is_floating_point:
            t = t.to(torch.float64)
        elif t.dtype == torch.uint16:  # numpy's uint16, then the array rule (/ 65535)
            t = torch.from_numpy(t.to(torch.int32).numpy().astype(np.uint16))
        elif t.dtype != torch.uint8:
            _reject(f"{name or 'tensor'}: dtype {t.dtype} has no declared white level",
                    "pass uint8, uint16 or float in [0, 1]")
        arr = array_to_float(t.permute(1, 2, 0).numpy(), name or "tensor")
    else:
        _reject(f"{name or 'input'}: {type(image).__name__} is not an image",
                "pass a file path, PIL image, numpy array or torch tensor")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


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
            arr = pil_to_array(img, str(path))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not a readable image ({reason}); replace or remove the file") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def to_uint8(img) -> np.ndarray:
    """3xHxW float in [0, 1] -> HxWx3 uint8, rounding half to even as torchvision/pyiqa do."""
    arr = img.detach().float().clamp(0, 1).mul(255.0).round().to(dtype=__import__("torch").uint8)
    return arr.permute(1, 2, 0).cpu().numpy()


def save_image(img, path: str | os.PathLike, *, overwrite: bool = True) -> None:
    """Write a 3xHxW float tensor in [0, 1] as an 8-bit RGB image, atomically (see atomic_path)."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: unknown image suffix; use one of {', '.join(IMAGE_SUFFIXES)}")
    try:
        with atomic_path(path, overwrite=overwrite) as tmp:
            Image.fromarray(to_uint8(img)).save(tmp, format=fmt)
    except OSError as exc:  # a full disk or a vanished folder: the old file is kept, no temporary is left
        raise UserError(f"{path}: could not be written ({exc.strerror or exc}); free space or check the folder, "
                        "then run again") from None


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
