"""Metric drift: compare a results table with a committed reference of the same profile, metric by
metric, within tolerances set from measured run-to-run noise (docs/metrics.md, "Drift check").

Reference file (reports/reference/<profile>_metrics.json):
  {"profile": ..., "tolerances": {metric: abs tol}, "tolerance_basis": {...},
   "not_compared": {metric or key: why}, "metrics": {key: value}}
with key = dataset/degradation/method/variant@steps/metric. `metrics` holds real values only: a
result that is n/a when the reference is made (NIQE on the smoke profile's 64 px crops, below its
96 px minimum; a metric whose weights are absent) is listed under `not_compared` with its reason,
never compared as an empty value. Wall time is never compared.

A results table belongs to one profile: its `profile` column, else the folder it sits in
(runs/<profile>/evaluate/results.csv), else the caller must say. Results are only ever compared with,
or written into, the reference of their own profile.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from yonos.config import PROFILES
from yonos.errors import UserError
from yonos.io import write_json
from yonos.metrics.results import RESULTS_LOCATIONS, load_results, row_label
from yonos.report.paths import redact, shown_path

REFERENCE_DIR = Path("reports/reference")
REFERENCE = REFERENCE_DIR / "smoke_metrics.json"   # the one CI checks

# Absolute floors [choice]: above float32 reduction-order noise (1e-5 dB scale), below the smallest
# differences the report discusses (0.1 dB PSNR, 0.005 SSIM/LPIPS). `--measure` raises them where
# the measured run-to-run noise needs more.
DEFAULT_TOLERANCES: dict[str, float] = {
    "psnr": 0.05, "latent_psnr": 0.05, "ae_recon_psnr": 0.05, "ssim": 0.002,
    "lpips": 0.005, "dists": 0.005, "niqe": 0.1, "musiq": 0.5, "maniqa": 0.01, "clipiqa": 0.01,
    "fid": 1.0,
}
FALLBACK_TOLERANCE = 1e-3      # metrics not listed above: tight, so a new metric gets a measured one
NOISE_FACTOR = 4.0             # tolerance = max(floor, NOISE_FACTOR * largest deviation seen)
# Stage folders a results.csv sits in, under runs/<profile>/ (see results.RESULTS_LOCATIONS).
_STAGE_FOLDERS = {Path(rel).parent.name for rel in RESULTS_LOCATIONS} | {"evaluate_real"}


def reference_path(profile: str) -> Path:
    return REFERENCE_DIR / f"{profile}_metrics.json"


def update_command(profile: str) -> str:
    """How to (re)write the reference of `profile`: smoke reruns its own pipeline, others take a table."""
    if profile == "smoke":
        return "yonos check-drift --update"
    return f"yonos check-drift runs/{profile}/evaluate/results.csv --update"


UPDATE_COMMAND = update_command("smoke")


@dataclass(frozen=True)
class DiffRow:
    key: str
    metric: str
    reference: float
    now: float
    tolerance: float
    status: str                # ok | DRIFT | MISSING (in reference, not now) | new (now only)

    @property
    def delta(self) -> float:
        return self.now - self.reference


@dataclass
class Results:
    """One results table, flattened: {key: value} (NaN where n/a) and the n/a rows' notes."""
    path: Path
    profile: str
    values: dict[str, float]
    notes: dict[str, str] = field(default_factory=dict)


def result_key(row) -> str:
    return f"{row.dataset}/{row.degradation}/{row.method}/{row_label(row.variant, row.steps)}/{row.metric}"


def _load_table(path: Path):
    """load_results, with anything that is not a readable results table as a one-line UserError."""
    import pandas as pd

    if path.is_dir():
        raise UserError(f"{path}: is a folder; give its results table, e.g. {path}/evaluate/results.csv")
    try:
        return load_results(path)
    except UserError:
        raise
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError,
            TypeError) as exc:
        detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable results table ({detail}); give the results.csv the evaluate "
                        f"stage writes, e.g. runs/smoke/evaluate/results.csv") from None


