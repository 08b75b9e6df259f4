"""Drift check on synthetic results: passes on itself, fails when one value is pushed out of
tolerance, n/a must stay n/a, `--update` and `--measure` rewrite the reference."""

import argparse
import json
import math

import pandas as pd
import pytest

from yonos.commands import check_drift
from yonos.metrics import drift


def write_results(path, bump: dict | None = None):
    rows = []
    for variant, steps in (("bicubic", 0), ("distilled_x4", 1), ("distilled_x4", 2)):
        for metric, value in (("psnr", 24.0 + steps), ("ssim", 0.70), ("lpips", math.nan)):
            key = (variant, steps, metric)
            rows.append({"method": "yonos" if steps else "bicubic", "variant": variant, "dataset": "embedded",
                             "degradation": "bicubic", "steps": steps, "metric": metric,
                             "value": value + (bump or {}).get(key, 0.0), "seconds_per_image": 0.01 * (steps + 1),
                             "note": "weights missing" if metric == "lpips" else ""})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def run(*argv):
    parser = argparse.ArgumentParser()
    check_drift.register(parser.add_subparsers())
    args = parser.parse_args(["check-drift", *map(str, argv)])
    return args.func(args)


@pytest.fixture
def reference(tmp_path):
    ref = tmp_path / "reference.json"
    assert run(write_results(tmp_path / "base.csv"), "--reference", ref, "--update") == 0
    return ref


def test_same_results_pass(tmp_path, reference, capsys):
    assert run(tmp_path / "base.csv", "--reference", reference) == 0
    assert "0 DRIFT" in capsys.readouterr().out


def test_perturbed_result_fails_with_a_readable_diff(tmp_path, reference, capsys):
    tol = drift.DEFAULT_TOLERANCES["psnr"]
    bad = write_results(tmp_path / "bad.csv", {("distilled_x4", 1, "psnr"): 3 * tol})
    assert run(bad, "--reference", reference) == 1
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if "DRIFT" in row and "psnr" in row)
    assert "embedded/bicubic/yonos/distilled_x4@1/psnr" in line
    assert "25.0000" in line and "25.1500" in line and "+0.1500" in line and "0.05" in line
    # within tolerance passes
    ok = write_results(tmp_path / "ok.csv", {("distilled_x4", 1, "psnr"): tol / 2})
    assert run(ok, "--reference", reference) == 0


def test_na_must_stay_na_and_missing_results_fail(tmp_path):
    ref = {"a/psnr": 1.0, "a/lpips": math.nan, "b/psnr": 2.0}
    rows = drift.compare(ref, {"a/psnr": 1.0, "a/lpips": 0.3, "c/psnr": 5.0}, {})
    status = {r.key: r.status for r in rows}
    assert status == {"a/psnr": "ok", "a/lpips": "DRIFT", "b/psnr": "MISSING", "c/psnr": "new"}
    assert drift.has_drift(rows)
    assert not drift.has_drift(drift.compare({"x/psnr": 1.0}, {"x/psnr": 1.0, "y/psnr": 2.0}, {}))


def test_measure_sets_tolerances_from_run_to_run_noise(tmp_path, reference):
    runs = [write_results(tmp_path / f"r{i}.csv", {("distilled_x4", 2, "psnr"): d})
            for i, d in enumerate((0.0, 0.02, -0.03))]
    assert run("--reference", reference, "--measure", *runs) == 0
    ref = json.loads(reference.read_text())
    assert ref["tolerance_basis"]["noise"]["psnr"] == pytest.approx(0.03)
    assert ref["tolerances"]["psnr"] == pytest.approx(max(4 * 0.03, drift.DEFAULT_TOLERANCES["psnr"]))
    assert ref["tolerances"]["ssim"] == drift.DEFAULT_TOLERANCES["ssim"]  # no noise: the floor
    assert ref["metrics"]["embedded/bicubic/yonos/distilled_x4@2/psnr"] == 26.0  # values untouched


def test_missing_reference_says_how_to_create_it(tmp_path):
    from yonos.errors import UserError

    with pytest.raises(UserError, match="yonos check-drift --update"):
        run(write_results(tmp_path / "x.csv"), "--reference", tmp_path / "none.json")
