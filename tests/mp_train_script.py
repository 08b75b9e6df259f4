"""Run by tests/test_multiprocess.py under torchrun: a few optimiser steps of the teacher objective
on a tiny seeded model, then the trained U-Net is written to OUT (safetensors) by the main process."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import REPO, make_tiny_pipeline  # noqa: E402

from yonos.config import load_params  # noqa: E402
from yonos.models import LatentCodec  # noqa: E402
from yonos.train import CropStream, LatentSR, base_loss, fit, make_accelerator  # noqa: E402


def main(out: str, batch_size: int, steps: int = 3) -> None:
    torch.set_num_threads(1)
    cfg = load_params(REPO / "params.yaml", "smoke")
    pipe = make_tiny_pipeline(cfg, scale=2)
    task = LatentSR(LatentCodec(pipe.vae.requires_grad_(False)), pipe.scheduler.alphas_cumprod, pipe.null_emb,
                    cfg["model"]["prediction_type"], cfg["model"]["weighting"], {"kind": "bicubic"})
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 48, 48, generator=g) for _ in range(3)]
    accelerator = make_accelerator(dict(cfg, device="cpu"))
    fit(pipe.unet, partial(base_loss, task=task, scale=2),
        lambda n: CropStream(images, 32, n, seed=0, stream="mp-test", latent_shape=(4, 16, 16)),
        accelerator=accelerator, steps=steps, batch_size=batch_size, lr=1e-3, desc="mp-test")
    if accelerator.is_main_process:
        unet = accelerator.unwrap_model(pipe.unet)
        save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, out)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
