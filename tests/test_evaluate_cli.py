"""`yonos evaluate`: any registered method (a trained yonos checkpoint included), every argument and
image checked before work (one line, exit 2), and one scoring protocol shared with `yonos score`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from yonos.cli import main as yonos


def textured(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth-ish uint8 RGB image (bicubic does something measurable on it)."""
    rng = np.random.default_rng(seed)
    x = torch.nn.functional.avg_pool2d(torch.from_numpy(rng.random((1, 3, h, w))).float(), 5, 1, 2)[0]
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@pytest.fixture
def hr_dir(tmp_path):
    """Two HR images, sides multiples of 4 (so classic modcrop keeps them whole): one RGB, one
    stored single-channel (mode L, like Set14's `bridge`)."""
    d = tmp_path / "hr"
    d.mkdir()
    Image.fromarray(textured(48, 40, 0)).save(d / "colour.png")
    Image.fromarray(textured(40, 48, 1)).convert("L").save(d / "grey.png")
    return d


def one_line_error(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# --- one protocol ------------------------------------------------------------------------------------
def test_score_and_evaluate_agree_on_a_greyscale_ground_truth(hr_dir, tmp_path, capsys):
    """The bug: evaluate scored a single-channel GT on grey values, score on Y (1.32 dB apart)."""
    from methods.bicubic import Bicubic
    from yonos.data.paired import load_hr_folder
    from yonos.io import save_image

    ev = tmp_path / "evaluate.json"
    assert yonos(["evaluate", "--method", "bicubic", "--hr-dir", str(hr_dir), "--scale", "4", "--out", str(ev)]) == 0
    # The same bicubic outputs, written as files and scored by `yonos score` with the classic border.
    sr_dir = tmp_path / "sr"
    for i, lr, _ in load_hr_folder(hr_dir, scale=4):
        save_image(Bicubic().upscale(lr[None], scale=4)[0], sr_dir / f"{i}.png")
    sc = tmp_path / "score.json"
    assert yonos(["score", str(sr_dir), str(hr_dir), "--metrics", "psnr,ssim", "--border", "4", "--out", str(sc)]) == 0
    evaluated, scored = json.loads(ev.read_text()), json.loads(sc.read_text())
    assert evaluated["grey_ids"] == ["grey"] and scored["protocol"]["grey_files"] == ["grey.png"]
    for i in ("colour", "grey"):
        for m in ("psnr", "ssim"):
            assert scored["per_image"][f"{i}.png"][m] == pytest.approx(evaluated["per_image"][i][m], abs=1e-6)

    # ... and the shared value is MATLAB's: grey values for the L file (an independent numpy PSNR),
    # Y of YCbCr for the RGB one (pyiqa's own reader on the files).
    import pyiqa

    sr = np.asarray(Image.open(sr_dir / "grey.png")).astype(np.float64)[4:-4, 4:-4]
    gt = np.asarray(Image.open(hr_dir / "grey.png")).astype(np.float64)[4:-4, 4:-4]
    mse = ((sr - gt[..., None]) ** 2).mean()
    assert evaluated["per_image"]["grey"]["psnr"] == pytest.approx(10 * np.log10(255**2 / mse), abs=1e-4)
    psnr_y = pyiqa.create_metric("psnr", test_y_channel=True, color_space="ycbcr", crop_border=4, device="cpu")
    ref = float(psnr_y(str(sr_dir / "colour.png"), str(hr_dir / "colour.png")))
    assert evaluated["per_image"]["colour"]["psnr"] == pytest.approx(ref, abs=1e-4)


def test_pipeline_stage_scores_a_greyscale_ground_truth_like_the_cli(hr_dir, tmp_path):
    """The DVC evaluate stage (evaluate_row) and `yonos evaluate` share the MATLAB grey rule."""
    from methods.bicubic import Bicubic
    from yonos.data.paired import load_hr_folder
    from yonos.metrics import Scorer
    from yonos.stages.evaluate import evaluate_row

    ev = tmp_path / "evaluate.json"
    assert yonos(["evaluate", "--method", "bicubic", "--hr-dir", str(hr_dir), "--scale", "4", "--out", str(ev)]) == 0
    pairs = load_hr_folder(hr_dir, scale=4)
    assert pairs.grey_ids == {"grey"}
    ids, scores, _ = evaluate_row(Bicubic(), pairs, scale=4, steps=1, scorer=Scorer(["psnr"], border=4),
                                  ecfg={"batch_size": 2, "seed": 0}, device=torch.device("cpu"),
                                  image_dir=tmp_path / "img", save_ids=set())
    cli = json.loads(ev.read_text())["per_image"]
    for i, value in zip(ids, scores["psnr"]):
        assert value == pytest.approx(cli[i]["psnr"], abs=1e-6), i


def test_a_variant_at_another_scale_is_scored_with_that_scales_border(hr_dir, tmp_path, monkeypatch, smoke_cfg):
    """The classic protocol crops `scale` pixels: bicubic beside a x2 or x8 link of the chain (study chain_x8)
    is scored as `yonos evaluate --scale 2/8` scores it, not with the set's x4 border."""
    from yonos.data.paired import load_hr_folder
    from yonos.stages import evaluate

    monkeypatch.setattr(evaluate, "resolve_eval_set", lambda *a, **k: load_hr_folder(hr_dir, scale=4, name="set5"))
    ecfg = {"sets": [{"name": "set5", "steps": [1], "metrics": ["psnr"]}], "steps": [1], "metrics": ["psnr"],
            "batch_size": 2, "seed": 0, "save_images": 0,
            "variants": {f"bicubic_x{s}": {"method": "bicubic", "scale": s} for s in (2, 4, 8)}}
    evaluate.evaluate_sets({**smoke_cfg, "run_root": str(tmp_path / "runs")}, ecfg, tmp_path / "out", missing="error")
    import pandas as pd

    per_image = pd.read_csv(tmp_path / "out" / "per_image.csv")
    for s in (2, 4, 8):
        ev = tmp_path / f"x{s}.json"
        assert yonos(["evaluate", "--method", "bicubic", "--hr-dir", str(hr_dir), "--scale", str(s),
                      "--out", str(ev)]) == 0
        cli = json.loads(ev.read_text())["per_image"]
        rows = per_image[per_image["variant"] == f"bicubic_x{s}"].set_index("id")["value"]
        assert len(rows) == 2
        for i, value in rows.items():
            assert value == pytest.approx(cli[i]["psnr"], abs=1e-4), (s, i)


# --- any registered method, a trained checkpoint included ---------------------------------------------
def test_evaluates_a_yonos_checkpoint_with_steps_and_seed(tiny_checkpoint, hr_dir, tmp_path):
    from yonos.data.paired import load_hr_folder
    from yonos.metrics import Scorer
    from yonos.pipeline import YonosPipeline
    from yonos.sampler import per_image_generators
    from yonos.stages.evaluate import image_seed

    out = tmp_path / "yonos.json"
    argv = ["evaluate", "--method", "yonos", "--checkpoint", str(tiny_checkpoint), "--hr-dir", str(hr_dir),
            "--steps", "2", "--seed", "3", "--device", "cpu"]
    assert yonos([*argv, "--out", str(out)]) == 0  # scale: the checkpoint's own (x4)
    got = json.loads(out.read_text())
    assert (got["method"], got["scale"], got["protocol"]) == ("yonos", 4, "classic")
    assert got["method_settings"]["steps"] == 2 and got["method_settings"]["seed"] == 3
    # Recompute one image by hand: the pipeline at 2 steps with the (seed, id) noise, scored on Y.
    pipe = YonosPipeline.from_pretrained(tiny_checkpoint)
    i, lr, hr = load_hr_folder(hr_dir, scale=4)[0]
    sr = pipe.upscale_batch(lr[None], steps=2, generator=per_image_generators([image_seed(3, i)]))
    ref = Scorer(["psnr"], border=4).score(sr, hr[None])["psnr"][0]
    assert got["per_image"][i]["psnr"] == pytest.approx(float(ref), abs=1e-5)
    # The seed is used: another seed, other noise, another score.
    other = tmp_path / "seed4.json"
    assert yonos([*argv[:-4], "--seed", "4", "--device", "cpu", "--out", str(other)]) == 0
    assert json.loads(other.read_text())["per_image"][i]["psnr"] != got["per_image"][i]["psnr"]


# --- every argument checked before work ----------------------------------------------------------------
@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if evaluation starts: the errors below must come first."""
    import yonos.commands.evaluate as ev

    def boom(*a, **k):
        raise AssertionError("evaluation started before the argument check")

    monkeypatch.setattr(ev, "evaluate", boom)


def test_checkpoint_problems_are_one_line(tiny_checkpoint, hr_dir, tmp_path, capsys, no_work):
    base = ["evaluate", "--hr-dir", str(hr_dir)]
    one_line_error(capsys, yonos([*base, "--method", "yonos"]), "needs --checkpoint")
    one_line_error(capsys, yonos([*base, "--method", "yonos", "--checkpoint", str(tmp_path / "nope")]),
                   "nope: no such folder")
    (tmp_path / "file").write_text("x")
    one_line_error(capsys, yonos([*base, "--method", "yonos", "--checkpoint", str(tmp_path / "file")]), "is a file")
    (tmp_path / "empty").mkdir()
    one_line_error(capsys, yonos([*base, "--method", "yonos", "--checkpoint", str(tmp_path / "empty")]),
                   "not a YONOS checkpoint")
    one_line_error(capsys, yonos([*base, "--method", "bicubic", "--checkpoint", str(tiny_checkpoint)]),
                   "loads no checkpoint")
    one_line_error(capsys, yonos([*base, "--method", "nosuch"]), "unknown method 'nosuch'")


def test_a_checkpoint_with_broken_weights_is_one_line(tiny_checkpoint, hr_dir, tmp_path, capsys, no_work):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    shutil.rmtree(broken / "unet")
    one_line_error(capsys, yonos(["evaluate", "--hr-dir", str(hr_dir), "--method", "yonos", "--checkpoint",
                                  str(broken)]), "broken")  # names the folder (and what is missing)


@pytest.mark.parametrize("extra,needle", [
    (["--steps", "0"], "--steps 0: must be between 1 and 1000"),
    (["--steps", "1001"], "--steps 1001: must be between 1 and 1000"),
    (["--scale", "2"], "--scale 2: method 'yonos' supports x4"),
    (["--device", "nosuchdevice"], "--device nosuchdevice: not a device name"),
])
def test_bad_arguments_are_one_line(tiny_checkpoint, hr_dir, capsys, no_work, extra, needle):
    argv = ["evaluate", "--method", "yonos", "--checkpoint", str(tiny_checkpoint), "--hr-dir", str(hr_dir)]
    one_line_error(capsys, yonos([*argv, *extra]), needle)


def test_cuda_without_a_gpu_is_one_line(hr_dir, capsys, monkeypatch, no_work):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    one_line_error(capsys, yonos(["evaluate", "--hr-dir", str(hr_dir), "--device", "cuda"]),
                   "--device cuda: no CUDA device is available")


def test_unwritable_out_is_one_line(hr_dir, tmp_path, capsys, no_work):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    one_line_error(capsys, yonos(["evaluate", "--hr-dir", str(hr_dir), "--out", str(blocker / "r.json")]),
                   "not a writable folder")


@pytest.mark.parametrize("content,needle", [(b"", "empty file"), (b"not an image", "not a readable image")])
@pytest.mark.parametrize("where", ["hr", "lr"])
def test_corrupt_or_empty_file_in_a_folder_is_one_line(hr_dir, tmp_path, capsys, no_work, content, needle, where):
    lr_dir = tmp_path / "lr"
    lr_dir.mkdir()
    for p in hr_dir.iterdir():
        Image.open(p).resize((Image.open(p).width // 4, Image.open(p).height // 4)).save(lr_dir / p.name)
    (hr_dir if where == "hr" else lr_dir).joinpath("bad.png").write_bytes(content)
    if where == "lr":  # paired: the HR side needs the name too
        Image.fromarray(textured(8, 8, 2)).save(hr_dir / "bad.png")
    argv = ["evaluate", "--hr-dir", str(hr_dir)] + (["--lr-dir", str(lr_dir)] if where == "lr" else [])
    one_line_error(capsys, yonos(argv), "bad.png", needle)


def test_device_defaults_agree_across_commands():
    from yonos.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    defaults = {name: next(a.default for a in p._actions if a.dest == "device")
                for name, p in sub.items() if any(a.dest == "device" for a in p._actions)}
    assert set(defaults) >= {"upscale", "evaluate", "score"} and set(defaults.values()) == {"auto"}, defaults


def test_latent_psnr_drops_the_latent_of_the_padding():
    """`upscale` pads an LR whose side is not a multiple of the U-Net's to one (bottom/right): its z-hat
    is larger than E(HR) there (a Set5 image: 72 vs 70 latent columns) and is scored on the image part."""
    from yonos.stages.evaluate import latent_psnr

    g = torch.Generator().manual_seed(0)
    z_h = torch.randn(2, 4, 6, 5, generator=g)
    z_hat = torch.randn(2, 4, 8, 8, generator=g) * 100  # padding rows/columns: anything
    z_hat[..., :6, :5] = z_h + 0.1 * torch.randn(2, 4, 6, 5, generator=g)
    torch.testing.assert_close(latent_psnr(z_hat, z_h), latent_psnr(z_hat[..., :6, :5].clone(), z_h))
