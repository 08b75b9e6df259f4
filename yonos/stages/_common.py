"""What every stage shares: argument parsing, the resolved config and wall time beside the outputs."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image

from yonos.config import load_params, run_dir, save_resolved
from yonos.errors import UserError
from yonos.io import list_images, pil_to_array, read_image, write_json


def stage_main(name: str, run: Callable[[dict], dict | None], argv: list[str] | None = None) -> int:
    """`python -m yonos.stages.<name> [--profile P] [--params FILE] [--run-root DIR] [--fresh]`."""
    parser = argparse.ArgumentParser(prog=f"python -m yonos.stages.{name}")
    parser.add_argument("--profile", default=None, help="params profile (default: params.yaml's `profile`)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--run-root", default=None, help="override run_root (outputs go to RUN_ROOT/<profile>/)")
    parser.add_argument("--fresh", action="store_true",
                        help="training stages: discard the saved trainer state and start from scratch")
    args = parser.parse_args(argv)
    try:
        cfg = load_params(args.params, args.profile)
        if args.run_root:
            cfg["run_root"] = args.run_root
        if args.fresh:
            cfg["fresh"] = True
        run_stage(name, run, cfg)
    except UserError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def run_stage(name: str, run: Callable[[dict], dict | None], cfg: dict) -> dict:
    """Run one stage; write resolved_config.json and timing.json into runs/<profile>/<name>/."""
    out = run_dir(cfg, name)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = run(cfg) or {}
    seconds = time.perf_counter() - t0
    timing = result.get("timing", {})
    earlier = earlier_seconds(timing)  # training a resumed stage did in earlier calls (yonos.train.fit_timing)
    save_resolved(out, cfg, name)
    write_json(out / "timing.json", {"stage": name, "seconds": round(seconds + earlier, 2),
                                     "call_seconds": round(seconds, 2), **timing})
    earlier_note = f" (+{earlier:.1f} s of training in earlier calls)" if earlier else ""
    print(f"[{name}] done in {seconds:.1f} s{earlier_note}", file=sys.stderr)
    return result


def earlier_seconds(timing: dict) -> float:
    """The sum of every `earlier_seconds` in a stage's timing entries, nested ones included (one per link)."""
    return sum(earlier_seconds(v) if isinstance(v, dict) else float(v) if k == "earlier_seconds" else 0.0
               for k, v in timing.items())


# prepare_data writes this instead of copies when the training images are a folder of the user's
# (paper profile: DIV2K's 800 2K images): the file names, their folder and a digest of their content.
INDEX = "index.json"


class StreamedImages(Sequence):
    """Training images decoded from disk one at a time, never all held in memory: an HF `datasets`
    Dataset of file paths whose Image feature decodes on access (pickles as paths, so each DataLoader
    worker or process holds only the paths). `sizes` ((h, w) per image, from the file headers) lets a
    sampler weight images by area without decoding them."""

    def __init__(self, paths: Sequence[str | Path]):
        import datasets

        self.paths = [str(p) for p in paths]
        self.sizes = [image_size(p) for p in self.paths]
        self.dataset = datasets.Dataset.from_dict({"image": self.paths}).cast_column("image", datasets.Image())

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        try:
            img = self.dataset[i]["image"]  # PIL, EXIF orientation applied by datasets
        except (OSError, SyntaxError, ValueError) as exc:
            raise UserError(f"{self.paths[i]}: not a readable image ({exc}); replace or remove the file") from None
        return torch.from_numpy(pil_to_array(img)).permute(2, 0, 1).contiguous()


def image_size(path: str | Path) -> tuple[int, int]:
    """(h, w) after EXIF orientation, from the header only."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            swap = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # rotated by 90 or 270 degrees
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: not a readable image ({exc}); replace or remove the file") from None
    return (w, h) if swap else (h, w)


def load_folder(folder: str | Path) -> Sequence[torch.Tensor]:
    """A stage folder of images: in memory (small: the embedded photos, evaluation crops), or, where
    prepare_data wrote an index of a user's folder (paper profile), streamed from that folder."""
    folder = Path(folder)
    if (folder / INDEX).is_file():
        index = json.loads((folder / INDEX).read_text())
        paths = [Path(os.path.expandvars(index["dir"])) / name for name in index["files"]]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise UserError(f"{missing[0]}: listed in {folder / INDEX} but missing ({len(missing)} files); "
                            f"restore {index['dir']} or re-run prepare_data (dvc repro)")
        return StreamedImages(paths)
    return [read_image(p) for p in list_images(folder)]


def device_of(cfg: dict) -> torch.device:
    want = cfg.get("device", "auto")
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(want)
