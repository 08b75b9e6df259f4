"""Benchmarks time the code path that is scored: the method adapters' `upscale`, as `evaluate` calls it.

Run: `pytest bench/ --benchmark-only` (add `--benchmark-json out.json` to keep numbers).
Checkpoints: YONOS_BENCH_CHECKPOINT (default runs/embedded/finetune_decoder/checkpoint); without one,
the embedded architecture with random weights is timed (same shapes, same FLOPs) and says so.
Peak memory is per measurement: `reset_peak()` before it, `peak_memory_mb()` after (see their docstrings).
The JSON's machine_info also records the torch / diffusers versions and the thread count (hook below).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
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


PROC_STATUS, PROC_CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def _rss_high_water_kb() -> int | None:
    """Linux's VmHWM (peak resident set size) of this process, which `reset_peak` can reset; None elsewhere."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


@functools.cache
def _can_reset_rss_peak() -> bool:
    """Checked once (the check itself resets the peak): can this process reset its peak RSS?"""
    with contextlib.suppress(OSError):
        PROC_CLEAR_REFS.write_text("5")  # "5": reset the peak RSS to the current RSS (Linux >= 4.0)
        return _rss_high_water_kb() is not None
    return False


def peak_memory_kind() -> str:
    if torch.cuda.is_available():
        return "CUDA allocator peak since reset_peak()"
    if _can_reset_rss_peak():
        return "process peak RSS since reset_peak() (VmHWM; includes the loaded models)"
    return "process max RSS since start (ru_maxrss; cannot be reset on this OS)"


def peak_memory_mb() -> float:
    """Peak memory since the last `reset_peak()`: the CUDA allocator peak on GPU; on CPU the process's
    peak RSS (Linux VmHWM, reset by reset_peak; elsewhere ru_maxrss, monotonic since the process began)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    hwm = _rss_high_water_kb()
    if hwm is not None:
        return hwm / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    with contextlib.suppress(OSError):  # not Linux: peak_memory_mb falls back to the monotonic ru_maxrss
        PROC_CLEAR_REFS.write_text("5")


def pytest_benchmark_update_machine_info(config, machine_info):
    """Versions and threads beside pytest-benchmark's machine info (bench/report.py prints them)."""
    import diffusers

    machine_info.update(torch=torch.__version__, diffusers=diffusers.__version__,
                        torch_threads=torch.get_num_threads(), device=str(device()),
                        accelerator=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                        platform=platform.platform(terse=True))


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
