"""evaluate_baseline: one baseline (SR3, LDM-SR or StableSR) scored like YONOS, in its own stage.

    python -m yonos.stages.evaluate_baseline METHOD [--profile P] ...     (dvc.yaml: evaluate_<method>)

Each baseline has its own stage, so retraining one re-scores only that one. The sets, metrics, noise
seeds and batch size are `evaluate`'s; the sets come from `evaluate_baselines.sets`, and each method
is swept over its own step counts (params `<method>.eval_steps`; a set may ask for `steps: default`,
the method's default, `<method>.steps`). Writes runs/<profile>/evaluate_<method>/ in the layout of
the evaluate stage (results.csv, per_image.csv, images/), which the report reads beside it.
"""

from __future__ import annotations

import sys

from yonos.config import run_dir
from yonos.stages._common import stage_main
from yonos.stages.evaluate import evaluate_sets

# The baselines' registered method names (pyproject's yonos.methods) and the row name they get.
VARIANTS = {"sr3": "sr3_x4", "ldmsr": "ldmsr_x4", "stablesr": "stablesr_x4"}


def stage_name(method: str) -> str:
    return f"evaluate_{method}"


def baseline_ecfg(cfg: dict, method: str) -> dict:
    """`evaluate`'s settings with the baseline's sets and its one variant (checkpoint, step sweep)."""
    bcfg = cfg["evaluate_baselines"]
    spec = {"method": method, "checkpoint": bcfg["checkpoints"][method],
            "steps": list(cfg[method]["eval_steps"]), "default_steps": int(cfg[method]["steps"])}
    return {**cfg["evaluate"], "sets": bcfg["sets"], "variants": {VARIANTS[method]: spec}}


def run_method(cfg: dict, method: str) -> dict:
    evaluate_sets(cfg, baseline_ecfg(cfg, method), run_dir(cfg, stage_name(method)), missing="error")
    return {}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in VARIANTS:
        print(f"usage: python -m yonos.stages.evaluate_baseline {{{','.join(VARIANTS)}}} [--profile P] ...",
              file=sys.stderr)
        return 2
    method = argv.pop(0)
    return stage_main(stage_name(method), lambda cfg: run_method(cfg, method), argv)


if __name__ == "__main__":
    raise SystemExit(main())
