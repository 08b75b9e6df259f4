"""train_stablesr: StableSR's time-aware encoder + SFT layers trained on the frozen prior U-Net.

    z_t = sqrt(abar_t) z_h + sqrt(1 - abar_t) eps,  t ~ U{0 .. T-1} (the prior's DDPM schedule)
    L   = || eps - eps_theta(z_t, t; z_l) ||^2        eps_theta: prior + SFT(encoder(z_l, t))

The prior (stage train_prior) and the VAE stay frozen; only the encoder and the zero-initialised SFT
layers train, for the equal budget of yonos/baselines/budget.py (YONOS's U-Net steps at
train.batch_size) on the x`direct.scale` examples of the latent bank (the same stream as train_direct
and the distilled x4 student). Optimiser settings come from `train`; the inference knobs of
`stablesr` (steps, cfw_weight, colour_fix) are stored with the checkpoint.

The checkpoint has no CFW yet (the plain decoder); train_stablesr_cfw adds it. Writes
runs/<profile>/train_stablesr/{checkpoint, state, train_log.json}.
"""

from __future__ import annotations

from yonos.baselines import budget
from yonos.baselines.stablesr import StableSRPipeline, SteeringOnly, eps_loss
from yonos.config import run_dir
from yonos.errors import UserError
from yonos.models import LatentCodec, vae_factor
from yonos.stages._common import stage_main
from yonos.stages._unet import example_stream, fit_stage, load_vae, training_identity
from yonos.train import LatentSR, make_accelerator

NAME = "train_stablesr"
OPTIONS = ("steps", "cfw_weight", "colour_fix")  # the `stablesr` params stored as the checkpoint's options


def stablesr_options(cfg: dict) -> dict:
    scfg = cfg.get("stablesr")
    if not scfg or any(k not in scfg for k in OPTIONS):
        raise UserError(f"params.yaml: the `stablesr` section of profile {cfg['profile']!r} needs "
                        f"{', '.join(OPTIONS)}; add them (see the embedded profile)")
    return {k: scfg[k] for k in OPTIONS}


def check_prior(cfg: dict) -> None:
    """StableSR's denoiser predicts eps, as its frozen prior does (eps_loss checks each t against the schedule)."""
    kind = (cfg.get("prior") or {}).get("prediction_type", "epsilon")
    if kind != "epsilon":
        raise UserError(f"params.yaml: prior.prediction_type is {kind!r}; StableSR steers an eps-prediction "
                        "prior (SD 2.1-base), set it to epsilon and retrain the prior")


def run(cfg: dict) -> dict:
    from yonos.stages.train_prior import load_prior, prior_digest  # lazily: only StableSR and the teacher need it

    check_prior(cfg)
    scale, tcfg = int(cfg["direct"]["scale"]), cfg["train"]
    steps, batch = budget.sr_steps(cfg), budget.batch_size(cfg)
    prior, null_emb = load_prior(cfg)
    prior_sha, vae = prior_digest(cfg), load_vae(cfg)
    if prior.config.in_channels != vae.config.latent_channels:
        raise UserError(f"{run_dir(cfg, 'train_prior')}: the prior models {prior.config.in_channels}-channel "
                        f"latents, the autoencoder has {vae.config.latent_channels}; re-run train_prior")
    pipe = StableSRPipeline.from_params(cfg, scale, seed=cfg["seed"], vae=vae, unet=prior,
                                        options=stablesr_options(cfg))
    pipe.null_emb = null_emb  # the prior was trained with this null text

    accelerator = make_accelerator(cfg, tcfg["grad_accum"])
    pipe.to(accelerator.device)
    denoiser = pipe.denoiser
    pipe.vae.requires_grad_(False)
    denoiser.unet.eval().requires_grad_(False)
    denoiser.encoder.requires_grad_(True)
    denoiser.sft.requires_grad_(True)
    task = LatentSR(codec=LatentCodec(pipe.vae), alphas_cumprod=pipe.scheduler.alphas_cumprod, null_emb=pipe.null_emb,
                    prediction_type="epsilon", weighting="none", degradation=cfg["degradation"])
    side = tcfg["hr_crop"] // vae_factor(pipe.vae)
    latent_shape = (pipe.vae.config.latent_channels, side, side)

    out = run_dir(cfg, NAME)
    ckpt = out / "checkpoint"

    def save(model, step):
        # CFW: none yet (the plain decoder); train_stablesr_cfw trains it on this model's own latents
        StableSRPipeline(denoiser, pipe.vae, None, pipe.scheduler, pipe.null_emb, scale, pipe.options).save_pretrained(
            ckpt, stage=NAME, trained_steps=step, prior=prior_sha, budget=budget.describe(cfg))

    identity = training_identity(
        cfg, {"stablesr": {"scale": scale, "steps": steps, "batch_size": batch, "objective": "eps mse",
                           "trained": "time-aware encoder + SFT (zero-init)"}, "prior": prior_sha},
        init="new encoder and SFT from seed")
    return fit_stage(cfg, SteeringOnly(denoiser), lambda model, b: eps_loss(model, b, task=task, scale=scale),
                     lambda n: example_stream(cfg, n, stream=f"x{scale}", latent_shape=latent_shape),
                     steps=steps, batch_size=batch, out=out, identity=identity, on_done=save,
                     desc=f"stablesr x{scale}", accelerator=accelerator)


def main() -> int:
    return stage_main(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
