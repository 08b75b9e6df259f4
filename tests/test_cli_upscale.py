"""`yonos upscale`: files and folders in, exact sizes out; bad input is one line, exit 2, no output."""

from __future__ import annotations

import subprocess
import sys

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
    assert sizes == {"a.png": (36, 28), "b.png": (20, 24), "c.jpg": (32, 32)}


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
