"""train_teacher: the x2 teacher phi, trained with the base objective (PAPER.md Eq. 1) at the first
scale of the distillation chain. Writes runs/<profile>/train_teacher/checkpoint/."""

from __future__ import annotations

from yonos.config import run_dir
from yonos.stages._common import stage_main
from yonos.stages._unet import fresh_init, new_pipeline, train_unet, training_identity, with_task
from yonos.train import base_loss

NAME = "train_teacher"


def run(cfg: dict) -> dict:
    scale = cfg["distill"]["scales"][0]
    if cfg["teacher"]["scale"] != scale:
        raise ValueError("params.yaml: teacher.scale must equal distill.scales[0]")
    pipe = new_pipeline(cfg, scale)
    loss = with_task(base_loss, cfg, pipe, scale=scale)
    return train_unet(cfg, pipe, loss, stream=f"teacher_x{scale}", steps=cfg["teacher"]["steps"],
                      out=run_dir(cfg, NAME), desc=f"teacher x{scale}",
                      identity=training_identity(cfg, {"teacher": cfg["teacher"]}, init=fresh_init(cfg)))


def main() -> int:
    return stage_main(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
