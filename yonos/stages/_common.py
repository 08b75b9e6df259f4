"""What every stage shares: argument parsing, the resolved config and wall time beside the outputs."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from yonos.config import load_params, run_dir, save_resolved
from yonos.errors import UserError
from yonos.io import list_images, read_image, write_json


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
    save_resolved(out, cfg, name)
    write_json(out / "timing.json", {"stage": name, "seconds": round(seconds, 2), **result.get("timing", {})})
    print(f"[{name}] done in {seconds:.1f} s", file=sys.stderr)
    return result


def load_folder(folder: str | Path) -> list[torch.Tensor]:
    return [read_image(p) for p in list_images(folder)]


def device_of(cfg: dict) -> torch.device:
    want = cfg.get("device", "auto")
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(want)
