"""The embedded profile's pinned autoencoder (issue 8): committed weights whose sha256 and recipe are
checked against params.yaml on every use, refused with one line naming the retrain command otherwise."""

from __future__ import annotations

import json
import shutil

import pytest

from yonos.config import load_params
from yonos.errors import UserError


def test_shipped_autoencoder_matches_its_hash_and_the_params_recipe(repo_root):
    from yonos.checkpoint import digest
    from yonos.pin_autoencoder import PIN, WEIGHTS, recipe, verify_pin

    acfg = load_params(repo_root / "params.yaml", "embedded")["autoencoder"]
    folder = repo_root / acfg["pinned"]
    pin = json.loads((folder / PIN).read_text())
    assert digest(folder / WEIGHTS) == pin["sha256"]
    assert pin["recipe"] == recipe(acfg)
    assert pin["command"].startswith("python -m yonos.pin_autoencoder")
    assert (folder / WEIGHTS).stat().st_size < 25e6
    config = json.loads((folder / "config.json").read_text())
    assert config["latent_channels"] == acfg["latent_channels"]
    assert list(config["block_out_channels"]) == acfg["block_out_channels"]
    verify_pin(folder, acfg, "embedded")


def test_a_changed_pin_or_recipe_is_refused_with_one_line(repo_root, tmp_path):
    from yonos.pin_autoencoder import WEIGHTS, verify_pin

    acfg = load_params(repo_root / "params.yaml", "embedded")["autoencoder"]
    folder = tmp_path / "pin"
    shutil.copytree(repo_root / acfg["pinned"], folder)
    with pytest.raises(UserError, match=r"autoencoder\.steps differs .*python -m yonos.pin_autoencoder"):
        verify_pin(folder, {**acfg, "steps": acfg["steps"] + 1}, "embedded")
    data = bytearray((folder / WEIGHTS).read_bytes())
    data[-1] ^= 1
    (folder / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256 differs"):
        verify_pin(folder, acfg, "embedded")
    shutil.rmtree(folder)
    with pytest.raises(UserError, match="pinned autoencoder missing"):
        verify_pin(folder, acfg, "embedded")
