"""Profiles never clobber each other: per-profile output paths, params that survive DVC's rewrite,
YONOS_PROFILE refused under DVC, data changes that re-run their stages, committed real-set results
carried forward (never downgraded) when the data is absent, and, from a fresh clone, the documented
way to run another profile and come back (slow)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from yonos.config import load_params
from yonos.errors import UserError
from yonos.io import save_image

PROFILES = ("embedded", "smoke", "paper")


def dvc_paths(stage: dict, kind: str) -> list[str]:
    return [next(iter(p)) if isinstance(p, dict) else p for p in stage.get(kind) or []]


def test_every_output_path_belongs_to_its_profile(repo_root):
    """Today's bug: report outs were fixed paths (reports/tables, ...), so a smoke run deleted the
    committed embedded report. Every out, metric and plot must live under a ${profile} folder."""
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for kind in ("outs", "metrics", "plots"):
            for path in dvc_paths(stage, kind):
                parts = Path(path).parts
                assert parts[:2] in (("runs", "${profile}"), ("reports", "${profile}")), (name, kind, path)


def test_params_survive_dvc_exp_run_rewrite(repo_root, tmp_path):
    """`dvc exp run -S profile=smoke` rewrites params.yaml with DVC's own YAML dump; every profile
    must load to the same config afterwards (today `mixed_precision: "no"` came back as False)."""
    from dvc.utils.hydra import apply_overrides

    params = tmp_path / "params.yaml"
    shutil.copy(repo_root / "params.yaml", params)
    apply_overrides(str(params), ["profile=smoke"])
    assert params.read_text() != (repo_root / "params.yaml").read_text()  # DVC did rewrite it
    assert yaml.safe_load(params.read_text())["profile"] == "smoke"
    for profile in PROFILES:
        assert load_params(params, profile) == load_params(repo_root / "params.yaml", profile), profile
    assert load_params(params, "embedded")["mixed_precision"] == "no"


def test_nonsense_mixed_precision_is_one_line(repo_root, tmp_path):
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["smoke"]["mixed_precision"] = True
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match="smoke.mixed_precision is True; use one of no, fp16, bf16") as err:
        load_params(tmp_path / "params.yaml", "smoke")
    assert "\n" not in str(err.value)


def test_yonos_profile_is_refused_under_dvc(repo_root, monkeypatch):
    """dvc.yaml takes its paths from params.yaml: a stage that obeyed YONOS_PROFILE under `dvc repro`
    would write outputs DVC does not track, after DVC deleted the ones it does."""
    monkeypatch.setenv("YONOS_PROFILE", "smoke")
    assert load_params(repo_root / "params.yaml")["profile"] == "smoke"  # outside DVC it still works
    monkeypatch.setenv("DVC_STAGE", "prepare_data")
    with pytest.raises(UserError) as err:
        load_params(repo_root / "params.yaml")
    msg = str(err.value)
    assert "\n" not in msg and "dvc exp run -S profile=smoke" in msg and "YONOS_PROFILE=smoke" in msg
    assert load_params(repo_root / "params.yaml", "smoke")["profile"] == "smoke"  # an explicit --profile wins
    monkeypatch.setenv("YONOS_PROFILE", "embedded")  # agreeing with params.yaml is harmless
    assert load_params(repo_root / "params.yaml")["profile"] == "embedded"


def test_stages_depend_on_the_data_they_read(repo_root):
    """Today `yonos download realsr` left `dvc repro` "up to date": evaluate_real did not depend on data/.
    DVC refuses a missing dependency, so each stage depends on scan_data's digest of its data."""
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    assert stages["scan_data"]["always_changed"] is True
    for stage, digest in (("prepare_data", "train"), ("evaluate", "evaluate"), ("evaluate_real", "evaluate_real")):
        assert f"runs/${{profile}}/scan_data/{digest}.json" in stages[stage]["deps"], stage


def test_the_prior_and_stablesr_do_not_retrain_when_yonos_one_step_choices_change(repo_root, smoke_cfg):
    """The prior and StableSR (which samples it frozen) run on SD's schedule whatever YONOS's own model choices
    (zero-terminal SNR, prediction type, weighting, start): their stages list only the model keys they read, so
    flipping a YONOS choice does not retrain them under `dvc repro`."""
    from yonos.baselines.stablesr import make_ddpm_scheduler
    from yonos.stages.train_prior import SCHEDULE, schedule

    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    read = {f"${{profile}}.model.{k}" for k in ("unet", "null_text_tokens", *SCHEDULE)}
    for stage in ("train_prior", "train_stablesr"):
        model_keys = {p for p in stages[stage]["params"] if p.startswith("${profile}.model")}
        assert model_keys == read, stage
    zero_snr = {**smoke_cfg["model"], "rescale_betas_zero_snr": True, "prediction_type": "sample"}
    assert schedule({"model": zero_snr}) == schedule(smoke_cfg)
    assert float(make_ddpm_scheduler(zero_snr).alphas_cumprod[-1]) > 1e-3  # SD's alpha_T^2 ~ 0.0047, not 0


