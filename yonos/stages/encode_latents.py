"""encode_latents: a fixed bank of training crops with z_h = E(HR) and z_l = E(up(LR)) at every
scale the U-Net stages use, encoded once (train.latent_bank crops; 0 = encode on the fly instead).

On a CPU the two or three encoder passes per example cost more than the U-Net step itself, so the
embedded profile trains from this bank; the paper profile encodes on the fly on GPUs. Each crop's
LRs at all scales come from one degradation draw (only the final downscale differs), as scale
distillation needs. Writes runs/<profile>/encode_latents/bank.safetensors.
"""

from __future__ import annotations

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from yonos.config import run_dir
from yonos.io import atomic_path, write_json
from yonos.models import LatentCodec
from yonos.stages._common import device_of, load_folder, stage_main
from yonos.stages._unet import load_vae, task_scales
from yonos.train import CropStream, LatentSR

NAME = "encode_latents"
BANK = "bank.safetensors"


@torch.no_grad()
def run(cfg: dict) -> dict:
    tcfg, out = cfg["train"], run_dir(cfg, NAME)
    n = int(tcfg.get("latent_bank") or 0)
    scales = task_scales(cfg)
    if n == 0:
        write_json(out / "bank.json", {"size": 0, "note": "latent_bank = 0: U-Net stages encode on the fly"})
        return {}
    device = device_of(cfg)
    vae = load_vae(cfg).to(device).eval()
    task = LatentSR(LatentCodec(vae), None, None, "", "", cfg["degradation"])
    stream = CropStream(load_folder(run_dir(cfg, "prepare_data", "train")), tcfg["hr_crop"], n,
                        seed=cfg["seed"], stream="latent-bank")
    parts: dict[str, list[torch.Tensor]] = {}
    for start in tqdm(range(0, n, 64), desc="encode latent bank", mininterval=2.0):
        items = [stream[i] for i in range(start, min(n, start + 64))]
        batch = {"hr": torch.stack([it["hr"] for it in items]).to(device),
                 "seed": torch.tensor([it["seed"] for it in items])}
        z_h, z_ls = task.latents(batch, scales)
        add = {"hr": (batch["hr"] * 255).round().to(torch.uint8), "seed": batch["seed"], "z_h": z_h,
               **{f"z_l_x{s}": z for s, z in z_ls.items()}}
        for key, value in add.items():
            parts.setdefault(key, []).append(value.cpu())
    bank = {k: torch.cat(v).contiguous() for k, v in parts.items()}
    with atomic_path(out / BANK) as tmp:
        save_file(bank, str(tmp))
    write_json(out / "bank.json", {"size": n, "scales": scales, "hr_crop": tcfg["hr_crop"],
                                   "z_h_std": float(bank["z_h"].std())})
    return {"timing": {"crops": n}}


def main() -> int:
    return stage_main(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
