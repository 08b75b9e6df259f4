"""`yonos upscale`: files and folders in, exact sizes out; bad input is one line, exit 2, no output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yonos.cli import main


def png(path, size=(9, 7), mode="RGB"):
    arr = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path)
    return path


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yonos.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_file_and_folder(tiny_checkpoint, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    png(src / "a.png")
    png(src / "b.png", (5, 6), "RGBA")
    png(src / "c.jpg", (8, 8), "L")
    assert main(["upscale", str(src / "a.png"), str(tmp_path / "a_x4.png"), "--checkpoint", str(tiny_checkpoint)]) == 0
    assert Image.open(tmp_path / "a_x4.png").size == (36, 28)
    assert main(["upscale", str(src), str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint), "--steps", "2"]) == 0
    sizes = {p.name: Image.open(p).size for p in (tmp_path / "out").iterdir()}
    # folder mode writes lossless PNG unless --format names another: c.jpg -> c.png
    assert sizes == {"a.png": (36, 28), "b.png": (20, 24), "c.png": (32, 32)}


def test_exif_rotated_photo_comes_out_upright(tiny_checkpoint, tmp_path):
    """A phone photo stored on its side (EXIF orientation 6: 10x4 stored pixels, 4x10 upright) is upscaled
    upright, 16x40, and the output carries no orientation tag that would turn it a second time."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((4, 10, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg", exif=exif)
    out = tmp_path / "photo_x4.png"
    assert main(["upscale", str(tmp_path / "photo.jpg"), str(out), "--checkpoint", str(tiny_checkpoint)]) == 0
    with Image.open(out) as img:
        assert img.size == (16, 40) and img.getexif().get(0x0112, 1) == 1

def bad_inputs(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("this is not an image\n")
    good = png(tmp_path / "good.png", (32, 32))
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:60])
    return {"missing": tmp_path / "nope.png", "empty": tmp_path / "empty.png", "text": tmp_path / "text.png",
            "truncated": tmp_path / "truncated.png"}


