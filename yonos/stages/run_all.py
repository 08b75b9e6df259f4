"""Every stage in pipeline order, in one process, without DVC: for tests and the CI drift check.

    python -m yonos.stages.run_all --profile smoke --run-root /tmp/runs [--until report]

The report goes beside the run (RUN_ROOT/<profile>/report/), never into the committed reports/.
`dvc repro` is the way to run the pipeline for real: it skips what is up to date.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from yonos.config import load_params, run_dir
from yonos.errors import UserError
from yonos.stages._common import run_stage
from yonos.stages.evaluate_baseline import VARIANTS as BASELINES
from yonos.stages.evaluate_baseline import run_method, stage_name

ORDER = ("scan_data", "prepare_data", "train_autoencoder", "encode_latents", "train_prior", "train_teacher",
         "distill_student", "train_direct", "finetune_decoder", "train_sr3", "train_ldmsr", "train_stablesr",
         "train_stablesr_cfw", "evaluate", "evaluate_real", *(stage_name(m) for m in BASELINES),
         *(stage_name(m, real=True) for m in BASELINES), "diagnose_onestep", "report")


def stage_run(name: str):
    """The `run(cfg)` of a stage: its module's, or evaluate_baseline's for an evaluate[_real]_<method> stage."""
    for method in BASELINES:
        for real in (False, True):
            if name == stage_name(method, real=real):
                return lambda cfg, method=method, real=real: run_method(cfg, method, real=real)
    return importlib.import_module(f"yonos.stages.{name}").run


def run_all(cfg: dict, until: str = "evaluate") -> None:
    if not (cfg.get("report") or {}).get("out_dir"):
        cfg["report"] = {**(cfg.get("report") or {}), "out_dir": str(run_dir(cfg, "report"))}
    for name in ORDER[: ORDER.index(until) + 1]:
        run_stage(name, stage_run(name), cfg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yonos.stages.run_all", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--run-root", default=None)
    parser.add_argument("--until", default="evaluate", choices=ORDER)
    args = parser.parse_args(argv)
    try:
        cfg = load_params(args.params, args.profile)
        if args.run_root:
            cfg["run_root"] = args.run_root
        run_all(cfg, args.until)
    except UserError as exc:
        print(f"run_all: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
