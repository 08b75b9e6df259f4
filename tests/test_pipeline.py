"""YonosPipeline: persistence, per-image determinism, exact output sizes, any input mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from yonos.errors import UserError
from yonos.io import to_uint8
from yonos.pipeline import YonosPipeline
from yonos.sampler import per_image_generators


def test_save_load_round_trip_gives_identical_outputs(tiny_pipeline, tmp_path):
    lr = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    before = tiny_pipeline.upscale_batch(lr, steps=2, generator=per_image_generators([3, 4]))
    tiny_pipeline.save_pretrained(tmp_path / "ck")
    files = sorted(p.relative_to(tmp_path / "ck").as_posix() for p in (tmp_path / "ck").rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]  # nothing pickled
    reloaded = YonosPipeline.from_pretrained(tmp_path / "ck")
    after = reloaded.upscale_batch(lr, steps=2, generator=per_image_generators([3, 4]))
    assert torch.equal(before, after)


def test_same_seed_same_pixels_at_batch_size_1_and_4(tiny_pipeline):
    lr = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    seeds = [11, 12, 13, 14]
    batched = tiny_pipeline.upscale_batch(lr, steps=3, generator=per_image_generators(seeds))
    single = torch.cat([tiny_pipeline.upscale_batch(lr[i: i + 1], steps=3, generator=per_image_generators([s]))
                        for i, s in enumerate(seeds)])
    # The noise is per image; CPU GEMM blocking can still differ with the batch by float32 rounding
    # (measured <= 2e-6), which at most flips a rare 8-bit pixel by one level.
    assert (batched - single).abs().max() < 1e-5
    diff = np.abs(np.stack([to_uint8(x) for x in batched]).astype(int) - np.stack([to_uint8(x) for x in single]))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    other = tiny_pipeline.upscale_batch(lr[:1], steps=3, generator=per_image_generators([99]))
    assert (other - single[:1]).abs().max() > 1e-3  # a different seed does change the pixels


@pytest.mark.parametrize("size", [(7, 9), (16, 16), (5, 33)])
def test_output_is_exactly_scale_times_the_input(tiny_pipeline, size):
    sr = tiny_pipeline.upscale_batch(torch.rand(1, 3, *size), steps=1)
    assert sr.shape == (1, 3, 4 * size[0], 4 * size[1]) and 0 <= sr.min() and sr.max() <= 1


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "I;16", "P"])
def test_upscale_accepts_every_pil_mode(tiny_pipeline, mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (10, 6, 3), dtype=np.uint8))
    img = rgb.convert("L").convert("I;16") if mode == "I;16" else rgb.convert(mode)
    out = tiny_pipeline.upscale(img, seed=1)
    assert out.size == (24, 40) and out.mode == "RGB"


def test_upscale_numpy_16bit(tiny_pipeline):
    arr = np.random.default_rng(0).integers(0, 65535, (8, 8, 3), dtype=np.uint16)
    assert tiny_pipeline.upscale(arr).shape == (32, 32, 3)


def test_from_pretrained_names_the_folder(tmp_path):
    with pytest.raises(UserError, match="not a YONOS checkpoint"):
        YonosPipeline.from_pretrained(tmp_path)


def test_the_suggested_checkpoint_folder_is_one_a_stage_writes(repo_root, tmp_path):
    """The checkpoint error suggests an example folder; it must be one `dvc repro` writes (today's
    runs/embedded/finetune_decoder/checkpoint), not a folder of an older layout that no stage makes."""
    import re
    from pathlib import PurePosixPath

    import yaml

    from yonos.pipeline import checkpoint_info

    with pytest.raises(UserError) as exc:
        checkpoint_info(tmp_path / "nope")
    suggested = PurePosixPath(re.search(r"e\.g\. (runs/\S+)", str(exc.value)).group(1))
    writers = []  # (stage module, the suggestion's path inside that stage's out)
    for stage in yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"].values():
        for entry in stage.get("outs", []):
            out = next(iter(entry)) if isinstance(entry, dict) else entry
            out = PurePosixPath(out.replace("${profile}", "embedded"))
            if suggested.is_relative_to(out) and suggested != out:
                writers.append((stage["cmd"].split("python -m ", 1)[1].split()[0], suggested.relative_to(out)))
    assert len(writers) == 1, (suggested, writers)
    module, sub = writers[0]
    assert f'"{sub}"' in (repo_root / (module.replace(".", "/") + ".py")).read_text(), (module, sub)

def test_check_size_refuses_a_huge_input_before_allocating(tiny_checkpoint, monkeypatch):
    """A 1920x1080 input needed ~35-40 GB untiled; the guard stops it with one line before any tensor exists."""
    from yonos.pipeline import MemorySpec, checkpoint_info, estimate_peak_bytes
    from yonos.tiling import Tiling

    pipe = YonosPipeline.from_pretrained(tiny_checkpoint)
    spec = checkpoint_info(tiny_checkpoint)["memory"]  # read from JSON, no weights
    assert spec == pipe.memory_spec == MemorySpec(scale=4, vae_factor=2, vae_width=32)
    pipe.max_memory = 2**30
    with pytest.raises(UserError, match=r"input 40000x30000: an untiled x4 upscale needs about .* 1\.0 GiB limit"):
        pipe.check_size(30000, 40000, tiling=None)
    with pytest.raises(UserError, match="tiled x4 upscale"):
        pipe.check_size(30000, 40000)  # "auto" tiles, and even the tiled buffers exceed 1 GiB
    assert pipe.check_size(16, 16) < 2**30

    def no_work(*a, **k):
        raise AssertionError("allocated before the size was checked")

    monkeypatch.setattr(pipe.codec, "encode", no_work)
    monkeypatch.setattr(torch.nn.functional, "pad", no_work)
    huge = torch.empty(1, 3, 30000, 40000, device="meta")  # a shape only: nothing is allocated
    with pytest.raises(UserError, match="untiled"):
        pipe.upscale_batch(huge, tiling=None)
    # The documented scale: the embedded x4 model on a 1920x1080 input, untiled, is ~34 GB.
    embedded = MemorySpec(scale=4, vae_factor=4, vae_width=64)
    assert 30e9 < estimate_peak_bytes(embedded, 1080, 1920) < 40e9
    assert estimate_peak_bytes(embedded, 1080, 1920, tiling=Tiling()) < 3e9  # what "auto" runs instead


def test_would_tile_matches_the_pipeline_rule(tiny_pipeline):
    from yonos.pipeline import would_tile
    from yonos.tiling import needs_tiling

    for hw in [(8, 8), (64, 64), (65, 10), (10, 300), (200, 200)]:
        assert would_tile(tiny_pipeline.memory_spec, *hw) == needs_tiling(tiny_pipeline, hw), hw