def profile_of(path: Path, df, given: str | None = None) -> str:
    """The profile a results table belongs to: its `profile` column, else runs/<profile>/<stage>/ in its
    path, else `given`; a UserError when they disagree or none says."""
    found, source = None, ""
    if "profile" in df.columns:
        names = sorted({str(p) for p in df["profile"].dropna().unique() if str(p)})
        if len(names) > 1:
            raise UserError(f"{path}: rows of several profiles ({', '.join(names)}); check one profile's table")
        if names:
            found, source = names[0], "its profile column"
    if found is None:
        parent = Path(os.path.abspath(path)).parent
        if parent.name in _STAGE_FOLDERS and parent.parent.name in PROFILES:
            found, source = parent.parent.name, f"its folder ({parent.parent.name}/{parent.name}/)"
    if given and found and given != found:
        raise UserError(f"{path}: --profile {given} given, but {source} says profile {found}")
    if given or found:
        return given or found
    raise UserError(f"{path}: cannot tell which profile these results are from (no profile column, not under "
                    f"runs/<profile>/evaluate/); pass --profile {'|'.join(PROFILES)}")


def read_results(path: str | os.PathLike, profile: str | None = None) -> Results:
    """results.csv -> Results; every problem with the file is a one-line UserError."""
    path = Path(path)
    df = _load_table(path)
    values, notes = {}, {}
    for r in df.itertuples(index=False):
        key = result_key(r)
        values[key] = float(r.value)
        if math.isnan(values[key]) and r.note:
            notes[key] = redact(str(r.note))
    return Results(path, profile_of(path, df, profile), values, notes)


def flatten_results(path: str | os.PathLike) -> dict[str, float]:
    """results.csv -> {key: value} (NaN where n/a)."""
    df = _load_table(Path(path))
    return {result_key(r): float(r.value) for r in df.itertuples(index=False)}


def metric_of(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def tolerance_for(metric: str, tolerances: dict[str, float]) -> float:
    return tolerances.get(metric, DEFAULT_TOLERANCES.get(metric, FALLBACK_TOLERANCE))


def _is_na(x: float | None) -> bool:
    return x is None or math.isnan(x)


def compare(reference: dict[str, float], now: dict[str, float], tolerances: dict[str, float],
            not_compared: dict[str, str] | None = None) -> list[DiffRow]:
    """One row per result key. Empty values are never compared: a key with no value in the reference
    (or listed in `not_compared`, by key or by metric) is skipped while it is n/a now too, and `new`
    (asks for --update) once it has a value; a reference value that is n/a now is DRIFT."""
    skip = not_compared or {}
    rows = []
    for key in sorted(reference.keys() | now.keys()):
        metric = metric_of(key)
        tol = tolerance_for(metric, tolerances)
        ref, cur = reference.get(key, math.nan), now.get(key, math.nan)
        ref_empty = _is_na(ref) or key in skip or metric in skip
        if ref_empty and key in now and _is_na(cur):
            continue  # n/a then, n/a now: nothing to compare
        if key not in now:
            status = "MISSING"
        elif ref_empty:
            status = "new"
        elif _is_na(cur):
            status = "DRIFT"
        else:
            status = "ok" if abs(cur - ref) <= tol else "DRIFT"
        rows.append(DiffRow(key, metric, math.nan if ref_empty else ref, cur, tol, status))
    return rows


def has_drift(rows: list[DiffRow]) -> bool:
    """Drift or a vanished result fails; a new result only asks for `--update`."""
    return any(r.status in ("DRIFT", "MISSING") for r in rows)


def _fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.4f}"


def format_diff(rows: list[DiffRow], *, all_rows: bool = False, not_compared: dict[str, str] | None = None) -> str:
    shown = rows if all_rows else [r for r in rows if r.status != "ok"]
    width = max([len(r.key) for r in shown] + [6])
    head = f"{'result':<{width}}  {'reference':>10}  {'now':>10}  {'delta':>9}  {'tolerance':>9}  status"
    lines = [head, "-" * len(head)]
    for r in shown:
        delta = "" if math.isnan(r.delta) else f"{r.delta:+.4f}"
        lines.append(f"{r.key:<{width}}  {_fmt(r.reference):>10}  {_fmt(r.now):>10}  {delta:>9}  "
                     f"{r.tolerance:>9.4g}  {r.status}")
    counts = {s: sum(r.status == s for r in rows) for s in ("ok", "DRIFT", "MISSING", "new")}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()) + f" (of {len(rows)} results)")
    for what, why in sorted((not_compared or {}).items()):
        lines.append(f"not compared: {what}: {why}")
    return "\n".join(lines)