def make_pairs(folder: Path, n: int = 2, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        hr = torch.rand(3, 16, 16, generator=g)
        save_image(hr, folder / "hr" / f"{i}.png")
        save_image(hr[:, ::4, ::4], folder / "lr" / f"{i}.png")


def test_scan_digest_changes_exactly_when_the_data_does(smoke_cfg, tmp_path, monkeypatch):
    from yonos.stages import scan_data

    monkeypatch.delenv("YONOS_DATA_MIRROR", raising=False)
    cfg = dict(smoke_cfg, run_root=str(tmp_path / "runs"), datasets={"root": str(tmp_path / "data"), "mirror": None},
               evaluate_real={"sets": ["realsr"]})

    def digest():
        scan_data.run(cfg)
        return json.loads((tmp_path / "runs" / "smoke" / "scan_data" / "evaluate_real.json").read_text())["realsr"]

    absent = digest()
    assert absent["status"] == "absent" and "yonos download realsr" in absent["reason"]
    make_pairs(tmp_path / "data" / "realsr")
    present = digest()
    assert present["status"] == "present" and present["files"] == 4
    assert digest() == present  # a second scan of the same data: the same digest, nothing re-runs
    os.utime(tmp_path / "data" / "realsr" / "hr" / "0.png", (0, 0))
    assert digest() == present  # file times do not matter
    make_pairs(tmp_path / "data" / "realsr", seed=1)
    assert digest()["sha256"] != present["sha256"]


def previous_results(path: Path) -> None:
    rows = [dict(method="bicubic", variant="bicubic", dataset="realsr", degradation="real", steps=0, metric="psnr",
                 value=27.11, seconds_per_image=0.02, note="", profile="smoke", run_date="2026-11-30",
                 commit="f38f4a5"),
            dict(method="yonos", variant="distilled_x4", dataset="realsr", degradation="real", steps=1,
                 metric="lpips", value=float("nan"), seconds_per_image=1.5, note="LPIPS weights missing",
                 profile="smoke", run_date="2026-11-30", commit="f38f4a5")]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def test_absent_real_data_carries_committed_results_forward(smoke_cfg, tmp_path, monkeypatch):
    """An offline clone must not replace committed RealSR results by n/a: the rows are carried forward
    with their values, date and commit, marked not re-run, and the report says so."""
    from yonos.stages import evaluate_real, report
    from yonos.stages._common import run_stage

    monkeypatch.delenv("YONOS_DATA_MIRROR", raising=False)
    reports = tmp_path / "reports"
    cfg = dict(smoke_cfg, run_root=str(tmp_path / "runs"), datasets={"root": str(tmp_path / "no-data"), "mirror": None},
               evaluate_real={"sets": ["realsr", "drealsr"], "variants": ["bicubic", "distilled_x4"]},
               report={"out_dir": str(reports)})
    previous_results(reports / "results.csv")
    evaluate_real.run(cfg)  # no model is loaded: no set is present
    out = tmp_path / "runs" / "smoke" / "evaluate_real" / "results.csv"
    df = pd.read_csv(out, keep_default_na=True)
    real = df[df.dataset == "realsr"]
    assert len(real) == 2 and real[real.metric == "psnr"].value.item() == pytest.approx(27.11)
    assert real.note.str.startswith("carried: not re-run, data absent; results of 2026-11-30 (commit f38f4a5)").all()
    assert real[real.metric == "lpips"].note.item().endswith("; LPIPS weights missing")
    dre = df[df.dataset == "drealsr"]  # no earlier results: n/a rows naming the fix, with this run's profile
    assert dre.value.isna().all() and dre.note.str.contains("yonos download drealsr").all()
    assert set(df.profile) == {"smoke"}

    shutil.copy(out, reports / "results.csv")  # carried again (the report copies it): nothing changes
    evaluate_real.run(cfg)
    again = pd.read_csv(out)
    pd.testing.assert_frame_equal(again[again.dataset == "realsr"].reset_index(drop=True),
                                  real.reset_index(drop=True))

    ev = tmp_path / "runs" / "smoke" / "evaluate" / "results.csv"  # the report needs the evaluate table too
    ev.parent.mkdir(parents=True)
    pd.DataFrame([dict(method="bicubic", variant="bicubic", dataset="embedded", degradation="bicubic", steps=0,
                       metric="psnr", value=24.0, seconds_per_image=0.01, note="")]).to_csv(ev, index=False)
    run_stage("report", report.run, cfg)
    table = (reports / "tables" / "realsr.md").read_text()
    assert "Not re-run here" in table and "2026-11-30, commit f38f4a5" in table
    assert "Not re-run here" in (reports / "README.md").read_text()
    assert "Not re-run here" not in (reports / "tables" / "embedded.md").read_text()
    assert "profile" in pd.read_csv(reports / "results.csv").columns


def test_evaluate_set_embedded_reads_the_active_profile(repo_root, tmp_path, monkeypatch):
    """`yonos evaluate --set embedded` looked in runs/prepare_data/eval, a folder no profile writes."""
    from yonos.data.eval_sets import resolve_eval_set

    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["profile"] = "smoke"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    make_pairs(tmp_path / "runs" / "smoke" / "prepare_data" / "eval")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("YONOS_PROFILE", raising=False)
    assert len(resolve_eval_set("embedded", {}, scale=4).ids) == 2
    monkeypatch.setenv("YONOS_PROFILE", "embedded")  # runs/embedded has no set: the message names it
    with pytest.raises(UserError, match="runs/embedded/prepare_data/eval"):
        resolve_eval_set("embedded", {}, scale=4)


def test_make_lint_works_from_a_fresh_clone(repo_root):
    """`make lint` on a fresh clone: its recipe runs the ruff that `make setup` installs, so requirements.txt
    (what setup installs) pins ruff, this environment runs that pin, and the folders the recipe names pass."""
    from importlib.metadata import version

    makefile = (repo_root / "Makefile").read_text()
    setup = re.search(r"^\$\(STAMP\):.*\n((?:\t.*\n)+)", makefile, re.M)  # `setup: $(STAMP)` builds the venv
    assert setup and re.search(r"^\t\$\(PIP\) install .*-r requirements\.txt$", setup.group(1), re.M)
    lint = re.search(r"^lint: *setup\n\t(ruff check .*)$", makefile, re.M)
    assert lint, "no `lint: setup` target whose recipe is `ruff check ...`"
    pins = re.findall(r"^ruff==(\S+)$", (repo_root / "requirements.txt").read_text(), re.M)
    assert len(pins) == 1 and version("ruff") == pins[0], (pins, version("ruff"))
    res = subprocess.run([sys.executable, "-m", *lint.group(1).split()], cwd=repo_root, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


# --- slow: the documented way, from a fresh clone -------------------------------------------------
def sh(cmd: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


@pytest.mark.slow
def test_fresh_clone_runs_smoke_and_switches_back_for_free(repo_root, tmp_path):
    """README "Profiles": `dvc exp run -S profile=smoke`, then `git checkout HEAD -- params.yaml dvc.lock`.
    The smoke run writes only runs/smoke and reports/smoke; the embedded stages' DVC status, their
    outputs and the committed reports are exactly as before; YONOS_PROFILE under `dvc repro` is refused."""
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(repo_root), str(clone)], tmp_path, dict(os.environ))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("YONOS_PROFILE", None)
    env.pop("DVC_STAGE", None)
    sentinel = clone / "runs" / "embedded" / "prepare_data" / "eval" / "hr" / "mine.png"
    save_image(torch.full((3, 8, 8), 0.5), sentinel)  # stands in for embedded outputs built earlier
    sentinel_bytes = sentinel.read_bytes()
    status_before = sh(["dvc", "status", "--json"], clone, env).stdout

    refused = sh(["dvc", "repro"], clone, {**env, "YONOS_PROFILE": "smoke"}, check=False)
    assert refused.returncode != 0
    assert "dvc exp run -S profile=smoke" in refused.stdout + refused.stderr
    assert not (clone / "runs" / "smoke").exists() and not (clone / "reports" / "smoke").exists()

    sh(["dvc", "exp", "run", "-S", "profile=smoke"], clone, env)
    assert (clone / "reports" / "smoke" / "README.md").is_file()
    assert (clone / "runs" / "smoke" / "evaluate" / "results.csv").is_file()
    assert pd.read_csv(clone / "runs" / "smoke" / "evaluate" / "results.csv").profile.eq("smoke").all()
    for profile in PROFILES:  # the params.yaml DVC rewrote still loads, identically
        assert load_params(clone / "params.yaml", profile) == load_params(repo_root / "params.yaml", profile)
    assert sh(["git", "status", "--porcelain", "--", "reports", "runs"], clone, env).stdout == ""

    sh(["git", "checkout", "HEAD", "--", "params.yaml", "dvc.lock"], clone, env)
    assert sh(["dvc", "status", "--json"], clone, env).stdout == status_before
    assert sh(["git", "status", "--porcelain"], clone, env).stdout == ""  # committed reports byte-identical
    assert sentinel.read_bytes() == sentinel_bytes
