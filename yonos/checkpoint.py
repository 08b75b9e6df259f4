"""Trainer state for exact resumption: written atomically, checked against the config, never pickled.

A state folder holds everything a resume needs: the trained module's weights (model.safetensors), the
optimizer's tensors (optimizer.safetensors), the EMA weights when training keeps them
(extra.safetensors) and trainer_state.json (step, optimizer scalars and param
groups, the loss history, the size of every file, and the training identity with its sha256). Data order
and noise are functions of (seed, example index) and the LR schedule is a function of the step, so the step
counter is all the RNG state a resume needs.

Identity: the parts of the resolved config that change the training (the stage's sections, seed, model,
data, degradation, the digest of the starting checkpoint). A state saved under another identity is refused
with one line naming each changed key (old -> new) and how to start fresh.

Atomicity: a state is written to STATE.tmp-XXXX beside STATE and fsynced; then STATE is renamed to STATE.old,
STATE.tmp-XXXX to STATE, and STATE.old removed. A kill at any instant leaves STATE complete, or (between the
two renames) STATE absent and STATE.old complete, which `load_state` reads. A folder without
trainer_state.json (written last) or whose files differ from the sizes it records is never loaded.

Test hook: YONOS_TEST_SLOW_CHECKPOINT=SECONDS sleeps that long after each file and each rename of a save,
so a test can land a SIGKILL inside the write (tests/test_resume.py). Never set it otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from yonos.errors import UserError

MODEL_TENSORS = "model.safetensors"
STATE_TENSORS = "optimizer.safetensors"
STATE_JSON = "trainer_state.json"
EXTRA_TENSORS = "extra.safetensors"  # trainer tensors beside the optimizer's (the EMA weights), when any
FORMAT = 2  # 1: optimizer only, weights read from the stage's checkpoint/ (not atomic, no identity)


# --- identity -------------------------------------------------------------------------------------
def identity_hash(identity: dict) -> str:
    """sha256 of the identity's canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def digest(path: str | Path) -> str:
    """sha256 of a file, or of a folder's relative file names and contents (sorted): a checkpoint's identity."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    if not files:
        raise UserError(f"{path}: missing or empty; run the stage that writes it first")
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() + b"\0" if f != path else b"")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


def config_changes(old, new, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key path, old, new) for every leaf that differs; lists compare whole."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            out += config_changes(old.get(key, "<absent>"), new.get(key, "<absent>"), path)
        return out
    return [] if old == new else [(prefix or "<identity>", old, new)]


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text.startswith("sha256:"):
        text = text[:19] + "…"
    return text if len(text) <= 60 else text[:57] + "..."


def display_path(path: str | Path) -> str:
    """`path` as a user would type it from the current folder (relative when inside it)."""
    path = Path(path)
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


# --- atomic save ----------------------------------------------------------------------------------
def _pause() -> None:
    """The test hook that widens every window of a save (module docstring)."""
    seconds = float(os.environ.get("YONOS_TEST_SLOW_CHECKPOINT") or 0)
    if seconds > 0:
        time.sleep(seconds)


def _fsync(path: Path) -> None:
    if os.name == "nt" and path.is_dir():  # Windows cannot open a folder to fsync it
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _old(folder: Path) -> Path:
    return folder.with_name(folder.name + ".old")


def _temporaries(folder: Path) -> list[Path]:
    return sorted(folder.parent.glob(f"{folder.name}.tmp-*"))


def save_state(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int, *,
               identity: dict, extra_tensors: dict[str, torch.Tensor] | None = None, **extra) -> None:
    """Write the whole trainer state to `folder`, atomically (module docstring). Main process only.
    `extra_tensors` (e.g. the EMA weights) are saved beside the optimizer's; load_state returns them as
    meta["extra_tensors"]."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in _temporaries(folder):  # left by a killed save: never complete, never loaded
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{folder.name}.tmp-", dir=folder.parent))
    save_model(model, str(tmp / MODEL_TENSORS), force_contiguous=True)
    _pause()
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    save_file(tensors, str(tmp / STATE_TENSORS))
    _pause()
    names = (MODEL_TENSORS, STATE_TENSORS)
    if extra_tensors:
        save_file({k: v.detach().cpu().contiguous() for k, v in extra_tensors.items()}, str(tmp / EXTRA_TENSORS))
        names += (EXTRA_TENSORS,)
    sizes = {name: (tmp / name).stat().st_size for name in names}
    meta = {"format": FORMAT, "step": step, "identity_sha256": identity_hash(identity), "files": sizes,
            "param_groups": sd["param_groups"], "scalars": scalars, **extra, "identity": identity}
    (tmp / STATE_JSON).write_text(json.dumps(meta, indent=1, default=str) + "\n")
    for name in (*sizes, STATE_JSON):
        _fsync(tmp / name)
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the state should look like any other folder
    _fsync(tmp)
    _pause()
    old = _old(folder)
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)  # STATE is complete, so a leftover STATE.old is garbage
        folder.rename(old)
        _fsync(folder.parent)
        _pause()
    tmp.rename(folder)
    _fsync(folder.parent)
    _pause()
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def discard_state(folder: str | Path) -> None:
    """Remove a state and its leftovers (`--fresh`)."""
    folder = Path(folder)
    for path in (folder, _old(folder), *_temporaries(folder)):
        shutil.rmtree(path, ignore_errors=True)


