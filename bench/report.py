"""The speed-ratio table (issue 10, item 1) from a pytest-benchmark JSON of bench/test_bench_ratios.py.

    python bench/report.py reports/bench/bench_cpu.json [--out reports/bench.md] [--overwrite]

Every number is computed from the JSON: the medians pytest-benchmark measured (stats.median) and the
extra_info the benchmarks stored (parts timed alone, cost model, steps, FLOPs, GEMM rates, peak memory).
Per method of a "ratios ..." group, against the reference row (extra_info.reference, YONOS one step):
    measured ratio      median / reference median
    predicted ratio     cost model / reference cost model, each = once-parts + steps x per-step parts
    measured/predicted  measured ratio / predicted ratio (goal >= 0.95: no method slowed by its pipeline)
    e2e/parts           median / its own cost model (its pipeline overhead)
A method timed at fewer steps than its own (the benchmark's time budget) gets its full-step ratio
extrapolated: median x cost model(target steps) / cost model(steps timed), marked as such.
An existing --out is kept unless --overwrite; the file is written atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

import pandas as pd

from yonos.errors import UserError
from yonos.io import atomic_path

GROUP_PREFIX = "ratios "
FASTPATH_GROUP = "fast path "  # bench/test_bench_fastpath.py
TILING_GROUP = "tiled "        # bench/test_bench_tiling.py
# Goals from issue 10 (targets, not measurements).
GOAL_MEASURED_OVER_PREDICTED = 0.95
GOAL_OVERHEAD = 1.05
GOAL_GEMM_FRACTION = 0.40
# The rows bench/test_bench_ratios.py writes; a missing one is listed (skipped or failed in that run).
EXPECTED = ("YONOS-1", "YONOS-50", "SD-upscale-1", "SD-upscale-75", "diffusers-LDM-SR-100", "LDM-SR-100",
            "StableSR-200", "SR3-100")
RERUN = "pytest bench/test_bench_ratios.py --benchmark-only --benchmark-json {path}"
_ABS_PATH = re.compile(r"(?<![\w.~])(?:[A-Za-z]:)?[/\\](?:[^\s/\\|`]+[/\\])+([^\s/\\|`]*)")


def _args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bench_json", help="the file pytest-benchmark wrote with --benchmark-json")
    p.add_argument("--out", default="reports/bench.md", help="markdown output (default reports/bench.md)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return p.parse_args(argv)


# --- reading -------------------------------------------------------------------------------------------
def load(path: str | os.PathLike) -> dict:
    """The JSON, checked for the parts the table needs; one-line UserError naming the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; write it first: {RERUN.format(path=path)}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({type(exc).__name__}); pass the --benchmark-json file") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not JSON ({exc.msg}, line {exc.lineno}); pass the file pytest-benchmark "
                        f"wrote with --benchmark-json") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise UserError(f"{path}: not a pytest-benchmark JSON (no 'benchmarks' list); pass the file written "
                        f"by --benchmark-json")
    return data


def ratio_groups(data: dict, path) -> dict[str, list[dict]]:
    """group -> its benchmarks that carry a cost model, reference (YONOS-1) first."""
    groups: dict[str, list[dict]] = {}
    for b in data["benchmarks"]:
        if str(b.get("group") or "").startswith(GROUP_PREFIX) and isinstance(b.get("extra_info"), dict) \
                and "parts" in b["extra_info"]:
            groups.setdefault(b["group"], []).append(b)
    if not groups:
        raise UserError(f"{path}: no benchmark of a '{GROUP_PREFIX}...' group with parts in extra_info; "
                        f"run {RERUN.format(path=path)}")
    for group, rows in groups.items():
        refs = [b for b in rows if b["extra_info"].get("reference")]
        if len(refs) != 1:
            raise UserError(f"{path}: group {group!r} has {len(refs)} reference rows (YONOS one step), needs "
                            f"exactly one; rerun {RERUN.format(path=path)}")
        for b in rows:
            if not isinstance((b.get("stats") or {}).get("median"), (int, float)):
                raise UserError(f"{path}: {b.get('name')} has no stats.median (benchmarks disabled?); "
                                f"rerun with --benchmark-only, not --benchmark-disable")
        rows.sort(key=lambda b: not b["extra_info"].get("reference"))
    return groups


