"""evaluate_real: the embedded models and bicubic on real LR/HR pairs (RealSR, DRealSR: 128 -> 512,
StableSR's crops, PSNR/SSIM on Y without border crop), the sets of the published one-step tables.

The sets come from data/ (`yonos download realsr drealsr --source-dir MIRROR`, or `dvc pull`); under
DVC the stage re-runs when they appear or change (its dependency runs/<profile>/scan_data/evaluate_real.json).
A machine without a set's data never downgrades committed results: the set's rows are carried forward
from the committed report (reports/<profile>/results.csv), keeping their values, run date and commit,
with the note `carried: not re-run, data absent`; only a set with no earlier results becomes n/a rows
naming the command that fetches it. So a fresh clone's `dvc repro` runs offline.
Settings: params `evaluate_real` over `evaluate` (variants, metrics, batch size, seed).
Writes runs/<profile>/evaluate_real/{results.csv, per_image.csv, images/}.
"""

from __future__ import annotations

import math
from pathlib import Path

from yonos.config import report_dir, run_dir
from yonos.metrics.results import load_results
from yonos.stages._common import stage_main
from yonos.stages.evaluate import evaluate_sets

NAME = "evaluate_real"
CARRIED = "carried: not re-run, data absent"


def carried_rows(previous: Path, set_name: str, variants: list[str]) -> list[dict]:
    """The rows of `set_name` in an earlier results.csv, marked as carried; [] if it has none with values.
    A row carried before keeps its note (and its run date and commit), so carrying again changes nothing."""
    if not previous.is_file():
        return []
    df = load_results(previous)
    df = df[(df["dataset"] == set_name) & df["variant"].isin([*variants, "autoencoder"])]
    if df.empty or df["value"].isna().all():  # n/a rows of an earlier run without data are no results
        return []
    rows = []
    for row in df.to_dict("records"):
        row = {k: ("" if isinstance(v, float) and math.isnan(v) and k not in ("value", "seconds_per_image") else v)
               for k, v in row.items()}
        if not row["note"].startswith(CARRIED):
            when = f"results of {row.get('run_date') or 'an earlier run'}"
            when += f" (commit {row['commit']})" if row.get("commit") else ""
            row["note"] = f"{CARRIED}; {when}" + (f"; {row['note']}" if row["note"] else "")
        rows.append(row)
    return rows


def run(cfg: dict) -> dict:
    ecfg = {**cfg["evaluate"], **(cfg.get(NAME) or {"sets": []})}
    previous = report_dir(cfg) / "results.csv"
    evaluate_sets(cfg, ecfg, run_dir(cfg, NAME), missing="na",
                  carry=lambda set_name, variants: carried_rows(previous, set_name, variants))
    return {}


def main() -> int:
    return stage_main(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
