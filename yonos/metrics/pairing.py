"""Pair images across folders by file name, never by sorted index (a missing file would shift
every pair after it)."""

from __future__ import annotations

import os
from pathlib import Path

from yonos.errors import UserError
from yonos.io import list_images

_SHOW = 5  # names listed per side in a mismatch message


def pair_by_name(a_dir: str | os.PathLike, b_dir: str | os.PathLike) -> list[tuple[Path, Path]]:
    """[(a/x.png, b/x.png), ...] sorted by name; UserError listing the names present on one side only.
    Names are matched on the stem, so x.png pairs with x.jpg (a method may save another format)."""
    a = _by_stem(list_images(a_dir), a_dir)
    b = _by_stem(list_images(b_dir), b_dir)
    only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
    if only_a or only_b:
        raise UserError(
            f"{a_dir} and {b_dir} do not pair by file name: "
            + "; ".join(_describe(names, d) for names, d in ((only_a, a_dir), (only_b, b_dir)) if names)
        )
    return [(a[k], b[k]) for k in sorted(a)]


def stored_grey(path: str | os.PathLike) -> bool:
    """True when the file stores one channel (mode L, I;16, ...): the ground truth that MATLAB-style
    evaluation scores on grey values instead of Y (yonos.metrics.scorer). The one rule for every command:
    `yonos score` asks it per HR file, `yonos evaluate` through PairedSet.grey_ids (the same modes)."""
    from yonos.data.paired import GREY_MODES, image_mode

    try:
        return image_mode(Path(path)) in GREY_MODES
    except OSError as exc:  # PIL.UnidentifiedImageError is an OSError
        raise UserError(f"{path}: not a readable image ({type(exc).__name__}); replace or remove the file") from None


def _by_stem(files: list[Path], folder) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        if f.stem in out:
            raise UserError(f"{folder}: {out[f.stem].name} and {f.name} share a name; keep one")
        out[f.stem] = f
    return out


def _describe(names: list[str], folder) -> str:
    more = f" and {len(names) - _SHOW} more" if len(names) > _SHOW else ""
    return f"{len(names)} only in {folder} ({', '.join(names[:_SHOW])}{more})"