# --- the reference file -----------------------------------------------------------------------


def read_reference(path: str | os.PathLike, profile: str | None = None) -> dict:
    """The reference at `path`; `profile` (of the results at hand) only words the error when it is absent."""
    path = Path(path)
    if not path.is_file():
        fix = update_command(profile) if profile else UPDATE_COMMAND
        if profile and path != reference_path(profile):
            fix += f" --reference {path}"
        raise UserError(f"{path}: no reference metrics; create it with `{fix}`")
    try:
        ref = json.loads(path.read_text())
        metrics = ref["metrics"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a drift reference ({type(exc).__name__}); "
                        f"recreate it with `{UPDATE_COMMAND}`") from None
    if not ref.get("profile"):
        raise UserError(f"{path}: the reference records no profile; recreate it with `{UPDATE_COMMAND}`")
    # References written before `not_compared` existed kept n/a values as null: skip them the same way.
    skip = dict(ref.get("not_compared") or {})
    skip.update({k: "n/a in the reference (no reason recorded)" for k, v in metrics.items() if v is None})
    ref["not_compared"] = skip
    ref["metrics"] = {k: float(v) for k, v in metrics.items() if v is not None}
    return ref


def not_compared_from(results: Results) -> dict[str, str]:
    """Why each n/a result is left out: one entry per metric that is n/a everywhere, else per key."""
    na = [k for k, v in results.values.items() if math.isnan(v)]
    by_metric: dict[str, list[str]] = {}
    for key in results.values:
        by_metric.setdefault(metric_of(key), []).append(key)
    out = {}
    for metric, keys in sorted(by_metric.items()):
        empty = [k for k in keys if k in na]
        if not empty:
            continue
        reasons = sorted({results.notes.get(k, "no reason recorded") for k in empty})
        if len(empty) == len(keys):
            out[metric] = f"n/a in all {len(keys)} {results.profile} results: {'; '.join(reasons)}"
        else:
            out.update({k: f"n/a: {results.notes.get(k, 'no reason recorded')}" for k in empty})
    return out


def write_reference(path, results: Results, *, tolerances: dict[str, float], basis: dict | None = None,
                    not_compared: dict[str, str] | None = None) -> None:
    """Write atomically; `not_compared` defaults to the n/a results with their reasons."""
    write_json(path, {
        "profile": results.profile,
        "update_with": update_command(results.profile),
        "tolerances": dict(sorted(tolerances.items())),
        "tolerance_basis": basis or {"method": "defaults in yonos/metrics/drift.py; not yet measured"},
        "not_compared": dict(sorted((not_compared_from(results) if not_compared is None else not_compared).items())),
        "metrics": {k: round(v, 6) for k, v in sorted(results.values.items()) if not math.isnan(v)},
    })


# --- measuring run-to-run noise ---------------------------------------------------------------


def measure_noise(runs: list[dict[str, float]]) -> dict[str, float]:
    """Largest |value - median over runs| per metric, over every result key (NaNs ignored)."""
    if len(runs) < 2:
        raise UserError("--measure needs at least two results files from repeated runs")
    noise: dict[str, float] = {}
    for key in set.intersection(*(set(r) for r in runs)):
        vals = [r[key] for r in runs if not math.isnan(r[key])]
        if len(vals) < 2:
            continue
        med = statistics.median(vals)
        metric = metric_of(key)
        noise[metric] = max(noise.get(metric, 0.0), max(abs(v - med) for v in vals))
    return noise


def tolerances_from_noise(noise: dict[str, float]) -> dict[str, float]:
    """NOISE_FACTOR x the measured noise, never below the default floor for that metric."""
    return {m: max(NOISE_FACTOR * n, DEFAULT_TOLERANCES.get(m, FALLBACK_TOLERANCE)) for m, n in noise.items()}


def shown_runs(paths) -> list[str]:
    """The --measure inputs as recorded in the reference: never a machine's absolute path."""
    return [shown_path(p) for p in paths]
