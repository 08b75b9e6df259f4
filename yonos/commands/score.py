"""`yonos score SR_DIR HR_DIR`: score any method's outputs with the metric protocol (docs/metrics.md).

The protocol is `yonos.metrics.Scorer`, the same code `yonos evaluate` uses: a ground truth stored
single-channel is scored on its grey values (MATLAB's rule, docs/data.md), so both commands agree.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from PIL import Image

from yonos.device import DEVICE_HELP, resolve_device
from yonos.errors import UserError
from yonos.io import read_image, write_json
from yonos.metrics import registry
from yonos.metrics.pairing import pair_by_name, stored_grey

DEFAULT = ("psnr", "ssim", "lpips", "dists", "fid", "niqe", "musiq", "maniqa", "clipiqa")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "score",
        help="score SR images against HR images (pairs by file name)",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("sr_dir", metavar="SR_DIR", help="super-resolved images")
    p.add_argument("hr_dir", metavar="HR_DIR", help="ground truth, same file names and sizes as SR_DIR")
    p.add_argument("--lr-dir", metavar="DIR", help="LR inputs: checked to pair by name; the scale is recorded")
    p.add_argument("--metrics", default=",".join(DEFAULT), help=f"comma list from: {', '.join(registry.METRICS)}")
    p.add_argument("--border", type=int, default=0,
                   help="pixels cropped per side for PSNR/SSIM (classic sets: the scale)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--out", metavar="FILE", help="write JSON {metrics: {name: mean}, per_image: {file: {name: value}}}")
    p.set_defaults(func=run)


def parse_metrics(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in registry.METRICS]
    if unknown or not names:
        known = ", ".join(registry.METRICS)
        raise UserError(f"--metrics: unknown {', '.join(unknown) or '(empty)'}; choose from {known}")
    return names


def check_border(border: int, pairs) -> None:
    """--border must leave pixels to score in every image: 0 <= border < half the smallest side."""
    if border < 0:
        raise UserError(f"--border {border}: must be 0 or more pixels per side (classic sets: the scale)")
    if not border:
        return
    for _, hr_path in pairs:
        try:
            with Image.open(hr_path) as img:
                w, h = img.size
        except OSError:
            continue  # unreadable: read_image names it with the fix below
        if 2 * border >= min(w, h):
            raise UserError(f"--border {border}: {hr_path.name} is {w}x{h}, so nothing is left to score; "
                            f"use a border below {(min(w, h) + 1) // 2}")


def load_pair(sr_path: Path, hr_path: Path):
    sr, hr = read_image(sr_path), read_image(hr_path)
    if sr.shape != hr.shape:
        raise UserError(
            f"{sr_path.name}: SR is {sr.shape[2]}x{sr.shape[1]} but HR is {hr.shape[2]}x{hr.shape[1]}; "
            "scores need equal sizes (no silent resize): fix the SR output size"
        )
    return sr, hr


def lr_scale(lr_dir, hr_dir) -> float:
    """Check that LR pairs with HR by name and return the HR/LR width ratio (the SR scale)."""
    lr, hr = pair_by_name(lr_dir, hr_dir)[0]
    return read_image(hr).shape[-1] / read_image(lr).shape[-1]


def score_pairs(pairs, scorer) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Per-image values {file: {metric: value}} (one image at a time: sizes may differ across pairs)
    and the notes explaining NaNs."""
    per_image: dict[str, dict[str, float]] = {}
    notes: dict[str, str] = {}
    for sr_path, hr_path in pairs:
        sr, hr = load_pair(sr_path, hr_path)
        values = scorer.score(sr[None], hr[None], grey=stored_grey(hr_path))
        per_image[sr_path.name] = {k: float(v[0]) for k, v in values.items()}
        notes.update(scorer.notes)
    return per_image, notes


def summarise(per_image, folder_values, metrics) -> dict[str, float]:
    means = {}
    for name in metrics:
        if name in folder_values:
            means[name] = folder_values[name]
            continue
        vals = [row[name] for row in per_image.values() if not math.isnan(row[name])]
        means[name] = sum(vals) / len(vals) if vals else math.nan
    return means


def format_table(means: dict[str, float], reasons: dict[str, str], n: int) -> str:
    lines = [f"{'metric':<10} {'':1} {'mean':>10}  over {n} images", "-" * 40]
    for name, value in means.items():
        shown = "n/a" if math.isnan(value) else f"{value:10.4f}"
        note = f"  ({reasons[name]})" if name in reasons else ""
        lines.append(f"{registry.title(name):<10} {registry.arrow(name):1} {shown:>10}{note}")
    return "\n".join(lines)


def _json_number(x: float):
    return None if math.isnan(x) else round(x, 6)


def run(args) -> int:
    from yonos.metrics.scorer import Scorer  # imports pyiqa: keep `yonos --help` fast

    metrics = parse_metrics(args.metrics)
    device = resolve_device(args.device)
    pairs = pair_by_name(args.sr_dir, args.hr_dir)
    check_border(args.border, pairs)
    scale = lr_scale(args.lr_dir, args.hr_dir) if args.lr_dir else None
    scorer = Scorer(metrics, device=device, border=args.border)
    per_image, notes = score_pairs(pairs, scorer)
    folder_values = scorer.score_folders(args.sr_dir, args.hr_dir) if scorer.folder_metrics else {}
    means = summarise(per_image, folder_values, metrics)
    reasons = {m: r for m in metrics if (r := scorer.available.get(m) or notes.get(m))}
    print(format_table(means, reasons, len(pairs)))
    if args.out:
        write_json(args.out, {
            "metrics": {k: _json_number(v) for k, v in means.items()},
            "per_image": {f: {k: _json_number(v) for k, v in row.items()} for f, row in per_image.items()},
            "n/a": reasons,
            "protocol": {"border": args.border, "scale": scale, "sr_dir": str(args.sr_dir),
                         "hr_dir": str(args.hr_dir), "directions": {m: registry.arrow(m) for m in metrics},
                         "grey_rule": "single-channel ground truth scored on grey values, else Y (BT.601)",
                         "grey_files": [hr.name for _, hr in pairs if stored_grey(hr)]},
        })
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
