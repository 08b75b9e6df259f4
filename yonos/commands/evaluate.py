"""`yonos evaluate --method M [--checkpoint DIR] --hr-dir DIR --scale 4`: PSNR/SSIM of any registered method.

classic   HR only: modcrop, MATLAB bicubic LR (8-bit), upscale, PSNR/SSIM on Y with border crop = scale.
stablesr  LR/HR pairs (--lr-dir, or a named --set): PSNR/SSIM on Y, no border crop.
Scores go through `yonos.metrics.Scorer`, the code `yonos score` uses, so both give the same number
for the same images. A ground truth stored single-channel (a greyscale file) is scored on its grey
values, as MATLAB's evaluation scripts do when size(im, 3) == 1; this reproduces the canonical Set14
numbers (docs/data.md).

Every argument (method, checkpoint folder, scale, steps, device, output folder) and every image is
checked before the first image is upscaled; a problem is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import inspect
import os
from pathlib import Path

import torch

from yonos.device import DEVICE_HELP, resolve_device
from yonos.errors import UserError
from yonos.io import read_image, write_json

MAX_STEPS = 1000  # the 1000-step training schedule every diffusion method here samples from


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="PSNR/SSIM of a method on a classic or paired set",
                              description=__doc__.splitlines()[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--hr-dir", metavar="DIR", help="HR images (classic) or ground truth paired with --lr-dir")
    src.add_argument("--set", metavar="NAME", help="a named evaluation set (yonos.data.eval_sets)")
    p.add_argument("--lr-dir", metavar="DIR", help="LR images with the same file names as --hr-dir")
    p.add_argument("--method", default="bicubic", help="registered method name (yonos.methods entry points)")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="trained model folder, for methods that load one (yonos: a training stage's checkpoint/)")
    p.add_argument("--scale", type=int, default=None,
                   help="magnification; default: the checkpoint's, else 4")
    p.add_argument("--protocol", choices=("classic", "stablesr"), default=None,
                   help="default: classic for --hr-dir alone, stablesr with --lr-dir, the set's own for --set")
    p.add_argument("--source-dir", metavar="DIR", help="dataset mirror folder for --set (else $YONOS_DATA_MIRROR)")
    p.add_argument("--profile", default=None,
                   help="params profile whose runs/<profile>/ holds --set embedded (default: params.yaml's)")
    p.add_argument("--params", default="params.yaml", help="params file, for --set embedded")
    p.add_argument("--steps", type=int, default=1, help=f"sampling steps (1..{MAX_STEPS}), for diffusion methods")
    p.add_argument("--seed", type=int, default=0,
                   help="noise seed; each image's noise is a function of (seed, image id), as in the evaluate stage")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--out", metavar="FILE", help="write JSON {mean: {...}, per_image: {id: {...}}}")
    p.set_defaults(func=run)


# --- argument checks (all before any image is upscaled) -------------------------------------------
def method_factory(name: str):
    """The class registered as `name` (not instantiated), so its arguments can be checked first."""
    from importlib.metadata import entry_points

    from yonos.plugins import GROUP, load_method

    eps = {ep.name: ep for ep in entry_points(group=GROUP)}
    if name not in eps:
        load_method(name)  # raises the registry's one-line error listing the registered names
    return eps[name].load()


def method_kwargs(name: str, factory, checkpoint: str | None, device: torch.device) -> dict:
    """Constructor arguments from the command line: --checkpoint only for methods that take one
    (and required where the method has no default), the device where the method accepts it."""
    params = inspect.signature(factory).parameters
    kwargs = {}
    if "checkpoint" in params:
        if checkpoint is None:
            if params["checkpoint"].default is inspect.Parameter.empty:
                raise UserError(f"method {name!r} needs --checkpoint DIR (a folder written by a training stage, "
                                "e.g. runs/embedded/finetune_decoder/checkpoint)")
        else:
            kwargs["checkpoint"] = check_checkpoint_dir(checkpoint)
    elif checkpoint is not None:
        raise UserError(f"--checkpoint: method {name!r} loads no checkpoint; drop --checkpoint")
    if "device" in params:
        kwargs["device"] = device
    return kwargs


def check_checkpoint_dir(path: str) -> str:
    folder = Path(path)
    if not folder.exists():
        raise UserError(f"--checkpoint {path}: no such folder; pass a folder written by a training stage "
                        "(e.g. runs/embedded/finetune_decoder/checkpoint)")
    if not folder.is_dir():
        raise UserError(f"--checkpoint {path}: is a file; pass the checkpoint folder that holds it")
    return str(folder)


def load_method_checked(name: str, factory, kwargs: dict):
    """Instantiate; a checkpoint folder the method cannot read is one line, not a traceback."""
    try:
        return factory(**kwargs)
    except UserError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        if "checkpoint" not in kwargs:
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UserError(f"--checkpoint {kwargs['checkpoint']}: not a readable {name} checkpoint "
                        f"({type(exc).__name__}: {first}); pass a folder written by a training stage") from None


def check_steps(steps: int, method) -> None:
    limit = getattr(method, "max_steps", MAX_STEPS)
    if not 1 <= steps <= limit:
        raise UserError(f"--steps {steps}: must be between 1 and {limit}")


def check_out(out: str | None) -> None:
    """--out must be writable before the first image is scored (it is written last)."""
    if not out:
        return
    path = Path(out)
    if path.is_dir():
        raise UserError(f"--out {out}: is a folder; name a .json file")
    parent = path.parent if str(path.parent) else Path(".")
    existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: {existing} is not a writable folder; choose another output path")


# --- data ------------------------------------------------------------------------------------------
def check_images(pset) -> None:
    """Decode every file of the set once, so an empty or corrupt image is one line naming it."""
    for path in [*pset.hr_paths, *(pset.lr_paths or []), *(p for ps in pset.other_lr.values() for p in ps)]:
        read_image(path)


def _check_folder(folder: str) -> None:
    from yonos.data.paired import list_folder

    for path in list_folder(folder).values():
        read_image(path)


def load_set(args, scale: int):
    from yonos.data.eval_sets import eval_set_info, resolve_eval_set
    from yonos.data.paired import load_hr_folder, load_paired_folder

    if args.set:
        info = eval_set_info(args.set)
        cfg: dict = {"datasets": {"mirror": args.source_dir}} if args.source_dir else {}
        root = "runs"
        if args.set == "embedded":  # prepare_data writes it under runs/<profile>/
            from yonos.config import load_params, run_dir

            params = load_params(args.params, args.profile)
            cfg, root = {**params, **cfg}, run_dir(params)
        try:
            pset = resolve_eval_set(args.set, cfg, root, scale=scale)
        except OSError as exc:  # PIL could not identify a file while listing modes: name it
            raise UserError(f"{args.set}: unreadable image ({exc}); replace or remove the file") from None
        check_images(pset)
        return pset, args.protocol or info.protocol
    protocol = args.protocol or ("stablesr" if args.lr_dir else "classic")
    if protocol != "classic" and not args.lr_dir:
        raise UserError("--protocol stablesr needs --lr-dir (paired LR/HR); classic makes LR from HR")
    for folder in (args.hr_dir, args.lr_dir):
        if folder:
            _check_folder(folder)
    if args.lr_dir:
        return load_paired_folder(args.lr_dir, args.hr_dir, scale=scale), protocol
    return load_hr_folder(args.hr_dir, scale=scale), protocol


# --- the evaluation ----------------------------------------------------------------------------------
def evaluate(method, pset, *, scale: int, protocol: str, steps: int = 1, seed: int = 0,
             device: str | torch.device = "cpu") -> dict:
    """Per-image and mean PSNR/SSIM of `method` on `pset` under `protocol`, through the shared Scorer."""
    from yonos.metrics import Scorer
    from yonos.metrics.pairing import stored_grey
    from yonos.sampler import per_image_generators
    from yonos.stages.evaluate import image_seed

    border = scale if protocol == "classic" else 0
    scorer = Scorer(["psnr", "ssim"], device=device, border=border)
    per_image, grey_ids = {}, []
    pairs = pset.pairs_at(scale)
    if pairs is None or not len(pairs):
        raise UserError(f"{pset.name}: no LR at x{scale}")
    for k, (i, lr, hr) in enumerate(pairs):
        gens = None
        if getattr(method, "is_diffusion", False):  # noise seeded by (seed, image id), never by position
            gens = per_image_generators([image_seed(seed, i)], device)
        with torch.no_grad():
            sr = method.upscale(lr[None].to(device), scale=scale, steps=steps, generator=gens)
        if sr.shape[-2:] != hr.shape[-2:]:
            raise UserError(f"{i}: {method.name} returned {tuple(sr.shape[-2:])}, HR is {tuple(hr.shape[-2:])}")
        grey = stored_grey(pairs.hr_paths[k])
        grey_ids += [i] if grey else []
        values = scorer.score(sr.cpu(), hr[None], grey=grey)
        for name, v in values.items():
            if torch.isnan(v).any():
                raise UserError(f"{i}: {name} is n/a ({scorer.reason(name)})")
        per_image[i] = {name: float(v[0]) for name, v in values.items()}
    mean = {k: sum(v[k] for v in per_image.values()) / len(per_image) for k in ("psnr", "ssim")}
    settings = {"steps": steps, "seed": seed} if getattr(method, "is_diffusion", False) else {}
    return {"method": method.name, "set": pset.name, "scale": scale, "protocol": protocol, "border": border,
            "y_channel": "Y of YCbCr (BT.601); single-channel files on their grey values",
            "grey_ids": sorted(grey_ids), "method_settings": {**method.describe(), **settings},
            "mean": mean, "per_image": per_image}


def run(args) -> int:
    device = resolve_device(args.device)
    check_out(args.out)
    factory = method_factory(args.method)
    method = load_method_checked(args.method, factory, method_kwargs(args.method, factory, args.checkpoint, device))
    scales = tuple(getattr(method, "scales", ()))
    scale = args.scale if args.scale is not None else (scales[0] if len(scales) == 1 else 4)
    if scales and scale not in scales:
        raise UserError(f"--scale {scale}: method {args.method!r} supports x{', x'.join(map(str, scales))}"
                        + (f" ({args.checkpoint} is a x{scales[0]} model)" if args.checkpoint else ""))
    check_steps(args.steps, method)
    pset, protocol = load_set(args, scale)
    result = evaluate(method, pset, scale=scale, protocol=protocol, steps=args.steps, seed=args.seed,
                      device=device)
    for i, v in result["per_image"].items():
        print(f"{i:<24} PSNR {v['psnr']:7.3f} dB  SSIM {v['ssim']:.4f}")
    m = result["mean"]
    print(f"{'mean':<24} PSNR {m['psnr']:7.3f} dB  SSIM {m['ssim']:.4f}  "
          f"({pset.name}, x{scale}, {protocol}, border {result['border']}, {len(result['per_image'])} images)")
    if args.out:
        write_json(args.out, result)
    return 0