@pytest.mark.parametrize("case", ["missing", "empty", "text", "truncated"])
def test_bad_input_is_one_line_naming_the_file(tiny_checkpoint, tmp_path, case):
    path = bad_inputs(tmp_path)[case]
    out = tmp_path / "out.png"
    proc = run_cli("upscale", path, out, "--checkpoint", tiny_checkpoint)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and str(path) in lines[0], proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_unreadable_folder(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    from pathlib import Path

    (tmp_path / "in").mkdir()

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "iterdir", denied)
    assert main(["upscale", str(tmp_path / "in"), str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not readable" in err[0] and str(tmp_path / "in") in err[0]


def test_bad_file_inside_a_folder_stops_before_any_output(tiny_checkpoint, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    png(src / "a.png")
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["upscale", str(src), str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint)]) == 2
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_not_a_checkpoint(tmp_path):
    png(tmp_path / "a.png")
    assert main(["upscale", str(tmp_path / "a.png"), str(tmp_path / "o.png"), "--checkpoint", str(tmp_path)]) == 2


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def one_line_exit_2(argv, capsys) -> str:
    """`yonos ARGV` in process: exit status 2 and one line on stderr, which it returns. (The process itself,
    `python -m yonos.cli`, is run by the bad-input, --version and --help tests above and below.)"""
    assert main([str(a) for a in argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def test_output_may_never_be_an_input(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """Today `upscale d d` overwrote every input; now each form is refused before the model loads."""
    d = tmp_path / "d"
    d.mkdir()
    png(d / "x.png")
    png(d / "y.jpg", (6, 6))
    (tmp_path / "link").symlink_to(d)
    before = snapshot(d)
    no_model_load(monkeypatch)
    cases = [(d, d), (d, tmp_path / "link"), (d / "x.png", d / "x.png"), (d / "x.png", d),
             (d / "x.png", tmp_path / "link" / "x.png")]
    for src, dst in cases:
        line = one_line_exit_2(["upscale", src, dst, "--checkpoint", tiny_checkpoint], capsys)
        assert "input" in line or "exists" in line, line
        assert snapshot(d) == before, (src, dst)


def test_existing_output_needs_overwrite(tiny_checkpoint, tmp_path):
    src = png(tmp_path / "a.png")
    out = tmp_path / "out.png"
    out.write_bytes(b"keep me")
    args = ["upscale", str(src), str(out), "--checkpoint", str(tiny_checkpoint)]
    assert main(args) == 2 and out.read_bytes() == b"keep me"
    assert main([*args, "--overwrite"]) == 0 and Image.open(out).size == (36, 28)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.parametrize("crash", [KeyboardInterrupt(), OSError(28, "No space left on device")])
def test_a_crash_while_writing_keeps_the_old_output(tiny_checkpoint, tmp_path, monkeypatch, capsys, crash):
    """The encoder dies half-way through the file (Ctrl-C, a full disk): with --overwrite the existing output
    keeps its old bytes, and neither a partial output nor the temporary file is left beside it. A full disk is
    one line naming the file."""
    src = png(tmp_path / "a.png")
    out = tmp_path / "out.png"
    out.write_bytes(b"keep me")

    def dies_half_way(self, fp, *a, **k):
        Path(fp).write_bytes(b"\x89PNG\r\n\x1a\n half an image")
        raise crash

    monkeypatch.setattr(Image.Image, "save", dies_half_way)
    args = ["upscale", str(src), str(out), "--checkpoint", str(tiny_checkpoint), "--overwrite"]
    if isinstance(crash, KeyboardInterrupt):
        assert main(args) == 130
    else:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert "out.png: could not be written (No space left on device)" in err.splitlines()[-1]
    assert out.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "out.png"]

def test_folder_mode_names_collisions_and_skipped_entries(tiny_checkpoint, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    png(src / "a.png")
    png(src / "a.jpg")
    assert main(["upscale", str(src), str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "would both write" in capsys.readouterr().err
    (src / "a.jpg").unlink()
    (src / "sub").mkdir()
    (src / "notes.txt").write_text("x")
    (src / "dead.png").symlink_to(tmp_path / "gone.png")
    assert main(["upscale", str(src), str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint),
                 "--format", "webp"]) == 0
    err = capsys.readouterr().err
    assert all(f"skipped {src / n}" in err for n in ("sub", "notes.txt", "dead.png")), err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.webp"]


def test_every_bad_file_in_a_folder_is_named(tiny_checkpoint, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    png(src / "a.png")
    (src / "b.png").write_bytes(b"")
    (src / "c.png").write_text("nope")
    assert main(["upscale", str(src), str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint)]) == 2
    err = capsys.readouterr().err
    assert str(src / "b.png") in err and str(src / "c.png") in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, needles", [(["--steps", "1001"], ["--steps 1001: must be between 1 and 1000"]),
                                            (["--steps", "0"], ["--steps 0: must be between 1 and 1000"]),
                                            (["--scale", "3"], ["--scale 3: ", "is a x4 model"]),
                                            (["--device", "cuda:7"], ["--device cuda:7: "])])
def test_argument_errors_come_before_any_work(tiny_checkpoint, tmp_path, monkeypatch, capsys, extra, needles):
    """In process, so the work can be forbidden: a bad --steps, --scale or --device is one line, exit 2, with no
    image read and no weights loaded (the scale comes from the checkpoint's JSON config)."""
    import yonos.commands.upscale as up

    src = png(tmp_path / "a.png")
    no_model_load(monkeypatch)
    monkeypatch.setattr(up, "read_image", lambda *a, **k: pytest.fail("an input was read before the check"))
    assert main(["upscale", str(src), str(tmp_path / "o.png"), "--checkpoint", str(tiny_checkpoint), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(n in err[0] for n in needles) and "Traceback" not in err[0], err
    assert not (tmp_path / "o.png").exists()

def test_checkpoint_errors_name_the_given_folder(tmp_path, capsys):
    src = png(tmp_path / "a.png")
    for ck in (tmp_path / "missing", tmp_path):
        line = one_line_exit_2(["upscale", src, tmp_path / "o.png", "--checkpoint", ck], capsys)
        assert str(ck) in line and "student_x4_decoder" not in line


def test_read_only_output_folder_fails_before_the_model_loads(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    import yonos.pipeline

    src = png(tmp_path / "a.png")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    monkeypatch.setattr(yonos.pipeline.YonosPipeline, "from_pretrained",
                        classmethod(lambda *a, **k: pytest.fail("model loaded before the output was checked")))
    try:
        if __import__("os").access(ro, __import__("os").W_OK):
            pytest.skip("running as a user who can write anywhere (root): permissions are not enforced")
        assert main(["upscale", str(src), str(ro / "o.png"), "--checkpoint", str(tiny_checkpoint)]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("yonos ")


def no_model_load(monkeypatch):
    import yonos.pipeline

    monkeypatch.setattr(yonos.pipeline.YonosPipeline, "from_pretrained",
                        classmethod(lambda *a, **k: pytest.fail("model loaded before the check")))


def test_read_only_output_is_found_before_the_model_loads_even_as_root(tiny_checkpoint, tmp_path, monkeypatch,
                                                                      capsys):
    """root may write anywhere, so the read-only folder is simulated where the check asks the OS."""
    import os

    import yonos.commands.upscale as up

    src = png(tmp_path / "a.png")
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(up.os, "access", lambda p, mode, **k: False if Path(p) == ro else real_access(p, mode, **k))
    no_model_load(monkeypatch)
    assert main(["upscale", str(src), str(ro / "sub" / "o.png"), "--checkpoint", str(tiny_checkpoint)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{ro}: output folder is not writable" in err[0]


def test_memory_guard_stops_before_the_model_loads(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    src = png(tmp_path / "a.png", (64, 48))
    no_model_load(monkeypatch)
    args = ["upscale", str(src), str(tmp_path / "o.png"), "--checkpoint", str(tiny_checkpoint)]
    assert main([*args, "--max-memory", "0.001"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "0.0 GiB limit (--max-memory" in err[0] and str(src) in err[0], err
    assert main([*args, "--max-memory", "0"]) == 2 and "positive" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_help_documents_the_memory_limit():
    proc = run_cli("upscale", "--help")
    assert proc.returncode == 0 and "--max-memory" in proc.stdout and "tiled automatically" in proc.stdout


def test_a_file_into_a_folder_is_lossless_png(tiny_checkpoint, tmp_path, capsys):
    src = png(tmp_path / "photo.jpg")
    (tmp_path / "out").mkdir()
    assert main(["upscale", str(src), str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint)]) == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["photo.png"]
    # --format must agree with a named output file
    assert main(["upscale", str(src), str(tmp_path / "o.png"), "--checkpoint", str(tiny_checkpoint),
                 "--format", "jpg"]) == 2
    assert "--format jpg" in capsys.readouterr().err and not (tmp_path / "o.png").exists()


def test_hidden_leftovers_are_named_not_upscaled(tiny_checkpoint, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    png(src / "a.png")
    png(src / ".a.png.x1y2.tmp.png")  # what an interrupted atomic write leaves behind
    assert main(["upscale", str(src), str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint)]) == 0
    assert f"skipped {src / '.a.png.x1y2.tmp.png'}: a hidden file" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]


@pytest.mark.parametrize("method", ["sr3", "ldmsr", "stablesr"])
def test_a_baseline_checkpoint_upscales_through_its_adapter(method, smoke_cfg, tmp_path, capsys):
    """`yonos upscale` reads the checkpoint's kind from its config file: SR3, LDM-SR and StableSR folders work."""
    import importlib

    pipeline = {"sr3": "SR3Pipeline", "ldmsr": "LDMSRPipeline", "stablesr": "StableSRPipeline"}[method]
    module = importlib.import_module(f"yonos.baselines.{method}")
    getattr(module, pipeline).from_params(smoke_cfg, 4, seed=0).save_pretrained(tmp_path / "ckpt")
    src = png(tmp_path / "a.png", size=(8, 8))
    assert main(["upscale", str(src), str(tmp_path / "b.png"), "--checkpoint", str(tmp_path / "ckpt"),
                 "--steps", "2"]) == 0
    assert Image.open(tmp_path / "b.png").size == (32, 32)
    assert f"a {method} checkpoint" in capsys.readouterr().err
    assert main(["upscale", str(src), str(tmp_path / "c.png"), "--checkpoint", str(tmp_path / "ckpt"),
                 "--scale", "2"]) == 2 and not (tmp_path / "c.png").exists()
    # `yonos evaluate` scores the same checkpoint through the same adapter, at the steps asked for
    (tmp_path / "hr").mkdir()
    hr = png(tmp_path / "hr" / "x.png", size=(32, 32))
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--method", method, "--checkpoint", str(tmp_path / "ckpt"), "--hr-dir", str(hr.parent),
                 "--steps", "2", "--out", str(out)]) == 0
    scores = json.loads(out.read_text())
    assert scores["method"] == method and scores["method_settings"]["steps"] == 2
    assert set(scores["per_image"]) == {"x"} and np.isfinite(scores["mean"]["psnr"])
