"""train_prior: the miniature's Stable Diffusion ("the prior"), an unconditional latent diffusion U-Net.

    z_t = alpha_t z_h + sigma_t eps,   t ~ U{0, ..., T-1}          SD's schedule (params `model`: beta_*, T)
    L   = E || eps_theta(z_t, t, c_null) - eps ||^2                SD 2.1-base's objective, unweighted

diffusers' UNet2DConditionModel of the profile's `model.unet` shape with the latent channels in and out
(yonos.baselines.stablesr.build_prior_unet), its cross-attention fed one fixed null-text embedding c_null,
trained on the HR latents z_h of the latent bank (encode_latents). `prior.prediction_type` picks the
target (eps as SD 2.1-base; v or z_h for experiments). It plays SD's U-Net: YONOS's teacher fine-tunes it
(`teacher.init: prior`), StableSR freezes it.

embedded: the pinned prior (`prior.pinned`, yonos/pin_prior.py), trained once and committed; it is copied
here only when its sha256, its recipe and the autoencoder it was trained under agree with this run.
smoke: the same recipe trained here in seconds. paper: SD 2.1-base's U-Net itself (yonos/weights.py).
Writes runs/<profile>/train_prior/{unet/, null_text_embedding.safetensors, PIN.json | train_log.json}.
"""

from __future__ import annotations

import json
import os
import shutil
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file

from yonos.checkpoint import digest, display_path
from yonos.config import run_dir
from yonos.errors import UserError
from yonos.io import atomic_folder, atomic_path, write_json
from yonos.pipeline import NULL_NAME
from yonos.schedule import add_noise, alpha_sigma, target_for
from yonos.stages._common import stage_main

NAME = "train_prior"
WEIGHTS = "diffusion_pytorch_model.safetensors"
UNET_WEIGHTS = f"unet/{WEIGHTS}"
RECORDS = ("PIN.json", "train_log.json")  # pinned or paper | trained here
SCHEDULE = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")  # SD's; never zero-terminal-SNR


def schedule(cfg: dict) -> dict:
    """The prior's forward process: SD's scaled-linear schedule from params `model`."""
    return {k: cfg["model"][k] for k in SCHEDULE}


def prior_loss(unet, batch: dict, *, alphas_cumprod: torch.Tensor, null_emb: torch.Tensor,
               prediction_type: str) -> torch.Tensor:
    """|| f_theta(z_t, t, c_null) - target ||^2 with target = eps (SD 2.1-base), v or z_h; t uniform, no weighting."""
    z_h, eps, t = batch["z_h"], batch["eps"], batch["t"]
    alpha, sigma = alpha_sigma(alphas_cumprod, t)
    z_t = add_noise(z_h, eps, alpha, sigma)
    cond = null_emb.to(device=z_t.device, dtype=z_t.dtype).expand(z_t.shape[0], -1, -1)
    pred = unet(z_t, t, encoder_hidden_states=cond).sample
    return F.mse_loss(pred.float(), target_for(prediction_type, z_h, eps, alpha, sigma).float())


def autoencoder_identity(cfg: dict) -> dict:
    """The autoencoder whose latents the prior models (train_autoencoder's output): its weights' sha256 (on
    embedded, the pinned autoencoder's) and latent scaling factor."""
    vae = run_dir(cfg, "train_autoencoder", "vae")
    if not (vae / "config.json").is_file():
        raise UserError(f"{vae}: no autoencoder; run train_autoencoder first "
                        f"(python -m yonos.stages.train_autoencoder --profile {cfg['profile']})")
    config = json.loads((vae / "config.json").read_text())
    return {"sha256": digest(vae / WEIGHTS), "scaling_factor": config.get("scaling_factor")}


def bank_file(cfg: dict) -> Path:
    """encode_latents' bank, whose z_h the prior is trained on."""
    path = run_dir(cfg, "encode_latents", "bank.safetensors")
    if not path.is_file():
        raise UserError(f"{path}: no latent bank to train the prior on; set train.latent_bank > 0 and run "
                        f"encode_latents (python -m yonos.stages.encode_latents --profile {cfg['profile']})")
    return path


