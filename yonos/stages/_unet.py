"""Shared by the U-Net stages (train_teacher, distill_student, train_direct, finetune_decoder)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from diffusers import AutoencoderKL
from safetensors.torch import load_file

from yonos.checkpoint import digest
from yonos.config import run_dir
from yonos.errors import UserError
from yonos.io import write_json
from yonos.models import LatentCodec, vae_factor, widen_conv_in
from yonos.pipeline import YonosPipeline
from yonos.sampler import make_scheduler
from yonos.stages._common import load_folder
from yonos.train import T_SAMPLING, CropStream, LatentBank, LatentSR, fit, fit_timing, make_accelerator


def load_vae(cfg: dict) -> AutoencoderKL:
    return AutoencoderKL.from_pretrained(run_dir(cfg, "train_autoencoder", "vae"), use_safetensors=True)


INITS = ("scratch", "prior")


def new_pipeline(cfg: dict, scale: int, init: str = "scratch") -> YonosPipeline:
    """The starting point of a first stage. scratch: a fresh seeded U-Net of `model.unet`; prior: the prior of
    train_prior with conv_in widened to [z_t, z_l], the new weights zero (embedded/smoke). paper: SD 2.1-base's
    U-Net, widened, for either init: the paper profile's prior is SD itself and it has no from-scratch shape."""
    if init not in INITS:
        raise UserError(f"params.yaml: {cfg['profile']} U-Net init {init!r}; use one of {', '.join(INITS)}")
    if cfg["profile"] == "paper":
        from yonos.weights import load_sd_unet

        unet, null_emb = load_sd_unet(cfg)
        return YonosPipeline(unet, load_vae(cfg), make_scheduler(cfg["model"]), null_emb, scale,
                             cfg["model"].get("start", "noise"))
    if init == "scratch":
        return YonosPipeline.from_params(cfg, scale, seed=cfg["seed"], vae=load_vae(cfg))
    from yonos.stages.train_prior import load_prior

    vae = load_vae(cfg)
    unet, null_emb = load_prior(cfg)
    if unet.config.in_channels != vae.config.latent_channels:
        raise UserError(f"{run_dir(cfg, 'train_prior')}: the prior models {unet.config.in_channels}-channel "
                        f"latents, the autoencoder has {vae.config.latent_channels}; re-run train_prior")
    # The prior predicts eps (SD 2.1-base); the teacher simply fine-tunes it with its own parameterisation and
    # weighting (model.prediction_type, model.weighting), as the paper profile fine-tunes SD's eps U-Net.
    unet = widen_conv_in(unet, vae.config.latent_channels)
    return YonosPipeline(unet, vae, make_scheduler(cfg["model"]), null_emb, scale, cfg["model"].get("start", "noise"))


def from_checkpoint(path: str | Path, scale: int | None = None) -> YonosPipeline:
    pipe = YonosPipeline.from_pretrained(path)
    if scale is not None:
        pipe.scale = scale  # a student starts from its teacher's weights at a new magnification
    return pipe


def task_for(cfg: dict, pipe: YonosPipeline) -> LatentSR:
    for p in pipe.vae.parameters():
        p.requires_grad_(False)
    return LatentSR(codec=LatentCodec(pipe.vae), alphas_cumprod=pipe.scheduler.alphas_cumprod,
                    null_emb=pipe.null_emb, prediction_type=cfg["model"]["prediction_type"],
                    weighting=cfg["model"]["weighting"], degradation=cfg["degradation"], start=pipe.start)


def task_scales(cfg: dict) -> list[int]:
    """Every magnification a U-Net stage trains at: the distillation chain and the direct ablation."""
    return sorted(set(cfg["distill"]["scales"]) | {cfg["direct"]["scale"]})


def example_stream(cfg: dict, n: int, *, stream: str, latent_shape=None, with_noise: bool = True, **noise):
    """Training examples: from the latent bank if encode_latents wrote one, else crops encoded on the fly.
    `noise`: how t and eps are drawn (yonos.train.draw_noise), from noise_options of the stage's section."""
    bank_file = run_dir(cfg, "encode_latents", "bank.safetensors")
    if bank_file.is_file():
        return LatentBank(load_file(str(bank_file)), n, seed=cfg["seed"], stream=stream,
                          num_timesteps=cfg["model"]["num_train_timesteps"], with_noise=with_noise, **noise)
    images = load_folder(run_dir(cfg, "prepare_data", "train"))
    return CropStream(images, cfg["train"]["hr_crop"], n, seed=cfg["seed"], stream=stream,
                      latent_shape=latent_shape if with_noise else None,
                      num_timesteps=cfg["model"]["num_train_timesteps"], **noise)


def noise_options(section: dict) -> dict:
    """The study's mechanism checks of Claim 1, off unless a stage's section sets them (absent from params.yaml,
    so the main run's trainer identity is unchanged): `t_sampling` (uniform | high) for distill and direct,
    `teacher_noise` (same | independent) for distill."""
    teacher_noise = section.get("teacher_noise", "same")
    if teacher_noise not in ("same", "independent"):
        raise UserError(f"params.yaml: distill.teacher_noise must be same or independent, got {teacher_noise!r}")
    t_sampling = section.get("t_sampling", "uniform")
    if t_sampling not in T_SAMPLING:
        raise UserError(f"params.yaml: t_sampling must be one of {', '.join(T_SAMPLING)}, got {t_sampling!r}")
    return {"t_sampling": t_sampling, "teacher_noise": teacher_noise == "independent"}


