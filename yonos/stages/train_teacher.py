"""train_teacher: the x2 teacher phi, trained with the base objective (PAPER.md Eq. 1) at the first
scale of the distillation chain. Writes runs/<profile>/train_teacher/checkpoint/.

`teacher.init`: scratch (a seeded new U-Net) or prior: the prior of train_prior (the miniature's Stable
Diffusion) with conv_in widened to [z_t, z_l], the z_l weights zero, so training starts exactly at the
prior's function of z_t, as the paper fine-tunes SD. The paper profile always starts from SD 2.1-base."""

from __future__ import annotations

from yonos.config import run_dir
from yonos.errors import UserError
from yonos.stages._common import stage_main
from yonos.stages._unet import INITS, fresh_init, new_pipeline, train_unet, training_identity, with_task
from yonos.train import base_loss

NAME = "train_teacher"


def run(cfg: dict) -> dict:
    scale = cfg["distill"]["scales"][0]
    if cfg["teacher"]["scale"] != scale:
        raise ValueError("params.yaml: teacher.scale must equal distill.scales[0]")
    init = cfg["teacher"].get("init", "scratch")
    if init not in INITS:
        raise UserError(f"params.yaml: {cfg['profile']}.teacher.init is {init!r}; use one of {', '.join(INITS)}")
    if cfg["profile"] == "paper" and init != "prior":
        raise UserError("params.yaml: paper.teacher.init is scratch, but the paper profile has no from-scratch "
                        "U-Net (model.unet is null): its teacher fine-tunes SD 2.1-base; set it to prior")
    pipe = new_pipeline(cfg, scale, init)
    loss = with_task(base_loss, cfg, pipe, scale=scale)
    # `init` enters the identity through fresh_init (the prior's digest when init is prior), not the section,
    # so a trainer state saved before teacher.init existed still resumes under init scratch.
    section = {k: v for k, v in cfg["teacher"].items() if k != "init"}
    return train_unet(cfg, pipe, loss, stream=f"teacher_x{scale}", steps=cfg["teacher"]["steps"],
                      out=run_dir(cfg, NAME), desc=f"teacher x{scale}",
                      identity=training_identity(cfg, {"teacher": section}, init=fresh_init(cfg, init)))


def main() -> int:
    return stage_main(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
