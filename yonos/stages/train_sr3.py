"""train_sr3: the SR3 baseline trained from scratch in pixel space under the equal-budget rule.

Optimiser steps and batch size come from yonos.baselines.budget (YONOS's teacher + distillation steps at
train.batch_size); the other optimiser settings from `train`. Examples: the HR crops of the latent bank
written by encode_latents (or crops of the training images when there is none), in the same order as
YONOS's x4 stream (`direct.scale`); the LR is made on the fly with the profile's degradation and the
crop's seed, as the bank's z_l were. t, gamma and eps come from each example's own generator, so the
run resumes exactly. Writes runs/<profile>/train_sr3/{checkpoint,state,train_log.json}.
"""

from __future__ import annotations

from functools import partial

from yonos.baselines import budget
from yonos.baselines.sr3 import NoiseLevels, SR3Pipeline, gammas, sr3_loss
from yonos.checkpoint import digest
from yonos.config import run_dir
from yonos.stages._common import stage_main
from yonos.stages._unet import example_stream, fit_stage

NAME = "train_sr3"


def identity(cfg: dict, *, scale: int, steps: int, batch_size: int) -> dict:
    """What changes SR3's training (stored with its trainer state): the sr3 section, the budget, the shared
    train/data/degradation config and seed, and the digest of the examples' source. Unlike the latent stages,
    no VAE: SR3 never sees a latent (the bank's digest still changes when its crops do)."""
    bank, images = run_dir(cfg, "encode_latents", "bank.safetensors"), run_dir(cfg, "prepare_data", "train")
    return {
        "sr3": cfg["sr3"], "scale": scale, "steps": steps, "batch_size": batch_size,
        "init": "new UNet2DModel from sr3.unet and seed", "seed": cfg["seed"],
        "mixed_precision": cfg.get("mixed_precision", "no"),
        "train": {k: v for k, v in cfg["train"].items() if k != "checkpoint_every"},
        "data": cfg["data"], "degradation": cfg["degradation"],
        "latent_bank": digest(bank) if bank.is_file() else None,
        "train_images": None if bank.is_file() else digest(images),
    }


def run(cfg: dict) -> dict:
    out = run_dir(cfg, NAME)
    scale, steps, batch = cfg["direct"]["scale"], budget.sr_steps(cfg), budget.batch_size(cfg)
    pipe = SR3Pipeline.from_params(cfg, scale, seed=cfg["seed"])
    pipe.unet.train().requires_grad_(True)
    gamma = gammas(pipe.scheduler)
    stream = f"x{scale}"  # YONOS's x4 stream: the same crops in the same order

    def examples(n: int):
        base = example_stream(cfg, n, stream=stream, with_noise=False)
        return NoiseLevels(base, gamma, seed=cfg["seed"], stream=f"{stream}/sr3-noise")

    def save(unet, step):
        pipe.unet = unet
        pipe.save_pretrained(out / "checkpoint", trained_steps=step, stage=NAME, budget=budget.describe(cfg))

    return fit_stage(cfg, pipe.unet, partial(sr3_loss, scale=scale, degradation=cfg["degradation"],
                                             multiple=pipe.multiple),
                     examples, steps=steps, batch_size=batch, out=out,
                     identity=identity(cfg, scale=scale, steps=steps, batch_size=batch), on_done=save,
                     desc=f"sr3 x{scale}")


def main() -> int:
    return stage_main(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
