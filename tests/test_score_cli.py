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


# --- bad arguments: one line, exit 2, before any metric is built ---------------------------------------
def one_line_error(capsys, rc: int, needle: str) -> None:
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, (rc, err)


@pytest.mark.parametrize("border,needle", [
    (-3, "--border -3: must be 0 or more"),
    (20, "--border 20: a.png is 40x48, so nothing is left to score; use a border below 20"),
    (100, "--border 100: a.png is 40x48"),
])
def test_border_out_of_range_is_one_line(folders, capsys, border, needle):
    from yonos.cli import main

    sr_dir, hr_dir, _ = folders
    one_line_error(capsys, main(["score", str(sr_dir), str(hr_dir), "--metrics", "psnr", "--border", str(border)]),
                   needle)


def test_cuda_without_a_gpu_is_one_line(folders, capsys, monkeypatch):
    from yonos.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    sr_dir, hr_dir, _ = folders
    one_line_error(capsys, main(["score", str(sr_dir), str(hr_dir), "--metrics", "psnr", "--device", "cuda"]),
                   "--device cuda: no CUDA device is available")


def test_every_na_has_a_reason(folders, tmp_path, capsys):
    """NIQE on images under 96 px and SSIM with a border that leaves 8 px (under its 11 px window)."""
    sr_dir, hr_dir, _ = folders
    out = tmp_path / "s.json"
    assert run_score(sr_dir, hr_dir, "--metrics", "psnr,ssim,niqe", "--border", "16", "--out", out) == 0
    data = json.loads(out.read_text())
    na = [m for m, v in data["metrics"].items() if v is None]
    assert {"ssim", "niqe"} <= set(na) and data["metrics"]["psnr"] is not None
    assert all(data["n/a"].get(m) for m in na), data["n/a"]
    table = capsys.readouterr().out
    assert all("n/a  (" in line for line in table.splitlines() if "n/a" in line), table


def test_a_silent_nan_from_pyiqa_gets_a_reason():
    from yonos.metrics import Scorer

    scorer = Scorer(["psnr"])
    scorer._nets["psnr"] = lambda sr, hr: torch.full((sr.shape[0],), float("nan"))
    x = torch.rand(2, 3, 16, 16)
    assert torch.isnan(scorer.score(x, x)["psnr"]).all() and "returned NaN" in scorer.reason("psnr")


def test_grey_flag_is_per_image_in_a_batch():
    """A batch mixing a single-channel and an RGB ground truth: each image gets its own rule, and
    the grey value is exactly the RGB (= grey) PSNR, 1-2 dB below the Y value for the same error."""
    from yonos.metrics import Scorer

    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 1, 24, 24, generator=g).expand(2, 3, 24, 24)
    sr = (hr + 0.05 * torch.randn(2, 1, 24, 24, generator=g)).clamp(0, 1).expand(2, 3, 24, 24)
    scorer = Scorer(["psnr"])
    mixed = scorer.score(sr, hr, grey=[True, False])["psnr"]
    y_only, grey_only = scorer.score(sr, hr)["psnr"], scorer.score(sr, hr, grey=True)["psnr"]
    assert mixed[0] == grey_only[0] and mixed[1] == y_only[1]
    assert 1.0 < float(y_only[0] - grey_only[0]) < 2.0
