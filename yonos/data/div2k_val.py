"""DIV2K-Val protocol generator: 3,000 HR crops of 512x512 from the 100 DIV2K validation images, with
x4 LR from the Real-ESRGAN second-order degradation, all from one fixed seed.

Prefer the released StableSR pairs (`yonos download div2k_val_stablesr`): those are the pixels the
published tables were measured on. This generator is the fallback when they are absent; it follows
the same recipe but cannot reproduce their random draws, so its numbers are comparable, not identical.

    python -m yonos.data.div2k_val --hr-dir data/div2k_valid_hr/hr --out data/div2k_val_generated

Writes <out>/{hr,lr}/<image>_<k>.png and <out>/manifest.json (crop coordinates, degradation seed per crop).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from yonos.data.degradations import degrade, resolve_params
from yonos.data.paired import list_folder
from yonos.errors import UserError
from yonos.io import read_image, save_image, write_json

CROPS = 3000
CROP = 512
SCALE = 4
SEED = 0
KIND = "realesrgan"  # StableSR's DIV2K-Val LR used the original Real-ESRGAN settings [choice where unstated]


def crop_plan(sizes: dict[str, tuple[int, int]], crops: int, crop: int, seed: int) -> list[dict]:
    """Uniform random crop positions, crops spread evenly over images; each with its degradation seed."""
    g = torch.Generator().manual_seed(seed)
    names = sorted(sizes)
    plan = []
    for k in range(crops):
        name = names[k % len(names)]
        h, w = sizes[name]
        if h < crop or w < crop:
            raise UserError(f"{name}: {w}x{h} is smaller than the {crop}px crop")
        y = int(torch.randint(0, h - crop + 1, (), generator=g))
        x = int(torch.randint(0, w - crop + 1, (), generator=g))
        dseed = int(torch.randint(0, 2**31 - 1, (), generator=g))
        plan.append({"id": f"{name}_{k // len(names):02d}", "image": name, "y": y, "x": x, "size": crop,
                     "degradation_seed": dseed})
    return plan


def generate(hr_dir, out, *, crops: int = CROPS, crop: int = CROP, seed: int = SEED, kind: str = KIND) -> Path:
    """Write the generated set; skips crops whose files already exist, so an interrupted run resumes."""
    from PIL import Image

    files = list_folder(hr_dir)
    sizes = {}
    for name, path in files.items():
        with Image.open(path) as img:
            sizes[name] = (img.height, img.width)
    plan = crop_plan(sizes, crops, crop, seed)
    out = Path(out)
    cache: dict[str, torch.Tensor] = {}
    for entry in sorted(plan, key=lambda e: e["image"]):  # one image decoded once
        if (out / "lr" / f"{entry['id']}.png").exists():
            continue
        name = entry["image"]
        if name not in cache:
            cache.clear()  # one HR image in memory at a time
            cache[name] = read_image(files[name])
        y, x = entry["y"], entry["x"]
        hr = cache[name][:, y: y + crop, x: x + crop]
        lr = degrade(hr[None], [SCALE], [entry["degradation_seed"]], {"kind": kind})[SCALE][0]
        save_image(hr, out / "hr" / f"{entry['id']}.png")
        save_image(lr, out / "lr" / f"{entry['id']}.png")
    write_json(out / "manifest.json", {"source": str(hr_dir), "crops": crops, "crop": crop, "scale": SCALE,
                                       "seed": seed, "degradation": resolve_params({"kind": kind}), "plan": plan})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hr-dir", required=True, help="the 100 DIV2K validation HR images")
    p.add_argument("--out", default="data/div2k_val_generated")
    p.add_argument("--crops", type=int, default=CROPS)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--kind", default=KIND, choices=("realesrgan", "realesrgan_stablesr"))
    args = p.parse_args(argv)
    try:
        generate(args.hr_dir, args.out, crops=args.crops, seed=args.seed, kind=args.kind)
    except UserError as exc:
        print(f"div2k_val: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
