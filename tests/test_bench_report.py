"""bench/report.py on a small hand-built pytest-benchmark JSON: ratios from the JSON, cost model, extrapolation,
overhead and GEMM fraction, overwrite refusal, one-line errors, no absolute paths in the output.

The numbers below are synthetic inputs (not measurements); every assertion derives its expectation from them.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("bench_report", REPO / "bench" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench(name: str, median: float, info: dict, group: str = "ratios 128->512") -> dict:
    """One entry as pytest-benchmark's --benchmark-json writes it (Metadata.as_dict)."""
    return {"group": group, "name": name, "fullname": f"bench/test_bench_ratios.py::{name}", "params": None,
            "param": None, "extra_info": info,
            "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": 5, "max_time": 1.0,
                        "min_time": 5e-06, "warmup": False},
            "stats": {"min": median, "max": median, "mean": median, "stddev": 0, "rounds": 1, "median": median,
                      "iqr": 0, "q1": median, "q3": median, "iqr_outliers": 0, "stddev_outliers": 0,
                      "outliers": "0;0", "ld15iqr": median, "hd15iqr": median, "ops": 1 / median, "total": median,
                      "iterations": 1}}


YONOS_PARTS = {"bicubic": 0.1, "encoder": 0.5, "unet": 0.25, "decoder": 0.75}
STABLESR_PARTS = {"bicubic": 0.1, "encoder": 0.5, "step": 0.4, "unet": 0.25, "time_aware_encoder": 0.1,
                  "decoder": 0.8, "colour_fix": 0.01}
SR3_PARTS = {"bicubic": 0.1, "unet": 4.0}


@pytest.fixture()
def data() -> dict:
    yonos = {"method": "YONOS-1", "steps": 1, "steps_target": 1, "reference": True, "parts": dict(YONOS_PARTS),
             "cost_model": {"once": ["bicubic", "encoder", "decoder"], "per_step": ["unet"]},
             "predicted_seconds": 1.6, "peak_memory_mb": 1500.0, "weights": "trained checkpoint",
             "flops": 40_000_000_000,
             "gemm": {"float32": {"supported": True, "n": 2048, "seconds": 0.1, "flops_per_s": 1.6e11},
                      "bfloat16": {"supported": False, "reason": "this CPU has no native bf16"}}}
    stablesr = {"method": "StableSR-200", "steps": 200, "steps_target": 200, "parts": dict(STABLESR_PARTS),
                "cost_model": {"once": ["bicubic", "encoder", "decoder", "colour_fix"], "per_step": ["step"],
                               "informative": ["unet", "time_aware_encoder"]},
                "predicted_seconds": 81.41, "peak_memory_mb": 2100.0, "weights": "random weights (shapes only)"}
    sr3 = {"method": "SR3-100", "steps": 10, "steps_target": 100, "parts": dict(SR3_PARTS),
           "cost_model": {"once": ["bicubic"], "per_step": ["unet"]}, "predicted_seconds": 40.1,
           "reduced": "timed at 10 of 100 steps", "peak_memory_mb": 1800.0, "weights": "random weights (shapes only)"}
    return {"machine_info": {"node": "host", "processor": "x86_64", "machine": "x86_64", "python_version": "3.11.9",
                             "system": "Linux", "cpu": {"brand_raw": "Test CPU 9000", "arch": "X86_64", "count": 2},
                             "torch": "9.9.9", "diffusers": "0.0.1", "torch_threads": 2, "device": "cpu",
                             "accelerator": None},
            "commit_info": {"id": "0123abc", "dirty": False, "project": "main", "branch": "main"},
            "benchmarks": [bench("test_yonos_1", 1.7, yonos), bench("test_stablesr_200", 85.0, stablesr),
                           bench("test_sr3_100", 42.0, sr3)],
            "datetime": "2025-01-01T00:00:00+00:00", "version": "5.3.1"}


def predicted(parts: dict, once: list, per_step: list, steps: int) -> float:
    return sum(parts[k] for k in once) + steps * sum(parts[k] for k in per_step)


def table(report, data):
    rows = report.ratio_groups(data, "bench.json")["ratios 128->512"]
    return report.ratio_table(rows, "bench.json").set_index("method")


