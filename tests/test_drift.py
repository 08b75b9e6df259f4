"""Drift check on synthetic results: passes on itself, fails when one value is pushed out of
tolerance, empty (n/a) values are never compared but recorded with their reason, `--update` and
`--measure` rewrite the reference, results only ever meet the reference of their own profile, and a
file that is not a results table is a one-line error."""

import argparse
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from yonos.cli import main as yonos
from yonos.commands import check_drift
from yonos.metrics import drift
from yonos.report.paths import find_absolute_paths

REPO = Path(__file__).resolve().parents[1]
NIQE_NOTE = "image 64x64 is smaller than NIQE's 96x96 minimum"


def write_results(path, bump: dict | None = None, *, profile: str | None = "smoke"):
    rows = []
    for variant, steps in (("bicubic", 0), ("distilled_x4", 1), ("distilled_x4", 2)):
        for metric, value in (("psnr", 24.0 + steps), ("ssim", 0.70), ("niqe", math.nan)):
            key = (variant, steps, metric)
            rows.append({"method": "yonos" if steps else "bicubic", "variant": variant, "dataset": "embedded",
                         "degradation": "bicubic", "steps": steps, "metric": metric,
                         "value": value + (bump or {}).get(key, 0.0), "seconds_per_image": 0.01 * (steps + 1),
                         "note": NIQE_NOTE if metric == "niqe" else ""})
    df = pd.DataFrame(rows)
    if profile:
        df.insert(0, "profile", profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


def run(*argv):
    parser = argparse.ArgumentParser()
    check_drift.register(parser.add_subparsers())
    args = parser.parse_args(["check-drift", *map(str, argv)])
    return args.func(args)


def one_line_error(capsys, code) -> str:
    """Exit 2 with exactly one line on stderr, no traceback; returns that line."""
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


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


def test_empty_values_are_recorded_with_their_reason_never_compared(reference, capsys):
    """The smoke profile's NIQE is n/a (64 px crops, NIQE needs 96): the reference lists it under
    not_compared with that reason and holds no empty value; the check skips it and says why."""
    ref = json.loads(reference.read_text())
    assert None not in ref["metrics"].values() and not any(k.endswith("/niqe") for k in ref["metrics"])
    assert ref["not_compared"] == {"niqe": f"n/a in all 3 smoke results: {NIQE_NOTE}"}
    assert run(reference.parent / "base.csv", "--reference", reference) == 0
    out = capsys.readouterr().out
    assert "0 DRIFT, 0 MISSING, 0 new (of 6 results)" in out and "not compared: niqe: n/a in all 3" in out


def test_compare_never_compares_empty_values():
    ref = {"a/psnr": 1.0, "a/lpips": math.nan, "b/psnr": 2.0, "d/psnr": 3.0, "e/niqe": 7.0}
    now = {"a/psnr": 1.0, "a/lpips": 0.3, "c/psnr": 5.0, "d/psnr": math.nan, "e/niqe": math.nan, "f/niqe": math.nan}
    rows = drift.compare(ref, now, {}, {"niqe": "too small"})
    status = {r.key: r.status for r in rows}
    # a/lpips: n/a then, a value now -> new (update the reference), not a comparison with an empty value;
    # d/psnr: a value then, n/a now -> drift; e/niqe, f/niqe: not compared at all.
    assert status == {"a/psnr": "ok", "a/lpips": "new", "b/psnr": "MISSING", "c/psnr": "new", "d/psnr": "DRIFT"}
    assert drift.has_drift(rows)
    assert not drift.has_drift(drift.compare({"x/psnr": 1.0}, {"x/psnr": 1.0, "y/psnr": 2.0}, {}))


def test_committed_smoke_reference_has_no_empty_values_and_no_machine_path():
    path = REPO / "reports" / "reference" / "smoke_metrics.json"
    ref = json.loads(path.read_text())
    assert ref["profile"] == "smoke"
    assert ref["metrics"] and None not in ref["metrics"].values()
    assert "96x96" in ref["not_compared"]["niqe"]
    assert find_absolute_paths(path.read_text()) == []
    assert drift.read_reference(path)["metrics"] == ref["metrics"]


def test_measure_sets_tolerances_from_run_to_run_noise(tmp_path, reference):
    runs = [write_results(tmp_path / f"r{i}.csv", {("distilled_x4", 2, "psnr"): d})
            for i, d in enumerate((0.0, 0.02, -0.03))]
    assert run("--reference", reference, "--measure", *runs) == 0
    ref = json.loads(reference.read_text())
    assert ref["tolerance_basis"]["noise"]["psnr"] == pytest.approx(0.03)
    assert ref["tolerances"]["psnr"] == pytest.approx(max(4 * 0.03, drift.DEFAULT_TOLERANCES["psnr"]))
    assert ref["tolerances"]["ssim"] == drift.DEFAULT_TOLERANCES["ssim"]  # no noise: the floor
    assert ref["metrics"]["embedded/bicubic/yonos/distilled_x4@2/psnr"] == 26.0  # values untouched
    assert "niqe" in ref["not_compared"]                                      # kept
    assert find_absolute_paths(reference.read_text()) == []                   # runs recorded without tmp paths
    assert str(tmp_path) not in reference.read_text()


def test_missing_reference_says_how_to_create_it(tmp_path):
    from yonos.errors import UserError

    with pytest.raises(UserError, match="yonos check-drift --update"):
        run(write_results(tmp_path / "x.csv"), "--reference", tmp_path / "none.json")


# --- profiles ---------------------------------------------------------------------------------


def test_results_of_another_profile_are_refused_in_one_line(tmp_path, reference, capsys):
    """Embedded results against the smoke reference: today 54 'drifts' and advice to run --update
    (which would overwrite the smoke reference). Now: exit 2, one line naming the right reference."""
    before = reference.read_bytes()
    emb = write_results(tmp_path / "runs" / "embedded" / "evaluate" / "results.csv", profile=None)  # from the path
    err = one_line_error(capsys, yonos(["check-drift", str(emb), "--reference", str(reference)]))
    assert "'embedded'" in err and "'smoke'" in err and "reports/reference/embedded_metrics.json" in err
    err = one_line_error(capsys, yonos(["check-drift", str(emb), "--reference", str(reference), "--update"]))
    assert "overwrite" in err and "reports/reference/embedded_metrics.json" in err
    assert reference.read_bytes() == before                                   # never overwritten
    named = tmp_path / "smoke_metrics.json"                                   # a new file named for smoke
    err = one_line_error(capsys, yonos(["check-drift", str(emb), "--reference", str(named), "--update"]))
    assert "named for profile 'smoke'" in err and not named.exists()
    col = write_results(tmp_path / "col.csv", profile="paper")                # from the profile column
    assert "'paper'" in one_line_error(capsys, yonos(["check-drift", str(col), "--reference", str(reference)]))


def test_default_reference_is_the_results_own_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    emb = write_results(tmp_path / "runs" / "embedded" / "evaluate" / "results.csv", profile=None)
    err = one_line_error(capsys, yonos(["check-drift", str(emb)]))
    assert "reports/reference/embedded_metrics.json: no reference" in err and "--update" in err
    assert yonos(["check-drift", str(emb), "--update"]) == 0
    assert json.loads((tmp_path / drift.reference_path("embedded")).read_text())["profile"] == "embedded"
    assert not (tmp_path / drift.REFERENCE).exists()                           # smoke's is untouched
    assert yonos(["check-drift", str(emb)]) == 0


def test_profile_that_cannot_be_told_is_asked_for(tmp_path, reference, capsys):
    anon = write_results(tmp_path / "anon.csv", profile=None)
    assert "--profile" in one_line_error(capsys, yonos(["check-drift", str(anon), "--reference", str(reference)]))
    assert yonos(["check-drift", str(anon), "--reference", str(reference), "--profile", "smoke"]) == 0
    err = one_line_error(capsys, yonos(["check-drift", str(write_results(tmp_path / "s.csv")), "--profile", "paper",
                                        "--reference", str(reference)]))
    assert "profile column says profile smoke" in err


# --- files that are not a results table ------------------------------------------------------


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\xff\xfe\x00\x01", b"",
                                     b"a,b\n1,2\n", b'{"metrics": {}}', b"method,variant,dataset,degradation,steps,"
                                     b"metric,value\nyonos,x,embedded,bicubic,one,psnr,3\n"])
def test_a_file_that_is_not_a_results_table_is_one_line(tmp_path, reference, capsys, content):
    bad = tmp_path / "runs" / "smoke" / "evaluate" / "results.csv"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(content)
    err = one_line_error(capsys, yonos(["check-drift", str(bad), "--reference", str(reference)]))
    assert str(bad) in err


def test_a_folder_or_missing_file_is_one_line(tmp_path, reference, capsys):
    assert "is a folder" in one_line_error(capsys, yonos(["check-drift", str(tmp_path), "--reference", str(reference)]))
    one_line_error(capsys, yonos(["check-drift", str(tmp_path / "none.csv"), "--reference", str(reference)]))
    notjson = tmp_path / "ref.json"
    notjson.write_text("not json")
    csv = write_results(tmp_path / "ok.csv")
    err = one_line_error(capsys, yonos(["check-drift", str(csv), "--reference", str(notjson)]))
    assert "not a drift reference" in err