def predicted_seconds(info: dict, steps: int, path, method: str) -> float:
    """The cost model from the parts alone: once-parts + steps x per-step parts."""
    parts, model = info.get("parts") or {}, info.get("cost_model") or {}
    try:
        once = sum(float(parts[k]) for k in model["once"])
        per_step = sum(float(parts[k]) for k in model["per_step"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: {method}: cost model names a part with no timing ({exc}); rerun "
                        f"{RERUN.format(path=path)}") from None
    return once + steps * per_step


def ratio_table(rows: list[dict], path) -> pd.DataFrame:
    """One row per method, numeric: the ratios to the reference (rows[0]) and their cost-model prediction."""
    recs = []
    for b in rows:
        info = b["extra_info"]
        method = str(info.get("method") or b.get("name"))
        steps, target = int(info["steps"]), int(info.get("steps_target", info["steps"]))
        median = float(b["stats"]["median"])
        pred = predicted_seconds(info, steps, path, method)
        extrapolated = steps < target
        # Timed at fewer steps: scale the measured time by the cost model's target/timed ratio.
        target_s = median * predicted_seconds(info, target, path, method) / pred if extrapolated else median
        recs.append({"method": method, "steps": steps, "steps_target": target, "median_s": median,
                     "predicted_s": pred, "target_s": target_s, "extrapolated": extrapolated,
                     "peak_memory_mb": info.get("peak_memory_mb"), "rounds": b["stats"].get("rounds"),
                     "weights": info.get("weights")})
    df = pd.DataFrame.from_records(recs)
    ref = df.iloc[0]
    df["measured_ratio"] = df["median_s"] / ref["median_s"]
    df["predicted_ratio"] = df["predicted_s"] / ref["predicted_s"]
    df["measured_over_predicted"] = df["measured_ratio"] / df["predicted_ratio"]
    df["e2e_over_parts"] = df["median_s"] / df["predicted_s"]
    df["target_ratio"] = df["target_s"] / ref["median_s"]
    return df


# --- writing -------------------------------------------------------------------------------------------
def fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}g}"


def text(value) -> str:
    """A string from the JSON, safe in a table cell, with any absolute path cut to its last component."""
    s = _ABS_PATH.sub(lambda m: m.group(1) or "<path>", str(value))
    return s.replace("|", "/").replace("\n", " ")


