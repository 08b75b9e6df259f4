"""bench/gpu_bench.py, the H200 benchmark, on CPU: its --tiny path, the deadline, the fallbacks, the shapes.

The tiny run takes the same code path as the GPU run (YonosPipeline.upscale_batch, StableSR-shaped loop,
diffusers' LDMSuperResolutionPipeline, FLOP counting, utilisation, cost models, the JSON) with tiny configs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gb():
    spec = importlib.util.spec_from_file_location("gpu_bench", REPO / "bench" / "gpu_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(gb, *argv: str) -> int:
    with pytest.MonkeyPatch.context() as mp:  # main() sets HF_HUB_OFFLINE; keep it out of other tests
        mp.setenv("HF_HUB_OFFLINE", "1")
        return gb.main(list(argv))


@pytest.fixture(scope="module")
def tiny(gb, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_bench") / "bench.json"
    rc = run(gb, "--tiny", "--out", str(out))
    return rc, out, json.loads(out.read_text())


def test_tiny_run_writes_the_schema_with_positive_numbers(tiny):
    rc, out, rep = tiny
    assert rc == 0
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # atomic write: no temporary left behind
    assert rep["schema"] == "yonos-bench/gpu-bench/1" and rep["complete"] is True
    assert rep["versions"]["torch"] == torch.__version__ and rep["versions"]["diffusers"]
    assert rep["device"]["type"] == "cpu" and rep["config"]["dtype"] == "float32" and rep["config"]["tiny"]
    assert rep["flags"]["compile"] is False and rep["flags"]["channels_last"] is True
    assert rep["goal"]["yonos_one_step_512_ms"] == 11.0
    m = rep["measurements"]
    assert list(m) == ["matmul", "yonos_one_step_b1", "stablesr_4", "ldm_sr_3", "yonos_one_step_b2"]
    assert all(r["status"] == "ok" for r in m.values()), {k: r.get("reason") for k, r in m.items()}
    assert m["matmul"]["flops_per_s"] > 0
    for name in ("yonos_one_step_b1", "yonos_one_step_b2", "stablesr_4", "ldm_sr_3"):
        r = m[name]
        assert r["latency"]["median_ms"] > 0 and r["latency"]["repeats"] >= 1, name
        assert r["flops"] > 0 and r["achieved_tflops"] > 0 and r["fraction_of_measured_matmul"] > 0, name
        assert r["fraction_of_nominal_peak"] is None  # no nominal peak on record for a CPU
        assert r["parts"] and all(p["median_ms"] > 0 for p in r["parts"].values()), name
        assert r["compiled"] is False
    for b in (1, 2):
        r = m[f"yonos_one_step_b{b}"]
        assert set(r["parts"]) == {"bicubic", "encoder", "unet", "decoder"}
        assert r["pipeline_overhead"] > 0 and abs(sum(r["part_share"].values()) - 1) < 1e-3
        # FLOPs of the whole call are those of its parts (bicubic counts none): nothing hidden is computed.
        assert r["flops"] == sum(r["part_flops"].values())
    assert m["yonos_one_step_b2"]["flops"] == 2 * m["yonos_one_step_b1"]["flops"]
    assert m["stablesr_4"]["steps"] == 4 and m["ldm_sr_3"]["steps"] == 3
    assert m["stablesr_4"]["cost_model"]["predicted_ms"] > 0 and m["ldm_sr_3"]["cost_model"]["predicted_ms"] > 0
    assert set(rep["speedups"]) == {"stablesr_4_over_yonos_one_step", "ldm_sr_3_over_yonos_one_step"}
    assert all(s["measured"] > 0 and s["predicted_from_parts"] > 0 for s in rep["speedups"].values())
    assert str(REPO) not in out.read_text()  # no machine paths in the report


def test_deadline_skips_every_section_and_says_why(gb, tmp_path):
    out = tmp_path / "bench.json"
    assert run(gb, "--tiny", "--deadline-s", "0", "--out", str(out)) == 0
    rep = json.loads(out.read_text())
    assert rep["complete"] is True and rep["measurements"]
    for name, r in rep["measurements"].items():
        assert r["status"] == "skipped" and r["reason"].startswith("deadline:"), name
    assert rep["speedups"] == {}


@pytest.mark.parametrize("fail_on_call, note", [(1, "measured eager from here on"), (2, "section rerun eager")])
def test_compile_failure_falls_back_to_eager_and_is_recorded(gb, tmp_path, monkeypatch, fail_on_call, note):
    """A compiled module that raises on its first call, or later (a recompile for a new shape, say)."""

    class Broken(torch.nn.Module):
        def __init__(self, module, **kwargs):
            super().__init__()
            self.inner, self.calls = module, 0

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self._modules["inner"], name)

        def forward(self, *args, **kwargs):
            self.calls += 1
            if self.calls >= fail_on_call:
                raise RuntimeError("inductor exploded")
            return self.inner(*args, **kwargs)

    monkeypatch.setattr(torch, "compile", Broken)
    out = tmp_path / "bench.json"
    assert run(gb, "--tiny", "--compile", "--sections", "yonos", "--batch-sizes", "1", "--out", str(out)) == 0
    rep = json.loads(out.read_text())
    r = rep["measurements"]["yonos_one_step_b1"]
    assert r["status"] == "ok" and r["compiled"] is False and r["latency"]["median_ms"] > 0
    assert r["notes"] == [f"torch.compile failed (RuntimeError: inductor exploded); {note}"]
    assert rep["flags"]["compile_failure"] == "RuntimeError: inductor exploded"


def test_out_of_memory_and_errors_are_recorded_and_the_run_goes_on(gb, tmp_path, monkeypatch):
    def oom(self, rec):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    def broken(self, rec):
        raise ValueError("boom")

    monkeypatch.setattr(gb.Bench, "section_stablesr", oom)
    monkeypatch.setattr(gb.Bench, "section_ldm_sr", broken)
    out = tmp_path / "bench.json"
    assert run(gb, "--tiny", "--sections", "matmul,stablesr,ldm_sr", "--out", str(out)) == 1  # an error fails
    m = json.loads(out.read_text())["measurements"]
    assert m["matmul"]["status"] == "ok"
    assert m["stablesr_4"]["status"] == "oom" and "80.00 GiB" in m["stablesr_4"]["reason"]
    assert m["ldm_sr_3"] == {**m["ldm_sr_3"], "status": "error", "reason": "ValueError: boom"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only host's message")
def test_without_cuda_the_full_run_is_a_one_line_error(gb, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert run(gb, "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no CUDA device") and err.count("\n") == 1 and "--tiny" in err
    assert not out.exists()


def test_bad_arguments_fail_before_any_work(gb, tmp_path, capsys):
    assert run(gb, "--tiny", "--sections", "yonos,sr3", "--out", str(tmp_path / "x.json")) == 2
    assert "unknown ['sr3']" in capsys.readouterr().err
    assert run(gb, "--tiny", "--batch-sizes", "1,0", "--out", str(tmp_path / "x.json")) == 2
    assert run(gb, "--tiny", "--out", str(tmp_path)) == 2  # a folder, not a file
    assert list(tmp_path.iterdir()) == []


def test_sd21_configs_reproduce_the_papers_flop_counts(gb):
    """The GPU run's SD-2.1-base shapes, counted on the meta device (no memory, no compute): PAPER.md §5 gives
    U-Net at a 64^2 latent ~804 GFLOP, VAE encoder at 512^2 ~1117, decoder ~2515."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from yonos.models import widen_conv_in

    with torch.device("meta"):
        unet = widen_conv_in(UNet2DConditionModel(**gb.SD21_BASE_UNET))
        vae = AutoencoderKL(**gb.SD21_BASE_VAE)
        z, img = torch.empty(1, 8, 64, 64), torch.empty(1, 3, 512, 512)
        ctx, t = torch.empty(1, 77, 1024), torch.full((1,), 999)
        unet_flops = gb.count_flops(lambda: unet(z, t, encoder_hidden_states=ctx))
        enc = gb.count_flops(lambda: vae.encode(img).latent_dist.mode())
        dec = gb.count_flops(lambda: vae.decode(z[:, :4]).sample)
    for got, paper in ((unet_flops, 804e9), (enc, 1117e9), (dec, 2515e9)):
        assert got == pytest.approx(paper, rel=0.005)


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="checks the CPU-only host's message")
def test_gpu_sh_without_a_device_exits_nonzero_with_one_line(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh")], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("bench/gpu.sh: no CUDA device") and proc.stderr.count("\n") == 1


def test_ldm_sr_configs_match_the_released_checkpoint_sizes(gb):
    """CompVis/ldm-super-resolution-4x-openimages ships fp32 weights of 455 MB (unet) and 221 MB (vqvae)
    (BASELINES.md §2.2): the configs the GPU run builds must have those parameter counts."""
    from diffusers import UNet2DModel, VQModel

    with torch.device("meta"):
        unet, vq = UNet2DModel(**gb.LDM_SR_UNET), VQModel(**gb.LDM_SR_VQVAE)
    for model, mb in ((unet, 455), (vq, 221)):
        assert sum(p.numel() for p in model.parameters()) * 4 / 1e6 == pytest.approx(mb, abs=0.6)
