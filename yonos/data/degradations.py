"""LR synthesis from HR, seeded per image. `degrade` is the one entry point used by training,
data preparation and the DIV2K-Val generator.

For scale distillation the x2 and x4 LR of one HR image must share one degradation draw; only the
final downscale differs. `degrade(hr, scales=(2, 4), seeds=...)` returns both from the same draw.
"""

from __future__ import annotations

from typing import Sequence

import torch

from yonos.resize import bicubic_down

KINDS = ("bicubic",)


def degrade(hr: torch.Tensor, scales: Sequence[int], seeds: Sequence[int], cfg: dict | None = None) -> dict[int, torch.Tensor]:
    """hr: N x 3 x H x W in [0, 1]; one seed per image. Returns {scale: LR in [0, 1]} for each scale."""
    cfg = cfg or {"kind": "bicubic"}
    kind = cfg.get("kind", "bicubic")
    if len(seeds) != hr.shape[0]:
        raise ValueError(f"need one seed per image: {len(seeds)} seeds for {hr.shape[0]} images")
    if kind == "bicubic":
        return {s: bicubic_down(hr, s).clamp(0, 1) for s in scales}
    raise ValueError(f"unknown degradation kind {kind!r}; choose one of {KINDS}")