def shown_path(path) -> str:
    """The input as the table names it: relative to the working folder, else its file name (never absolute)."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return p.name


def goal(ok: bool) -> str:
    return "met" if ok else "missed"


def md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, disable_numparse=True)


def ratios_section(group: str, rows: list[dict], path) -> list[str]:
    df = ratio_table(rows, path)
    ref = df.iloc[0]
    shown = pd.DataFrame({
        "method": [text(m) for m in df["method"]],
        "steps timed / own": [f"{s} / {t}" for s, t in zip(df["steps"], df["steps_target"])],
        "median s": [fmt(x) for x in df["median_s"]],
        f"measured ratio (x {text(ref['method'])})": [fmt(x) for x in df["measured_ratio"]],
        "predicted ratio": [fmt(x) for x in df["predicted_ratio"]],
        "measured / predicted": [fmt(x) for x in df["measured_over_predicted"]],
        "e2e / parts": [fmt(x) for x in df["e2e_over_parts"]],
        "ratio at own steps": [f"{fmt(r)} (extrapolated from {s} steps)" if e else fmt(r)
                               for r, e, s in zip(df["target_ratio"], df["extrapolated"], df["steps"])],
        "peak MB": [fmt(x, 4) if x is not None else "n/a" for x in df["peak_memory_mb"]],
    })
    others = df.iloc[1:]
    slowed = others[others["measured_over_predicted"] < GOAL_MEASURED_OVER_PREDICTED]
    weights: dict[str, list[str]] = {}
    for m, w in zip(df["method"], df["weights"]):
        weights.setdefault(text(w) if w else "not recorded", []).append(text(m))
    out = [f"## {text(group)}", "",
           f"Reference: {text(ref['method'])}, median of {ref['rounds']} round(s). Weights:",
           *[f"- {', '.join(ms)}: {w}" for w, ms in weights.items()], "",
           md(shown), "",
           f"Goal measured / predicted >= {GOAL_MEASURED_OVER_PREDICTED} (no method slowed by its pipeline): "
           + (goal(True) + " for every method." if slowed.empty else
              goal(False) + " by " + ", ".join(f"{text(r.method)} ({fmt(r.measured_over_predicted)})"
                                              for r in slowed.itertuples()) + "."), ""]
    one = df[df["method"].str.startswith("SD-upscale") & (df["steps"] == 1)]
    if not one.empty:
        r = float(ref["median_s"] / one.iloc[0]["median_s"])
        out += [f"Goal {text(ref['method'])} faster than diffusers' StableDiffusionUpscalePipeline at one step with "
                f"networks of the same widths: {text(ref['method'])} / {text(one.iloc[0]['method'])} = {fmt(r)} "
                f"({goal(r < 1)}).", ""]
    missing = [m for m in EXPECTED if m not in set(df["method"])]
    if missing:
        out += [f"Not in this JSON (skipped or failed in that run; see its pytest output): {', '.join(missing)}.",
                ""]
    for b in rows:
        if b["extra_info"].get("reduced"):
            out += [f"- {text(b['extra_info'].get('method'))}: {text(b['extra_info']['reduced'])}"]
    return out


def reference_section(ref: dict, path) -> list[str]:
    info, median = ref["extra_info"], float(ref["stats"]["median"])
    method = text(info.get("method"))
    parts, model = info["parts"], info["cost_model"]
    counted = list(model["once"]) + list(model["per_step"])
    total = predicted_seconds(info, int(info["steps"]), path, method)
    overhead = median / total
    out = [f"### {method}: overhead, parts, efficiency", "",
           f"Pipeline overhead, end to end / parts timed alone ({' + '.join(text(k) for k in counted)}): "
           f"{fmt(overhead)} (goal <= {GOAL_OVERHEAD}: {goal(overhead <= GOAL_OVERHEAD)}).", ""]
    shares = pd.DataFrame({"part": [text(k) for k in counted], "seconds": [fmt(float(parts[k])) for k in counted],
                           "share of parts": [f"{float(parts[k]) / total:.1%}" for k in counted]})
    out += [md(shares), ""]
    flops = info.get("flops")
    if isinstance(flops, (int, float)) and flops > 0:
        achieved = flops / median
        out += [f"FLOPs of one upscale (torch.utils.flop_counter): {flops / 1e9:.4g} GFLOP; achieved "
                f"{achieved / 1e9:.4g} GFLOP/s end to end."]
        for dtype, g in (info.get("gemm") or {}).items():
            if g.get("supported") and g.get("flops_per_s"):
                rate = float(g["flops_per_s"])
                frac = achieved / rate
                out += [f"- {text(dtype)} GEMM ({g.get('n')}^3, this run): {rate / 1e9:.4g} GFLOP/s; "
                        f"achieved fraction {frac:.1%} (goal >= {GOAL_GEMM_FRACTION:.0%}: "
                        f"{goal(frac >= GOAL_GEMM_FRACTION)})"]
            else:
                out += [f"- {text(dtype)} GEMM: not measured ({text(g.get('reason', 'unsupported'))})"]
        out += [""]
    return out


def parts_section(rows: list[dict]) -> list[str]:
    """Each method's parts; methods that share theirs (one pipeline at two step counts) share the rows."""
    shared: dict[str, list[dict]] = {}
    for b in rows:
        info = b["extra_info"]
        key = json.dumps([info["parts"], info.get("cost_model")], sort_keys=True, default=str)
        shared.setdefault(key, []).append(info)
    recs = []
    for infos in shared.values():
        info, model = infos[0], infos[0].get("cost_model") or {}
        role = {**{k: "once" for k in model.get("once", [])}, **{k: "per step" for k in model.get("per_step", [])}}
        for k, v in info["parts"].items():
            recs.append({"method": ", ".join(text(i.get("method")) for i in infos), "part": text(k),
                         "seconds": fmt(float(v)), "cost model": role.get(k, "not counted (shown for its share)")})
    return ["### Parts timed alone (median seconds)", "", md(pd.DataFrame.from_records(recs)), ""]


