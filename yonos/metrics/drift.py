"""Metric drift: compare a results table with a committed reference, metric by metric, within
tolerances set from measured run-to-run noise (docs/metrics.md, "Drift check").

Reference file (reports/reference/smoke_metrics.json):
  {"profile": ..., "tolerances": {metric: abs tol}, "tolerance_basis": {...}, "metrics": {key: value}}
with key = dataset/degradation/method/variant@steps/metric. Wall time is never compared.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from yonos.errors import UserError
from yonos.io import write_json
from yonos.metrics.results import load_results, row_label

REFERENCE = Path("reports/reference/smoke_metrics.json")
UPDATE_COMMAND = "yonos check-drift --update"

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


def result_key(row) -> str:
    return f"{row.dataset}/{row.degradation}/{row.method}/{row_label(row.variant, row.steps)}/{row.metric}"


def flatten_results(path: str | os.PathLike) -> dict[str, float]:
    """results.csv -> {key: value} (NaN kept: an n/a metric must stay n/a)."""
    df = load_results(path)
    return {result_key(r): float(r.value) for r in df.itertuples(index=False)}


def metric_of(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def tolerance_for(metric: str, tolerances: dict[str, float]) -> float:
    return tolerances.get(metric, DEFAULT_TOLERANCES.get(metric, FALLBACK_TOLERANCE))


def _within(ref: float, now: float, tol: float) -> bool:
    if math.isnan(ref) or math.isnan(now):
        return math.isnan(ref) and math.isnan(now)  # n/a must stay n/a, and vice versa
    return abs(now - ref) <= tol


def compare(reference: dict[str, float], now: dict[str, float], tolerances: dict[str, float]) -> list[DiffRow]:
    rows = []
    for key in sorted(reference.keys() | now.keys()):
        metric = metric_of(key)
        tol = tolerance_for(metric, tolerances)
        ref, cur = reference.get(key, math.nan), now.get(key, math.nan)
        if key not in now:
            status = "MISSING"
        elif key not in reference:
            status = "new"
        else:
            status = "ok" if _within(ref, cur, tol) else "DRIFT"
        rows.append(DiffRow(key, metric, ref, cur, tol, status))
    return rows


def has_drift(rows: list[DiffRow]) -> bool:
    """Drift or a vanished result fails; a new result only asks for `--update`."""
    return any(r.status in ("DRIFT", "MISSING") for r in rows)


def _fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.4f}"


def format_diff(rows: list[DiffRow], *, all_rows: bool = False) -> str:
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
    return "\n".join(lines)


# --- the reference file -----------------------------------------------------------------------


def read_reference(path: str | os.PathLike = REFERENCE) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no reference metrics; create it with `{UPDATE_COMMAND}`")
    ref = json.loads(path.read_text())
    ref["metrics"] = {k: (math.nan if v is None else float(v)) for k, v in ref["metrics"].items()}
    return ref


def write_reference(path, now: dict[str, float], *, profile: str, tolerances: dict[str, float],
                    basis: dict | None = None) -> None:
    write_json(path, {
        "profile": profile,
        "update_with": UPDATE_COMMAND,
        "tolerances": dict(sorted(tolerances.items())),
        "tolerance_basis": basis or {"method": "defaults in yonos/metrics/drift.py; not yet measured"},
        "metrics": {k: (None if math.isnan(v) else round(v, 6)) for k, v in sorted(now.items())},
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
