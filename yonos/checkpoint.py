"""Trainer state for exact resumption, without pickle: tensors in safetensors, the rest in JSON.

Model weights are saved separately with diffusers' `save_pretrained`. Data order and noise are
functions of (seed, example index), so the step counter is all the RNG state a resume needs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from yonos.io import atomic_path, write_json

STATE_TENSORS = "optimizer.safetensors"
STATE_JSON = "trainer_state.json"


def save_trainer_state(folder: str | Path, optimizer: torch.optim.Optimizer, step: int, **extra) -> None:
    folder = Path(folder)
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    with atomic_path(folder / STATE_TENSORS) as tmp:
        save_file(tensors, str(tmp))
    write_json(folder / STATE_JSON, {"step": step, "param_groups": sd["param_groups"],
                                     "scalars": scalars, **extra})


def load_trainer_state(folder: str | Path, optimizer: torch.optim.Optimizer) -> int:
    """Restore the optimizer in place; return the number of optimiser steps already taken."""
    folder = Path(folder)
    meta = json.loads((folder / STATE_JSON).read_text())
    tensors = load_file(str(folder / STATE_TENSORS))
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(meta["step"])


def has_trainer_state(folder: str | Path) -> bool:
    return (Path(folder) / STATE_JSON).is_file() and (Path(folder) / STATE_TENSORS).is_file()
