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


# accelerate's mixed-precision modes. `dvc exp run -S ...` rewrites params.yaml with ruamel (YAML 1.2) and
# drops the quotes of "no"; PyYAML (YAML 1.1) then reads the bare `no` as False, so False means "no".
MIXED_PRECISION = ("no", "fp16", "bf16")


def load_params(path: str | os.PathLike = "params.yaml", profile: str | None = None) -> dict:
    """Return the active profile's section, with `profile` added at its top level.

    The profile is `profile` if given, else $YONOS_PROFILE, else params.yaml's `profile`. Under `dvc repro`
    (DVC sets $DVC_STAGE) $YONOS_PROFILE may not differ from params.yaml's `profile`: dvc.yaml's paths
    come from params.yaml, so the stage would write outputs DVC does not track."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: params file not found; run from the repository root or pass --params")
    with path.open() as f:
        raw = yaml.safe_load(f)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: not a mapping of profiles; restore it with `git checkout {path}`")
    env = os.environ.get("YONOS_PROFILE")
    if profile is None and env and os.environ.get("DVC_STAGE") and env != raw.get("profile", "embedded"):
        raise UserError(
            f"YONOS_PROFILE={env} cannot change the profile of a DVC run (dvc.yaml takes it from {path}); "
            f"unset it and run `dvc exp run -S profile={env}`, or `python -m yonos.stages.run_all --profile {env}`"
        )
    profile = profile or env or raw.get("profile", "embedded")
    if profile not in raw or not isinstance(raw[profile], dict):
        raise UserError(f"{path}: no section for profile {profile!r}; choose one of {list(PROFILES)}")
    cfg = copy.deepcopy(raw[profile])
    cfg["profile"] = profile
    mp = cfg.get("mixed_precision", "no")
    cfg["mixed_precision"] = "no" if mp is False else mp
    if cfg["mixed_precision"] not in MIXED_PRECISION:
        raise UserError(f"{path}: {profile}.mixed_precision is {mp!r}; use one of {', '.join(MIXED_PRECISION)}")
    return cfg


def report_dir(cfg: dict) -> Path:
    """Where the report stage writes: `report.out_dir` if set (tests), else reports/<profile>/, the path
    dvc.yaml declares. Each profile has its own folder, so running one never touches another's report."""
    out = (cfg.get("report") or {}).get("out_dir")
    return Path(out) if out else Path("reports") / cfg["profile"]


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
