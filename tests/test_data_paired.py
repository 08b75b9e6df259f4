"""Pairing by file name (hard errors listing names), mode conversion, the HR-only classic variant."""

import numpy as np
import pytest
import torch
from PIL import Image

from yonos.data.eval_sets import resolve_eval_set
from yonos.data.paired import load_hr_folder, load_paired_folder, modcrop
from yonos.errors import UserError


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # never write into the user's cache
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))


def write(path, size, mode="RGB", value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    if mode == "RGBA":
        arr = np.zeros((h, w, 4), np.uint8)
        arr[..., :3], arr[..., 3] = 200, 128
        Image.fromarray(arr, "RGBA").save(path)
    elif mode == "I;16":
        Image.fromarray(np.full((h, w), 65535, np.uint16)).save(path)
    elif mode == "L":
        Image.fromarray(np.full((h, w), value, np.uint8), "L").save(path)
    else:
        Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def make_pairs(root, names, lr_size=(8, 6), scale=4):
    for n in names:
        write(root / "lr" / f"{n}.png", lr_size)
        write(root / "hr" / f"{n}.png", (lr_size[0] * scale, lr_size[1] * scale))


def test_pairs_by_name_not_index(tmp_path):
    make_pairs(tmp_path, ["b", "a", "c"])
    ps = load_paired_folder(tmp_path / "lr", tmp_path / "hr", name="toy")
    assert ps.ids == ["a", "b", "c"] and ps.scale == 4 and len(ps) == 3
    i, lr, hr = ps[1]
    assert i == "b" and lr.shape == (3, 6, 8) and hr.shape == (3, 24, 32)
    assert lr.dtype == torch.float32 and 0 <= lr.min() and hr.max() <= 1


def test_missing_and_extra_names_listed(tmp_path):
    make_pairs(tmp_path, ["a", "b"])
    write(tmp_path / "hr" / "only_hr.png", (32, 24))
    write(tmp_path / "lr" / "only_lr.png", (8, 6))
    with pytest.raises(UserError) as err:
        load_paired_folder(tmp_path / "lr", tmp_path / "hr")
    msg = str(err.value)
    assert "only_hr" in msg and "only_lr" in msg and "\n" not in msg


def test_size_mismatch_listed(tmp_path):
    make_pairs(tmp_path, ["a", "b"])
    write(tmp_path / "hr" / "b.png", (30, 24))
    with pytest.raises(UserError, match=r"b \(8x6 -> 30x24\)"):
        load_paired_folder(tmp_path / "lr", tmp_path / "hr", scale=4)


def test_duplicate_stem_is_an_error(tmp_path):
    make_pairs(tmp_path, ["a"])
    write(tmp_path / "hr" / "a.jpg", (32, 24))
    with pytest.raises(UserError, match="share a name"):
        load_paired_folder(tmp_path / "lr", tmp_path / "hr")


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / "lr").mkdir()
    with pytest.raises(UserError):
        load_paired_folder(tmp_path / "lr", tmp_path / "nope")
    with pytest.raises(UserError, match="no images"):
        load_paired_folder(tmp_path / "lr", tmp_path / "lr")


def test_mode_conversion(tmp_path):
    write(tmp_path / "hr" / "grey.png", (8, 8), "L", 51)
    write(tmp_path / "hr" / "alpha.png", (8, 8), "RGBA")
    write(tmp_path / "hr" / "deep.png", (8, 8), "I;16")
    ps = load_hr_folder(tmp_path / "hr", scale=2)
    items = {i: hr for i, _, hr in ps}
    assert all(t.shape == (3, 8, 8) for t in items.values())
    assert torch.allclose(items["grey"], torch.full((3, 8, 8), 51 / 255))  # replicated
    assert torch.allclose(items["alpha"], torch.full((3, 8, 8), 200 / 255 * 128 / 255), atol=1e-6)  # on black
    assert torch.allclose(items["deep"], torch.ones(3, 8, 8))  # 65535 -> 1.0
    assert ps.grey_ids == frozenset({"grey", "deep"})


def test_classic_modcrop_and_matlab_lr(tmp_path):
    write(tmp_path / "hr" / "odd.png", (33, 27))
    ps = load_hr_folder(tmp_path / "hr", scale=4)
    _, lr, hr = ps[0]
    assert hr.shape == (3, 24, 32) and lr.shape == (3, 6, 8)
    assert torch.equal(lr * 255, (lr * 255).round())  # 8-bit, as MATLAB imresize on uint8
    assert modcrop(torch.zeros(3, 10, 9), 3).shape == (3, 9, 9)
    assert ps.border == 4 and ps.pairs_at(2).border == 2 and ps.pairs_at(2)[0][1].shape == (3, 13, 16)


