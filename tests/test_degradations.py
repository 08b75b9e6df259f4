"""Degradation properties: sizes, ranges, per-image determinism, normalised kernels, shared draws."""

import math

import pytest
import torch

from yonos.data import degradations as D


def hr_batch(n=3, size=64):
    g = torch.Generator().manual_seed(123)
    # smooth random images, so blur and JPEG have something to act on
    low = torch.rand(n, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("kind", D.KINDS)
def test_sizes_and_range(kind):
    hr = hr_batch()
    out = D.degrade(hr, (2, 4), [0, 1, 2], {"kind": kind})
    assert set(out) == {2, 4}
    for s, lr in out.items():
        assert lr.shape == (3, 3, 64 // s, 64 // s)
        assert lr.dtype == hr.dtype
        assert 0.0 <= lr.min() and lr.max() <= 1.0


def test_bicubic_unchanged():
    hr = hr_batch()
    from yonos.resize import bicubic_down

    out = D.degrade(hr, (4,), [0, 1, 2])
    assert torch.equal(out[4], bicubic_down(hr, 4).clamp(0, 1))


@pytest.mark.parametrize("kind", ["realesrgan", "realesrgan_stablesr"])
def test_deterministic_per_seed_and_seeds_differ(kind):
    hr = hr_batch(2)
    a = D.degrade(hr, (4,), [5, 6], {"kind": kind})[4]
    b = D.degrade(hr, (4,), [5, 6], {"kind": kind})[4]
    c = D.degrade(hr, (4,), [7, 8], {"kind": kind})[4]
    assert torch.equal(a, b)
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])


def test_batch_size_independent():
    hr = hr_batch(3)
    cfg = {"kind": "realesrgan"}
    batch = D.degrade(hr, (2, 4), [10, 11, 12], cfg)
    single = D.degrade(hr[1:2], (2, 4), [11], cfg)
    for s in (2, 4):
        assert torch.equal(batch[s][1:2], single[s])


def test_shared_draw_across_scales():
    """Each scale's LR is the same whether or not other scales are requested in the same call."""
    hr = hr_batch(2)
    cfg = {"kind": "realesrgan_stablesr"}
    both = D.degrade(hr, (2, 4), [3, 4], cfg)
    for s in (2, 4):
        assert torch.equal(both[s], D.degrade(hr, (s,), [3, 4], cfg)[s])


def real_photos(size=256):
    """Centre crops of scikit-image's bundled colour photographs (no download)."""
    from skimage import data

    crops = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        img = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float() / 255
        top, left = (img.shape[1] - size) // 2, (img.shape[2] - size) // 2
        crops.append(img[:, top : top + size, left : left + size])
    return torch.stack(crops)


@pytest.mark.parametrize("kind", ["realesrgan", "realesrgan_stablesr"])
def test_x2_lr_keeps_more_than_x4_lr(kind):
    """The x2 teacher must see more than the x4 student: for the same draw, bicubic-up of the x2 LR is
    closer to HR than bicubic-up of the x4 LR. Margin: >= 1 dB mean PSNR over 4 photos x 3 seeds
    (the chain runs at each scale's own size, as Real-ESRGAN does for that scale)."""
    from yonos.resize import bicubic_up

    hr = real_photos()
    gaps = []
    for seed in range(3):
        seeds = [seed * 10 + i for i in range(hr.shape[0])]
        out = D.degrade(hr, (2, 4), seeds, {"kind": kind})
        psnr = {s: -10 * torch.log10(((bicubic_up(out[s], s).clamp(0, 1) - hr) ** 2).mean((1, 2, 3))) for s in (2, 4)}
        gaps.append(psnr[2] - psnr[4])
    gap = torch.cat(gaps)
    assert gap.mean() >= 1.0, f"x2 LR only {gap.mean():.2f} dB closer to HR than x4 LR"
    assert (gap > 0).float().mean() >= 0.9


def test_presets_differ_where_published():
    assert D.REALESRGAN["noise_range"] == [1.0, 30.0]
    assert D.REALESRGAN_STABLESR["noise_range"] == [1.0, 15.0]
    assert D.REALESRGAN_STABLESR["jpeg_range2"] == [60, 100]
    with pytest.raises(ValueError, match="unknown degradation keys"):
        D.resolve_params({"kind": "realesrgan", "noise_rnage": [1, 2]})
    with pytest.raises(ValueError, match="unknown degradation kind"):
        D.degrade(hr_batch(1), (4,), [0], {"kind": "nope"})


def test_cfg_overrides_preset():
    p = D.resolve_params({"kind": "realesrgan", "jpeg_range": [90, 95]})
    assert p["jpeg_range"] == [90, 95] and p["noise_range"] == [1.0, 30.0]


@pytest.mark.parametrize("seed", range(20))
def test_random_kernels_normalised(seed):
    g = torch.Generator().manual_seed(seed)
    for suffix in ("", "2"):
        k = D.random_blur_kernel(g, D.REALESRGAN, suffix)
        assert k.shape == (D.PAD_SIZE, D.PAD_SIZE)
        assert math.isclose(float(k.sum()), 1.0, abs_tol=1e-9)
    assert math.isclose(float(D.random_final_sinc(g, D.REALESRGAN).sum()), 1.0, abs_tol=1e-9)


def test_kernel_shapes():
    inv = D.inverse_covariance(2.0, 2.0, 0.0)
    iso = D.gaussian_kernel(21, inv)
    assert torch.allclose(iso, iso.T) and torch.allclose(iso, iso.flip(0))
    aniso = D.gaussian_kernel(21, D.inverse_covariance(3.0, 0.5, 0.0))
    assert aniso[10, :].sum() > aniso[:, 10].sum()  # wide along x
    plateau = D.plateau_kernel(21, inv, 2.0)
    assert plateau[10, 10] == plateau.max() and math.isclose(float(plateau.sum()), 1.0, abs_tol=1e-9)
    gen = D.gaussian_kernel(21, inv, beta=4.0)
    assert math.isclose(float(gen.sum()), 1.0, abs_tol=1e-9)
    sinc = D.sinc_kernel(21, math.pi / 2)
    assert math.isclose(float(sinc.sum()), 1.0, abs_tol=1e-9)
    assert sinc.min() < 0  # ringing lobes: it is a sinc, not a Gaussian


def test_jpeg_is_lossy_and_real():
    x = hr_batch(1)
    y = D.jpeg(x, 10)
    assert y.shape == x.shape and 0 < (y - x).abs().mean() < 0.1
