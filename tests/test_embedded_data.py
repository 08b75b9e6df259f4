"""The embedded profile's data (issue 8): the classic 291-image training set and held-out B100 crops,
read from data/ or a mirror (installed from pinned URLs otherwise, with a one-line error when offline)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from yonos.errors import UserError


def fake_mirror(root, n_train: int = 3, n_val: int = 4):
    """A mirror laid out like ../shared/datasets: train291/{t91,bsd200}, classic/b100."""
    rng = torch.Generator().manual_seed(0)
    for folder, count, size in (("train291/t91", n_train, (70, 90)), ("train291/bsd200", n_train, (80, 100)),
                                ("classic/b100", n_val, (136, 136))):
        (root / folder).mkdir(parents=True)
        for i in range(count):
            x = (torch.rand(*size, 3, generator=rng) * 255).to(torch.uint8).numpy()
            Image.fromarray(x).save(root / folder / f"img_{i:03d}.png")
    return root


def dataset_cfg(smoke_cfg, tmp_path, mirror) -> dict:
    data = {"source": "dataset", "train_set": "train291", "val_set": "b100", "val_images": 2,
            "eval_hr_size": 64, "eval_crops_per_image": 2, "eval_scale": 4}
    return dict(smoke_cfg, run_root=str(tmp_path / "runs"), data=data,
                datasets={"root": str(tmp_path / "data"), "mirror": str(mirror) if mirror else None})


def test_prepare_data_indexes_train291_and_crops_held_out_b100(smoke_cfg, tmp_path, monkeypatch):
    from yonos.stages import prepare_data
    from yonos.stages._common import load_folder

    monkeypatch.delenv("YONOS_DATA_MIRROR", raising=False)
    cfg = dataset_cfg(smoke_cfg, tmp_path, fake_mirror(tmp_path / "mirror"))
    prepare_data.run(cfg)
    out = tmp_path / "runs" / "smoke" / "prepare_data"
    index = json.loads((out / "train" / "index.json").read_text())
    assert index["files"] == [f"{sub}/img_{i:03d}.png" for sub in ("bsd200", "t91") for i in range(3)]
    assert len(load_folder(out / "train")) == 6  # both sub-folders, streamed from the mirror
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["val_images"] == ["img_000", "img_001"]  # the first val_images by name, nothing else
    assert len(manifest["crops"]) == 4 and not set(manifest["val_images"]) & set(manifest["train_images"]) - {""}
    assert len(list((out / "eval" / "lr").glob("*.png"))) == 4


def test_absent_dataset_offline_fails_fast_with_one_line(smoke_cfg, tmp_path, monkeypatch):
    import time

    from yonos.stages import prepare_data

    monkeypatch.delenv("YONOS_DATA_MIRROR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = dataset_cfg(smoke_cfg, tmp_path, None)
    t0 = time.perf_counter()
    with pytest.raises(UserError) as err:
        prepare_data.run(cfg)
    assert time.perf_counter() - t0 < 10
    msg = str(err.value)
    assert "\n" not in msg and "train291" in msg, msg


def test_scan_data_digests_a_dataset_the_same_from_data_or_mirror(smoke_cfg, tmp_path, monkeypatch):
    from yonos.stages import scan_data

    monkeypatch.delenv("YONOS_DATA_MIRROR", raising=False)
    mirror = fake_mirror(tmp_path / "mirror")
    cfg = dataset_cfg(smoke_cfg, tmp_path, mirror)
    from_mirror = scan_data.scan_train(cfg)
    assert from_mirror["sets"]["train291"]["status"] == "present"
    (tmp_path / "data").mkdir()
    shutil.copytree(mirror / "train291", tmp_path / "data" / "train291")
    shutil.copytree(mirror / "classic" / "b100", tmp_path / "data" / "b100" / "hr")
    assert scan_data.scan_train(dataset_cfg(smoke_cfg, tmp_path, None)) == from_mirror
