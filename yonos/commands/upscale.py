"""`yonos upscale INPUT OUTPUT --checkpoint DIR [--steps 1] [--seed 0]`: a file or a whole folder.

Nothing the user gave is ever lost: the output may not be (or resolve to) an input, an existing output
is kept unless `--overwrite`, and each output is written to a temporary file beside it, then renamed.
Large images run in tiles automatically (above a 512 px output side with the embedded f=4
autoencoder: one U-Net tile of 128 latent pixels; `yonos.tiling`), so memory stays bounded.
Every argument and every input is checked before the model loads, so a mistake fails in a second with
one line and exit status 2. In folder mode outputs are lossless PNG unless `--format` names another.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from yonos.device import DEVICE_HELP, resolve_device
from yonos.errors import UserError
from yonos.io import IMAGE_SUFFIXES, read_image, save_image


def register(sub) -> None:
    p = sub.add_parser("upscale", help="super-resolve an image or a folder of images",
                       description=__doc__.splitlines()[0])
    p.add_argument("input", help="image file or folder of images")
    p.add_argument("output", help="output file (for a file input) or folder (for a folder input)")
    p.add_argument("--checkpoint", required=True, help="folder written by a training stage (yonos_config.json)")
    p.add_argument("--steps", type=int, default=1, help="DDIM steps, 1..1000 (default 1: the one-step model)")
    p.add_argument("--seed", type=int, default=0, help="noise seed; each image uses this seed")
    p.add_argument("--scale", type=int, default=None, help="expected scale; refused if the checkpoint differs")
    p.add_argument("--format", default=None, choices=[s.lstrip(".") for s in IMAGE_SUFFIXES],
                   help="output format in folder mode (default png: lossless)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=run)


def folder_inputs(folder: Path) -> list[Path]:
    """Image files directly in `folder`; everything else is named on stderr, never skipped silently."""
    try:
        entries = sorted(folder.iterdir())
    except PermissionError:
        raise UserError(f"{folder}: folder is not readable; fix its permissions") from None
    files = []
    for p in entries:
        if p.is_symlink() and not p.exists():
            print(f"skipped {p}: broken link", file=sys.stderr)
        elif p.is_dir():
            print(f"skipped {p}: a subfolder (folders are not searched recursively)", file=sys.stderr)
        elif p.suffix.lower() not in IMAGE_SUFFIXES:
            print(f"skipped {p}: not an image suffix ({', '.join(IMAGE_SUFFIXES)})", file=sys.stderr)
        else:
            files.append(p)
    if not files:
        raise UserError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return files


def plan(input_path: Path, output_path: Path, *, fmt: str | None = None,
         overwrite: bool = False) -> list[tuple[Path, Path]]:
    """(source, destination) pairs, after every check that protects the user's files."""
    if input_path.is_dir():
        if output_path.exists() and not output_path.is_dir():
            raise UserError(f"{output_path}: exists and is not a folder; give a folder for a folder input")
        if output_path.resolve() == input_path.resolve():
            raise UserError(f"{output_path}: is the input folder; give another output folder")
        suffix = f".{fmt or 'png'}"
        jobs = [(src, output_path / (src.stem + suffix)) for src in folder_inputs(input_path)]
        seen: dict[Path, Path] = {}
        for src, dst in jobs:
            if dst in seen:
                raise UserError(f"{seen[dst].name} and {src.name} would both write {dst}; rename one of them")
            seen[dst] = src
    else:
        if not input_path.exists():
            raise UserError(f"{input_path}: no such file or folder; check the path")
        if output_path.is_dir():
            dst = output_path / (input_path.stem + (f".{fmt}" if fmt else input_path.suffix))
        else:
            dst = output_path
            if dst.suffix.lower() not in IMAGE_SUFFIXES:
                raise UserError(f"{dst}: unknown image suffix; use one of {', '.join(IMAGE_SUFFIXES)}")
        jobs = [(input_path, dst)]
    inputs = {src.resolve() for src, _ in jobs}
    for _, dst in jobs:
        if dst.resolve() in inputs:  # resolve(): also through symlinks
            raise UserError(f"{dst}: is an input image; choose another output so the input is kept")
    existing = [dst for _, dst in jobs if dst.exists() or dst.is_symlink()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UserError(f"{existing[0]}{more}: output exists; pass --overwrite to replace, or choose another output")
    return jobs


def check_writable(jobs: list[tuple[Path, Path]]) -> None:
    """The nearest existing folder above each destination must be writable (checked before loading)."""
    for folder in {dst.parent for _, dst in jobs}:
        probe = folder
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            raise UserError(f"{probe}: output folder is not writable; fix its permissions or choose another output")


def read_all(jobs: list[tuple[Path, Path]]) -> list:
    """Every input read and checked; every bad file named (one line each), then one error."""
    images, bad = [], []
    for src, _ in jobs:
        try:
            images.append(read_image(src))
        except UserError as exc:
            bad.append(str(exc))
    if bad:
        for line in bad[:-1]:
            print(f"yonos upscale: error: {line}", file=sys.stderr)
        raise UserError(bad[-1] if len(bad) == 1 else f"{bad[-1]} ({len(bad)} bad inputs in all, listed above)")
    return images


def check_args(args, info: dict) -> None:
    if not 1 <= args.steps <= info["num_train_timesteps"]:
        raise UserError(f"--steps {args.steps}: must be between 1 and {info['num_train_timesteps']}")
    if args.scale is not None and args.scale != info["scale"]:
        raise UserError(f"--scale {args.scale}: {args.checkpoint} is a x{info['scale']} model; "
                        f"use a x{args.scale} checkpoint or drop --scale")


def run(args) -> int:
    from yonos.pipeline import YonosPipeline, checkpoint_info
    from yonos.sampler import per_image_generators

    info = checkpoint_info(args.checkpoint)
    check_args(args, info)
    device = resolve_device(args.device)
    jobs = plan(Path(args.input), Path(args.output), fmt=args.format, overwrite=args.overwrite)
    check_writable(jobs)
    images = read_all(jobs)  # all inputs validated before the model loads
    pipe = YonosPipeline.from_pretrained(args.checkpoint, device=device)
    for (src, dst), lr in zip(jobs, images):
        sr = pipe.upscale_batch(lr[None], steps=args.steps, generator=per_image_generators([args.seed]))[0]
        save_image(sr.cpu(), dst)
        print(f"{src} -> {dst} ({lr.shape[-1]}x{lr.shape[-2]} -> {sr.shape[-1]}x{sr.shape[-2]})")
    return 0
