"""pyiqa (our protocol) against torchmetrics, an independent implementation. Measured on this
machine (torch 2.14, pyiqa 0.1.16, torchmetrics 1.9): PSNR-Y max |diff| 5.3e-5 dB (pyiqa computes
in float32); SSIM-Y 8.2e-8 when torchmetrics averages only the windows inside the image as MATLAB
and pyiqa do, 1.1e-2 with torchmetrics' default reflect padding (a protocol difference, not a bug)."""

import pytest
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr
from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

from yonos.metrics import Scorer, registry


def ycbcr_y(x):
    """BT.601 studio-range luma, written out independently of pyiqa (MATLAB rgb2ycbcr)."""
    return (16 + 65.481 * x[:, 0] + 128.553 * x[:, 1] + 24.966 * x[:, 2])[:, None] / 255


@pytest.fixture(scope="module")
def pair():
    g = torch.Generator().manual_seed(0)
    hr = torch.nn.functional.avg_pool2d(torch.rand(4, 3, 96, 96, generator=g), 3, 1, 1)
    sr = (hr + 0.05 * torch.randn(hr.shape, generator=g)).clamp(0, 1)
    return (sr * 255).round() / 255, (hr * 255).round() / 255


@pytest.fixture(scope="module")
def ours(pair):
    return Scorer(["psnr", "ssim"]).score(*pair)


def test_psnr_y_matches_torchmetrics(pair, ours):
    sr, hr = pair
    theirs = torch.stack([tm_psnr(ycbcr_y(sr[i : i + 1]).double(), ycbcr_y(hr[i : i + 1]).double(), data_range=1.0)
                          for i in range(len(sr))])
    assert (ours["psnr"] - theirs).abs().max() < 2e-4  # measured 5.3e-5 dB


def _tm_ssim_valid(a, b):
    _, full = tm_ssim(a, b, data_range=255.0, gaussian_kernel=True, sigma=1.5, kernel_size=11,
                      return_full_image=True)
    return full[..., 5:-5, 5:-5].mean()  # only windows fully inside the image, as MATLAB's 'valid'


def test_ssim_y_matches_torchmetrics_on_valid_windows(pair, ours):
    sr, hr = pair
    y255 = lambda x: (ycbcr_y(x) * 255).round().double()  # pyiqa's SSIM rounds Y to 8 bits
    theirs = torch.stack([_tm_ssim_valid(y255(sr[i : i + 1]), y255(hr[i : i + 1])) for i in range(len(sr))])
    assert (ours["ssim"] - theirs).abs().max() < 1e-6  # measured 8.2e-8
    padded = torch.stack([tm_ssim(y255(sr[i : i + 1]), y255(hr[i : i + 1]), data_range=255.0) for i in range(len(sr))])
    assert (ours["ssim"] - padded).abs().max() > 1e-3  # default padding differs: why the protocol pins pyiqa


def test_lpips_matches_torchmetrics(pair):
    reason = registry.missing_reason(registry.get("lpips"))
    if reason:
        pytest.skip(f"LPIPS cross-check needs weights: {reason}")
    from torchmetrics.functional.image import learned_perceptual_image_patch_similarity as tm_lpips

    sr, hr = pair
    ours = Scorer(["lpips"]).score(sr, hr)["lpips"]
    try:
        theirs = torch.stack([tm_lpips(sr[i : i + 1], hr[i : i + 1], net_type="alex", normalize=True)
                              for i in range(len(sr))]).double()
    except Exception as exc:  # noqa: BLE001 -- torchmetrics fetches its own AlexNet copy
        pytest.skip(f"torchmetrics LPIPS unavailable offline: {exc}")
    assert (ours - theirs).abs().max() < 1e-4
