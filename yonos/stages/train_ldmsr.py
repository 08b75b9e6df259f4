"""train_ldmsr: the LDM-SR baseline (yonos/baselines/ldmsr.py) from scratch, in the profile's autoencoder's
latent space, under the equal-budget rule (yonos/baselines/budget.py): as many optimiser steps as YONOS's
teacher + distillation, at train.batch_size, on the direct x4 ablation's example stream (the same crops,
t and eps, t drawn in LDM-SR's own schedule), the LR made from each crop's HR by the profile's degradation.
Writes runs/<profile>/train_ldmsr/{checkpoint,state,train_log.json}."""

from __future__ import annotations

from functools import partial

from safetensors.torch import load_file

from yonos.baselines import budget
from yonos.baselines.ldmsr import LDMSRPipeline, LDMSRTask, ldmsr_loss
from yonos.config import run_dir
from yonos.models import LatentCodec, vae_factor
from yonos.stages._common import load_folder, stage_main
from yonos.stages._unet import fit_stage, load_vae, training_identity
from yonos.train import CropStream, LatentBank, make_accelerator

NAME = "train_ldmsr"
TRAIN_KEYS = ("unet", "num_train_timesteps", "beta_start", "beta_end")  # of params' `ldmsr`: what training reads


def examples(cfg: dict, n: int, *, stream: str, latent_shape: tuple[int, ...]):
    """The latent bank (encode_latents) when it exists, else HR crops encoded in the loss; t in [0, T_ldmsr)."""
    num_timesteps = int(cfg["ldmsr"]["num_train_timesteps"])
    bank = run_dir(cfg, "encode_latents", "bank.safetensors")
    if bank.is_file():
        return LatentBank(load_file(str(bank)), n, seed=cfg["seed"], stream=stream, num_timesteps=num_timesteps)
    return CropStream(load_folder(run_dir(cfg, "prepare_data", "train")), cfg["train"]["hr_crop"], n,
                      seed=cfg["seed"], stream=stream, latent_shape=latent_shape, num_timesteps=num_timesteps)


def run(cfg: dict) -> dict:
    lcfg, tcfg = cfg["ldmsr"], cfg["train"]
    scale = cfg["direct"]["scale"]
    steps, batch = budget.sr_steps(cfg), budget.batch_size(cfg)
    out = run_dir(cfg, NAME)
    pipe = LDMSRPipeline.from_params(cfg, scale, seed=cfg["seed"], vae=load_vae(cfg))
    pipe.vae.requires_grad_(False)
    pipe.unet.train().requires_grad_(True)
    accelerator = make_accelerator(cfg, tcfg["grad_accum"])
    pipe.vae.to(accelerator.device)
    task = LDMSRTask(codec=LatentCodec(pipe.vae), alphas_cumprod=pipe.scheduler.alphas_cumprod, scale=scale,
                     degradation=cfg["degradation"])
    side = tcfg["hr_crop"] // vae_factor(pipe.vae)
    latent_shape = (pipe.latent_channels, side, side)
    identity = training_identity(cfg, {"ldmsr": {k: lcfg[k] for k in TRAIN_KEYS}, "scale": scale,
                                       "budget": budget.describe(cfg)}, init="new UNet2DModel from ldmsr.unet and seed")
    identity.pop("model")  # YONOS's U-Net and schedule; LDM-SR has its own (in "ldmsr")

    def save(unet, step):
        pipe.unet = unet
        pipe.save_pretrained(out / "checkpoint", trained_steps=step, stage=NAME, budget=budget.describe(cfg))

    return fit_stage(cfg, pipe.unet, partial(ldmsr_loss, task=task),
                     lambda n: examples(cfg, n, stream=f"x{scale}", latent_shape=latent_shape),
                     steps=steps, batch_size=batch, out=out, identity=identity, on_done=save, desc=f"ldmsr x{scale}",
                     accelerator=accelerator)


def main() -> int:
    return stage_main(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