def group_rows(data: dict, prefix: str) -> list[dict]:
    return [b for b in data["benchmarks"] if str(b.get("group") or "").startswith(prefix)]


def fastpath_section(data: dict) -> list[str]:
    """The "fast path ..." group (bench/test_bench_fastpath.py): each flag set's speed-up over fp32 and its PSNR-Y
    change on the embedded evaluation; a flag may become a default only within the stated tolerance."""
    rows = group_rows(data, FASTPATH_GROUP)
    ref = next((b for b in rows if b["extra_info"].get("reference")), None)
    if not rows or ref is None:
        return []
    base = float(ref["stats"]["median"])
    tol = float(ref["extra_info"].get("default_tolerance_db", 0.05))
    # The same upscale's FLOPs and this run's GEMM rates, from the ratios group's FLOP-counted reference
    flop_ref = next((b["extra_info"] for b in data["benchmarks"] if b["extra_info"].get("flops")), {})
    flops, gemm = flop_ref.get("flops"), flop_ref.get("gemm") or {}

    def gemm_fraction(flags: str, median: float):
        g = gemm.get("bfloat16" if "bf16" in flags else "float32") or {}
        if not (flops and g.get("flops_per_s")):
            return None
        return f"{flops / median / float(g['flops_per_s']):.0%} of {'bf16' if 'bf16' in flags else 'fp32'}"

    recs = []
    for b in rows:
        info, median = b["extra_info"], float(b["stats"]["median"])
        delta = info.get("psnr_delta_db")
        within = None if delta is None else abs(delta) <= tol
        is_ref = bool(info.get("reference"))
        recs.append({"flags": text(info.get("flags")), "median s": fmt(median),
                     "speed-up (x fp32)": fmt(base / median),
                     "GEMM rate achieved": gemm_fraction(str(info.get("flags")), median) or "n/a",
                     "PSNR-Y dB": fmt(info.get("psnr_y"), 5),
                     "Δ PSNR-Y dB": "ref" if is_ref else fmt(delta),
                     "max abs Δ pixel": "ref" if is_ref else fmt(info.get("max_abs_diff")),
                     f"within {tol:g} dB": "ref" if is_ref else fmt(within),
                     "first call s": fmt(info.get("first_call_s")), "peak MB": fmt(info.get("peak_memory_mb"), 4)})
    notes = sorted({text(b["extra_info"]["psnr_note"]) for b in rows if b["extra_info"].get("psnr_note")})
    return [f"## {text(rows[0]['group'])}: the flags of yonos/fastpath.py", "",
            f"YONOS one step, the same LR; median of {ref['stats'].get('rounds', '?')} rounds each. PSNR-Y: the "
            "embedded evaluation crops at one step with the evaluate stage's noise seeds. A flag may become a "
            f"default only if it is faster and its PSNR-Y moves by at most {tol:g} dB. First call: compilation "
            "for compile, a warm-up for the others. GEMM rate achieved: the upscale's counted FLOPs per second "
            f"over this run's GEMM rate in the flags' compute dtype (goal >= {GOAL_GEMM_FRACTION:.0%}; above 100% "
            "means the 2048^3 GEMM does not reach the machine's peak). `auto`: `yonos upscale`'s default on this "
            "machine "
            "(bf16 + inference_mode where bf16 is native, else channels_last + inference_mode). Weights: "
            f"{text(ref['extra_info'].get('weights', 'not recorded'))}.", "",
            md(pd.DataFrame.from_records(recs)), "", *[f"- {n}" for n in notes], ""]


