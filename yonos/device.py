"""`--device` for every command: one default ("auto") and one check, before any model or image loads."""

from __future__ import annotations

import torch

from yonos.errors import UserError

DEVICE_HELP = "auto (CUDA if available, else CPU), cpu, cuda, cuda:1 ..."


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda if available else cpu; anything else must name a device this machine has.
    UserError (one line) for an unknown name or a CUDA device that is absent, instead of letting
    torch fail later or a metric library turn every value into n/a."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device name; use {DEVICE_HELP}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here "
                            f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: MPS is not available here; use --device cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: unsupported device type {device.type!r}; use {DEVICE_HELP}")
    return device
