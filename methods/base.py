"""The one contract every method implements.

    sr = method.upscale(lr, scale=4, steps=1, generator=[torch.Generator().manual_seed(s) ...])

`lr` is RGB float32 in [0, 1], NCHW; `sr` is RGB float32 in [0, 1], N x C x (scale*H) x (scale*W).
`generator` is one torch.Generator per image (or None for deterministic methods), so an image's
pixels do not depend on the batch it was in. `steps` is ignored by methods with `is_diffusion=False`.
Adapters absorb each method's quirks so the evaluator never branches on a method's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol, runtime_checkable

import torch


@runtime_checkable
class SRMethod(Protocol):
    name: ClassVar[str]
    is_diffusion: ClassVar[bool]  # True: evaluated across DDIM step counts
    scales: tuple[int, ...]  # magnifications this instance supports

    def upscale(
        self,
        lr: torch.Tensor,
        *,
        scale: int,
        steps: int = 1,
        generator: Sequence[torch.Generator] | None = None,
    ) -> torch.Tensor: ...

    def describe(self) -> dict:
        """Every setting that changes pixels (steps aside), for the report."""
        ...
