"""The registry's metadata, weight lookup without the network, and NIQE from the shared parameters."""

import os
import socket
import sys
import time
from pathlib import Path

import pytest
import torch

from yonos.metrics import Scorer, registry
from yonos.metrics.scorer import offline_hub

SHARED = Path(os.environ.get("YONOS_SHARED_DIR", Path(__file__).resolve().parents[1] / ".." / "shared"))
NIQE_DIR = SHARED / "weights" / "pyiqa"
needs_niqe = pytest.mark.skipif(not (NIQE_DIR / "niqe_modelparameters.mat").is_file(),
                                reason=f"NIQE parameters not found in {NIQE_DIR} (set YONOS_SHARED_DIR)")


@pytest.fixture
def empty_homes(tmp_path, monkeypatch):
    """No weight file anywhere: an empty torch hub dir, no mirror."""
    monkeypatch.setattr(registry, "torch_hub_dir", lambda: tmp_path / "hub")
    monkeypatch.setattr(registry, "pyiqa_cache_dir", lambda: tmp_path / "hub" / "pyiqa")
    monkeypatch.setattr(registry, "_hf_cached", lambda repo, name: None)
    monkeypatch.delenv(registry.MIRROR_ENV, raising=False)
    return tmp_path


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_metadata_is_complete_and_matches_pyiqa():
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    assert set(registry.METRICS) == {"psnr", "ssim", "lpips", "dists", "fid", "niqe", "musiq", "maniqa", "clipiqa"}
    for name, spec in registry.METRICS.items():
        cfg = DEFAULT_CONFIGS[spec.pyiqa_name]
        assert spec.higher_better == (not cfg.get("lower_better", False)), name
        assert spec.reference in ("full", "none") and spec.level in ("image", "folder")
        assert spec.arrow in "↑↓" and spec.title and spec.colour_space and spec.input_range
    assert registry.get("psnr").pyiqa_kwargs == {"test_y_channel": True, "color_space": "ycbcr"}
    assert registry.get("ssim").pyiqa_kwargs == {"test_y_channel": True, "color_space": "ycbcr"}
    assert registry.get("lpips").pyiqa_kwargs == {"net": "alex", "version": "0.1"}
    assert registry.get("maniqa").pyiqa_name == "maniqa-pipal"
    assert registry.get("fid").level == "folder"
    assert registry.arrow("latent_psnr") == "↑" and registry.arrow("unknown_metric") == ""


def test_pyiqa_alone_would_download_a_missing_file(tmp_path, monkeypatch):
    """Why we check first: pyiqa's own lookup goes to the network when the file is absent."""
    import pyiqa
    from pyiqa.utils import download_util

    class Attempted(Exception):
        pass

    def attempt(url, *a, **k):
        raise Attempted(url)

    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(download_util, "download_url_to_file", attempt)
    with pytest.raises(Attempted, match="niqe_modelparameters.mat"):
        pyiqa.create_metric("niqe", device="cpu")


def test_missing_weights_are_na_with_reason_fast_and_offline(empty_homes, no_network):
    t0 = time.perf_counter()
    scorer = Scorer(["psnr", "lpips", "niqe", "maniqa", "fid", "clipiqa"])
    assert time.perf_counter() - t0 < 10  # no retries: building is local only
    assert scorer.available["psnr"] is None
    assert scorer.available["lpips"].startswith("weights missing: put LPIPS_v0.1_alex-df73285e.pth in ")
    assert "$TORCH_HOME/hub/pyiqa/" in scorer.available["lpips"]
    assert "alexnet-owt-7be5be79.pth in $TORCH_HOME/hub/checkpoints/" in scorer.available["lpips"]
    assert "niqe_modelparameters.mat" in scorer.available["niqe"]
    assert "timm/vit_base_patch8_224" in scorer.available["maniqa"]
    assert "RN50.pt" in scorer.available["clipiqa"]
    x = torch.rand(2, 3, 32, 32)
    values = scorer.score(x, x)
    assert set(values) == {"psnr", "lpips", "niqe", "maniqa", "clipiqa"}  # never dropped
    assert torch.isnan(values["lpips"]).all() and values["psnr"].shape == (2,)
    assert scorer.reason("lpips") == scorer.available["lpips"]
    assert scorer.score_folders(empty_homes, empty_homes) == pytest.approx({"fid": float("nan")}, nan_ok=True)


