"""`yonos upscale INPUT OUTPUT --checkpoint DIR [--steps 1] [--seed 0]`: a file or a whole folder.

Nothing the user gave is ever lost: the output may not be (or resolve to) an input, an existing output
is kept unless `--overwrite`, and each output is written to a temporary file beside it, then renamed.
Large images run in tiles automatically (above a 512 px output side with the embedded f=4
autoencoder: one U-Net tile of 128 latent pixels; `yonos.tiling`), so memory stays bounded.
Every argument and every input is checked before the model loads, so a mistake fails in a second with
one line and exit status 2; so is the estimated peak memory (`yonos.pipeline.check_size`, `--max-memory`).
Outputs written into a folder are lossless PNG unless `--format` names another (a.jpg -> a.png).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from yonos.device import DEVICE_HELP, resolve_device
from yonos.errors import UserError
from yonos.fastpath import FastPath
from yonos.io import IMAGE_SUFFIXES, read_image, save_image


def register(sub) -> None:
    p = sub.add_parser("upscale", help="super-resolve an image or a folder of images",
                       description=__doc__.splitlines()[0])
    p.add_argument("input", help="image file or folder of images")
    p.add_argument("output", help="output file (for a file input) or folder (for a folder input)")
    p.add_argument("--checkpoint", required=True,
                   help="folder written by a training stage: YONOS (yonos_config.json) or a baseline "
                        "(train_sr3, train_ldmsr, train_stablesr_cfw, or a converted release)")
    p.add_argument("--steps", type=int, default=None,
                   help="sampling steps, 1..1000 (default: 1 for YONOS, the one-step model; a baseline's own default)")
    p.add_argument("--seed", type=int, default=0, help="noise seed; each image uses this seed")
    p.add_argument("--scale", type=int, default=None, help="expected scale; refused if the checkpoint differs")
    p.add_argument("--format", default=None, choices=[s.lstrip(".") for s in IMAGE_SUFFIXES],
                   help="format of outputs written into a folder (default png: lossless; jpg/webp are lossy)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--fast", default=None, metavar="FLAGS",
                   help="YONOS checkpoints: speed-ups, comma-separated: bf16, channels_last, compile, inference_mode; "
                        "or fp32 (none of them). Default auto: bf16 + inference_mode where the device runs bf16 "
                        "natively, else channels_last + inference_mode (yonos/fastpath.py; speed and PSNR change in "
                        "reports/bench.md)")
    p.add_argument("--max-memory", type=float, default=None, metavar="GIB",
                   help="refuse an image whose estimated peak memory exceeds GIB (default: the device's memory: "
                        "GPU memory, or RAM on the CPU); large images are tiled automatically")
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
        elif p.name.startswith("."):
            print(f"skipped {p}: a hidden file (e.g. the temporary file of an interrupted write)", file=sys.stderr)
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
        if output_path.is_dir():  # into a folder: lossless PNG unless --format, as in folder mode
            dst = output_path / (input_path.stem + f".{fmt or 'png'}")
        else:
            dst = output_path
            if dst.suffix.lower() not in IMAGE_SUFFIXES:
                raise UserError(f"{dst}: unknown image suffix; use one of {', '.join(IMAGE_SUFFIXES)}")
            if fmt and dst.suffix.lower() != f".{fmt}":
                raise UserError(f"--format {fmt}: the output file {dst} names another format; drop one of them")
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


def read_all(jobs: list[tuple[Path, Path]]) -> list[tuple[int, int]]:
    """Every input read and checked; every bad file named (one line each), then one error. Returns the
    (height, width) of each; images are read again one at a time when upscaled, so a large folder is
    never held in memory at once."""
    sizes, bad = [], []
    for src, _ in jobs:
        try:
            sizes.append(tuple(read_image(src).shape[-2:]))
        except UserError as exc:
            bad.append(str(exc))
    if bad:
        for line in bad[:-1]:
            print(f"yonos upscale: error: {line}", file=sys.stderr)
        raise UserError(bad[-1] if len(bad) == 1 else f"{bad[-1]} ({len(bad)} bad inputs in all, listed above)")
    return sizes


def check_memory(jobs, sizes, info: dict, max_gib: float | None, device) -> None:
    """Each image's estimated peak memory, on the path upscale_batch will take (tiled or not), within
    the limit; checked before the model loads (yonos.pipeline.check_size)."""
    from yonos.pipeline import check_size, would_tile
    from yonos.tiling import Tiling

    max_bytes = None if max_gib is None else int(max_gib * 2**30)
    spec = info["memory"]
    for (src, _), (h, w) in zip(jobs, sizes):
        check_size(spec, h, w, tiling=Tiling() if would_tile(spec, h, w) else None, max_bytes=max_bytes,
                   device=device, name=str(src))


def check_args(args, info: dict) -> None:
    args.steps = 1 if args.steps is None else args.steps
    if not 1 <= args.steps <= info["num_train_timesteps"]:
        raise UserError(f"--steps {args.steps}: must be between 1 and {info['num_train_timesteps']}")
    if args.scale is not None and args.scale != info["scale"]:
        raise UserError(f"--scale {args.scale}: {args.checkpoint} is a x{info['scale']} model; "
                        f"use a x{args.scale} checkpoint or drop --scale")
    if args.max_memory is not None and not args.max_memory > 0:
        raise UserError(f"--max-memory {args.max_memory:g}: must be a positive number of GiB")
    FastPath.parse(args.fast)  # an unknown flag stops here, before any work


def baseline_of(checkpoint: str | os.PathLike) -> str | None:
    """The registered method whose checkpoint folder this is (by its config file), or None (YONOS's own)."""
    from yonos.baselines import ldmsr, sr3, stablesr

    folder = Path(checkpoint)
    for method, config_names in (("sr3", [sr3.CONFIG_NAME]), ("ldmsr", [ldmsr.CONFIG_NAME, "model_index.json"]),
                                 ("stablesr", [stablesr.CONFIG_NAME])):
        if any((folder / name).is_file() for name in config_names):
            return method
    return None


def run_baseline(args, method_name: str) -> int:
    """A baseline's checkpoint through its adapter (`upscale` contract), at its default steps unless --steps.
    Its peak memory is not estimated (YONOS's memory model does not cover it) and it is not tiled."""
    from yonos.plugins import load_method
    from yonos.sampler import per_image_generators

    if args.steps is not None and not 1 <= args.steps <= 1000:
        raise UserError(f"--steps {args.steps}: must be between 1 and 1000")
    if args.fast:
        raise UserError(f"--fast {args.fast}: YONOS checkpoints only; {args.checkpoint} is a {method_name} checkpoint")
    device = resolve_device(args.device)
    jobs = plan(Path(args.input), Path(args.output), fmt=args.format, overwrite=args.overwrite)
    check_writable(jobs)
    read_all(jobs)  # all inputs validated before the model loads
    method = load_method(method_name, checkpoint=args.checkpoint, device=device)
    scale = method.scales[0]
    if args.scale is not None and args.scale != scale:
        raise UserError(f"--scale {args.scale}: {args.checkpoint} is a x{scale} {method_name} model; "
                        f"use a x{args.scale} checkpoint or drop --scale")
    print(f"{args.checkpoint}: a {method_name} checkpoint; peak memory is not estimated for it, nor is it tiled",
          file=sys.stderr)
    steps = {} if args.steps is None else {"steps": args.steps}
    for src, dst in jobs:
        lr = read_image(src)
        sr = method.upscale(lr[None].to(device), scale=scale, generator=per_image_generators([args.seed]), **steps)[0]
        save_image(sr.cpu(), dst, overwrite=args.overwrite)
        print(f"{src} -> {dst} ({lr.shape[-1]}x{lr.shape[-2]} -> {sr.shape[-1]}x{sr.shape[-2]})")
    return 0


def run(args) -> int:
    from yonos.pipeline import YonosPipeline, checkpoint_info
    from yonos.sampler import per_image_generators

    method_name = baseline_of(args.checkpoint)
    if method_name is not None:
        return run_baseline(args, method_name)
    info = checkpoint_info(args.checkpoint)
    check_args(args, info)
    device = resolve_device(args.device)
    jobs = plan(Path(args.input), Path(args.output), fmt=args.format, overwrite=args.overwrite)
    check_writable(jobs)
    sizes = read_all(jobs)  # all inputs validated before the model loads
    check_memory(jobs, sizes, info, args.max_memory, device)
    fast = FastPath.parse(args.fast or "auto", device)
    pipe = YonosPipeline.from_pretrained(args.checkpoint, device=device).set_fast(fast)
    print(f"fast path: {fast.label()}" + ("" if args.fast else " (default auto; --fast fp32 for the reference path)"),
          file=sys.stderr)
    if args.max_memory is not None:
        pipe.max_memory = int(args.max_memory * 2**30)
    for src, dst in jobs:
        lr = read_image(src)
        sr = pipe.upscale_batch(lr[None], steps=args.steps, generator=per_image_generators([args.seed]))[0]
        save_image(sr.cpu(), dst, overwrite=args.overwrite)  # never replaces a file that appeared meanwhile
        print(f"{src} -> {dst} ({lr.shape[-1]}x{lr.shape[-2]} -> {sr.shape[-1]}x{sr.shape[-2]})")
    return 0
