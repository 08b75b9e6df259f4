"""Large images in bounded memory: a 2048^2 output from a 512^2 LR, tiled, with its peak RSS (goal <= 3 GB).

Weights: the trained checkpoint when bench/conftest.py finds one, else the embedded architecture at random
weights (same shapes and FLOPs). One round: the call takes minutes on 2 CPU cores.
"""

from __future__ import annotations

from conftest import device, peak_memory_mb, reset_peak, sync

from yonos.models import vae_factor
from yonos.sampler import per_image_generators
from yonos.tiling import Tiling, tiled_upscale_batch

GOAL_MB = 3 * 1024


def test_tiled_2048_from_512(benchmark, yonos_method):
    import torch

    pipe, tiling = yonos_method.pipe, Tiling()
    lr = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0)).to(device())
    benchmark.group = "tiled 512->2048"
    reset_peak()

    def call():
        tiled_upscale_batch(pipe, lr, steps=1, generator=per_image_generators([0]), tiling=tiling)
        sync()

    benchmark.pedantic(call, rounds=1, iterations=1, warmup_rounds=0)
    peak = peak_memory_mb()
    benchmark.extra_info.update(peak_memory_mb=round(peak, 1), goal_mb=GOAL_MB, device=str(device()),
                                weights=yonos_method.source, tiling=tiling.describe(vae_factor(pipe.vae)))
    assert peak <= GOAL_MB, f"peak {peak:.0f} MB over the {GOAL_MB} MB goal"
