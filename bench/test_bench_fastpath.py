"""The fast path (issue 10, item 2): each opt-in flag of yonos/fastpath.py, timed and scored in one run.

Group "fast path 128->512": YONOS one step on the same LR (1x3x128x128, x4) under each flag set, fp32 first
(the reference). Beside each median, in extra_info:
    psnr_y           mean PSNR-Y on the embedded evaluation crops (runs/embedded/prepare_data/eval; one step,
                     the evaluate stage's per-image noise seeds), or None with `psnr_note` when they are absent
    psnr_delta_db    that minus fp32's: a flag may become a default only if |delta| <= DEFAULT_TOLERANCE_DB
    max_abs_diff     largest pixel difference from fp32 on the timed LR (0 for a pure layout change)
Each flag set loads its own copy of the model (the flags change modules in place). compile's first call
compiles (the warm-up round, not timed; its seconds are in extra_info.first_call_s).

    pytest bench/test_bench_fastpath.py --benchmark-only --benchmark-json reports/bench/bench_cpu.json
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, device, peak_memory_mb, reset_peak, sync

from yonos.fastpath import FastPath
from yonos.plugins import load_method
from yonos.sampler import per_image_generators

GROUP = "fast path 128->512"
DEFAULT_TOLERANCE_DB = 0.05  # issue 10: a flag becomes a default only if PSNR-Y moves by <= 0.05 dB
FLAG_SETS = ["", "inference_mode", "channels_last", "bf16", "bf16,channels_last", "compile",
             "auto"]  # `yonos upscale`'s default, resolved for this machine (FastPath.auto)


@pytest.fixture(scope="module")
def eval_crops():
    """(ids, LR batch, HR batch, per-image seeds) of the embedded evaluation crops, or the reason they are absent."""
    from yonos.config import load_params
    from yonos.data.eval_sets import resolve_eval_set
    from yonos.errors import UserError
    from yonos.stages.evaluate import image_seed

    cfg = load_params(REPO / "params.yaml", "embedded")
    try:
        eset = resolve_eval_set("embedded", cfg, REPO / "runs" / "embedded", scale=cfg["data"]["eval_scale"])
    except UserError as exc:
        return str(exc)
    ids, lrs, hrs = zip(*eset)
    return list(ids), torch.stack(lrs), torch.stack(hrs), [image_seed(cfg["evaluate"]["seed"], i) for i in ids]


@pytest.fixture(scope="module")
def fp32_outputs():
    return {}  # the reference's outputs, filled by the first (fp32) case


def psnr_y(method, crops) -> float:
    from yonos.metrics import Scorer

    ids, lr, hr, seeds = crops
    sr = method.upscale(lr.to(device()), scale=4, steps=1, generator=per_image_generators(seeds))
    return float(Scorer(["psnr"], device=device(), border=0).score(sr, hr.to(device()))["psnr"].mean())


def flag_label(flags: str) -> str:
    label = FastPath.parse(flags, device()).label()
    return f"auto: {label}" if flags == "auto" else label


@pytest.mark.parametrize("flags", FLAG_SETS, ids=[f if f == "auto" else FastPath.parse(f).label() for f in FLAG_SETS])
def test_fast_path(benchmark, yonos_method, eval_crops, fp32_outputs, flags):
    fast = FastPath.parse(flags, device())
    method = load_method("yonos", checkpoint=Path(yonos_method.checkpoint), device=device(), fast=flags or None)
    lr = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0)).to(device())
    benchmark.group = GROUP

    def call():
        out = method.upscale(lr, scale=4, steps=1, generator=per_image_generators([0]))
        sync()
        return out

    t0 = time.perf_counter()
    first = call()  # compile happens here; for the others a warm-up
    first_call_s = time.perf_counter() - t0
    reset_peak()
    benchmark.pedantic(call, rounds=3 if fast.compile else 5, iterations=1, warmup_rounds=0)
    info = {"flags": flag_label(flags), "reference": not flags, "weights": yonos_method.source,
            "peak_memory_mb": round(peak_memory_mb(), 1), "first_call_s": round(first_call_s, 3),
            "default_tolerance_db": DEFAULT_TOLERANCE_DB}
    if isinstance(eval_crops, str):
        info.update(psnr_y=None, psnr_note=f"embedded evaluation crops absent: {eval_crops}")
    else:
        info["psnr_y"] = round(psnr_y(method, eval_crops), 4)
    if not flags:
        fp32_outputs.update(image=first.float().cpu(), psnr_y=info["psnr_y"])
    elif fp32_outputs:
        info["max_abs_diff"] = float((first.float().cpu() - fp32_outputs["image"]).abs().max())
        if info["psnr_y"] is not None and fp32_outputs["psnr_y"] is not None:
            info["psnr_delta_db"] = round(info["psnr_y"] - fp32_outputs["psnr_y"], 4)
    benchmark.extra_info.update(info)
