"""Tables from the tidy results: DVC metrics JSON, the steps-quality plot data, and paper-style
markdown/LaTeX blocks (one per dataset, ↑/↓ from the metric registry, published rows beside ours and
marked as such).

Ranking compares like with like: **bold** is the best value among the rows this project ran on that
dataset. Published rows (SD-scale models run on GPUs by their authors) are references: they never win
a column and get no bold of their own; neither do our reference rows (‡: the ×2 teacher, the
autoencoder ceiling)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from yonos.metrics import registry
from yonos.metrics.results import SUBSET_PREFIX, row_label
from yonos.report.paths import redact
from yonos.report.published import published_rows

DATASET_TITLES = {
    "embedded": "Embedded sweep (held-out B100 crops)",
    "realsr": "RealSR", "drealsr": "DRealSR", "div2k_val": "DIV2K-Val",
    "set5": "Set5", "set14": "Set14", "b100": "B100", "urban100": "Urban100", "manga109": "Manga109",
}
# Our variants in the order rows appear; names as in results.csv.
VARIANT_TITLES = {
    "bicubic": "Bicubic",
    "teacher_x2": "Teacher ×2",
    "direct_x4": "Direct ×4",
    "distilled_x4": "YONOS distilled ×4",
    "distilled_x4+decoder": "YONOS distilled ×4 + decoder",
    "sr3_x4": "SR3 ×4",
    "ldmsr_x4": "LDM-SR ×4",
    "stablesr_x4": "StableSR ×4",
    "autoencoder": "Autoencoder D(E(HR))",
}
# Shown for reference but never ranked (bold, Pareto front): the x2 teacher solves an easier task;
# the autoencoder row D(E(HR)) is the ceiling a latent method can reach, not a method.
UNRANKED_VARIANTS = {"teacher_x2", "autoencoder"}
DECIMALS = {"psnr": 2, "latent_psnr": 2, "ae_recon_psnr": 2, "fid": 2, "musiq": 2}  # others: 4
PUBLISHED_MARK = "†"
SUBSET_MARK = "§"  # a row scored on part of its set


def dataset_title(name: str) -> str:
    return DATASET_TITLES.get(name, name)


def variant_title(name: str) -> str:
    return VARIANT_TITLES.get(name, name)


def fmt_value(metric: str, value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{DECIMALS.get(metric, 4)}f}"


def metric_order(metrics) -> list[str]:
    """Registry order (the published column order) first, then evaluator metrics, then the rest."""
    known = list(registry.METRICS) + list(registry.EVALUATOR_METRICS)
    present = set(metrics)
    return [m for m in known if m in present] + sorted(present - set(known))


def variant_order(variants) -> list[str]:
    known = list(VARIANT_TITLES)
    present = set(variants)
    return [v for v in known if v in present] + sorted(present - set(known))


# --- DVC outputs ------------------------------------------------------------------------------


def _json_value(v: float):
    return None if v is None or math.isnan(v) else round(float(v), 6)


def metrics_json(df) -> dict:
    """{dataset: {variant@steps: {metric: value}}}; n/a is null."""
    out: dict = {}
    for r in df.sort_values(["dataset", "variant", "steps"]).itertuples(index=False):
        out.setdefault(r.dataset, {}).setdefault(row_label(r.variant, r.steps), {})[r.metric] = _json_value(r.value)
    return out


def steps_quality(df):
    """Tidy rows for `dvc plots`: dataset, variant, steps, metric, value, seconds_per_image."""
    cols = ["dataset", "variant", "steps", "metric", "value", "seconds_per_image"]
    return df[cols].sort_values(["dataset", "metric", "variant", "steps"]).reset_index(drop=True)


# --- paper-style blocks -----------------------------------------------------------------------


@dataclass
class TableRow:
    name: str
    steps: int
    values: dict[str, float]
    published: bool = False
    source: str = ""
    ranked: bool = True            # competes for bold; False for ‡ reference rows and every published row
    subset: str = ""               # "n of N images, ..." when scored on part of the set (marked §)


@dataclass
class TableBlock:
    dataset: str
    metrics: list[str]
    rows: list[TableRow]
    notes: dict[str, str] = field(default_factory=dict)  # metric -> why it is n/a

    def best(self, metric: str) -> str | None:
        """The best displayed value of `metric` among this block's ranked rows, i.e. our own methods
        (compared as shown, so ties bold); None when none of them has a value."""
        shown = [r.values.get(metric, math.nan) for r in self.rows if r.ranked]
        shown = [v for v in shown if v is not None and not math.isnan(v)]
        if not shown:
            return None
        pick = max if registry.higher_better(metric) is not False else min
        return fmt_value(metric, pick(shown))


def _our_rows(sub, table_steps) -> list[TableRow]:
    rows = []
    for variant in variant_order(sub["variant"].unique()):
        vsub = sub[sub["variant"] == variant]
        all_steps = sorted(vsub["steps"].unique())
        keep = all_steps if len(all_steps) == 1 else [s for s in all_steps if s in table_steps]
        for steps in keep:
            ssub = vsub[vsub["steps"] == steps]
            values = dict(zip(ssub["metric"], ssub["value"], strict=True))
            subset = next((n.split(";")[0].removeprefix(SUBSET_PREFIX) for n in ssub["note"]
                           if n.startswith(SUBSET_PREFIX)), "")
            rows.append(TableRow(variant_title(variant), int(steps), values, ranked=variant not in UNRANKED_VARIANTS,
                                 subset=subset))
    return rows


def _notes(sub) -> dict[str, str]:
    """metric -> why it is n/a. Reasons name places as a user types them (registry.py); `redact`
    also rewrites any absolute path a message of another origin carries (an exception's text)."""
    reasons = sub["note"].map(lambda n: "; ".join(p for p in n.split("; ") if not p.startswith(SUBSET_PREFIX)))
    noted = sub.assign(note=reasons)
    noted = noted[(noted["note"] != "") & noted["value"].isna()]
    return {m: "; ".join(sorted({redact(n) for n in g["note"]})) for m, g in noted.groupby("metric")}


def build_blocks(df, table_steps=(1,), with_published=True) -> list[TableBlock]:
    """One block per dataset: our rows at `table_steps` (single-step methods always), then published."""
    blocks = []
    for dataset in sorted(df["dataset"].unique()):
        sub = df[df["dataset"] == dataset]
        metrics = metric_order(sub["metric"].unique())
        rows = _our_rows(sub, set(table_steps))
        if with_published:
            rows += [TableRow(p["method"], p["steps"], p["values"], published=True, source=p["source"], ranked=False)
                     for p in published_rows(dataset)]
        blocks.append(TableBlock(dataset, metrics, rows, _notes(sub)))
    return blocks


def _cell(block: TableBlock, row: TableRow, metric: str, bold: str, escape=str) -> str:
    """One formatted value; `bold` is a format string such as "**{}**", applied to the best."""
    if metric not in row.values:
        return escape("–")  # not applicable or not reported (distinct from n/a: could not run here)
    text = fmt_value(metric, row.values[metric])
    return bold.format(escape(text)) if row.ranked and text == block.best(metric) else escape(text)


def to_markdown(block: TableBlock) -> str:
    heads = ["Method", "Steps"] + [f"{registry.title(m)} {registry.arrow(m)}".strip() for m in block.metrics]
    lines = [f"### {dataset_title(block.dataset)}", "", "| " + " | ".join(heads) + " |",
             "|" + "---|" * 2 + "---:|" * len(block.metrics)]
    for r in block.rows:
        name = f"*{r.name} (published{PUBLISHED_MARK})*" if r.published else r.name + ("" if r.ranked else " ‡")
        name += f" {SUBSET_MARK}" if r.subset else ""
        cells = [_cell(block, r, m, "**{}**") for m in block.metrics]
        lines.append("| " + " | ".join([name, str(r.steps)] + cells) + " |")
    lines += ["", *_footnotes(block, markdown=True)]
    return "\n".join(lines).rstrip() + "\n"


def _footnotes(block: TableBlock, *, markdown: bool) -> list[str]:
    out = []
    sources = sorted({r.source for r in block.rows if r.published})
    for s in sources:
        out.append(f"{PUBLISHED_MARK} Published, not run by us: {s}. SD-scale models on GPUs, shown for "
                   "reference: never ranked (no bold) against the rows run here.")
    if any(not r.ranked and not r.published for r in block.rows):
        out.append("‡ Reference row, not ranked: the ×2 teacher (an easier task than ×4) or the "
                   "autoencoder ceiling D(E(HR)).")
    out.append("– not applicable to that method, or not reported by that paper.")
    for subset in sorted({r.subset for r in block.rows if r.subset}):
        out.append(f"{SUBSET_MARK} Scored on {subset} (each image costs minutes on a CPU): its means are not "
                   "those of the full set; the claims compare methods on the images both have.")
    for metric, note in block.notes.items():
        out.append(f"n/a {registry.title(metric)}: {note}")
    if markdown:
        return [f"- {line}" for line in out]
    return out


_LATEX_ESCAPES = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "×": r"$\times$",
                  "↑": r"$\uparrow$", "↓": r"$\downarrow$", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "–": "--",
                  "§": r"\S{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(c, c) for c in text)


def to_latex(block: TableBlock) -> str:
    """A booktabs tabular; published rows below a rule, in italics, with a dagger."""
    heads = ["Method", "Steps"] + [latex_escape(f"{registry.title(m)} {registry.arrow(m)}".strip())
                                  for m in block.metrics]
    lines = [f"% {latex_escape(dataset_title(block.dataset))}; generated by yonos.stages.report",
             r"\begin{tabular}{l r " + "r" * len(block.metrics) + "}", r"\toprule",
             " & ".join(heads) + r" \\", r"\midrule"]
    ruled = False
    for r in block.rows:
        if r.published and not ruled:
            lines.append(r"\midrule")
            ruled = True
        name = latex_escape(r.name + (PUBLISHED_MARK if r.published else "") + (SUBSET_MARK if r.subset else ""))
        name = rf"\textit{{{name}}}" if r.published else name
        cells = [_cell(block, r, m, r"\textbf{{{}}}", latex_escape) for m in block.metrics]
        lines.append(" & ".join([name, str(r.steps)] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% {latex_escape(n)}" for n in _footnotes(block, markdown=False)]
    return "\n".join(lines) + "\n"


def timing_markdown(timings: dict[str, float]) -> str:
    """Stage wall-time table from runs/<profile>/*/timing.json."""
    if not timings:
        return "_No timing.json files found._\n"
    lines = ["| Stage | Wall time (s) | h:mm:ss |", "|---|---:|---:|"]
    for stage, secs in sorted(timings.items(), key=lambda kv: -kv[1]):
        h, rem = divmod(round(secs), 3600)
        lines.append(f"| {stage} | {secs:.1f} | {h}:{rem // 60:02d}:{rem % 60:02d} |")
    lines.append(f"| **total** | {sum(timings.values()):.1f} | |")
    return "\n".join(lines) + "\n"
