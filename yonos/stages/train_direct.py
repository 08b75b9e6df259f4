"""train_direct: the ablation. A x4 model trained with the base objective on ground truth z_h,
with the same start (`direct.init`), optimiser steps and example stream as the distilled student,
so the regression target is the only difference. Writes runs/<profile>/train_direct/checkpoint/."""

from __future__ import annotations

from yonos.checkpoint import digest
from yonos.config import run_dir
from yonos.stages._common import stage_main
from yonos.stages._unet import (
    fresh_init,
    from_checkpoint,
    new_pipeline,
    noise_options,
    train_unet,
    training_identity,
    with_task,
)
from yonos.train import base_loss

NAME = "train_direct"


def run(cfg: dict) -> dict:
    dcfg = cfg["direct"]
    scale = dcfg["scale"]
    if dcfg["init"] == "teacher":
        init = run_dir(cfg, "train_teacher", "checkpoint")
        pipe, init = from_checkpoint(init, scale=scale), digest(init)
    elif dcfg["init"] == "scratch":
        pipe, init = new_pipeline(cfg, scale), fresh_init(cfg)
    else:
        raise ValueError(f"params.yaml: direct.init must be teacher or scratch, got {dcfg['init']!r}")
    loss = with_task(base_loss, cfg, pipe, scale=scale)
    return train_unet(cfg, pipe, loss, stream=f"x{scale}", steps=dcfg["steps"], out=run_dir(cfg, NAME),
                      desc=f"direct x{scale}", identity=training_identity(cfg, {"direct": dcfg}, init=init),
                      noise=noise_options(dcfg))


def main() -> int:
    return stage_main(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