def test_file_in_mirror_that_pyiqa_cannot_take_as_a_path_is_reported(empty_homes, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "pt_inception-2015-12-05-6726825d.pth").write_bytes(b"x")
    monkeypatch.setenv(registry.MIRROR_ENV, str(mirror))
    reason = registry.missing_reason(registry.get("fid"))
    assert reason.startswith("weights misplaced") and "$TORCH_HOME/hub/pyiqa/" in reason
    assert "$YONOS_PYIQA_WEIGHTS" in reason and str(mirror) not in reason


def test_reasons_name_places_as_a_user_types_them(tmp_path, monkeypatch):
    """Reasons end up in committed reports: with every weight folder somewhere machine-specific (temp
    folders named by TORCH_HOME, HF_HOME, YONOS_PYIQA_WEIGHTS), no reason contains a machine path."""
    from yonos.report.paths import find_absolute_paths

    for var in ("TORCH_HOME", "HF_HOME", registry.MIRROR_ENV):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setattr(registry, "_hf_cached", lambda repo, name: None)  # a file cached elsewhere must not count
    if "pyiqa.utils.download_util" in sys.modules:  # pyiqa fixed its folder from TORCH_HOME at import
        monkeypatch.setattr(sys.modules["pyiqa.utils.download_util"], "DEFAULT_CACHE_DIR",
                            str(tmp_path / "TORCH_HOME" / "hub" / "pyiqa"))
    (tmp_path / registry.MIRROR_ENV / "pt_inception-2015-12-05-6726825d.pth").write_bytes(b"x")  # misplaced
    reasons = {name: registry.missing_reason(spec) for name, spec in registry.METRICS.items() if spec.weights}
    assert all(reasons.values()), reasons
    for name, reason in reasons.items():
        assert str(tmp_path) not in reason and not find_absolute_paths(reason), (name, reason)
    assert "put LPIPS_v0.1_alex-df73285e.pth in $YONOS_PYIQA_WEIGHTS or $TORCH_HOME/hub/pyiqa/" in reasons["lpips"]
    assert "$TORCH_HOME/hub/clip/" in reasons["clipiqa"] and "$HF_HOME/hub/" in reasons["maniqa"]
    assert "misplaced" in reasons["fid"] and "$YONOS_PYIQA_WEIGHTS" in reasons["fid"]


def test_offline_hub_sets_and_restores(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with offline_hub():
        assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert "HF_HUB_OFFLINE" not in os.environ


@needs_niqe
def test_niqe_runs_offline_from_the_mirror(empty_homes, no_network, monkeypatch):
    monkeypatch.setenv(registry.MIRROR_ENV, str(NIQE_DIR))
    scorer = Scorer(["niqe"])
    assert scorer.available["niqe"] is None
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 128, 128, generator=g), 5, 1, 2)
    values = scorer.score(img, None)["niqe"]
    assert torch.isfinite(values).all() and values.shape == (2,)
    small = scorer.score(img[..., :64, :64], None)["niqe"]
    assert torch.isnan(small).all() and "96x96 minimum" in scorer.reason("niqe")


def test_quantize_and_shape_checks():
    scorer = Scorer(["psnr"])
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="differ in shape"):
        scorer.score(x, torch.rand(1, 3, 16, 8))
    with pytest.raises(ValueError, match="full-reference"):
        scorer.score(x, None)
    # values outside [0, 1] are clamped (pyiqa would assert), then rounded to 8 bits
    assert torch.isfinite(scorer.score(x * 1.2 - 0.1, x)["psnr"]).all()
