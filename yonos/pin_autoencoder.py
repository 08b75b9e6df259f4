"""The embedded profile's pinned autoencoder: trained once, committed, verified on every use.

The paper downloads SD's VAE; it never trains one. The embedded profile mirrors that: its
autoencoder (the stand-in for SD's VAE) is trained once with a generous budget by

    python -m yonos.pin_autoencoder [--profile embedded]      # resumes after a kill; --fresh to restart

and the small result is committed under `autoencoder.pinned` (pinned/embedded_autoencoder/:
config.json, diffusion_pytorch_model.safetensors, PIN.json). PIN.json holds the weights' sha256, the
training recipe (params `autoencoder` without `pinned`), the seed, a digest of the training images,
the command and the measured cost. The train_autoencoder stage loads that folder only when all of it
agrees with params.yaml (`verify_pin`), so `dvc repro` starts from the same artefact on every machine,
and a changed recipe is refused with the command that retrains it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from yonos.checkpoint import digest
from yonos.config import load_params, run_dir
from yonos.errors import UserError
from yonos.io import atomic_folder, write_json

PIN = "PIN.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"
COMMAND = "python -m yonos.pin_autoencoder --profile {profile}"
ARCHITECTURE = ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups",
                "mid_block_add_attention")


def recipe(acfg: dict) -> dict:
    """Everything in params `autoencoder` that changes the trained weights (not where they are kept)."""
    return {k: v for k, v in acfg.items() if k != "pinned"}


def verify_pin(folder: str | Path, acfg: dict, profile: str) -> dict:
    """PIN.json of `folder` after checking the weights' sha256 and that its recipe is params.yaml's;
    UserError (one line, naming the fix) otherwise."""
    folder, retrain = Path(folder), COMMAND.format(profile=profile)
    if not (folder / PIN).is_file() or not (folder / WEIGHTS).is_file():
        raise UserError(f"{folder}: pinned autoencoder missing; restore it (git checkout {folder}) "
                        f"or train it: {retrain}")
    pin = json.loads((folder / PIN).read_text())
    if digest(folder / WEIGHTS) != pin["sha256"]:
        raise UserError(f"{folder / WEIGHTS}: sha256 differs from {PIN}; restore it (git checkout {folder}) "
                        f"or retrain: {retrain}")
    changed = sorted(k for k in set(pin["recipe"]) | set(recipe(acfg)) if pin["recipe"].get(k) != recipe(acfg).get(k))
    if changed:
        raise UserError(f"params.yaml: {profile}.autoencoder.{changed[0]} differs from the pinned autoencoder's recipe "
                        f"({len(changed)} keys); revert it, or retrain the pin: {retrain}")
    config = json.loads((folder / "config.json").read_text())
    for key in (k for k in ARCHITECTURE if k in acfg):
        have = list(config.get(key) or []) if isinstance(acfg[key], list) else config.get(key)
        if have != acfg[key]:
            raise UserError(f"{folder / 'config.json'}: {key} is not params' {acfg[key]}; "
                            f"restore the folder or retrain: {retrain}")
    return pin


def load_pinned(folder: str | Path, acfg: dict, profile: str):
    from diffusers import AutoencoderKL

    pin = verify_pin(folder, acfg, profile)
    return AutoencoderKL.from_pretrained(folder, use_safetensors=True), pin


def train_pin(cfg: dict, *, fresh: bool = False) -> Path:
    """Train the recipe in params `autoencoder` (resumable state in runs/<profile>/pin_autoencoder/state)
    and write the pinned folder atomically: the old pin is replaced only by a complete new one."""
    from yonos.models import build_autoencoder
    from yonos.stages._common import device_of
    from yonos.stages.prepare_data import training_images
    from yonos.stages.train_autoencoder import latent_std
    from yonos.train import AutoencoderObjective, CropStream, autoencoder_loss, fit, make_accelerator

    acfg, profile = cfg["autoencoder"], cfg["profile"]
    if not acfg.get("pinned"):
        raise UserError(f"params.yaml: {profile}.autoencoder.pinned is not set; name the folder the pin goes to")
    target = Path(acfg["pinned"])
    images, data_digest = training_images(cfg)
    identity = {"recipe": recipe(acfg), "seed": cfg["seed"], "train_images": data_digest}
    torch.manual_seed(cfg["seed"])
    vae = build_autoencoder(acfg)
    accelerator = make_accelerator(cfg)
    state = run_dir(cfg, "pin_autoencoder") / "state"
    t0 = time.perf_counter()
    result = fit(
        AutoencoderObjective(vae, acfg["kl_weight"]), autoencoder_loss,
        lambda n: CropStream(images, acfg["crop"], n, seed=cfg["seed"], stream="autoencoder"),
        accelerator=accelerator, steps=acfg["steps"], batch_size=acfg["batch_size"], lr=acfg["lr"],
        warmup_steps=acfg["warmup_steps"], state_dir=state, identity=identity, fresh=fresh,
        checkpoint_every=max(1, acfg["steps"] // 20), desc="pinned autoencoder",
    )
    vae = accelerator.unwrap_model(vae).to(device_of(cfg)).eval()
    sf = acfg["scaling_factor"] or 1.0 / latent_std(vae, images, 64, 256, cfg["seed"])
    vae.register_to_config(scaling_factor=float(sf))
    with atomic_folder(target) as staging:  # the old pin is replaced only by a complete new one
        vae.save_pretrained(staging, safe_serialization=True)
        write_json(staging / PIN, {
            "sha256": digest(staging / WEIGHTS), "recipe": recipe(acfg), "seed": cfg["seed"],
            "train_images": data_digest,
            "data": {k: cfg["data"][k] for k in ("source", "train_set") if k in cfg["data"]},
            "command": COMMAND.format(profile=profile), "steps": result.steps, "final_l1": result.final_loss,
            "train_seconds_last_piece": round(result.seconds, 1),
            "wall_seconds_last_piece": round(time.perf_counter() - t0, 1),
            "scaling_factor": float(sf), "torch": torch.__version__,
        })
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yonos.pin_autoencoder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=None, help="params profile (default: params.yaml's `profile`)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--fresh", action="store_true", help="discard a saved trainer state and start from scratch")
    args = parser.parse_args(argv)
    try:
        cfg = load_params(args.params, args.profile)
        print(f"pinned autoencoder written to {train_pin(cfg, fresh=args.fresh)}", file=sys.stderr)
    except UserError as exc:
        print(f"pin_autoencoder: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
