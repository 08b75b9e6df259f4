"""`yonos score`: pairing by name, size errors, JSON layout, and per-image values equal to pyiqa's
own (reading the same files through pyiqa's loader) to 1e-4."""

import argparse
import json

import pytest
import torch

from yonos.commands import score
from yonos.errors import UserError
from yonos.io import save_image


def run_score(*argv):
    parser = argparse.ArgumentParser()
    score.register(parser.add_subparsers())
    args = parser.parse_args(["score", *map(str, argv)])
    return args.func(args)


@pytest.fixture
def folders(tmp_path):
    g = torch.Generator().manual_seed(1)
    sr_dir, hr_dir, lr_dir = tmp_path / "sr", tmp_path / "hr", tmp_path / "lr"
    for name in ("a", "b", "c"):
        hr = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 48, 40, generator=g), 3, 1, 1)[0]
        save_image(hr, hr_dir / f"{name}.png")
        save_image(hr[:, ::4, ::4], lr_dir / f"{name}.png")
        save_image((hr + 0.04 * torch.randn(hr.shape, generator=g)).clamp(0, 1), sr_dir / f"{name}.png")
    return sr_dir, hr_dir, lr_dir


def test_scores_two_folders_and_matches_pyiqa_per_image(folders, tmp_path, capsys):
    import pyiqa

    sr_dir, hr_dir, lr_dir = folders
    out = tmp_path / "scores.json"
    assert run_score(sr_dir, hr_dir, "--lr-dir", lr_dir, "--metrics", "psnr,ssim,lpips", "--out", out) == 0
    table = capsys.readouterr().out
    assert "PSNR" in table and "LPIPS" in table and "↑" in table
    data = json.loads(out.read_text())
    assert set(data) >= {"metrics", "per_image"} and data["protocol"]["scale"] == 4
    assert list(data["per_image"]) == ["a.png", "b.png", "c.png"]
    psnr = pyiqa.create_metric("psnr", test_y_channel=True, color_space="ycbcr", device="cpu")
    ssim = pyiqa.create_metric("ssim", test_y_channel=True, color_space="ycbcr", device="cpu")
    for name, row in data["per_image"].items():
        ref_psnr = float(psnr(str(sr_dir / name), str(hr_dir / name)))  # pyiqa reads the files itself
        ref_ssim = float(ssim(str(sr_dir / name), str(hr_dir / name)))
        assert abs(row["psnr"] - ref_psnr) < 1e-4 and abs(row["ssim"] - ref_ssim) < 1e-4
    mean = sum(r["psnr"] for r in data["per_image"].values()) / 3
    assert data["metrics"]["psnr"] == pytest.approx(mean, abs=1e-5)
    if data["metrics"]["lpips"] is None:  # no weights here: n/a with the reason, not dropped
        assert "weights missing" in data["n/a"]["lpips"]


def test_name_mismatch_is_a_hard_error(folders):
    sr_dir, hr_dir, _ = folders
    (sr_dir / "b.png").rename(sr_dir / "b_sr.png")
    with pytest.raises(UserError, match=r"1 only in .*sr \(b_sr\).*1 only in .*hr \(b\)"):
        run_score(sr_dir, hr_dir, "--metrics", "psnr")


def test_size_mismatch_is_an_error_not_a_resize(folders):
    sr_dir, hr_dir, _ = folders
    save_image(torch.rand(3, 40, 40), sr_dir / "c.png")
    with pytest.raises(UserError, match="c.png: SR is 40x40 but HR is 40x48"):
        run_score(sr_dir, hr_dir, "--metrics", "psnr")


def test_unknown_metric_is_a_user_error(folders):
    sr_dir, hr_dir, _ = folders
    with pytest.raises(UserError, match="unknown psnrr"):
        run_score(sr_dir, hr_dir, "--metrics", "psnrr")
