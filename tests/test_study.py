"""The study's Claim 1 budget sweep (yonos/study.py): which stages an arm retrains, and the gap it reports."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pandas as pd
import pytest

from yonos import study
from yonos.config import load_params, run_dir


@pytest.fixture()
def cfg(repo_root, tmp_path):
    params = load_params(repo_root / "params.yaml", "embedded")
    # the study files scores beside its report: here, not in the repository's reports/claims/scores
    return {**params, "run_root": str(tmp_path), "report": {**params["report"], "study": str(tmp_path / "claims")}}


def write_scores(path, gap: float, n: int = 12, seed: int = 0):
    """per_image.csv of direct and distilled at 1, 2, 4 steps on the study's sets: distilled = direct + gap
    (+ noise that shrinks with the step count, so the gap's interval is finite)."""
    rng = np.random.default_rng(seed)
    rows = []
    for dataset in study.STUDY_SETS:
        for steps in study.STUDY_STEPS:
            base = rng.normal(25.0, 1.0, n)
            for variant, value in (("direct_x4", base), ("distilled_x4", base + gap + rng.normal(0, 0.05, n))):
                rows += [dict(variant=variant, dataset=dataset, steps=steps, metric="psnr", value=float(v),
                              id=f"img{i}") for i, v in enumerate(value)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def test_a_student_budget_arm_retrains_student_and_direct_on_the_main_teacher(cfg):
    assert study.reused("claim1_s250") == ("train_teacher",)
    assert study.reused("claim1_t1600") == ()  # a new teacher: every U-Net again
    assert study.reused("decoder_control") == ("train_teacher", "distill_student", "train_direct")
    assert study.reused("seed1") == () and study.reused("ldmsr_budget5") == ()
    assert study.reused("claim1_direct_scratch") == ("train_teacher", "distill_student", "finetune_decoder")
    assert study.decoder_only("decoder_control") and not study.decoder_only("claim1_direct_scratch")
    assert study.reused("claim1_same_noise") == ("train_teacher", "train_direct")
    assert study.reused("claim1_uniform_t") == ("train_teacher",)
    arm = study.arm_config(cfg, "claim1_s1000")
    assert (arm["distill"]["steps"], arm["direct"]["steps"], arm["teacher"]["steps"]) == (1000, 1000, 800)
    assert cfg["distill"]["steps"] == 500  # the main run's params are not touched


def test_claim1_budget_judges_distilled_against_direct_within_each_run(cfg, tmp_path):
    write_scores(run_dir(cfg, "evaluate", "per_image.csv"), gap=-0.2)
    write_scores(run_dir(study.arm_config(cfg, "claim1_s1000"), "evaluate", "per_image.csv"), gap=+0.3, seed=1)
    frame = study.claim1_budget(cfg)
    psnr = frame[(frame["metric"] == "psnr")].set_index(["arm", "dataset", "steps"])
    assert set(psnr.index.get_level_values("arm")) == {"main", "claim1_s1000"}  # arms not run are absent
    assert psnr.loc[("main", "b100", 1), "verdict"] == "not reproduced"
    assert psnr.loc[("claim1_s1000", "b100", 1), "verdict"] == "reproduced"
    assert psnr.loc[("claim1_s1000", "embedded", 4), "diff"] == pytest.approx(0.3, abs=0.05)
    assert set(psnr["student_steps"]) == {500, 1000} and set(psnr["teacher_steps"]) == {800}
    assert study.claim1_figure(frame, tmp_path / "gap.png").stat().st_size > 0
    text = study.write_report(cfg, tmp_path / "claims").read_text()
    assert "## Claim 1 against the training budget" in text and "![Claim 1 against budget](claim1_budget.png)" in text
    assert "| claim1_s1000 (teacher 800, student 1000, direct from teacher) | b100 |" in text


def test_a_budget_arm_is_judged_on_the_claims_at_one_seed_a_replicated_arm_only_with_a_replicate(cfg, tmp_path):
    write_scores(run_dir(cfg, "evaluate", "per_image.csv"), gap=-0.2)
    for arm in ("longest", "base_schedule"):
        write_scores(run_dir(study.arm_config(cfg, arm), "evaluate", "per_image.csv"), gap=+0.3, seed=1)
    text = study.write_report(cfg, tmp_path / "claims").read_text()
    assert "## The paper's claims under arm `longest` (teacher.steps=3200" in text
    assert "1 training seed (`longest` has no replicates; intervals over images only)" in text
    assert "claims under arm `base_schedule`" not in text  # one seed of a replicated arm: the ablation row only
    by_arm = pd.read_csv(tmp_path / "claims" / "claims_by_arm.csv")
    assert set(by_arm["arm"]) == {"longest"} and (by_arm["seeds"] == 1).all()


def test_a_replicate_arm_takes_the_stages_it_leaves_alone_from_its_seed_arm(cfg, tmp_path):
    """claim1_s250_seed1 retrains what claim1_s250 does; its teacher is seed1's, trained under the same seed."""
    assert study.seed_source("claim1_s250_seed1") == "seed1" and study.seed_source("seed1") is None
    assert study.seed_source("claim1_s250") is None and study.seed_source("prior_seed2") == "seed2"
    assert study.reused("claim1_s250_seed1") == ("train_teacher",)
    assert study.reused("prior_seed1") == () and study.reused("claim1_t1600_seed2") == ()
    arm = study.arm_config(cfg, "claim1_s250_seed1")
    assert (arm["seed"], arm["distill"]["steps"], arm["direct"]["steps"]) == (1, 250, 250)
    for stage in study.SHARED_STAGES:
        run_dir(cfg, stage).mkdir(parents=True)
    missing = r"seed1/embedded/train_teacher: missing; run it first \(python -m yonos.study run seed1\)"
    with pytest.raises(Exception, match=missing):
        study.link_shared(cfg, arm, "claim1_s250_seed1")
    teacher = run_dir(study.arm_config(cfg, "seed1"), "train_teacher")
    teacher.mkdir(parents=True)
    study.link_shared(cfg, arm, "claim1_s250_seed1")
    assert run_dir(arm, "train_teacher").resolve() == teacher.resolve()
    assert run_dir(arm, "train_autoencoder").resolve() == run_dir(cfg, "train_autoencoder").resolve()


def test_the_chain_judges_each_link_against_bicubic_at_its_own_scale(cfg, tmp_path):
    arm = study.arm_config(cfg, "chain_x8")
    assert arm["distill"]["scales"] == [2, 4, 8] and study.reused("chain_x8") == (
        "train_teacher", "train_direct", "finetune_decoder")
    variants = arm["evaluate"]["variants"]
    assert variants["bicubic_x2"] == {"method": "bicubic", "scale": 2} and variants["bicubic"]["scale"] == 4
    assert variants["distilled_x8"]["checkpoint"] == "distill_student/x8/checkpoint"
    assert [e["name"] for e in arm["evaluate"]["sets"]] == ["b100"]
    assert study.own_shared("chain_x8") == ("encode_latents",) and study.own_shared("claim1_s250") == ()
    for stage in (*study.SHARED_STAGES, *study.TRAIN_STAGES):  # the bank needs x8 LR latents: encoded again
        run_dir(cfg, stage).mkdir(parents=True)
    study.link_shared(cfg, arm, "chain_x8")
    assert run_dir(arm, "train_autoencoder").is_symlink() and not run_dir(arm, "encode_latents").exists()
    rng = np.random.default_rng(0)
    rows = []
    for (model, bicubic, scale), gap in zip(study.CHAIN_LINKS, (-0.5, 0.0, +0.4)):
        base = rng.normal(30 - scale, 1.0, 20)
        for variant, steps, values in ((bicubic, 0, base), (model, 1, base + gap + rng.normal(0, 0.05, 20))):
            rows += [dict(variant=variant, dataset="b100", steps=steps, metric="psnr", value=float(v), id=f"i{i}")
                     for i, v in enumerate(values)]
    path = run_dir(arm, "evaluate", "per_image.csv")
    path.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    assert study.chain_verdicts(cfg).empty  # it links the main run's teacher: no main run, nothing to pair with
    write_scores(run_dir(cfg, "evaluate", "per_image.csv"), gap=0.0)
    chain = study.chain_verdicts(cfg).set_index("a")
    assert chain.loc["teacher_x2", "b"] == "bicubic_x2" and chain.loc["teacher_x2", "verdict"] == "not reproduced"
    assert chain.loc["distilled_x4", "verdict"] == "inconclusive"
    assert chain.loc["distilled_x8", "verdict"] == "reproduced"
    assert chain.loc["distilled_x8", "diff"] == pytest.approx(0.4, abs=0.05)


def test_make_study_runs_every_arm_and_the_seed_arms_first(repo_root):
    """`make study` names every arm of the study (a new arm is not silently left out), each once, and trains
    seed1 and seed2 before the replicates that reuse their teachers."""
    res = subprocess.run(["make", "-n", "study", "PYTHON=python"], cwd=repo_root, capture_output=True, text=True,
                         env={**os.environ, "MAKEFLAGS": ""}, timeout=60)
    line = next(ln for ln in res.stdout.splitlines() if "yonos.study run" in ln)
    arms = line.split("yonos.study run", 1)[1].split()
    assert sorted(arms) == sorted([*study.ARMS, *study.BUDGET_ARMS]) and len(arms) == len(set(arms))
    first_replicate = min(i for i, a in enumerate(arms) if study.seed_source(a))
    assert arms.index("seed1") < first_replicate and arms.index("seed2") < first_replicate


def test_an_arms_wall_time_counts_only_the_stages_it_ran(cfg):
    """Linked stages (the main run's, or a seed arm's) carry the main run's timing.json: not the arm's time."""
    main_teacher = run_dir(cfg, "train_teacher")
    main_teacher.mkdir(parents=True)
    (main_teacher / "timing.json").write_text('{"stage": "train_teacher", "seconds": 900}')
    arm = study.arm_config(cfg, "claim1_s250")
    run_dir(arm, "distill_student").mkdir(parents=True)
    (run_dir(arm, "distill_student") / "timing.json").write_text('{"stage": "distill_student", "seconds": 120}')
    run_dir(arm, "train_teacher").symlink_to(main_teacher, target_is_directory=True)
    assert study.arm_seconds(cfg) == {"claim1_s250": {"distill_student": 120.0}}
    assert "| claim1_s250 | distill_student | 2 |" in study.time_table(study.arm_seconds(cfg))


def test_an_arm_is_judged_only_on_the_models_it_trains_again(cfg):
    """claim1_same_noise retrains the student and the decoder and links the main run's direct model: the
    linked model is the same one, so it gets no verdict against itself."""
    rows = [dict(variant=v, dataset="b100", steps=1, metric="psnr", value=25.0 + i / 10, id=f"img{i}")
            for v in study.COMPARED for i in range(8)]
    for path in (run_dir(cfg, "evaluate", "per_image.csv"),
                 run_dir(study.arm_config(cfg, "claim1_same_noise"), "evaluate", "per_image.csv")):
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(path, index=False)
    judged = set(study.judge_arms(cfg)["b"])
    assert judged == {"distilled_x4", "distilled_x4+decoder"}


def test_every_arm_changes_the_params_it_is_run_on(cfg):
    """An arm whose overrides the params already hold is the main run again under another name (as arm `combined`
    became when the one-step default was switched to its settings)."""
    for arm in study.ARMS:
        assert study.identity(study.arm_config(cfg, arm)) != study.identity(cfg), arm


def test_an_arm_made_under_other_params_is_left_out_and_named(cfg):
    """After params.yaml changes (a default switched), an arm's old runs would be paired with a main run made
    under other settings: the study leaves them out and names them, until they are run again."""
    from yonos.config import save_resolved

    rows = [dict(variant=v, dataset="b100", steps=1, metric="psnr", value=25.0 + i / 10, id=f"img{i}")
            for v in study.COMPARED for i in range(8)]
    arm = study.arm_config(cfg, "ema")
    for path in (run_dir(cfg, "evaluate", "per_image.csv"), run_dir(arm, "evaluate", "per_image.csv")):
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(path, index=False)
    save_resolved(run_dir(arm, "evaluate"), arm, "evaluate")
    assert len(study.seed_frames(cfg, "ema")) == 1 and study.stale_arms(cfg) == []
    resumed = study.apply(cfg, {"train.checkpoint_every": 7})  # how often it saves is not what it trains
    assert study.stale_arms(resumed) == []
    switched = study.apply(cfg, {"model.rescale_betas_zero_snr": not cfg["model"]["rescale_betas_zero_snr"]})
    assert study.stale_arms(switched) == ["ema"] and study.seed_frames(switched, "ema") == []


def test_the_report_outlives_the_run_folders_through_the_filed_scores(cfg, tmp_path):
    """A new machine has no runs/: the report made from the filed scores is the report made from the folders."""
    import shutil

    write_scores(run_dir(cfg, "evaluate", "per_image.csv"), gap=-0.2)
    write_scores(run_dir(study.arm_config(cfg, "claim1_s1000"), "evaluate", "per_image.csv"), gap=+0.3, seed=1)
    write_scores(run_dir(study.arm_config(cfg, "claim1_s250"), "evaluate", "per_image.csv"), gap=+0.1, seed=2)
    before = study.write_report(cfg).read_text()
    budget = (tmp_path / "claims" / "claim1_budget.csv").read_text()
    filed = sorted(p.name for p in (tmp_path / "claims" / "scores").iterdir())
    assert filed == [f"{n}.{e}" for n in ("claim1_s1000", "claim1_s250", "main") for e in ("csv.gz", "json")]
    shutil.rmtree(tmp_path / "embedded")  # the main run's folder
    shutil.rmtree(tmp_path / "study")     # the arms'
    assert study.write_report(cfg).read_text() == before
    assert (tmp_path / "claims" / "claim1_budget.csv").read_text() == budget


def test_an_arm_filed_against_another_main_run_is_left_out_until_run_again(cfg, tmp_path):
    """claim1_s250 links the main run's teacher: filed against one run of main, it is not paired with another
    (another machine's); that run is not filed over the first unless asked."""
    write_scores(run_dir(cfg, "evaluate", "per_image.csv"), gap=-0.2)
    write_scores(run_dir(study.arm_config(cfg, "claim1_s250"), "evaluate", "per_image.csv"), gap=+0.1, seed=2)
    assert study.file_runs(cfg) == ["main", "claim1_s250"]
    assert study.file_runs(cfg) == []  # the same scores again: nothing to do
    write_scores(run_dir(cfg, "evaluate", "per_image.csv"), gap=-0.2, seed=5)  # main run again, elsewhere
    assert study.file_runs(cfg) == [] and study.stale_arms(cfg) == []  # kept: the report uses the filed main
    assert study.file_runs(cfg, [study.MAIN], refile=True) == [study.MAIN]
    assert study.stale_arms(cfg) == []  # its folder is here, linked to this main run: it pairs
    (tmp_path / "study" / "claim1_s250" / "embedded" / "evaluate" / "per_image.csv").unlink()
    assert study.stale_arms(cfg) == ["claim1_s250"] and study.seed_frames(cfg, "claim1_s250") == []
    # after a default is switched the filed main run is not used: a run made under the new params replaces it
    switched = study.apply(cfg, {"model.rescale_betas_zero_snr": not cfg["model"]["rescale_betas_zero_snr"]})
    assert study.file_runs(switched, [study.MAIN]) == [study.MAIN]
    assert study.file_runs(cfg, [study.MAIN]) == [study.MAIN]  # and back


def test_an_arm_made_against_another_main_run_than_the_filed_one_is_left_out(cfg, tmp_path):
    """A new machine: its main run differs from the filed one (kept), and claim1_s250 trained there links that
    machine's teacher. It is filed against the main run it linked, so neither its filed scores nor its folder
    are paired with the filed main run; once that main run is filed over the old one (--refile), it pairs."""
    write_scores(run_dir(cfg, "evaluate", "per_image.csv"), gap=-0.2)
    assert study.file_runs(cfg) == [study.MAIN]
    write_scores(run_dir(cfg, "evaluate", "per_image.csv"), gap=-0.2, seed=5)  # this machine's main run
    write_scores(run_dir(study.arm_config(cfg, "claim1_s250"), "evaluate", "per_image.csv"), gap=+0.1, seed=2)
    assert study.file_runs(cfg) == ["claim1_s250"]  # main: the filed one is kept
    assert study.stale_arms(cfg) == ["claim1_s250"] and study.seed_frames(cfg, "claim1_s250") == []
    assert study.file_runs(cfg, [study.MAIN], refile=True) == [study.MAIN]
    assert study.stale_arms(cfg) == [] and len(study.seed_frames(cfg, "claim1_s250")) == 1


def test_a_budget_arm_outlives_its_run_folder_through_the_filed_results(cfg, tmp_path):
    """ldmsr_budget5's table sets its baseline's results.csv beside the main run's: filed beside the scores, the
    arm's row is the same once the run folders are gone, the main run's then read from the profile's report."""
    import shutil

    from yonos.config import save_resolved
    from yonos.stages.evaluate_baseline import stage_name

    method = study.BUDGET_ARMS["ldmsr_budget5"][0]
    stage, arm = stage_name(method), study.arm_config(cfg, "ldmsr_budget5")

    def results(path, offset, others=()):
        rows = [dict(method=m, variant=f"{m}_x4", dataset=d, steps=s, metric="psnr", value=12 + offset + s / 100)
                for m in (method, *others) for d in ("embedded", "b100") for s in (1, 4, 16)]
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(path, index=False)

    results(run_dir(cfg, stage, "results.csv"), 0.0)
    results(run_dir(arm, stage, "results.csv"), 5.0)
    save_resolved(run_dir(arm, stage), arm, stage)
    assert "| ldmsr_budget5 | 17.01 | 17.04 | 17.16 |" in study.budget_table(cfg)
    assert "| equal budget (main run) | 12.01 | 12.04 | 12.16 |" in study.budget_table(cfg)
    assert study.file_runs(cfg, ["ldmsr_budget5"]) == ["ldmsr_budget5"]
    assert study.file_runs(cfg, ["ldmsr_budget5"]) == []  # the same results: filed already

    report = {**cfg, "report": {**cfg["report"], "out_dir": str(tmp_path / "report")}}
    results(tmp_path / "report" / "results.csv", 0.0, others=["sr3"])  # what `dvc repro` wrote of every method
    shutil.rmtree(tmp_path / "embedded")
    shutil.rmtree(tmp_path / "study")
    table = study.budget_table(report)
    assert "| ldmsr_budget5 | 17.01 | 17.04 | 17.16 |" in table
    assert "| equal budget (main run, reports/embedded/results.csv) | 12.01 | 12.04 | 12.16 |" in table
    assert study.arm_seconds(report) == {}  # no stage timed: the arm's folder had no timing.json
    assert study.budget_table(study.apply(report, {"seed": 1})) == ""  # filed under other params: left out


def test_the_report_is_not_written_again_without_runs_it_shows(cfg, tmp_path):
    """A machine that has filed only part of the study refuses to thin the committed report, naming the runs it
    lacks; --drop writes it without them."""
    import shutil

    write_scores(run_dir(cfg, "evaluate", "per_image.csv"), gap=-0.2)
    for name, seed in (("seed1", 3), ("claim1_s250", 2), ("claim1_s250_seed1", 4)):
        write_scores(run_dir(study.arm_config(cfg, name), "evaluate", "per_image.csv"), gap=+0.1, seed=seed)
    study.write_report(cfg)
    claims_dir = tmp_path / "claims"
    assert study.shown_runs(claims_dir) == {"main", "seed1", "claim1_s250", "claim1_s250_seed1"}
    assert study.missing_runs(cfg, claims_dir) == []
    shutil.rmtree(claims_dir / "scores")
    shutil.rmtree(tmp_path / "study" / "claim1_s250_seed1")  # filed nowhere, and its folder is gone
    before = {p.name: p.read_bytes() for p in claims_dir.iterdir()}
    with pytest.raises(study.UserError, match=r"shows 1 runs .*\(claim1_s250_seed1\).*--drop"):
        study.write_report(cfg)
    assert {p.name: p.read_bytes() for p in claims_dir.iterdir() if p.is_file()} == before  # nothing written
    study.write_report(cfg, drop=True)
    assert study.shown_runs(claims_dir) == {"main", "seed1", "claim1_s250"}
