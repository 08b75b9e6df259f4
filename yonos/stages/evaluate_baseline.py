"""evaluate_baseline: one baseline (SR3, LDM-SR or StableSR) scored like YONOS, in its own stage.

    python -m yonos.stages.evaluate_baseline METHOD [--real] [--profile P] ...
    (dvc.yaml: evaluate_baseline@<method>, and with --real evaluate_real_baseline@<method>)

Each baseline has its own stages, so retraining one re-scores only that one. The metrics, noise seeds and
batch size are `evaluate`'s; each method is swept over its own step counts (params `<method>.eval_steps`;
a set may ask for `steps: default`, the method's default, `<method>.steps`).
- evaluate_baseline@<method>: the sets of `evaluate_baselines.sets`; writes runs/<profile>/evaluate_<method>/.
- evaluate_real_baseline@<method>: RealSR/DRealSR (`evaluate_baselines.real_sets`, with `evaluate_real`'s
  metrics), as evaluate_real does for YONOS: a set whose data is absent has its committed rows carried
  forward, never downgraded; writes runs/<profile>/evaluate_real_<method>/.
Both in the layout of the evaluate stage (results.csv, per_image.csv, images/), which the report reads.
"""

from __future__ import annotations

import sys

from yonos.config import report_dir, run_dir
from yonos.stages._common import stage_main
from yonos.stages.evaluate import evaluate_sets
from yonos.stages.evaluate_real import carried_rows

# The baselines' registered method names (pyproject's yonos.methods) and the row name they get.
VARIANTS = {"sr3": "sr3_x4", "ldmsr": "ldmsr_x4", "stablesr": "stablesr_x4"}


def stage_name(method: str, *, real: bool = False) -> str:
    """The stage's output folder under runs/<profile>/ (and its name for run_all and timing)."""
    return f"evaluate_real_{method}" if real else f"evaluate_{method}"


def baseline_ecfg(cfg: dict, method: str, *, real: bool = False) -> dict:
    """`evaluate`'s settings (+ `evaluate_real`'s for the real sets) with the baseline's sets and its one
    variant (checkpoint, step sweep)."""
    bcfg = cfg["evaluate_baselines"]
    spec = {"method": method, "checkpoint": bcfg["checkpoints"][method],
            "steps": list(cfg[method]["eval_steps"]), "default_steps": int(cfg[method]["steps"])}
    base = {**cfg["evaluate"], **(cfg.get("evaluate_real") or {})} if real else cfg["evaluate"]
    return {**base, "sets": bcfg.get("real_sets", []) if real else bcfg["sets"], "variants": {VARIANTS[method]: spec}}


def run_method(cfg: dict, method: str, *, real: bool = False) -> dict:
    out = run_dir(cfg, stage_name(method, real=real))
    if not real:
        evaluate_sets(cfg, baseline_ecfg(cfg, method), out, missing="error")
        return {}
    previous = report_dir(cfg) / "results.csv"
    evaluate_sets(cfg, baseline_ecfg(cfg, method, real=True), out, missing="na",
                  carry=lambda set_name, variants: carried_rows(previous, set_name, variants))
    return {}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in VARIANTS:
        print(f"usage: python -m yonos.stages.evaluate_baseline {{{','.join(VARIANTS)}}} [--real] [--profile P] ...",
              file=sys.stderr)
        return 2
    method = argv.pop(0)
    real = "--real" in argv
    argv = [a for a in argv if a != "--real"]
    return stage_main(stage_name(method, real=real), lambda cfg: run_method(cfg, method, real=real), argv)


if __name__ == "__main__":
    raise SystemExit(main())
