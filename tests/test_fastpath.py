"""The opt-in fast path (yonos/fastpath.py): each flag does what it says, and changes pixels only where it must."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_tiny_pipeline
from PIL import Image

from yonos.cli import main
from yonos.errors import UserError
from yonos.fastpath import FastPath
from yonos.sampler import per_image_generators


def test_flags_parse_and_name_themselves():
    assert FastPath.parse("bf16, channels_last") == FastPath(bf16=True, channels_last=True)
    assert FastPath.parse(None) == FastPath() and FastPath().label() == "fp32"
    assert FastPath(bf16=True, inference_mode=True).label() == "bf16+inference_mode"
    with pytest.raises(UserError, match="unknown flag fp8; choose auto, fp32 or from bf16, channels_last, compile, "
                                        "inference_mode"):
        FastPath.parse("bf16,fp8")
    assert FastPath.parse("fp32") == FastPath()


def test_auto_is_the_gated_flags_with_bf16_only_where_native(monkeypatch):
    import yonos.fastpath as fp

    probe = fp.native_bf16
    for native in (True, False):
        monkeypatch.setattr(fp, "native_bf16", lambda device, native=native: native)
        assert FastPath.parse("auto") == FastPath(bf16=native, channels_last=not native, inference_mode=True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not probe("cpu")  # an AVX2-only CPU: fp32, where bf16 would be emulated and slower
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert probe("cpu") and not probe("meta")


def test_auto_keeps_each_image_the_same_whatever_the_batch(smoke_cfg):
    """The default of `yonos upscale`: per-image determinism holds under it too (bf16 where native)."""
    lr = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    pipe = make_tiny_pipeline(smoke_cfg).set_fast(FastPath.auto("cpu"))
    batch = pipe.upscale_batch(lr, steps=1, generator=per_image_generators([5, 6, 7]))
    for i, seed in enumerate([5, 6, 7]):
        one = pipe.upscale_batch(lr[i:i + 1], steps=1, generator=per_image_generators([seed]))
        torch.testing.assert_close(one[0], batch[i], atol=1e-5, rtol=0)  # as fp32 (tests/test_pipeline.py)


def test_fp32_undoes_the_layout(smoke_cfg):
    pipe = make_tiny_pipeline(smoke_cfg).set_fast(FastPath(channels_last=True)).set_fast(FastPath())
    conv = next(m for m in pipe.unet.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous() and pipe.fast.label() == "fp32"


@pytest.fixture()
def lr() -> torch.Tensor:
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def upscale(pipe, lr):
    return pipe.upscale_batch(lr, steps=1, generator=per_image_generators([0, 1]))


def test_layout_and_inference_mode_keep_the_pixels(smoke_cfg, lr):
    ref = upscale(make_tiny_pipeline(smoke_cfg), lr)
    fast = make_tiny_pipeline(smoke_cfg).set_fast(FastPath(channels_last=True, inference_mode=True))
    conv = next(m for m in fast.unet.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and conv.weight.dim() == 4
    out = upscale(fast, lr)
    assert out.is_inference() and not ref.is_inference()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)  # a layout, not another computation


def test_bf16_runs_the_networks_in_bf16_and_stays_close(smoke_cfg, lr):
    pipe = make_tiny_pipeline(smoke_cfg)
    ref = upscale(pipe, lr)
    seen = []
    hook = pipe.unet.conv_in.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    out = upscale(pipe.set_fast(FastPath(bf16=True)), lr)
    hook.remove()
    assert seen == [torch.bfloat16] and out.dtype == torch.float32  # autocast inside, fp32 out
    assert 0 < (out - ref).abs().max() < 0.1  # another computation, close to the fp32 one
    again = upscale(pipe, lr)
    torch.testing.assert_close(again, out, atol=0, rtol=0)  # and deterministic


def test_cli_refuses_unknown_flags_and_baselines_before_work(tiny_checkpoint, smoke_cfg, tmp_path, capsys):
    from yonos.baselines.sr3 import SR3Pipeline

    src = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src)
    assert main(["upscale", str(src), str(tmp_path / "b.png"), "--checkpoint", str(tiny_checkpoint),
                 "--fast", "turbo"]) == 2
    err = capsys.readouterr().err
    assert "--fast turbo: unknown flag turbo" in err and len(err.strip().splitlines()) == 1
    assert main(["upscale", str(src), str(tmp_path / "b.png"), "--checkpoint", str(tiny_checkpoint),
                 "--fast", "bf16"]) == 0 and (tmp_path / "b.png").is_file()
    SR3Pipeline.from_params(smoke_cfg, 4, seed=0).save_pretrained(tmp_path / "sr3")
    assert main(["upscale", str(src), str(tmp_path / "c.png"), "--checkpoint", str(tmp_path / "sr3"),
                 "--fast", "bf16"]) == 2
    assert "YONOS checkpoints only" in capsys.readouterr().err and not (tmp_path / "c.png").exists()
