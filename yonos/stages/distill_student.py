"""distill_student: scale distillation (PAPER.md Eq. 2) along the chain `distill.scales`.

Each link trains a student at twice its teacher's magnification on the frozen teacher's clean-latent
predictions; the student starts from the teacher's weights, and becomes the next link's teacher.
[2, 4] gives a x4 student; [2, 4, 8] continues to x8. Writes runs/<profile>/distill_student/x<s>/.
"""

from __future__ import annotations

from yonos.checkpoint import digest
from yonos.config import run_dir
from yonos.stages._common import device_of, stage_main
from yonos.stages._unet import from_checkpoint, noise_options, target_options, train_unet, training_identity, with_task
from yonos.train import distillation_loss

NAME = "distill_student"


def run(cfg: dict) -> dict:
    scales, dcfg = cfg["distill"]["scales"], cfg["distill"]
    if any(b != 2 * a for a, b in zip(scales, scales[1:])):
        raise ValueError(f"params.yaml: distill.scales {scales} must double at every link")
    teacher_dir = run_dir(cfg, "train_teacher", "checkpoint")
    timing = {}
    for t_scale, s_scale in zip(scales, scales[1:]):
        teacher = from_checkpoint(teacher_dir).unet.eval().requires_grad_(False)
        student = from_checkpoint(teacher_dir, scale=s_scale)  # init: the teacher's weights [choice]
        loss = with_task(distillation_loss, cfg, student, scale=s_scale, teacher=teacher, teacher_scale=t_scale,
                         **target_options(dcfg, cfg["model"]["num_train_timesteps"]))
        teacher.to(device_of(cfg))
        out = run_dir(cfg, NAME, f"x{s_scale}")
        # A link's identity leaves out the rest of the chain: extending [2, 4] to [2, 4, 8] reuses the x4 link.
        link = {"distill": {k: v for k, v in dcfg.items() if k != "scales"}, "link": f"x{t_scale}->x{s_scale}"}
        identity = training_identity(cfg, link, init=digest(teacher_dir))
        # Same example stream as train_direct at this scale: only the regression target differs.
        timing[f"x{s_scale}"] = train_unet(cfg, student, loss, stream=f"x{s_scale}", steps=dcfg["steps"],
                                           out=out, desc=f"distill x{t_scale}->x{s_scale}",
                                           identity=identity, noise=noise_options(dcfg))["timing"]
        teacher_dir = out / "checkpoint"
    return {"timing": timing}


def main() -> int:
    return stage_main(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
