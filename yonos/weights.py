"""Stable Diffusion 2.1-base weights for the paper profile: local folder first, hashed, offline-safe.

SD 2.x repositories left the Hugging Face Hub in late 2025, so the first-class source is a local
diffusers-format folder (the layout `save_pretrained` writes):

    <sd.local_dir>/unet/config.json, unet/diffusion_pytorch_model.safetensors
    <sd.local_dir>/vae/config.json,  vae/diffusion_pytorch_model.safetensors
    and either null_text_embedding.safetensors (key "null_text_embedding", 1 x 77 x 1024)
    or tokenizer/ + text_encoder/ to compute the empty-prompt embedding once.

`sd.sha256` pins each weight file; a mismatch is an error. A hub mirror is used only when
`sd.hub_id` and a pinned `sd.revision` are given and the hub is reachable. Run
`python -m yonos.weights hash DIR` to print the hashes of a copy you trust, for params.yaml.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from yonos.errors import UserError
from yonos.io import write_json

REQUIRED = ("unet/config.json", "unet/diffusion_pytorch_model.safetensors",
            "vae/config.json", "vae/diffusion_pytorch_model.safetensors")
ENV_DIR = "YONOS_SD_DIR"  # overrides sd.local_dir


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sd_dir(cfg: dict) -> Path:
    """The verified local SD folder, or a UserError saying exactly what to put where."""
    scfg = cfg["sd"]
    folder = Path(os.environ.get(ENV_DIR) or scfg["local_dir"]).expanduser()
    missing = [f for f in REQUIRED if not (folder / f).is_file()]
    if missing and scfg.get("hub_id") and scfg.get("revision") and not _offline():
        folder = _from_hub(scfg, folder)
        missing = [f for f in REQUIRED if not (folder / f).is_file()]
    if missing:
        raise UserError(
            f"{folder}: Stable Diffusion 2.1-base weights missing ({', '.join(missing)}); download the "
            f"diffusers-format SD 2.1-base folder (unet/, vae/, text_encoder/, tokenizer/) and put it there, "
            f"or set {ENV_DIR}=/path/to/it")
    for rel, want in (scfg.get("sha256") or {}).items():
        got = sha256(folder / rel)
        if got != want:
            raise UserError(f"{folder / rel}: sha256 {got[:12]}... is not the pinned {want[:12]}...; "
                            f"replace the file with the pinned release or update sd.sha256 in params.yaml")
    return folder


def _offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "YONOS_OFFLINE"))


def _from_hub(scfg: dict, folder: Path) -> Path:
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(scfg["hub_id"], revision=scfg["revision"], local_dir=folder,
                          allow_patterns=["unet/*", "vae/*", "text_encoder/*", "tokenizer/*", "scheduler/*"])
    except Exception as exc:  # unreachable hub, removed repo: fall through to the local-folder message
        print(f"weights: hub download of {scfg['hub_id']}@{scfg['revision']} failed: {exc}", file=sys.stderr)
    return folder


def load_sd_unet(cfg: dict):
    """SD's U-Net with conv_in widened to [z_t, z_l] (zero-initialised), and the null-text embedding."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    from yonos.models import compute_clip_null_embedding, widen_conv_in

    folder = sd_dir(cfg)
    unet = widen_conv_in(UNet2DConditionModel.from_pretrained(folder / "unet", use_safetensors=True))
    null_file = folder / "null_text_embedding.safetensors"
    if null_file.is_file():
        null_emb = load_file(null_file)["null_text_embedding"]
    elif (folder / "text_encoder").is_dir():
        null_emb = compute_clip_null_embedding(str(folder))
    else:
        raise UserError(f"{folder}: neither null_text_embedding.safetensors nor text_encoder/ + tokenizer/; "
                        f"add the text encoder folders of SD 2.1-base")
    return unet, null_emb.float()


def import_sd_vae(cfg: dict, out: Path) -> dict:
    """The paper profile's train_autoencoder stage: copy SD's VAE into the run, unchanged."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(sd_dir(cfg) / "vae", use_safetensors=True)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    write_json(out / "metrics.json", {"source": "stable-diffusion-2.1-base vae",
                                      "scaling_factor": float(vae.config.scaling_factor)})
    return {}




if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "hash":
        sys.exit("usage: python -m yonos.weights hash SD_DIR")
    root = Path(sys.argv[2])
    for rel in REQUIRED:
        if (root / rel).is_file() and rel.endswith(".safetensors"):
            print(f"      {rel}: {sha256(root / rel)}")

