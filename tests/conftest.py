"""Shared fixtures: tiny seeded models in the smoke profile's shapes, and the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The developers' shared/ folder (datasets, pyiqa weights); tests needing it skip without it."""
    return Path(os.environ.get("YONOS_SHARED_DIR", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def smoke_cfg() -> dict:
    from yonos.config import load_params

    return load_params(REPO / "params.yaml", "smoke")


def make_tiny_pipeline(cfg: dict, scale: int = 4, seed: int = 0):
    from yonos.pipeline import YonosPipeline

    return YonosPipeline.from_params(cfg, scale, seed=seed)


@pytest.fixture()
def tiny_pipeline(smoke_cfg):
    return make_tiny_pipeline(smoke_cfg)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, smoke_cfg) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny_x4"
    make_tiny_pipeline(smoke_cfg).save_pretrained(path)
    return path
