"""train_autoencoder: the autoencoder E/D every latent stage uses.

embedded: the pinned autoencoder (`autoencoder.pinned`, yonos/pin_autoencoder.py), a small diffusers
AutoencoderKL (f = 4, 16 latent channels) trained once and committed; it is loaded after its sha256 and
recipe are checked against params.yaml, as the paper downloads SD's VAE instead of training one.
smoke: the same class trained here in seconds with L1 on posterior-mode reconstructions.
Its reconstruction PSNR on the evaluation crops is the ceiling of
every latent method, so it is measured and reported. The latent scaling factor is set to
1 / std(latents) over training crops, the rule that gave SD its 0.18215.
paper: SD 2.1-base's VAE, imported from the local weights folder (see yonos/weights.py).
Writes runs/<profile>/train_autoencoder/{vae/, metrics.json}.
"""

from __future__ import annotations

import torch

from yonos.config import run_dir
from yonos.io import write_json
from yonos.metrics import Scorer
from yonos.models import LatentCodec, build_autoencoder
from yonos.stages._common import device_of, load_folder, stage_main
from yonos.train import AutoencoderObjective, CropStream, autoencoder_loss, fit, make_accelerator

NAME = "train_autoencoder"


@torch.no_grad()
def latent_std(vae, images, crop: int, n: int, seed: int) -> float:
    stream = CropStream(images, crop, n, seed=seed, stream="latent-std")
    x = torch.stack([stream[i]["hr"] for i in range(n)]).to(vae.device)
    return float(vae.encode(x * 2 - 1).latent_dist.mode().std())  # unscaled latents


@torch.no_grad()
def reconstruction_psnr(vae, hr_images: list[torch.Tensor], device) -> float:
    """Mean PSNR-Y of D(E(x)) against x on the evaluation crops: the latent methods' ceiling."""
    codec, scorer = LatentCodec(vae.eval()), Scorer(["psnr"], device=device)
    values = []
    for hr in hr_images:
        rec = codec.decode(codec.encode(hr[None].to(device))).clamp(0, 1)
        values.append(float(scorer.score(rec, hr[None].to(device))["psnr"][0]))
    return sum(values) / len(values)


def run(cfg: dict) -> dict:
    acfg, out = cfg["autoencoder"], run_dir(cfg, NAME)
    if cfg["profile"] == "paper":
        from yonos.weights import import_sd_vae

        return import_sd_vae(cfg, out)
    device = device_of(cfg)
    if acfg.get("pinned"):
        from yonos.pin_autoencoder import load_pinned

        vae, pin = load_pinned(acfg["pinned"], acfg, cfg["profile"])
        vae = vae.to(device).eval()
        trained = {"pinned": acfg["pinned"], "sha256": pin["sha256"], "steps": pin["steps"],
                   "final_loss": pin["final_l1"]}
    else:
        train = load_folder(run_dir(cfg, "prepare_data", "train"))
        torch.manual_seed(cfg["seed"])
        vae = build_autoencoder(acfg)
        accelerator = make_accelerator(cfg)
        result = fit(
            AutoencoderObjective(vae, acfg["kl_weight"]),
            autoencoder_loss,
            lambda n: CropStream(train, acfg["crop"], n, seed=cfg["seed"], stream="autoencoder"),
            accelerator=accelerator, steps=acfg["steps"], batch_size=acfg["batch_size"], lr=acfg["lr"],
            warmup_steps=acfg["warmup_steps"], desc="autoencoder",
        )
        vae = accelerator.unwrap_model(vae).to(device).eval()
        sf = acfg["scaling_factor"] or 1.0 / latent_std(vae, train, 64, 256, cfg["seed"])
        vae.register_to_config(scaling_factor=float(sf))
        trained = {"final_loss": result.final_loss, "steps": result.steps,
                   "train_seconds": round(result.seconds, 2)}
    eval_hr = load_folder(run_dir(cfg, "prepare_data", "eval", "hr"))
    psnr = reconstruction_psnr(vae, eval_hr, device)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    sf = float(vae.config.scaling_factor)
    write_json(out / "metrics.json", {"reconstruction_psnr_y": psnr, "scaling_factor": sf, **trained})
    print(f"[{NAME}] reconstruction PSNR-Y on eval crops: {psnr:.2f} dB, scaling factor {sf:.4f}")
    return {"timing": {k: v for k, v in trained.items() if k in ("steps", "train_seconds")}}


def main() -> int:
    return stage_main(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
