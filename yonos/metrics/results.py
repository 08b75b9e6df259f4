"""The tidy results table the evaluate stage writes (runs/<profile>/eval/results.csv): one row per
(method, variant, dataset, degradation, steps, metric). `value` is NaN when a metric is n/a; the
optional `note` column says why. Read by the drift check and by the report stage."""

from __future__ import annotations

import os
from pathlib import Path

from yonos.errors import UserError

KEY_COLUMNS = ("method", "variant", "dataset", "degradation", "steps")
REQUIRED = KEY_COLUMNS + ("metric", "value")
OPTIONAL = ("seconds_per_image", "note")


SUBSET_PREFIX = "subset: "  # a note that starts so: the row is scored on part of its set (the tables mark it)


def subset_note(n: int, total: int) -> str:
    """The note of a row scored on `n` of a set's `total` images (the evaluate set option `images`)."""
    return f"{SUBSET_PREFIX}{n} of {total} images, evenly spaced in name order"


def load_results(path: str | os.PathLike):
    """results.csv -> DataFrame with the required columns (optional ones added empty)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: results file not found; run the evaluate stage (dvc repro) first")
    df = pd.read_csv(path, keep_default_na=True)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing columns {', '.join(missing)}; expected {', '.join(REQUIRED + OPTIONAL)}")
    for col in OPTIONAL:
        if col not in df.columns:
            df[col] = float("nan") if col == "seconds_per_image" else ""
    df["note"] = df["note"].fillna("").astype(str)
    df["steps"] = df["steps"].astype(int)
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df


# Where the evaluate stage writes the table under runs/<profile>/ (its stage folder; "eval" in older notes).
RESULTS_LOCATIONS = ("evaluate/results.csv", "eval/results.csv")


def find_results(profile_dir: str | os.PathLike) -> Path:
    """runs/<profile>/evaluate/results.csv (or eval/); UserError naming both when neither exists."""
    for rel in RESULTS_LOCATIONS:
        if (Path(profile_dir) / rel).is_file():
            return Path(profile_dir) / rel
    raise UserError(f"{profile_dir}: no {' or '.join(RESULTS_LOCATIONS)}; run the evaluate stage first")


def row_label(variant: str, steps: int) -> str:
    """`variant@steps` as used in metrics.json and table rows; steps 0 marks a non-iterative method."""
    return f"{variant}@{int(steps)}"
