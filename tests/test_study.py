"""The study's Claim 1 budget sweep (yonos/study.py): which stages an arm retrains, and the gap it reports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from yonos import study
from yonos.config import load_params, run_dir


@pytest.fixture()
def cfg(repo_root, tmp_path):
    return {**load_params(repo_root / "params.yaml", "embedded"), "run_root": str(tmp_path)}


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
    assert study.reused("claim1_teacher_noise") == ("train_teacher", "train_direct")
    assert study.reused("claim1_high_t") == ("train_teacher",)
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
