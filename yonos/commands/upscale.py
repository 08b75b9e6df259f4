"""`yonos upscale INPUT OUTPUT --checkpoint DIR [--steps 1] [--seed 0]`: a file or a whole folder.

Every input is checked before any model loads, so a bad file fails in a second; outputs are written
atomically (temporary file, then rename), so an interrupted run never leaves a partial image.
"""

from __future__ import annotations

import os
from pathlib import Path

from yonos.errors import UserError
from yonos.io import IMAGE_SUFFIXES, list_images, read_image, save_image


def register(sub) -> None:
    p = sub.add_parser("upscale", help="super-resolve an image or a folder of images",
                       description=__doc__.splitlines()[0])
    p.add_argument("input", help="image file or folder of images")
    p.add_argument("output", help="output file (for a file input) or folder (for a folder input)")
    p.add_argument("--checkpoint", required=True, help="folder written by a training stage (yonos_config.json)")
    p.add_argument("--steps", type=int, default=1, help="DDIM steps (default 1: the one-step model)")
    p.add_argument("--seed", type=int, default=0, help="noise seed; each image uses this seed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.set_defaults(func=run)


def plan(input_path: Path, output_path: Path) -> list[tuple[Path, Path]]:
    """(source, destination) pairs; folders map name -> name (suffix kept)."""
    if input_path.is_dir():
        if output_path.exists() and not output_path.is_dir():
            raise UserError(f"{output_path}: exists and is not a folder; give a folder for a folder input")
        return [(src, output_path / src.name) for src in list_images(input_path)]
    if not input_path.exists():
        raise UserError(f"{input_path}: no such file or folder; check the path")
    if output_path.is_dir():
        return [(input_path, output_path / input_path.name)]
    if output_path.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"{output_path}: unknown image suffix; use one of {', '.join(IMAGE_SUFFIXES)}")
    return [(input_path, output_path)]


def run(args) -> int:
    import torch

    from yonos.pipeline import YonosPipeline
    from yonos.sampler import per_image_generators

    jobs = plan(Path(args.input), Path(args.output))
    images = [read_image(src) for src, _ in jobs]  # all inputs validated before the model loads
    if args.steps < 1:
        raise UserError(f"--steps {args.steps}: must be at least 1")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    pipe = YonosPipeline.from_pretrained(args.checkpoint, device=device)
    for (src, dst), lr in zip(jobs, images):
        sr = pipe.upscale_batch(lr[None], steps=args.steps, generator=per_image_generators([args.seed]))[0]
        if dst.parent and not dst.parent.exists():
            os.makedirs(dst.parent, exist_ok=True)
        save_image(sr.cpu(), dst)
        print(f"{src} -> {dst} ({lr.shape[-1]}x{lr.shape[-2]} -> {sr.shape[-1]}x{sr.shape[-2]})")
    return 0