def tiling_section(data: dict) -> list[str]:
    """The "tiled ..." group (bench/test_bench_tiling.py): a large output in bounded memory."""
    rows = group_rows(data, TILING_GROUP)
    if not rows:
        return []
    recs = [{"case": text(b["group"]), "seconds": fmt(float(b["stats"]["median"])),
             "peak MB": fmt(b["extra_info"].get("peak_memory_mb"), 4), "goal MB": fmt(b["extra_info"].get("goal_mb")),
             "goal": goal(float(b["extra_info"].get("peak_memory_mb", math.inf))
                          <= float(b["extra_info"].get("goal_mb", -math.inf))),
             "tiling": text(json.dumps(b["extra_info"].get("tiling"), sort_keys=True)),
             "weights": text(b["extra_info"].get("weights", "not recorded"))} for b in rows]
    return ["## Large images: tiled, bounded memory", "", md(pd.DataFrame.from_records(recs)), ""]


def machine_section(data: dict, path) -> list[str]:
    mi, ci = data.get("machine_info") or {}, data.get("commit_info") or {}
    cpu = mi.get("cpu") or {}
    items = {
        "CPU": cpu.get("brand_raw") or mi.get("processor"), "arch": cpu.get("arch") or mi.get("machine"),
        "logical CPUs": cpu.get("count"), "torch threads": mi.get("torch_threads"),
        "device": mi.get("device"), "accelerator": mi.get("accelerator"),
        "torch": mi.get("torch"), "diffusers": mi.get("diffusers"), "python": mi.get("python_version"),
        "OS": mi.get("platform") or mi.get("system"), "pytest-benchmark": data.get("version"),
        "run at": data.get("datetime"),
        "commit": (f"{ci.get('id')}{' (dirty)' if ci.get('dirty') else ''}" if ci.get("id") else None),
    }
    absent = {"accelerator": "none"} if "accelerator" in mi else {}
    return ["## Machine", "",
            *[f"- {k}: {text(v) if v is not None else absent.get(k, 'not recorded')}" for k, v in items.items()],
            "", f"Source: `{shown_path(path)}` (pytest-benchmark JSON). Absolute times vary on a shared machine; "
            f"the ratios come from one run.", ""]


def render(data: dict, path) -> str:
    groups = ratio_groups(data, path)
    lines = ["# Speed ratios: one step against the multi-step methods", "",
             "Generated by `bench/report.py` from a pytest-benchmark JSON (`make bench`); do not edit by hand.",
             "Columns: median s = pytest-benchmark's median; measured ratio = median / the reference's; predicted "
             "ratio = the same from the parts timed alone (once-parts + steps x per-step parts); measured / "
             "predicted = their quotient; e2e / parts = a method's median over its own cost model; ratio at own "
             "steps = at the method's own step count (extrapolated by the cost model when fewer were timed); "
             "peak MB = peak during the timed calls (see the JSON's peak_memory_kind).", ""]
    for group, rows in groups.items():
        lines += ratios_section(group, rows, path) + [""]
        lines += reference_section(rows[0], path)
        lines += parts_section(rows)
    lines += fastpath_section(data) + tiling_section(data)
    lines += machine_section(data, path)
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None) -> int:
    args = _args(argv)
    try:
        out = Path(args.out)
        if out.is_dir():
            raise UserError(f"--out {args.out}: is a folder; give a file, e.g. {out / 'bench.md'}")
        if out.exists() and not args.overwrite:
            raise UserError(f"{args.out}: exists; pass --overwrite to replace it, or choose another --out")
        report = render(load(args.bench_json), args.bench_json)
        with atomic_path(out, overwrite=args.overwrite) as tmp:
            tmp.write_text(report)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
