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

The pieces every pin shares (checking a pinned folder, writing one atomically, the command line) are
below the constants; yonos/pin_prior.py, the miniature's Stable Diffusion, uses them too.
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


# --- shared by every pin (this autoencoder, the prior of yonos/pin_prior.py) ----------------------
def recipe(section: dict) -> dict:
    """Everything in a pinned params section that changes the trained weights (not where they are kept)."""
    return {k: v for k, v in section.items() if k != "pinned"}


def check_pin(folder: str | Path, want: dict, *, files: dict[str, str], what: str, section: str, profile: str,
              command: str) -> dict:
    """PIN.json of a pinned `folder` after checking that every file of `files` (PIN key -> relative path) has
    the sha256 PIN.json records and that its recipe is `want`; UserError (one line, naming the fix) otherwise.
    A recipe key with a dot ("model.unet") names a params key outside `section`."""
    folder, retrain = Path(folder), command.format(profile=profile)
    restore = f"restore it (git checkout {folder})"
    if not (folder / PIN).is_file() or not all((folder / rel).is_file() for rel in files.values()):
        raise UserError(f"{folder}: pinned {what} missing; {restore} or train it: {retrain}")
    pin = json.loads((folder / PIN).read_text())
    for key, rel in files.items():
        if digest(folder / rel) != pin.get(key):
            raise UserError(f"{folder / rel}: sha256 differs from {PIN}; {restore} or retrain: {retrain}")
    have = pin.get("recipe") or {}
    changed = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    if changed:
        key = changed[0] if "." in changed[0] else f"{section}.{changed[0]}"
        raise UserError(f"params.yaml: {profile}.{key} differs from the pinned {what}'s recipe "
                        f"({len(changed)} keys); revert it, or retrain the pin: {retrain}")
    return pin


def write_pin(target: str | Path, save, *, files: dict[str, str], **record) -> Path:
    """Write a pinned folder atomically (the old pin is replaced only by a complete new one): `save(staging)`
    writes the weights, then PIN.json gets the sha256 of each of `files` (PIN key -> relative path) and `record`."""
    with atomic_folder(target) as staging:
        save(staging)
        write_json(staging / PIN, {**{key: digest(staging / rel) for key, rel in files.items()}, **record})
    return Path(target)


def pinned_target(section: dict, name: str, profile: str) -> Path:
    if not section.get("pinned"):
        raise UserError(f"params.yaml: {profile}.{name}.pinned is not set; name the folder the pin goes to")
    return Path(section["pinned"])


def run_record(result, t0: float) -> dict:
    """The measured cost of the last (possibly resumed) training piece, for PIN.json."""
    return {"steps": result.steps, "train_seconds_last_piece": round(result.seconds, 1),
            "wall_seconds_last_piece": round(time.perf_counter() - t0, 1), "torch": torch.__version__}


def pin_main(argv: list[str] | None, *, name: str, doc: str, train) -> int:
    """`python -m yonos.<name> [--profile P] [--params FILE] [--fresh]`: run `train(cfg, fresh=)`."""
    parser = argparse.ArgumentParser(prog=f"python -m yonos.{name}", description=doc.split("\n\n")[0])
    parser.add_argument("--profile", default=None, help="params profile (default: params.yaml's `profile`)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--fresh", action="store_true", help="discard a saved trainer state and start from scratch")
    args = parser.parse_args(argv)
    try:
        cfg = load_params(args.params, args.profile)
        print(f"{name}: pin written to {train(cfg, fresh=args.fresh)}", file=sys.stderr)
    except UserError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    return 0


# --- the autoencoder --------------------------------------------------------------------------------
def verify_pin(folder: str | Path, acfg: dict, profile: str) -> dict:
    """PIN.json of `folder` after checking the weights' sha256 and that its recipe is params.yaml's;
    UserError (one line, naming the fix) otherwise."""
    folder, retrain = Path(folder), COMMAND.format(profile=profile)
    pin = check_pin(folder, recipe(acfg), files={"sha256": WEIGHTS}, what="autoencoder", section="autoencoder",
                    profile=profile, command=COMMAND)
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
    target = pinned_target(acfg, "autoencoder", profile)
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
    return write_pin(
        target, lambda staging: vae.save_pretrained(staging, safe_serialization=True), files={"sha256": WEIGHTS},
        recipe=recipe(acfg), seed=cfg["seed"], train_images=data_digest,
        data={k: cfg["data"][k] for k in ("source", "train_set") if k in cfg["data"]},
        command=COMMAND.format(profile=profile), final_l1=result.final_loss, scaling_factor=float(sf),
        **run_record(result, t0))


def main(argv: list[str] | None = None) -> int:
    return pin_main(argv, name="pin_autoencoder", doc=__doc__, train=train_pin)


if __name__ == "__main__":
    raise SystemExit(main())