def target_options(section: dict, num_timesteps: int) -> dict:
    """Claim 1's multi-step target check (study-only, absent from params.yaml): distill `target_steps` K > 1
    makes the target of every example with t >= `target_from_t` the teacher's own K-step DDIM sample."""
    steps, from_t = section.get("target_steps", 1), section.get("target_from_t", 0)
    if not (isinstance(steps, int) and steps >= 1):
        raise UserError(f"params.yaml: distill.target_steps must be an integer >= 1, got {steps!r}")
    if not (isinstance(from_t, int) and 0 <= from_t < num_timesteps):
        raise UserError(f"params.yaml: distill.target_from_t must be an integer in [0, {num_timesteps}), "
                        f"got {from_t!r}")
    return {"target_steps": steps, "target_from_t": from_t}


def training_identity(cfg: dict, sections: dict, *, init) -> dict:
    """What changes a U-Net stage's training, stored with its trainer state (yonos/checkpoint.py): the stage's
    `sections`, the shared model/train/data/degradation config and seed, the digests of the frozen VAE, the
    latent bank and the training images, and `init` (the digest of the starting checkpoint, or how a fresh
    start is made). `train.checkpoint_every` is left out: it changes when the state is saved, not the result."""
    bank, images = run_dir(cfg, "encode_latents", "bank.safetensors"), run_dir(cfg, "prepare_data", "train")
    return {
        **sections, "init": init, "seed": cfg["seed"], "mixed_precision": cfg.get("mixed_precision", "no"),
        "model": cfg["model"], "train": {k: v for k, v in cfg["train"].items() if k != "checkpoint_every"},
        "data": cfg["data"], "degradation": cfg["degradation"],
        "vae": digest(run_dir(cfg, "train_autoencoder", "vae")),
        "latent_bank": digest(bank) if bank.is_file() else None,
        "train_images": digest(images) if images.is_dir() else None,  # paper: prepare_data's index of the folder
    }


def fresh_init(cfg: dict, init: str = "scratch"):
    """The identity of new_pipeline's start: SD's pinned weights (paper), the prior's weights (init prior:
    a changed prior refuses a resume), or a seeded new U-Net."""
    if cfg["profile"] == "paper":
        return {"sd": cfg.get("sd")}
    if init == "prior":
        from yonos.stages.train_prior import prior_digest

        return {"prior": prior_digest(cfg)}
    return "new U-Net from model.unet and seed"


def train_unet(cfg: dict, pipe: YonosPipeline, loss, *, stream: str, steps: int, out: Path, desc: str,
               identity: dict, noise: dict | None = None) -> dict:
    """Train pipe.unet with `loss(unet, batch)` and save the pipeline to out/checkpoint; `noise`: how the
    examples draw t and eps (noise_options).

    The trainer state in out/state is resumed when `identity` matches, refused when not; `cfg["fresh"]`
    (the stages' --fresh) discards it first."""
    tcfg = cfg["train"]
    ckpt = out / "checkpoint"
    pipe.unet.train().requires_grad_(True)
    side = tcfg["hr_crop"] // vae_factor(pipe.vae)
    latent_shape = (pipe.vae.config.latent_channels, side, side)
    accelerator = make_accelerator(cfg, tcfg["grad_accum"])
    device = accelerator.device
    pipe.vae.to(device)
    pipe.null_emb = pipe.null_emb.to(device)

    def save(unet, step):
        pipe.unet = unet
        YonosPipeline(unet, pipe.vae, pipe.scheduler, pipe.null_emb, pipe.scale, pipe.start).save_pretrained(
            ckpt, trained_steps=step, stage=out.name)

    return fit_stage(cfg, pipe.unet, loss,
                     lambda n: example_stream(cfg, n, stream=stream, latent_shape=latent_shape, **(noise or {})),
                     steps=steps, batch_size=tcfg["batch_size"], out=out, identity=identity, on_done=save, desc=desc,
                     accelerator=accelerator)


def fit_stage(cfg: dict, model, loss, examples, *, steps: int, batch_size: int, out: Path, identity: dict, on_done,
              desc: str, accelerator=None) -> dict:
    """`fit` as every SR training stage runs it (YONOS's U-Nets and the baselines): params `train`'s optimiser
    settings, the trainer state in out/state (resumed, refused on a changed identity, discarded by --fresh),
    out/train_log.json with every step's loss; returns the stage's timing."""
    tcfg = cfg["train"]
    result = fit(
        model, loss, examples, accelerator=accelerator or make_accelerator(cfg, tcfg["grad_accum"]), steps=steps,
        batch_size=batch_size, lr=tcfg["lr"], warmup_steps=tcfg["warmup_steps"], weight_decay=tcfg["weight_decay"],
        grad_clip=tcfg["grad_clip"], state_dir=out / "state", identity=identity, fresh=bool(cfg.get("fresh")),
        checkpoint_every=tcfg["checkpoint_every"], ema_decay=tcfg["ema_decay"], on_done=on_done, desc=desc,
    )
    write_json(out / "train_log.json", {"steps": result.steps, "seconds": result.seconds, "batch_size": batch_size,
                                        "final_loss": result.final_loss, "loss_every_step": result.losses})
    return {"timing": {**fit_timing(result), "final_loss": result.final_loss}}


def with_task(loss_fn, cfg: dict, pipe: YonosPipeline, **kwargs):
    return partial(loss_fn, task=task_for(cfg, pipe), **kwargs)