def test_measured_ratio_is_the_quotient_of_the_json_medians(report, data):
    df = table(report, data)
    assert df.loc["YONOS-1", "measured_ratio"] == pytest.approx(1.0)
    assert df.loc["StableSR-200", "measured_ratio"] == pytest.approx(85.0 / 1.7)
    before = df.loc["StableSR-200"]
    data["benchmarks"][1]["stats"]["median"] = 170.0  # twice as slow: the ratio doubles, the prediction stays
    after = table(report, data).loc["StableSR-200"]
    assert after["measured_ratio"] == pytest.approx(2 * before["measured_ratio"])
    assert after["predicted_ratio"] == pytest.approx(before["predicted_ratio"])
    assert after["measured_over_predicted"] == pytest.approx(2 * before["measured_over_predicted"])
    data["benchmarks"][0]["stats"]["median"] = 3.4  # a slower reference shrinks every other ratio
    assert table(report, data).loc["StableSR-200", "measured_ratio"] == pytest.approx(170.0 / 3.4)
    assert f"| {report.fmt(170.0 / 3.4)} " in report.render(data, "bench.json")


def test_predicted_ratio_comes_from_the_parts(report, data):
    ref = predicted(YONOS_PARTS, ["bicubic", "encoder", "decoder"], ["unet"], 1)
    ss_model = (["bicubic", "encoder", "decoder", "colour_fix"], ["step"])
    df = table(report, data)
    assert df.loc["StableSR-200", "predicted_ratio"] == pytest.approx(predicted(STABLESR_PARTS, *ss_model, 200) / ref)
    # the informative parts (prior U-Net, time-aware encoder alone) are not counted; a stored
    # predicted_seconds is not trusted either: the table recomputes it from the parts
    data["benchmarks"][1]["extra_info"]["parts"]["unet"] = 99.0
    data["benchmarks"][1]["extra_info"]["predicted_seconds"] = 1.0
    assert table(report, data).loc["StableSR-200", "predicted_ratio"] == pytest.approx(
        predicted(STABLESR_PARTS, *ss_model, 200) / ref)
    data["benchmarks"][1]["extra_info"]["parts"]["step"] = 0.8
    moved = {**STABLESR_PARTS, "step": 0.8}
    assert table(report, data).loc["StableSR-200", "predicted_ratio"] == pytest.approx(
        predicted(moved, *ss_model, 200) / ref)


def test_reduced_steps_are_extrapolated_by_the_cost_model(report, data):
    df = table(report, data)
    row = df.loc["SR3-100"]
    ratio = 42.0 * predicted(SR3_PARTS, ["bicubic"], ["unet"], 100) / predicted(SR3_PARTS, ["bicubic"], ["unet"], 10)
    assert row["extrapolated"] and row["target_ratio"] == pytest.approx(ratio / 1.7)
    assert not df.loc["StableSR-200", "extrapolated"]
    assert df.loc["StableSR-200", "target_ratio"] == pytest.approx(df.loc["StableSR-200", "measured_ratio"])
    text = report.render(data, "bench.json")
    assert f"{report.fmt(ratio / 1.7)} (extrapolated from 10 steps)" in text
    assert "timed at 10 of 100 steps" in text


def test_overhead_flops_and_gemm_fraction_come_from_the_json(report, data):
    text = report.render(data, "bench.json")
    overhead = 1.7 / sum(YONOS_PARTS.values())
    assert f"parts timed alone (bicubic + encoder + decoder + unet): {report.fmt(overhead)}" in text
    frac = 40e9 / 1.7 / 1.6e11
    assert f"achieved fraction {frac:.1%}" in text
    assert "bfloat16 GEMM: not measured (this CPU has no native bf16)" in text
    data["benchmarks"][0]["extra_info"]["flops"] = 80_000_000_000
    assert f"achieved fraction {2 * frac:.1%}" in report.render(data, "bench.json")
    assert "Test CPU 9000" in text and "torch: 9.9.9" in text and "accelerator: none" in text


def test_table_has_one_row_per_method_and_lists_the_missing(report, data):
    text = report.render(data, "bench.json")
    rows = [line for line in text.splitlines() if re.match(r"\| (YONOS-1|StableSR-200|SR3-100) +\| \d", line)]
    assert [r.split("|")[1].strip() for r in rows] == ["YONOS-1", "StableSR-200", "SR3-100"]
    assert "YONOS-50" in text.split("Not in this JSON")[1].splitlines()[0]


