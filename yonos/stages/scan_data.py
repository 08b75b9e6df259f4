"""scan_data: one content digest per stage of the data the active profile reads from outside the pipeline.

DVC refuses to run a stage whose dependency is missing, and data/ (RealSR, DRealSR, set5, DIV2K, ...)
is absent on a fresh clone. So instead of declaring those folders as dependencies, this stage runs on
every `dvc repro` (`always_changed`) and writes, under runs/<profile>/scan_data/:

    train.json          what prepare_data reads: scikit-image's photos, or data.train_dir / data.val_dir
    evaluate.json       the sets of `evaluate.sets` (except the embedded set, a pipeline output)
    evaluate_real.json  the sets of `evaluate_real.sets`

Each entry is `absent` (with the command that fetches it) or the number of files and a sha256 over their
relative paths and contents. The consuming stage depends on its file, so it re-runs exactly when its
data appears, disappears or changes (e.g. after `yonos download realsr`), and never otherwise: the
digest does not depend on where the copy lives (data/ or a mirror) or on file times.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from yonos.config import run_dir
from yonos.errors import UserError
from yonos.io import write_json
from yonos.stages._common import stage_main

NAME = "scan_data"


def folder_digest(folder: Path) -> dict:
    """{"files": n, "sha256": ...} over the sorted relative paths and contents of every file below `folder`."""
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    for p in files:
        h.update(p.relative_to(folder).as_posix().encode() + b"\0")
        with p.open("rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return {"files": len(files), "sha256": h.hexdigest()}


def scan_folder(path: str | os.PathLike) -> dict:
    folder = Path(os.path.expandvars(str(path)))
    if not folder.is_dir():
        return {"status": "absent", "path": str(path)}
    return {"status": "present", "path": str(path), **folder_digest(folder)}


def scan_dataset(name: str, cfg: dict) -> dict:
    """Digest of registry entry `name` where it is (data/<name> or the mirror), else absent with why."""
    from yonos.data.eval_sets import data_settings
    from yonos.data.sources import dataset_info, locate, subfolder

    try:
        folder = locate(name, *data_settings(cfg))
    except UserError as exc:
        return {"status": "absent", "reason": str(exc)}
    info = dataset_info(name)  # per sub-folder: an HR-only set may be stored flat (classic/b100/*.png)
    return {"status": "present", **{sub: folder_digest(subfolder(folder, info, sub)) for sub in info.folders}}


def scan_sets(entries, cfg: dict) -> dict:
    """{set name: digest of the folder it is read from | absent with the reason}, embedded excluded."""
    from yonos.data.eval_sets import eval_set_folder

    out = {}
    for entry in entries or []:
        name = entry if isinstance(entry, str) else entry["name"]
        if name == "embedded":  # written by prepare_data, a tracked pipeline output
            continue
        try:
            folder = eval_set_folder(name, cfg)
        except UserError as exc:
            out[name] = {"status": "absent", "reason": str(exc)}
            continue
        out[name] = {"status": "present", **folder_digest(folder)}  # no machine path: a mirror is not data/
    return out


def scan_train(cfg: dict) -> dict:
    dcfg = cfg["data"]
    if dcfg["source"] == "skimage":
        import skimage

        return {"source": "skimage", "skimage": skimage.__version__,
                "images": sorted(dcfg["train_images"] + dcfg["val_images"])}
    if dcfg["source"] == "folder":
        return {"source": "folder", "train_dir": scan_folder(dcfg["train_dir"]),
                "val_dir": scan_folder(dcfg["val_dir"])}
    if dcfg["source"] == "dataset":  # registry entries: same digest from data/ or a mirror
        sets = {}
        for name in (dcfg["train_set"], dcfg["val_set"]):
            sets[name] = scan_dataset(name, cfg)
        return {"source": "dataset", "val_images": dcfg["val_images"], "sets": sets}
    return {"source": dcfg["source"]}  # prepare_data names the error


def run(cfg: dict) -> dict:
    out = run_dir(cfg, NAME)
    write_json(out / "train.json", scan_train(cfg))
    write_json(out / "evaluate.json", scan_sets(cfg["evaluate"]["sets"], cfg))
    write_json(out / "evaluate_real.json", scan_sets((cfg.get("evaluate_real") or {}).get("sets"), cfg))
    return {}


def main() -> int:
    return stage_main(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
