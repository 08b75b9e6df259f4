"""Evaluation sets by name, with the protocol each one is scored under.

    resolve_eval_set("realsr", cfg) -> PairedSet

`cfg` is the active profile's config; `cfg["datasets"]` may give `root` (default "data") and
`mirror` (a folder laid out as in yonos.data.sources; $YONOS_DATA_MIRROR is the fallback) and
`classic_scale` (default 4). The embedded set is what prepare_data wrote under runs/<profile>/: the
profile and run root are cfg's (`profile`, `run_root`), or, for a cfg without a profile (the CLI),
params.yaml's active profile ($YONOS_PROFILE, else its `profile`). `run_dir` overrides that folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from yonos.data.paired import PairedSet, load_hr_folder, load_paired_folder
from yonos.data.sources import dataset_info, locate, subfolder
from yonos.errors import UserError


@dataclass(frozen=True)
class EvalSet:
    name: str
    scale: int | None  # None: the classic sets take the scale from cfg/caller
    protocol: str  # "stablesr": PSNR/SSIM on Y, no border crop | "classic": Y, border crop = scale
    degradation: str  # how its LR was made, for the report
    dataset: str | None  # registry name in yonos.data.sources; None for the embedded set
    paired: bool  # LR supplied (True) or made by MATLAB bicubic from HR (False)

    def border(self, scale: int) -> int:
        return scale if self.protocol == "classic" else 0


EVAL_SETS: dict[str, EvalSet] = {
    s.name: s
    for s in (
        EvalSet("embedded", None, "stablesr", "params: degradation.kind (prepare_data)", None, True),
        EvalSet("realsr", 4, "stablesr", "real camera pairs (RealSR v3 Canon+Nikon), StableSR 128->512 crops",
                "realsr", True),
        EvalSet("drealsr", 4, "stablesr", "real camera pairs (DRealSR), StableSR 128->512 crops", "drealsr", True),
        EvalSet("div2k_val", 4, "stablesr", "Real-ESRGAN second-order x4 (StableSR release, or our generator)",
                "div2k_val_stablesr", True),
        EvalSet("set5", None, "classic", "MATLAB bicubic downscale", "set5", False),
        EvalSet("set14", None, "classic", "MATLAB bicubic downscale", "set14", False),
        EvalSet("b100", None, "classic", "MATLAB bicubic downscale", "b100", False),
        EvalSet("urban100", None, "classic", "MATLAB bicubic downscale", "urban100", False),
        EvalSet("manga109", None, "classic", "MATLAB bicubic downscale", "manga109", False),
    )
}

GENERATED_DIV2K_VAL = "div2k_val_generated"  # folder under data/ written by yonos.data.div2k_val


def eval_set_info(name: str) -> EvalSet:
    if name not in EVAL_SETS:
        raise UserError(f"unknown evaluation set {name!r}; choose from {', '.join(EVAL_SETS)}")
    return EVAL_SETS[name]


def data_settings(cfg: dict | None) -> tuple[Path, str | None]:
    ds = (cfg or {}).get("datasets") or {}
    return Path(ds.get("root") or "data"), ds.get("mirror") or os.environ.get("YONOS_DATA_MIRROR")


def profile_run_dir(cfg: dict | None, params: str | os.PathLike = "params.yaml") -> Path:
    """runs/<profile> of cfg, or of params.yaml's active profile when cfg names none."""
    from yonos.config import load_params, run_dir

    if cfg and cfg.get("profile"):
        return run_dir(cfg)
    return run_dir({**load_params(params), **{k: v for k, v in (cfg or {}).items() if k == "run_root"}})


def eval_set_folder(name: str, cfg: dict | None) -> Path:
    """The folder an external set is read from (data/<name>, else the mirror's copy); UserError naming
    what to download when it is absent. Not for the embedded set, which is a pipeline output."""
    info = eval_set_info(name)
    if info.dataset is None:
        raise UserError(f"{name}: not an external dataset; it is written by the prepare_data stage")
    root, mirror = data_settings(cfg)
    if name == "div2k_val":
        return _div2k_val_folder(root, mirror)
    return locate(info.dataset, root, mirror)


def resolve_eval_set(name: str, cfg: dict | None, run_dir: str | os.PathLike | None = None, *,
                     scale: int | None = None) -> PairedSet:
    """The PairedSet for evaluation set `name`; UserError (one line) when its data is missing."""
    info = eval_set_info(name)
    if name == "embedded":
        folder = Path(run_dir if run_dir is not None else profile_run_dir(cfg)) / "prepare_data" / "eval"
        if not (folder / "hr").is_dir():
            raise UserError(f"{folder}: embedded evaluation set missing; run the prepare_data stage (dvc repro)")
        other = {int(d.name[4:]): d for d in folder.glob("lr_x*") if d.is_dir() and d.name[4:].isdigit()}
        kind = ((cfg or {}).get("degradation") or {}).get("kind", "bicubic")
        return load_paired_folder(folder / "lr", folder / "hr", name="embedded", scale=scale,
                                  other_lr_dirs=other, degradation=kind)
    folder = eval_set_folder(name, cfg)
    if name == "div2k_val":
        return _div2k_val(folder)
    if info.paired:
        return load_paired_folder(folder / "lr", folder / "hr", name=name, scale=info.scale,
                                  degradation=info.degradation)
    scale = scale or int(((cfg or {}).get("datasets") or {}).get("classic_scale", 4))
    return load_hr_folder(subfolder(folder, dataset_info(info.dataset), "hr"), scale=scale, name=name)


def _div2k_val_folder(root: Path, mirror: str | None) -> Path:
    """The released StableSR DIV2K-Val pairs when present, else the locally generated ones."""
    try:
        return locate("div2k_val_stablesr", root, mirror)
    except UserError:
        folder = root / GENERATED_DIV2K_VAL
        if not (folder / "hr").is_dir():
            raise UserError(
                f"DIV2K-Val not found: run `yonos download div2k_val_stablesr` (preferred), or "
                f"`yonos download div2k_valid_hr` then `python -m yonos.data.div2k_val` to build {folder}"
            ) from None
        return folder


def _div2k_val(folder: Path) -> PairedSet:
    made_by = "StableSR release" if folder.name != GENERATED_DIV2K_VAL else "yonos.data.div2k_val generator"
    return load_paired_folder(folder / "lr", folder / "hr", name="div2k_val", scale=4,
                              degradation=f"Real-ESRGAN second-order x4 ({made_by})")