def run_main(report, capsys, *argv) -> tuple[int, str, str]:
    rc = report.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_refuses_to_overwrite_without_the_flag(report, data, tmp_path, capsys):
    src, out = tmp_path / "bench.json", tmp_path / "bench.md"
    src.write_text(json.dumps(data))
    assert run_main(report, capsys, src, "--out", out)[0] == 0
    first = out.read_text()
    data["benchmarks"][1]["stats"]["median"] = 170.0
    src.write_text(json.dumps(data))
    rc, _, err = run_main(report, capsys, src, "--out", out)
    assert rc == 2 and out.read_text() == first
    assert len(err.strip().splitlines()) == 1 and str(out) in err and "--overwrite" in err
    assert run_main(report, capsys, src, "--out", out, "--overwrite")[0] == 0
    assert out.read_text() != first and f"| {report.fmt(170.0 / 1.7)} " in out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "bench.md"]  # no temporary file left


def test_no_absolute_path_in_the_output(report, data, tmp_path, capsys):
    data["benchmarks"][0]["extra_info"]["weights"] = f"trained checkpoint {tmp_path}/runs/ckpt"
    src, out = tmp_path / "deep" / "bench.json", tmp_path / "bench.md"
    src.parent.mkdir()
    src.write_text(json.dumps(data))
    assert run_main(report, capsys, src.resolve(), "--out", out.resolve())[0] == 0
    text = out.read_text()
    assert str(tmp_path) not in text and str(REPO) not in text
    assert not re.search(r"(?<![\w.])/[\w.-]+/", text), re.search(r"(?<![\w.])/[\w.-]+/", text)
    assert "trained checkpoint ckpt" in text and "`bench.json`" in text


@pytest.mark.parametrize("case", ["missing", "not_json", "no_group", "disabled", "two_references"])
def test_bad_input_is_one_line_naming_the_file(report, data, tmp_path, capsys, case):
    src = tmp_path / "bench.json"
    bad = copy.deepcopy(data)
    if case == "no_group":
        for b in bad["benchmarks"]:
            b["group"] = "upscale 32->128"
    elif case == "disabled":
        bad["benchmarks"][1]["stats"] = None
    elif case == "two_references":
        bad["benchmarks"][1]["extra_info"]["reference"] = True
    if case == "not_json":
        src.write_text("{ not json")
    elif case != "missing":
        src.write_text(json.dumps(bad))
    rc, _, err = run_main(report, capsys, src, "--out", tmp_path / "bench.md")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and str(src) in err, err
    assert not (tmp_path / "bench.md").exists()


def test_fast_path_and_tiling_sections_come_from_the_json(report, data):
    ref = {"flags": "fp32", "reference": True, "psnr_y": 25.0, "default_tolerance_db": 0.05, "weights": "trained"}
    bf16 = {"flags": "bf16", "psnr_y": 24.9, "psnr_delta_db": -0.1, "max_abs_diff": 0.02}
    layout = {"flags": "channels_last", "psnr_y": 25.0, "psnr_delta_db": 0.0, "max_abs_diff": 0.0}
    tiled = {"peak_memory_mb": 2500.0, "goal_mb": 3072, "tiling": {"tile": 128}, "weights": "trained"}
    data["benchmarks"] += [bench("test_fast_path[fp32]", 2.0, ref, group="fast path 128->512"),
                           bench("test_fast_path[bf16]", 0.5, bf16, group="fast path 128->512"),
                           bench("test_fast_path[channels_last]", 2.5, layout, group="fast path 128->512"),
                           bench("test_tiled", 300.0, tiled, group="tiled 512->2048")]
    text = report.render(data, "bench.json")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.split("the flags of yonos/fastpath.py")[1].splitlines()
            if line.startswith("| ") and "---" not in line}
    assert rows["bf16"][:6] == ["0.5", "4", "n/a", "24.9", "-0.1", "0.02"] and rows["bf16"][6] == "no"  # 2.0 / 0.5
    assert rows["channels_last"][1] == "0.8" and rows["channels_last"][6] == "yes"
    assert rows["channels_last"][2] == "10% of fp32"  # 40 GFLOP / 2.5 s over the fp32 GEMM's 160 GFLOP/s
    assert rows["fp32"][4] == "ref"
    tiled_row = next(line for line in text.split("bounded memory")[1].splitlines() if "tiled 512->2048" in line)
    assert [c.strip() for c in tiled_row.split("|")[1:6]] == ["tiled 512->2048", "300", "2500", "3072", "met"]