# --- load -----------------------------------------------------------------------------------------
def find_state(folder: str | Path) -> Path | None:
    """The folder to resume from: STATE, or STATE.old when a kill fell between the two renames of a save."""
    folder = Path(folder)
    if folder.exists():
        return folder
    old = _old(folder)
    return old if (old / STATE_JSON).is_file() else None


def load_state(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
               identity: dict) -> dict | None:
    """Restore model and optimizer in place from a complete state saved under the same identity.

    Returns its metadata (`step`, and the `extra` it was saved with), or None when there is no state.
    A state that is incomplete or was saved under another identity raises UserError, one line.
    """
    where = display_path(folder)
    fresh = f"start fresh with --fresh, or delete {where}"
    path = find_state(folder)
    if path is None:
        return None
    try:
        meta = json.loads((path / STATE_JSON).read_text())
    except (OSError, ValueError):
        raise UserError(f"{where}: incomplete trainer state ({STATE_JSON} missing or unreadable); {fresh}") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{where}: trainer state from an older version (no config record); {fresh}")
    for name, size in meta["files"].items():
        f = path / name
        if not f.is_file() or f.stat().st_size != size:
            raise UserError(f"{where}: incomplete trainer state ({name} missing or truncated); {fresh}")
    if meta["identity_sha256"] != identity_hash(identity):
        changes = config_changes(meta["identity"], json.loads(json.dumps(identity, default=str)))
        said = "; ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, a, b in changes[:4])
        said += f"; and {len(changes) - 4} more" if len(changes) > 4 else ""
        raise UserError(f"{where}: saved with a different config ({said or 'identity hash differs'}); "
                        f"refusing to resume; {fresh}")
    load_model(model, str(path / MODEL_TENSORS), strict=True)
    tensors = load_file(str(path / STATE_TENSORS))
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if EXTRA_TENSORS in meta["files"]:
        meta["extra_tensors"] = load_file(str(path / EXTRA_TENSORS))
    return meta


def read_folder_config(path: str | os.PathLike, name: str, fmt: int, *, what: str, fix: str) -> dict:
    """The JSON config `name` of a saved pipeline folder (YONOS, SR3, LDM-SR, StableSR), checked: the folder
    and its config exist, parse, and have checkpoint format `fmt`; else one line naming the file and `fix`."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such checkpoint folder; {fix}")
    cfg_file = path / name
    if not cfg_file.is_file():
        raise UserError(f"{path}: not {what} ({name} missing); {fix}")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{cfg_file}: unreadable ({type(exc).__name__}); {fix}") from None
    if cfg.get("format") != fmt:
        raise UserError(f"{cfg_file}: checkpoint format {cfg.get('format')} is not {fmt}; {fix}")
    return cfg