def test_embedded_set_with_other_scale(tmp_path):
    ev = tmp_path / "run" / "prepare_data" / "eval"  # written by the prepare_data stage
    make_pairs(ev, ["c1", "c2"])
    for n in ("c1", "c2"):
        write(ev / "lr_x2" / f"{n}.png", (16, 12))
    ps = resolve_eval_set("embedded", {"degradation": {"kind": "realesrgan"}}, tmp_path / "run")
    assert ps.scale == 4 and ps.degradation == "realesrgan"
    assert ps.pairs_at(2)[0][1].shape == (3, 12, 16)
    assert ps.pairs_at(3) is None


def test_missing_dataset_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("YONOS_DATA_MIRROR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as err:
        resolve_eval_set("realsr", {}, tmp_path / "run")
    assert "yonos download realsr" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="unknown evaluation set"):
        resolve_eval_set("nope", {}, tmp_path)


def test_div2k_val_generator_is_seeded_and_pairs(tmp_path):
    import json

    from yonos.data.div2k_val import generate

    rng = np.random.default_rng(0)
    for n in ("0801", "0802"):
        (tmp_path / "hr").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(tmp_path / "hr" / f"{n}.png")
    a = generate(tmp_path / "hr", tmp_path / "a", crops=4, crop=32)
    b = generate(tmp_path / "hr", tmp_path / "b", crops=4, crop=32)
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    assert ma["plan"] == mb["plan"] and len(ma["plan"]) == 4
    ps = load_paired_folder(a / "lr", a / "hr")
    assert ps.scale == 4 and len(ps) == 4
    assert torch.equal(ps[0][1], load_paired_folder(b / "lr", b / "hr")[0][1])


def test_spread_keeps_evenly_spaced_images_with_their_own_lr(tmp_path):
    names = [f"Canon_{i:03d}" for i in range(6)] + [f"Nikon_{i:03d}" for i in range(6)]
    make_pairs(tmp_path, names)
    ps = load_paired_folder(tmp_path / "lr", tmp_path / "hr", name="toy")
    sub = ps.spread(4)
    assert sub.ids == ["Canon_000", "Canon_003", "Nikon_000", "Nikon_003"]  # both cameras, not the first four
    assert [p.stem for p in sub.lr_paths] == sub.ids and [p.stem for p in sub.hr_paths] == sub.ids
    assert ps.spread(12) is ps and ps.spread(50) is ps and len(ps) == 12  # the set itself is left whole


@pytest.mark.parametrize("images", [0, -3, 2.5, "ten"])
def test_a_bad_image_count_is_one_line_naming_the_set(images):
    from yonos.stages.evaluate import set_options

    with pytest.raises(UserError, match=r"set realsr: images must be a whole number >= 1") as err:
        set_options({"name": "realsr", "images": images}, {"steps": [1], "metrics": ["psnr"]})
    assert "\n" not in str(err.value)
    assert set_options({"name": "realsr", "images": 10}, {"steps": [1], "metrics": ["psnr"]})[1]["images"] == 10


def test_a_full_set_saves_the_grid_images_its_subset_saves(tmp_path):
    """evaluate_real scores every RealSR image, a baseline 10 of them: both must save the images the grid shows."""
    from yonos.stages.evaluate import grid_ids

    names = [f"Canon_{i:03d}" for i in range(6)] + [f"Nikon_{i:03d}" for i in range(6)]
    make_pairs(tmp_path, names)
    ps = load_paired_folder(tmp_path / "lr", tmp_path / "hr", name="toy")
    cfg = {"evaluate_baselines": {"sets": ["embedded"], "real_sets": [{"name": "toy", "images": 4}]}}
    whole, subset = grid_ids(cfg, "toy", ps, 2), grid_ids(cfg, "toy", ps.spread(4), 2)
    assert subset == {"Canon_000", "Canon_003"} and subset <= whole
    assert whole == {"Canon_000", "Canon_001", "Canon_003"}
    assert grid_ids({}, "toy", ps, 2) == {"Canon_000", "Canon_001"}  # no subset anywhere: the first k, as before
