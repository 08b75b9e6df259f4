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


@pytest.mark.parametrize("case", ["missing", "corrupt"])
def test_pipeline_upscale_of_a_bad_path_is_one_line_naming_it(tiny_pipeline, tmp_path, case):
    """pipe.upscale(path) of a missing or corrupt file raises a one-line UserError naming the file, not
    PIL's FileNotFoundError / UnidentifiedImageError from deep inside."""
    path = tmp_path / "photo.png"
    if case == "corrupt":
        Image.fromarray(dark_u8(8, 8)).save(path)
        path.write_bytes(path.read_bytes()[:40])  # a truncated download: PNG signature, then nothing usable
    for given in (path, str(path)):
        with pytest.raises(UserError) as exc:
            tiny_pipeline.upscale(given)
        assert str(path) in str(exc.value) and "\n" not in str(exc.value)

def test_big_endian_and_bool_arrays_use_their_declared_range():
    """A big-endian uint16 array (as FITS or raw readers give) is 16-bit, not an unknown dtype."""
    be = (dark_u8().astype(np.uint16) * 257).astype(">u2")
    assert torch.allclose(to_tensor(be), torch.full((3, 6, 5), DARK / 255), atol=1e-6)
    mask = np.zeros((4, 4), dtype=bool)
    mask[1, 2] = True
    x = to_tensor(mask)
    assert float(x[:, 1, 2].min()) == 1.0 and float(x.sum()) == 3.0


def test_torch_uint16_is_divided_by_65535():
    t = torch.from_numpy(dark_u8().astype(np.int32) * 257).permute(2, 0, 1).to(torch.uint16)
    assert torch.allclose(to_tensor(t), torch.full((3, 6, 5), DARK / 255), atol=1e-6)


def test_float_tiff_outside_unit_range_is_refused(tmp_path):
    Image.fromarray(np.full((4, 5), 200.0, dtype=np.float32), "F").save(tmp_path / "f.tif")
    with pytest.raises(UserError, match=r"float32 values span \[200, 200\]") as exc:
        read_image(tmp_path / "f.tif")
    assert str(tmp_path / "f.tif") in str(exc.value)


def rotated_photo(path):
    """A photo stored lying on its side with EXIF orientation 6: viewers turn it 90 degrees clockwise."""
    upright = np.zeros((10, 4, 3), dtype=np.uint8)  # 4 wide, 10 high, the top rows white
    upright[:3] = 255
    stored = np.rot90(upright, k=1)  # rotated counter-clockwise for storage: 10 wide, 4 high
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(path, exif=exif, quality=95)
    return upright


def test_exif_orientation_gives_the_upright_pixels(tmp_path):
    upright = rotated_photo(tmp_path / "r.jpg")
    x = read_image(tmp_path / "r.jpg")
    assert x.shape == (3, 10, 4)
    assert np.abs(x.permute(1, 2, 0).numpy() - upright / 255).mean() < 0.02  # JPEG error only


def test_pipeline_applies_exif_orientation_to_pil_input(tiny_pipeline, tmp_path):
    rotated_photo(tmp_path / "r.jpg")
    with Image.open(tmp_path / "r.jpg") as img:
        assert img.size == (10, 4)
        assert tiny_pipeline.upscale(img).size == (16, 40)  # upright: 4 wide, 10 high, x4


def test_no_clobber_write_keeps_a_file_that_appeared(tmp_path):
    from yonos.io import save_image

    out = tmp_path / "o.png"
    out.write_bytes(b"someone else's file")
    with pytest.raises(UserError, match="exists"):
        save_image(torch.zeros(3, 4, 4), out, overwrite=False)
    assert out.read_bytes() == b"someone else's file" and sorted(tmp_path.iterdir()) == [out]
    save_image(torch.zeros(3, 4, 4), tmp_path / "new.png", overwrite=False)
    assert Image.open(tmp_path / "new.png").size == (4, 4) and len(list(tmp_path.iterdir())) == 2
