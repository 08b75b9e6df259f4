"""`yonos check-drift`: compare a profile's metrics with that profile's committed reference.

Without RESULTS_CSV it reruns the smoke pipeline in a temporary folder and checks it against
reports/reference/smoke_metrics.json (what CI does). Results of another profile are checked against
reports/reference/<profile>_metrics.json, never against another profile's reference.
Exit 0 when every metric is within its tolerance, 1 on drift, 2 on a usage error. Update a reference
after an intended change with one command: `yonos check-drift --update` (smoke), or
`yonos check-drift RESULTS_CSV --update`."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from yonos.config import PROFILES
from yonos.errors import UserError
from yonos.metrics import drift
from yonos.metrics.results import find_results


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "check-drift",
        help="compare a profile's metrics with its reference in reports/reference/",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("results", nargs="?", metavar="RESULTS_CSV",
                   help="results.csv to check; omitted: run the smoke pipeline in a temporary folder")
    p.add_argument("--reference", default=None, metavar="FILE",
                   help="reference file; default: reports/reference/<profile>_metrics.json for the results' profile")
    p.add_argument("--profile", choices=PROFILES, default=None,
                   help="profile of RESULTS_CSV when it has no profile column and is not under runs/<profile>/")
    p.add_argument("--update", action="store_true",
                   help="rewrite the reference with these results (only a reference of the same profile)")
    p.add_argument("--measure", nargs="+", metavar="RESULTS_CSV",
                   help="results of repeated runs: set tolerances from their spread (keeps the values)")
    p.add_argument("--all", action="store_true", help="list every result, not only the ones out of tolerance")
    p.set_defaults(func=run)


def run_smoke(run_root: Path) -> Path:
    """The same pipeline CI runs: `python -m yonos.stages.run_all --profile smoke`."""
    cmd = [sys.executable, "-m", "yonos.stages.run_all", "--profile", "smoke", "--run-root", str(run_root)]
    print("running: python -m yonos.stages.run_all --profile smoke --run-root TMP", file=sys.stderr)
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise UserError(f"smoke pipeline failed (exit {proc.returncode}); fix it before checking drift")
    return find_results(run_root / "smoke")


def _reference_for(args, profile: str) -> Path:
    return Path(args.reference) if args.reference else drift.reference_path(profile)


def _same_profile(ref: dict, ref_path: Path, results: drift.Results, doing: str) -> None:
    """One-line refusal when a reference of profile Y meets results of profile X."""
    if ref["profile"] == results.profile:
        return
    own = drift.reference_path(results.profile)
    hint = f"use --reference {own}" + ("" if own.is_file() else
                                       f" (create it with `{drift.update_command(results.profile)}`)")
    raise UserError(f"{results.path}: results of profile {results.profile!r} cannot {doing} {ref_path}, the "
                    f"{ref['profile']!r} reference; {hint}")


def measure(args) -> int:
    runs = [drift.read_results(p, args.profile) for p in args.measure]
    profiles = sorted({r.profile for r in runs})
    if len(profiles) > 1:
        raise UserError(f"--measure: results of several profiles ({', '.join(profiles)}); repeat runs of one profile")
    ref_path = _reference_for(args, runs[0].profile)
    ref = drift.read_reference(ref_path, runs[0].profile)
    _same_profile(ref, ref_path, runs[0], "set the tolerances of")
    noise = drift.measure_noise([r.values for r in runs])
    tolerances = drift.tolerances_from_noise(noise)
    basis = {
        "method": f"max |value - median| over {len(runs)} repeated {runs[0].profile} runs, per metric; "
                  f"tolerance = max({drift.NOISE_FACTOR:g} x noise, floor)",
        "runs": drift.shown_runs(args.measure),
        "noise": {m: float(f"{n:.3g}") for m, n in sorted(noise.items())},
    }
    kept = drift.Results(ref_path, ref["profile"], dict(ref["metrics"]))
    drift.write_reference(ref_path, kept, tolerances={**ref["tolerances"], **tolerances}, basis=basis,
                          not_compared=ref["not_compared"])
    for m in sorted(noise):
        print(f"{m:<16} noise {noise[m]:.3g}  tolerance {tolerances[m]:.3g}")
    return 0


def check(args, results_path: Path) -> int:
    results = drift.read_results(results_path, args.profile)
    ref_path = _reference_for(args, results.profile)
    if args.update:
        old = drift.read_reference(ref_path) if ref_path.is_file() else None
        if old is not None:
            _same_profile(old, ref_path, results, "overwrite")
        named = ref_path.name.removesuffix("_metrics.json")
        if named in PROFILES and named != results.profile:  # a new file whose name says another profile
            raise UserError(f"{results.path}: results of profile {results.profile!r} must not be written to "
                            f"{ref_path}, named for profile {named!r}; use --reference "
                            f"{drift.reference_path(results.profile)}")
        tolerances = (old or {}).get("tolerances") or dict(drift.DEFAULT_TOLERANCES)
        drift.write_reference(ref_path, results, tolerances=tolerances, basis=(old or {}).get("tolerance_basis"))
        kept = sum(1 for v in results.values.values() if v == v)
        print(f"wrote {ref_path} ({kept} results; {len(results.values) - kept} n/a, listed as not compared)")
        return 0
    ref = drift.read_reference(ref_path, results.profile)
    _same_profile(ref, ref_path, results, "be checked against")
    rows = drift.compare(ref["metrics"], results.values, ref.get("tolerances", {}), ref["not_compared"])
    print(drift.format_diff(rows, all_rows=args.all, not_compared=ref["not_compared"]))
    if drift.has_drift(rows):
        fix = drift.update_command(results.profile)
        if args.reference:
            fix += f" --reference {ref_path}"
        print(f"metric drift: if the change is intended, run `{fix}` and commit {ref_path}", file=sys.stderr)
        return 1
    return 0


def run(args) -> int:
    if args.measure:
        return measure(args)
    if args.results:
        return check(args, Path(args.results))
    if args.profile not in (None, "smoke"):
        raise UserError(f"--profile {args.profile}: without RESULTS_CSV only the smoke pipeline is rerun; give "
                        f"runs/{args.profile}/evaluate/results.csv")
    with tempfile.TemporaryDirectory(prefix="yonos-drift-") as tmp:
        return check(args, run_smoke(Path(tmp)))
