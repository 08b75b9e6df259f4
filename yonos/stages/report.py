"""The `report` stage: tables, figures and metrics files from runs/<profile>/evaluate/results.csv.

`python -m yonos.stages.report [--profile P]` writes, atomically, under reports/<profile>/ (the path
dvc.yaml declares; `report.out_dir` overrides it, for tests): metrics.json (DVC metrics),
steps_quality.csv (DVC plots), results.csv (every row with its provenance: profile, run date, commit;
evaluate_real carries a set's rows forward from it when the set's data is absent), tables/<dataset>.md
and .tex, figures/*.png, claims.md and claims.csv (report.claims judged on the per-image scores, paired,
with bootstrap intervals: yonos/report/claims.py), timing.md and README.md linking and captioning
everything. Rows carried forward are marked as not re-run under their table, with the date and commit they came from."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from yonos import study
from yonos.config import report_dir, run_dir
from yonos.data.eval_sets import EVAL_SETS
from yonos.io import atomic_path, write_json, write_text
from yonos.metrics.results import find_results, load_results
from yonos.report import claims, figures, onestep, tables
from yonos.report.paths import redact
from yonos.report.readme import README, update_readme
from yonos.stages._common import stage_main
from yonos.stages.evaluate_baseline import VARIANTS, stage_name

DEFAULTS = {
    "out_dir": None,               # None: reports/<profile>/ (yonos.config.report_dir)
    "table_steps": [1],            # rows in the main tables; every step count is in steps_quality.csv
    "pareto_metrics": ["psnr", "ssim", "lpips", "musiq"],
    "grid_steps": 1,               # which step count the visual grid shows for diffusion variants
    "grid_images": 2,
    "zoom": 0.25,                  # zoomed crop side as a fraction of the image side
    "claims": [],                  # [{claim, a, b, metrics, steps?, b_steps?}] -> claims.md (yonos/report/claims.py)
}

CLAIMS_INTRO = (
    "Each row judges \"A beats B\" on the per-image scores of one set: the mean of the paired differences "
    "A − B (metric units; ↑/↓ as in the tables) with a 95% percentile-bootstrap interval that resamples "
    "training seeds and, within each, images ([yonos/report/claims.py](../../yonos/report/claims.py)). "
    "Verdict: *reproduced* when the whole interval favours A, *not reproduced* when it favours B, else "
    "*inconclusive*. With one training seed the interval covers image-to-image variation only: it does not "
    "say that another training run would agree.")


def report_params(cfg: dict) -> dict:
    return {**DEFAULTS, **(cfg.get("report") or {})}


def read_timings(profile_dir: Path) -> dict[str, float]:
    """{stage: seconds} from runs/<profile>/*/timing.json."""
    out = {}
    for path in sorted(profile_dir.glob("*/timing.json")):
        data = json.loads(path.read_text())
        out[data.get("stage", path.parent.name)] = float(data["seconds"])
    return out


def write_csv(path: Path, df) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")


def write_tables(df, rp: dict, out: Path) -> list[tables.TableBlock]:
    blocks = tables.build_blocks(df, rp["table_steps"])
    for block in blocks:
        note = carried_note(df, block.dataset)
        write_text(out / "tables" / f"{block.dataset}.md", tables.to_markdown(block) + (f"\n{note}\n" if note else ""))
        write_text(out / "tables" / f"{block.dataset}.tex",
                   tables.to_latex(block) + (f"% {note.strip('*')}\n" if note else ""))
    return blocks


def carried_note(df, dataset: str) -> str:
    """One line saying a dataset's rows were not re-run here (evaluate_real without its data), and
    which run they come from; "" when every row was run now."""
    notes = df[(df["dataset"] == dataset) & df["note"].astype(str).str.startswith("carried:")]
    if notes.empty:
        return ""
    fetch = getattr(EVAL_SETS.get(dataset), "dataset", None) or dataset
    runs = sorted({f"{r.get('run_date') or 'an earlier run'}" + (f", commit {r['commit']}" if r.get("commit") else "")
                   for r in notes.to_dict("records")})
    return (f"*Not re-run here: the {tables.dataset_title(dataset)} data was absent, so these rows are carried "
            f"forward from the committed results ({'; '.join(runs)}). Fetch it with `yonos download {fetch}`.*")