def train_recipe(cfg: dict, *, state_dir: Path | None = None, identity: dict | None = None, fresh: bool = False,
                 desc: str = "prior"):
    """Train params `prior` on the bank's z_h with yonos.train.fit; (unet, null_emb, FitResult).
    With `state_dir` the trainer state is saved every steps/20 and resumed under the same `identity`."""
    from yonos.baselines.stablesr import build_prior_unet
    from yonos.models import null_text_embedding
    from yonos.train import LatentBank, fit, make_accelerator

    pcfg, mcfg = cfg["prior"], cfg["model"]
    bank = load_file(str(bank_file(cfg)))
    bank = {k: bank[k] for k in ("z_h", "hr", "seed")}  # what LatentBank reads besides the z_l it would carry
    torch.manual_seed(cfg["seed"])
    unet = build_prior_unet(mcfg["unet"], int(bank["z_h"].shape[1]))
    null_emb = null_text_embedding(unet, mcfg.get("null_text_tokens", 1))
    loss = partial(prior_loss, alphas_cumprod=DDPMScheduler(**schedule(cfg)).alphas_cumprod, null_emb=null_emb,
                   prediction_type=pcfg["prediction_type"])
    accelerator = make_accelerator(cfg)
    result = fit(
        unet, loss,
        lambda n: LatentBank(bank, n, seed=cfg["seed"], stream="prior", num_timesteps=mcfg["num_train_timesteps"]),
        accelerator=accelerator, steps=pcfg["steps"], batch_size=pcfg["batch_size"], lr=pcfg["lr"],
        warmup_steps=pcfg["warmup_steps"], state_dir=state_dir, identity=identity, fresh=fresh,
        checkpoint_every=max(1, pcfg["steps"] // 20) if state_dir is not None else 0, desc=desc,
    )
    return accelerator.unwrap_model(unet).cpu().eval(), null_emb, result


def save_prior(folder: Path, unet: UNet2DConditionModel, null_emb: torch.Tensor) -> None:
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    save_file({"null_text_embedding": null_emb.detach().cpu().contiguous()}, str(folder / NULL_NAME))


def load_prior(cfg: dict, *, dtype: torch.dtype = torch.float32) -> tuple[UNet2DConditionModel, torch.Tensor]:
    """The prior U-Net (latent channels in and out) and its null-text embedding, from runs/<profile>/train_prior/."""
    folder = run_dir(cfg, NAME)
    if not (folder / "unet" / "config.json").is_file() or not (folder / NULL_NAME).is_file():
        raise UserError(f"{folder}: no prior (unet/ or {NULL_NAME} missing); run train_prior first "
                        f"(python -m yonos.stages.train_prior --profile {cfg['profile']})")
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", use_safetensors=True, torch_dtype=dtype)
    return unet, load_file(str(folder / NULL_NAME))["null_text_embedding"].float()


def prior_digest(cfg: dict) -> str:
    """The sha256 of the prior's weights (on embedded, the pin's): the identity of a start from the prior."""
    return digest(run_dir(cfg, NAME, UNET_WEIGHTS))


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # the paper profile's 3.5 GB U-Net is linked, not copied, where the filesystem allows
    except OSError:
        shutil.copy2(src, dst)


def _publish(out: Path, write_unet, null_emb: torch.Tensor, record: str, content: dict) -> None:
    """Replace out/{unet/, null-text embedding, record}, each atomically and the record last; drop the other record."""
    with atomic_folder(out / "unet") as staging:
        write_unet(staging)
    with atomic_path(out / NULL_NAME) as tmp:
        save_file({"null_text_embedding": null_emb.detach().cpu().contiguous()}, str(tmp))
    for other in RECORDS:
        if other != record:
            (out / other).unlink(missing_ok=True)
    write_json(out / record, content)


def run(cfg: dict) -> dict:
    out, pcfg = run_dir(cfg, NAME), cfg["prior"]
    if cfg["profile"] == "paper":  # the prior IS SD 2.1-base's U-Net
        from yonos.weights import load_sd_unet, sd_dir

        sd = sd_dir(cfg) / "unet"
        _, null_emb = load_sd_unet(cfg)  # checks sd.sha256; its widened U-Net is not what we keep
        _publish(out, lambda d: [_link_or_copy(sd / f, d / f) for f in ("config.json", WEIGHTS)], null_emb,
                 "PIN.json", {"source": "stable-diffusion-2.1-base unet", "sd": cfg.get("sd"),
                              "sha256": digest(sd / WEIGHTS)})
        return {}
    if pcfg.get("pinned"):
        from yonos.pin_prior import verify_prior

        folder = Path(pcfg["pinned"])
        pin = verify_prior(folder, cfg)
        null_emb = load_file(str(folder / NULL_NAME))["null_text_embedding"]
        _publish(out, lambda d: shutil.copytree(folder / "unet", d, dirs_exist_ok=True), null_emb, "PIN.json",
                 {**pin, "pinned": pcfg["pinned"]})
        print(f"[{NAME}] pinned prior {display_path(folder)} ({pin['sha256'][:19]}…, {pin['steps']} steps)")
        return {"timing": {"steps": pin["steps"]}}
    unet, null_emb, result = train_recipe(cfg)
    _publish(out, lambda d: unet.save_pretrained(d, safe_serialization=True), null_emb, "train_log.json",
             {"steps": result.steps, "seconds": result.seconds, "final_loss": result.final_loss,
              "loss_every_step": result.losses})
    from yonos.train import fit_timing

    return {"timing": {**fit_timing(result), "final_loss": result.final_loss}}


def main() -> int:
    return stage_main(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
