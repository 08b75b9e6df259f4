"""Benchmarks time the code path that is scored: the method adapters' `upscale`, as `evaluate` calls it.

Run: `pytest bench/ --benchmark-only` (add `--benchmark-json out.json` to keep numbers).
Checkpoints: YONOS_BENCH_CHECKPOINT (default runs/embedded/finetune_decoder/checkpoint); without one,
the embedded architecture with random weights is timed (same shapes, same FLOPs) and says so.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_memory_mb() -> float:
    """Peak memory: CUDA allocator peak on GPU; the process's max RSS on CPU (monotonic, whole process)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


@pytest.fixture(scope="session")
def yonos_method(tmp_path_factory):
    """The method adapter on a trained checkpoint, or on the embedded architecture at random weights."""
    from yonos.config import load_params
    from yonos.plugins import load_method

    ckpt = Path(os.environ.get("YONOS_BENCH_CHECKPOINT", REPO / "runs/embedded/finetune_decoder/checkpoint"))
    source = "trained checkpoint"
    if not (ckpt / "yonos_config.json").is_file():
        from yonos.pipeline import YonosPipeline

        ckpt = tmp_path_factory.mktemp("bench") / "embedded_random"
        YonosPipeline.from_params(load_params(REPO / "params.yaml", "embedded"), 4).save_pretrained(ckpt)
        source = "embedded architecture, random weights (no trained checkpoint found)"
    method = load_method("yonos", checkpoint=ckpt, device=device())
    method.source = source
    return method