def write_claims(rp: dict, out: Path, per_image_files: list[Path]) -> str | None:
    """claims.csv and claims.md (always both, as dvc.yaml declares them) from the per-image scores; the
    markdown table, or None when no claim could be judged (none configured, or no per-image scores)."""
    frames = [pd.read_csv(p) for p in per_image_files if p.is_file() and p.stat().st_size > 1]
    frame = claims.verdicts(pd.concat(frames, ignore_index=True), rp["claims"], rp["table_steps"]) if frames else None
    if frame is None or frame.empty:
        frame = pd.DataFrame(columns=list(claims.Verdict.__dataclass_fields__))
    table = claims.to_markdown(frame) if len(frame) else None
    write_csv(out / "claims.csv", frame)
    write_text(out / "claims.md", f"# Claims\n\n{CLAIMS_INTRO}\n\n"
               + (table or "No claim could be judged: none configured (report.claims), or no per-image scores.\n"))
    return table


def write_onestep(cfg: dict, out: Path) -> str | None:
    """tables/onestep.md from the diagnose_onestep stage's CSVs; its markdown, or None when they are absent."""
    folder = run_dir(cfg, "diagnose_onestep")
    if not (folder / "onestep.csv").is_file() or (folder / "onestep.csv").stat().st_size < 2:
        return None
    text = onestep.to_markdown(pd.read_csv(folder / "onestep.csv"), pd.read_csv(folder / "latents.csv"),
                               seeds=int((cfg.get("diagnose") or {}).get("seeds", 8)))
    claims_dir = cfg["report"].get("study")  # the study's report folder (yonos/study.py): evidence on the choice
    found = [Path(claims_dir, *sub, "ablations.csv") if claims_dir else None for sub in ((), (str(study.PREVIOUS),))]
    current, previous = (pd.read_csv(path) if path and path.is_file() else None for path in found)
    text += "\n" + onestep.choice(cfg, current, previous) + "\n"
    write_text(out / "tables" / "onestep.md", "# One-step regime\n\n" + text)
    return text


def write_figures(df, rp: dict, out: Path, image_roots: dict[str, list[Path]],
                  column_steps: dict[str, int] | None = None) -> dict[str, dict]:
    """{dataset: {"steps": [...metrics], "pareto": [...], "grid": missing-columns | None}}."""
    made = {}
    for dataset in sorted(df["dataset"].unique()):
        roots = [root / dataset for root in image_roots.get(dataset, []) if (root / dataset).is_dir()]
        made[dataset] = {
            "steps": figures.steps_figure(df, dataset, out / "figures" / f"steps_{dataset}.png"),
            "pareto": figures.pareto_figure(df, dataset, rp["pareto_metrics"],
                                            out / "figures" / f"pareto_{dataset}.png"),
            "grid": figures.grid_figure(roots, out / "figures" / f"grid_{dataset}.png", steps=rp["grid_steps"],
                                        n_images=rp["grid_images"], zoom=rp["zoom"], column_steps=column_steps)
            if roots else None,
        }
    return made


def baseline_default_steps(cfg: dict) -> dict[str, int]:
    """{variant: default step count} of the baselines, the step count their grid column shows."""
    return {variant: int(cfg[method]["steps"]) for method, variant in VARIANTS.items() if method in cfg}


def result_files(cfg: dict) -> list[Path]:
    """Every evaluate stage's results.csv that exists: evaluate, evaluate_real (RealSR/DRealSR, may be absent
    or empty) and one evaluate_<method> and evaluate_real_<method> per baseline."""
    files = [find_results(run_dir(cfg)), run_dir(cfg, "evaluate_real", "results.csv")]
    files += [run_dir(cfg, stage_name(m, real=real), "results.csv") for real in (False, True) for m in VARIANTS]
    return [f for f in files if f.is_file() and f.stat().st_size > 1]


