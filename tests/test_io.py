"""Image input is exact for every mode and dtype, or refused in one line (yonos.io.to_tensor)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from yonos.errors import UserError
from yonos.io import read_image, to_tensor

DARK = 20  # an 8-bit level: a dark image must stay dark whatever container it comes in


def dark_u8(h=6, w=5):
    return np.full((h, w, 3), DARK, dtype=np.uint8)


@pytest.mark.parametrize("arr", [dark_u8(), dark_u8().astype(np.uint16) * 257, dark_u8().astype(np.float64) / 255,
                                 dark_u8().astype(np.float32) / 255, dark_u8()[..., 0]])
def test_arrays_are_scaled_by_their_dtype(arr):
    x = to_tensor(arr)
    assert x.shape == (3, 6, 5) and x.dtype == torch.float32
    assert torch.allclose(x, torch.full_like(x, DARK / 255), atol=1e-6)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint32])
def test_integer_arrays_without_a_white_level_are_refused(dtype):
    with pytest.raises(UserError, match=np.dtype(dtype).name):
        to_tensor(dark_u8().astype(dtype))


def test_float_outside_unit_range_is_refused():
    with pytest.raises(UserError, match=r"expected \[0, 1\]"):
        to_tensor(dark_u8().astype(np.float64))  # 0..255 floats used to come out white


def test_torch_uint8_is_divided_by_255_and_other_ints_refused():
    t = torch.from_numpy(dark_u8()).permute(2, 0, 1)
    assert torch.allclose(to_tensor(t), torch.full((3, 6, 5), DARK / 255))
    with pytest.raises(UserError, match="int64"):
        to_tensor(t.long())
    with pytest.raises(UserError, match=r"expected \[0, 1\]"):
        to_tensor(t.float())


def test_rgba_array_and_pil_agree():
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (7, 9, 4), dtype=np.uint8)
    assert torch.equal(to_tensor(rgba), to_tensor(Image.fromarray(rgba, "RGBA")))
    assert torch.allclose(to_tensor(rgba), torch.from_numpy(rgba[..., :3] * (rgba[..., 3:] / 255.0) / 255.0)
                          .permute(2, 0, 1).float(), atol=1e-6)


def test_16bit_png_uses_its_bit_depth(tmp_path):
    arr = np.full((4, 5), 1000, dtype=np.uint16)  # max <= 255 would have been taken as 8-bit by a content guess
    arr[0, 0] = 100
    Image.fromarray(arr).save(tmp_path / "a.png")
    x = read_image(tmp_path / "a.png")
    assert abs(float(x[0, 1, 1]) - 1000 / 65535) < 1e-6 and abs(float(x[0, 0, 0]) - 100 / 65535) < 1e-6


def test_32bit_tiff_is_refused_not_guessed(tmp_path):
    Image.fromarray(np.full((4, 5), 200, dtype=np.int32)).save(tmp_path / "a.tif")
    with pytest.raises(UserError, match="mode I") as exc:
        read_image(tmp_path / "a.tif")
    assert str(tmp_path / "a.tif") in str(exc.value)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(np.zeros((4, 10, 3), dtype=np.uint8))  # 10 wide, 4 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert read_image(tmp_path / "r.jpg").shape == (3, 10, 4)


def test_pipeline_upscale_accepts_paths_and_keeps_dark_dark(tiny_pipeline, tmp_path):
    Image.fromarray(dark_u8(8, 8)).save(tmp_path / "d.png")
    out = tiny_pipeline.upscale(str(tmp_path / "d.png"))
    assert isinstance(out, Image.Image) and out.size == (32, 32)
    ref = tiny_pipeline.upscale(dark_u8(8, 8))
    assert np.array_equal(np.asarray(out), ref)
    assert np.array_equal(tiny_pipeline.upscale(dark_u8(8, 8).astype(np.float64) / 255), ref)
    with pytest.raises(UserError, match="int64"):
        tiny_pipeline.upscale(dark_u8(8, 8).astype(np.int64))
