"""Seconds per image for each method's `upscale`, end to end and network-only, with peak memory."""

from __future__ import annotations

import pytest
import torch
from conftest import device, peak_memory_mb, reset_peak, sync

from yonos.models import vae_factor
from yonos.sampler import denoise, per_image_generators

SIZES = {"lr32": 32, "lr128": 128}  # embedded evaluation crops; RealSR/DRealSR 128 -> 512


def lr_batch(size: int, n: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device())


def run_timed(benchmark, fn, *, rounds: int = 5):
    fn()  # warm-up: allocator, kernels, lazy imports
    sync()
    reset_peak()

    def call():
        fn()
        sync()

    benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=1)
    benchmark.extra_info["peak_memory_mb"] = round(peak_memory_mb(), 1)
    benchmark.extra_info["device"] = str(device())


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize("steps", [1, 4])
def test_yonos_end_to_end(benchmark, yonos_method, size, steps):
    """encode(up(LR)) + `steps` U-Net calls + decode: what `evaluate` times and scores."""
    lr = lr_batch(size)
    benchmark.group = f"upscale {size}->{4 * size}"
    benchmark.extra_info["weights"] = yonos_method.source
    run_timed(benchmark, lambda: yonos_method.upscale(lr, scale=4, steps=steps, generator=per_image_generators([0])))


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_yonos_network_only(benchmark, yonos_method, size):
    """One U-Net call on the latent grid of a 4x output: the part scale distillation reduces to one."""
    pipe = yonos_method.pipe
    # The pipeline's own latent shape: its autoencoder's channels (16 for the embedded one) and factor f.
    channels, side = pipe.vae.config.latent_channels, pipe.scale * size // vae_factor(pipe.vae)
    g = torch.Generator().manual_seed(0)
    z_t, z_l = (torch.randn(1, channels, side, side, generator=g).to(device()) for _ in range(2))
    t = torch.full((1,), pipe.scheduler.config.num_train_timesteps - 1, device=device(), dtype=torch.long)
    benchmark.group = f"upscale {size}->{4 * size}"
    benchmark.extra_info.update(latent_shape=[1, channels, side, side], weights=yonos_method.source)

    def unet():
        with torch.no_grad():
            denoise(pipe.unet, z_t, z_l, t, pipe.null_emb)  # [z_t, z_l] -> U-Net, as the sampler calls it

    run_timed(benchmark, unet)


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_bicubic(benchmark, size):
    from yonos.plugins import load_method

    method, lr = load_method("bicubic"), lr_batch(size)
    benchmark.group = f"upscale {size}->{4 * size}"
    run_timed(benchmark, lambda: method.upscale(lr, scale=4))


@pytest.mark.gpu
def test_sd21_shaped_unet_one_step_512(benchmark):
    """SD 2.1-base-shaped U-Net at a 64x64 latent (512^2 output), random weights: the paper-scale cost."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device: an SD-sized U-Net call takes minutes on 2 CPU cores")
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=64, in_channels=8, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
        attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
        layers_per_block=2).to(device(), torch.bfloat16).eval()
    x = torch.randn(1, 8, 64, 64, device=device(), dtype=torch.bfloat16)
    t = torch.full((1,), 999, device=device())
    ctx = torch.zeros(1, 77, 1024, device=device(), dtype=torch.bfloat16)
    benchmark.group = "paper scale"

    def call():
        with torch.no_grad():
            unet(x, t, encoder_hidden_states=ctx)

    run_timed(benchmark, call, rounds=20)
