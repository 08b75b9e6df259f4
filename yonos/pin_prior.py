"""The embedded profile's pinned prior (the miniature's Stable Diffusion): trained once, committed, verified.

The paper downloads SD 2.1-base and fine-tunes its U-Net; it never trains one. The embedded profile
mirrors that: its prior (an unconditional latent diffusion U-Net on the pinned autoencoder's latents,
yonos/stages/train_prior.py) is trained once with a generous budget by

    python -m yonos.pin_prior [--profile embedded]      # resumes after a kill; --fresh to restart

and the small result is committed under `prior.pinned` (pinned/embedded_prior/: unet/, the null-text
embedding, PIN.json). PIN.json holds the sha256 of each file, the recipe (params `prior` without `pinned`,
the U-Net shape `model.unet`, SD's schedule from `model`), the seed, the autoencoder it was trained under
(weights' sha256 and scaling factor), a digest of the latent bank, the command and the measured cost. The
train_prior stage loads the folder only when the files, the recipe AND the autoencoder agree with this run
(`verify_prior`); otherwise it names the command that retrains it.
"""

from __future__ import annotations

import time
from pathlib import Path

from safetensors import safe_open

from yonos.checkpoint import digest, display_path
from yonos.config import run_dir
from yonos.errors import UserError
from yonos.pin_autoencoder import check_pin, pin_main, pinned_target, run_record, write_pin
from yonos.pin_autoencoder import recipe as section_recipe
from yonos.pipeline import NULL_NAME
from yonos.stages.train_prior import (
    SCHEDULE,
    UNET_WEIGHTS,
    autoencoder_identity,
    bank_file,
    save_prior,
    train_recipe,
)

COMMAND = "python -m yonos.pin_prior --profile {profile}"
FILES = {"sha256": UNET_WEIGHTS, "unet_config_sha256": "unet/config.json", "null_text_embedding_sha256": NULL_NAME}
OBJECTIVE = "MSE to prior.prediction_type's target (eps: SD 2.1-base), t ~ U{0..T-1}, unweighted"


def recipe(cfg: dict) -> dict:
    """What changes the prior's weights: params `prior` (less `pinned`), the U-Net shape and SD's schedule
    (dotted keys name params outside `prior`)."""
    model = cfg["model"]
    return {**section_recipe(cfg["prior"]), "model.unet": model["unet"],
            "model.null_text_tokens": model.get("null_text_tokens", 1), **{f"model.{k}": model[k] for k in SCHEDULE}}


def verify_prior(folder: str | Path, cfg: dict) -> dict:
    """PIN.json of a pinned prior after checking its files' sha256, its recipe and its autoencoder against
    this run; UserError (one line, naming the fix) otherwise."""
    profile = cfg["profile"]
    pin = check_pin(folder, recipe(cfg), files=FILES, what="prior", section="prior", profile=profile,
                    command=COMMAND)
    have = autoencoder_identity(cfg)
    if pin.get("autoencoder") != have:
        vae = display_path(run_dir(cfg, "train_autoencoder", "vae"))
        raise UserError(f"{vae}: not the autoencoder the pinned prior {folder} was trained under "
                        f"({have['sha256'][:19]}… vs {str((pin.get('autoencoder') or {}).get('sha256'))[:19]}…); "
                        f"restore the pinned autoencoder (dvc repro train_autoencoder) or retrain the prior: "
                        f"{COMMAND.format(profile=profile)}")
    return pin


def train_pin(cfg: dict, *, fresh: bool = False) -> Path:
    """Train the recipe (resumable state in runs/<profile>/pin_prior/state) on the latent bank's z_h and write
    the pinned folder atomically: the old pin is replaced only by a complete new one."""
    profile = cfg["profile"]
    target = pinned_target(cfg["prior"], "prior", profile)
    bank_path = bank_file(cfg)
    autoencoder, bank = autoencoder_identity(cfg), digest(bank_path)
    with safe_open(str(bank_path), "pt") as f:
        bank_size = int(f.get_slice("z_h").get_shape()[0])
    identity = {"recipe": recipe(cfg), "seed": cfg["seed"], "autoencoder": autoencoder, "latent_bank": bank}
    t0 = time.perf_counter()
    unet, null_emb, result = train_recipe(cfg, state_dir=run_dir(cfg, "pin_prior") / "state", identity=identity,
                                          fresh=fresh, desc="pinned prior")
    return write_pin(
        target, lambda staging: save_prior(staging, unet, null_emb), files=FILES,
        recipe=recipe(cfg), seed=cfg["seed"], autoencoder=autoencoder, latent_bank=bank,
        latent_bank_size=bank_size, objective=OBJECTIVE,
        command=COMMAND.format(profile=profile), final_loss=result.final_loss, **run_record(result, t0))


def main(argv: list[str] | None = None) -> int:
    return pin_main(argv, name="pin_prior", doc=__doc__, train=train_pin)


if __name__ == "__main__":
    raise SystemExit(main())
