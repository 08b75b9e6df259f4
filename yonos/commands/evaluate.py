"""`yonos evaluate --method bicubic --hr-dir DIR --scale 4 --protocol classic`: PSNR/SSIM of one method.

classic   HR only: modcrop, MATLAB bicubic LR (8-bit), upscale, PSNR/SSIM on Y with border crop = scale.
stablesr  LR/HR pairs (--lr-dir, or a named --set): PSNR/SSIM on Y, no border crop.
Images stored single-channel (greyscale files) are scored on their grey values, as MATLAB's
evaluation scripts do when size(im, 3) == 1; this reproduces the canonical Set14 numbers (docs/data.md).
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import torch

from yonos.errors import UserError
from yonos.io import write_json


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="PSNR/SSIM of a method on a classic or paired set",
                              description=__doc__.splitlines()[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--hr-dir", metavar="DIR", help="HR images (classic) or ground truth paired with --lr-dir")
    src.add_argument("--set", metavar="NAME", help="a named evaluation set (yonos.data.eval_sets)")
    p.add_argument("--lr-dir", metavar="DIR", help="LR images with the same file names as --hr-dir")
    p.add_argument("--method", default="bicubic", help="registered method name (yonos.methods entry points)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--protocol", choices=("classic", "stablesr"), default=None,
                   help="default: classic for --hr-dir alone, stablesr with --lr-dir, the set's own for --set")
    p.add_argument("--source-dir", metavar="DIR", help="dataset mirror folder for --set (else $YONOS_DATA_MIRROR)")
    p.add_argument("--steps", type=int, default=1, help="sampling steps, for diffusion methods")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", metavar="FILE", help="write JSON {mean: {...}, per_image: {id: {...}}}")
    p.set_defaults(func=run)


def load_set(args):
    from yonos.data.eval_sets import eval_set_info, resolve_eval_set
    from yonos.data.paired import load_hr_folder, load_paired_folder

    if args.set:
        info = eval_set_info(args.set)
        cfg = {"datasets": {"mirror": args.source_dir}} if args.source_dir else {}
        pset = resolve_eval_set(args.set, cfg, "runs", scale=args.scale)
        return pset, args.protocol or info.protocol
    protocol = args.protocol or ("stablesr" if args.lr_dir else "classic")
    if args.lr_dir:
        return load_paired_folder(args.lr_dir, args.hr_dir, scale=args.scale), protocol
    if protocol != "classic":
        raise UserError("--protocol stablesr needs --lr-dir (paired LR/HR); classic makes LR from HR")
    return load_hr_folder(args.hr_dir, scale=args.scale), protocol


def psnr_ssim_metrics(border: int, device: str):
    """{"y": (psnr, ssim) on Y of YCbCr, "grey": (psnr, ssim) on the grey values}, pyiqa, quantised inputs.
    Y uses the project's metric registry (yonos.metrics); the grey pair has no registry entry yet."""
    import pyiqa

    from yonos.metrics import Scorer

    scorer = Scorer(["psnr", "ssim"], device=device, border=border)
    kw = {"test_y_channel": False, "crop_border": border, "device": device}
    with contextlib.redirect_stdout(sys.stderr):
        grey = (pyiqa.create_metric("psnr", **kw), pyiqa.create_metric("ssim", **kw))

    def score(sr: torch.Tensor, hr: torch.Tensor, is_grey: bool) -> dict[str, float]:
        sr, hr = quantize(sr), quantize(hr)
        if is_grey:  # R = G = B: the RGB mean over channels equals the grey-channel value
            return {"psnr": float(grey[0](sr, hr)), "ssim": float(grey[1](sr, hr))}
        out = scorer.score(sr, hr)
        return {k: float(v[0]) for k, v in out.items()}

    return score


def quantize(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0, 1).mul(255).round().div(255)


def evaluate(method, pset, *, scale: int, protocol: str, steps: int = 1, device: str = "cpu") -> dict:
    """Per-image and mean PSNR/SSIM of `method` on `pset` under `protocol`."""
    import zlib

    from yonos.sampler import per_image_generators

    border = scale if protocol == "classic" else 0
    score = psnr_ssim_metrics(border, device)
    per_image = {}
    for i, lr, hr in pset.pairs_at(scale) or []:
        gens = None
        if getattr(method, "is_diffusion", False):  # noise seeded by image id, never by position
            gens = per_image_generators([zlib.crc32(i.encode()) % 2**31], device)
        with torch.no_grad():
            sr = method.upscale(lr[None].to(device), scale=scale, steps=steps, generator=gens)
        if sr.shape[-2:] != hr.shape[-2:]:
            raise UserError(f"{i}: {method.name} returned {tuple(sr.shape[-2:])}, HR is {tuple(hr.shape[-2:])}")
        per_image[i] = score(sr.cpu(), hr[None], i in pset.grey_ids)
    if not per_image:
        raise UserError(f"{pset.name}: no LR at x{scale}")
    mean = {k: sum(v[k] for v in per_image.values()) / len(per_image) for k in ("psnr", "ssim")}
    return {"method": method.name, "set": pset.name, "scale": scale, "protocol": protocol, "border": border,
            "y_channel": "Y of YCbCr (BT.601); single-channel files on their grey values",
            "grey_ids": sorted(pset.grey_ids), "method_settings": method.describe(),
            "mean": mean, "per_image": per_image}


def run(args) -> int:
    from yonos.plugins import load_method

    pset, protocol = load_set(args)
    method = load_method(args.method)
    if args.scale not in getattr(method, "scales", (args.scale,)):
        raise UserError(f"method {args.method!r} supports scales {method.scales}, not {args.scale}")
    result = evaluate(method, pset, scale=args.scale, protocol=protocol, steps=args.steps, device=args.device)
    for i, v in result["per_image"].items():
        print(f"{i:<24} PSNR {v['psnr']:7.3f} dB  SSIM {v['ssim']:.4f}")
    m = result["mean"]
    print(f"{'mean':<24} PSNR {m['psnr']:7.3f} dB  SSIM {m['ssim']:.4f}  "
          f"({pset.name}, x{args.scale}, {protocol}, border {result['border']}, {len(result['per_image'])} images)")
    if args.out:
        write_json(args.out, result)
    return 0
