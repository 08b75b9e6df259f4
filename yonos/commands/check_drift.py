"""`yonos check-drift`: recompute the smoke metrics and compare them with the committed reference.

Exit 0 when every metric is within its tolerance, 1 on drift, 2 on a usage error. Update the
reference after an intended change with one command: `yonos check-drift --update`."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from yonos.errors import UserError
from yonos.metrics import drift
from yonos.metrics.results import find_results


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "check-drift",
        help="compare smoke-profile metrics with reports/reference/smoke_metrics.json",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("results", nargs="?", metavar="RESULTS_CSV",
                   help="results.csv to check; omitted: run the smoke pipeline in a temporary folder")
    p.add_argument("--reference", default=str(drift.REFERENCE), metavar="FILE")
    p.add_argument("--update", action="store_true", help="rewrite the reference with these results")
    p.add_argument("--measure", nargs="+", metavar="RESULTS_CSV",
                   help="results of repeated runs: set tolerances from their spread (keeps the values)")
    p.add_argument("--all", action="store_true", help="list every result, not only the ones out of tolerance")
    p.set_defaults(func=run)


def run_smoke(run_root: Path) -> Path:
    """The same pipeline CI runs: `python -m yonos.stages.run_all --profile smoke`."""
    cmd = [sys.executable, "-m", "yonos.stages.run_all", "--profile", "smoke", "--run-root", str(run_root)]
    print("running:", " ".join(cmd), file=sys.stderr)
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise UserError(f"smoke pipeline failed (exit {proc.returncode}); fix it before checking drift")
    return find_results(run_root / "smoke")


def measure(args) -> int:
    runs = [drift.flatten_results(p) for p in args.measure]
    noise = drift.measure_noise(runs)
    tolerances = drift.tolerances_from_noise(noise)
    ref = drift.read_reference(args.reference)
    basis = {
        "method": f"max |value - median| over {len(runs)} repeated smoke runs, per metric; "
                  f"tolerance = max({drift.NOISE_FACTOR:g} x noise, floor)",
        "runs": [str(p) for p in args.measure],
        "noise": {m: float(f"{n:.3g}") for m, n in sorted(noise.items())},
    }
    drift.write_reference(args.reference, ref["metrics"], profile=ref.get("profile", "smoke"),
                          tolerances={**ref["tolerances"], **tolerances}, basis=basis)
    for m in sorted(noise):
        print(f"{m:<16} noise {noise[m]:.3g}  tolerance {tolerances[m]:.3g}")
    return 0


def check(args, results: Path) -> int:
    now = drift.flatten_results(results)
    ref_path = Path(args.reference)
    if args.update:
        old = drift.read_reference(ref_path) if ref_path.is_file() else {}
        tolerances = old.get("tolerances") or dict(drift.DEFAULT_TOLERANCES)
        drift.write_reference(ref_path, now, profile="smoke", tolerances=tolerances,
                              basis=old.get("tolerance_basis"))
        print(f"wrote {ref_path} ({len(now)} results)")
        return 0
    ref = drift.read_reference(ref_path)
    rows = drift.compare(ref["metrics"], now, ref.get("tolerances", {}))
    print(drift.format_diff(rows, all_rows=args.all))
    if drift.has_drift(rows):
        print(f"metric drift: if the change is intended, run `{drift.UPDATE_COMMAND}` and commit "
              f"{ref_path}", file=sys.stderr)
        return 1
    return 0


def run(args) -> int:
    if args.measure:
        return measure(args)
    if args.results:
        return check(args, Path(args.results))
    with tempfile.TemporaryDirectory(prefix="yonos-drift-") as tmp:
        return check(args, run_smoke(Path(tmp)))
