"""The baselines' evaluate stages: each method over its own step sweep, its default where a set asks."""

from __future__ import annotations

import pytest

from yonos.stages.evaluate import variant_specs, variant_steps
from yonos.stages.evaluate_baseline import VARIANTS, baseline_ecfg, main


def test_a_variant_sweeps_its_own_steps_unless_the_set_asks_for_the_default():
    spec = {"method": "sr3", "steps": [1, 4, 100], "default_steps": 100}
    assert variant_steps(spec, [1, 2, 4]) == [1, 4, 100]        # the variant's sweep beats the evaluate default
    assert variant_steps(spec, "default") == [100]
    assert variant_steps({"method": "yonos"}, [1, 2]) == [1, 2]  # YONOS: the set's (evaluate.steps) list
    assert variant_steps({"method": "x", "default_steps": 50}, ["default", 1]) == [50, 1]


def test_each_baseline_gets_its_checkpoint_and_steps_from_params(smoke_cfg):
    for method, variant in VARIANTS.items():
        ecfg = baseline_ecfg(smoke_cfg, method)
        (name, spec), = ecfg["variants"].items()
        assert name == variant and spec["method"] == method
        assert spec["checkpoint"] == smoke_cfg["evaluate_baselines"]["checkpoints"][method]
        assert spec["steps"] == smoke_cfg[method]["eval_steps"] and spec["default_steps"] == smoke_cfg[method]["steps"]
        assert ecfg["sets"] == smoke_cfg["evaluate_baselines"]["sets"]
        assert ecfg["seed"] == smoke_cfg["evaluate"]["seed"]        # same noise seeds as YONOS's rows
        assert variant_specs(smoke_cfg, ecfg) == ecfg["variants"]


def test_evaluate_real_still_picks_named_variants_of_evaluate(smoke_cfg):
    names = list(smoke_cfg["evaluate"]["variants"])[:2]
    assert list(variant_specs(smoke_cfg, {"variants": names})) == names
    assert list(variant_specs(smoke_cfg, {})) == list(smoke_cfg["evaluate"]["variants"])


@pytest.mark.parametrize("argv", [[], ["yonos"], ["--profile", "smoke"]])
def test_an_unknown_method_is_refused_with_usage(argv, capsys):
    assert main(argv) == 2
    assert "usage: python -m yonos.stages.evaluate_baseline {sr3,ldmsr,stablesr}" in capsys.readouterr().err


def test_the_budget_arm_gives_ldmsr_five_times_the_equal_budget(repo_root):
    from yonos import study
    from yonos.baselines.budget import sr_steps
    from yonos.config import load_params

    cfg = load_params(repo_root / "params.yaml", "embedded")
    arm = study.arm_config(cfg, "ldmsr_budget5")
    assert study.BUDGET_ARMS["ldmsr_budget5"][0] == "ldmsr"
    assert sr_steps(arm) == 5 * sr_steps(cfg)
    assert arm["evaluate_baselines"] == cfg["evaluate_baselines"]   # scored on the same sets and steps
