"""evaluate_real: the embedded models and bicubic on real LR/HR pairs (RealSR, DRealSR: 128 -> 512,
StableSR's crops, PSNR/SSIM on Y without border crop), the sets of the published one-step tables.

The sets come from data/ (`yonos download realsr drealsr --source-dir MIRROR`, or `dvc pull`);
a set whose data is absent becomes n/a rows naming the fix, so a fresh clone's `dvc repro` runs.
Settings: params `evaluate_real` over `evaluate` (variants, metrics, batch size, seed).
Writes runs/<profile>/evaluate_real/{results.csv, per_image.csv, images/}.
"""

from __future__ import annotations

from yonos.config import run_dir
from yonos.stages._common import stage_main
from yonos.stages.evaluate import evaluate_sets

NAME = "evaluate_real"


def run(cfg: dict) -> dict:
    ecfg = {**cfg["evaluate"], **(cfg.get(NAME) or {"sets": []})}
    evaluate_sets(cfg, ecfg, run_dir(cfg, NAME), missing="na")
    return {}


def main() -> int:
    return stage_main(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