def readme(profile: str, blocks, made: dict, timings: dict[str, float], df, claims_table: str | None = None,
           onestep_text: str | None = None) -> str:
    lines = [
        f"# Results ({profile} profile)",
        "",
        ("Generated by `dvc repro` (stage `report`, `python -m yonos.stages.report`); do not edit by hand. "
        "Metric protocol, directions and weight files: [docs/metrics.md](../../docs/metrics.md). "
        "↑ higher is better, ↓ lower is better; **bold** is the best value in each column among the rows "
        f"run by this project on that dataset. Rows marked published{tables.PUBLISHED_MARK} are copied from "
        "the cited paper (SD-scale models on GPUs), not run by us: they are shown for reference and never "
        "ranked, nor are reference rows (‡). `n/a`: the metric could not run here; the reason is listed "
        "under the table."),
        "",
        ("Machine-readable: [metrics.json](metrics.json) (`dvc metrics show`), "
        "[steps_quality.csv](steps_quality.csv) (`dvc plots show`, tidy: dataset, variant, steps, metric, "
        "value, seconds_per_image)."),
        "",
        "## Tables",
        "",
    ]
    for block in blocks:
        note = carried_note(df, block.dataset)
        lines += [tables.to_markdown(block) + (f"\n{note}\n" if note else ""),
                  (f"LaTeX: [tables/{block.dataset}.tex](tables/{block.dataset}.tex). Rows: each method at "
                  f"{', '.join(map(str, sorted({r.steps for r in block.rows if not r.published})))} DDIM "
                  "step(s); every step count is in the figures and steps_quality.csv."), ""]
    if claims_table:
        lines += ["## Claims", "", CLAIMS_INTRO, "", claims_table,
                  "Also as [claims.md](claims.md) and [claims.csv](claims.csv).", ""]
    if onestep_text:
        lines += ["## One-step regime", "", onestep_text, "Also as [tables/onestep.md](tables/onestep.md).", ""]
    lines += ["## Figures", ""]
    for dataset, figs in made.items():
        title = tables.dataset_title(dataset)
        if figs["steps"]:
            lines += [f"![steps {dataset}](figures/steps_{dataset}.png)", "",
                      (f"*{title}: each metric against the number of DDIM steps (log scale), one line per "
                      "diffusion variant; dashed lines are methods without steps (bicubic).*"), ""]
        if figs["pareto"]:
            lines += [f"![pareto {dataset}](figures/pareto_{dataset}.png)", "",
                      (f"*{title}: quality against measured seconds per image (log scale, the same "
                      "`upscale` call that was scored); numbers are step counts; the grey staircase is "
                      "the Pareto front.*"), ""]
        if figs["grid"] is not None:
            absent = f" Not available: {', '.join(figs['grid'])}." if figs["grid"] else ""
            lines += [f"![grid {dataset}](figures/grid_{dataset}.png)", "",
                      (f"*{title}: LR (nearest-neighbour enlarged) | bicubic | SR3 | LDM-SR | StableSR (each at "
                      "its default step count) | direct ×4 | distilled ×4 | distilled ×4 + fine-tuned decoder "
                      "(at the report's grid step count) | HR; second row of each image: the red box "
                      f"enlarged (the most textured window).{absent}*"), ""]
    never = sorted(set(df["metric"]) - set(df.dropna(subset=["value"])["metric"]))
    if never:
        lines += [f"Not plotted (n/a everywhere): {', '.join(never)}.", ""]
    lines += ["## Stage wall time", "", tables.timing_markdown(timings)]
    return "\n".join(lines)


def run(cfg: dict) -> dict:
    rp = report_params(cfg)
    out = report_dir({**cfg, "report": rp})
    frames, image_roots, per_image = [], {}, []
    for path in result_files(cfg):
        frame = load_results(path)
        frames.append(frame)
        for dataset in frame["dataset"].unique():
            image_roots.setdefault(dataset, []).append(path.parent / "images")
        per_image.append(path.parent / "per_image.csv")
    df = pd.concat(frames, ignore_index=True)
    df["note"] = df["note"].map(redact)  # reports are committed: no machine path in any n/a reason
    write_json(out / "metrics.json", tables.metrics_json(df))
    write_csv(out / "results.csv", df)
    write_csv(out / "steps_quality.csv", tables.steps_quality(df))
    blocks = write_tables(df, rp, out)
    made = write_figures(df, rp, out, image_roots, baseline_default_steps(cfg))
    claims_table = write_claims(rp, out, per_image)
    onestep_text = write_onestep(cfg, out)
    timings = read_timings(run_dir(cfg))
    write_text(out / "timing.md", tables.timing_markdown(timings))
    write_text(out / "README.md", readme(cfg["profile"], blocks, made, timings, df, claims_table,
                                                 onestep_text))
    print(f"[report] wrote {out}/README.md and {len(blocks)} table block(s)", file=sys.stderr)
    # The top-level README quotes this report's numbers in a generated block; rewritten only when
    # that block names this metrics.json (the embedded profile's), never from a smoke or test run.
    if update_readme(README, metrics_path=out / "metrics.json"):
        print(f"[report] updated the numbers block in {README}", file=sys.stderr)
    return {}


if __name__ == "__main__":
    sys.exit(stage_main("report", run))
