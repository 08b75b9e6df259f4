"""params.yaml access. The file holds one section per profile (`embedded`, `smoke`, `paper`) and a
top-level `profile` key naming the active one; every stage reads `params[profile][<its section>]`.
The resolved config is written next to each stage's outputs (resolved_config.json)."""

from __future__ import annotations

import copy
import os
import platform
import sys
from pathlib import Path

import yaml

from yonos.errors import UserError
from yonos.io import write_json

PROFILES = ("embedded", "smoke", "paper")


def load_params(path: str | os.PathLike = "params.yaml", profile: str | None = None) -> dict:
    """Return the active profile's section, plus `profile` and `seed` at its top level."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: params file not found; run from the repository root or pass --params")
    with path.open() as f:
        raw = yaml.safe_load(f)
    profile = profile or os.environ.get("YONOS_PROFILE") or raw.get("profile", "embedded")
    if profile not in raw:
        raise UserError(f"{path}: no section for profile {profile!r}; choose one of {list(PROFILES)}")
    cfg = copy.deepcopy(raw[profile])
    cfg["profile"] = profile
    return cfg


def run_dir(cfg: dict, *parts: str) -> Path:
    """runs/<profile>/<parts...>: every profile writes to its own tree."""
    return Path(cfg.get("run_root", "runs")) / cfg["profile"] / Path(*parts) if parts else Path(
        cfg.get("run_root", "runs")
    ) / cfg["profile"]


def save_resolved(out_dir: str | os.PathLike, cfg: dict, stage: str, **extra) -> None:
    """Write the exact config a stage ran with, and where, beside its outputs."""
    import torch

    write_json(
        Path(out_dir) / "resolved_config.json",
        {
            "stage": stage,
            "config": cfg,
            "argv": sys.argv,
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "platform": platform.platform(),
            **extra,
        },
    )
