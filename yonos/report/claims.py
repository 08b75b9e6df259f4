"""Verdicts on the paper's claims from paired per-image comparisons with bootstrap intervals.

A claim "A beats B" (e.g. Claim 1: the distilled student beats the directly trained model at the same
budget) is judged on the per-image differences d = s(A) - s(B), signed so that positive means A is
better (metric direction from the registry), paired on (training seed, image). The interval is a
percentile bootstrap of the mean difference that resamples training seeds and, within them, images (a
two-level bootstrap: both are sources of variation a reader cares about). scipy.stats.bootstrap
resamples one axis only, so the two-level resampling is written here. Verdict: "reproduced" when the
whole interval is above 0, "not reproduced" when it is below 0 (B is better), else "inconclusive".
With one training seed the interval covers image-to-image variation only, and the table says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from yonos.metrics import registry

LEVEL = 0.95
RESAMPLES = 10_000


@dataclass(frozen=True)
class Verdict:
    claim: str
    dataset: str
    metric: str
    steps: int
    a: str
    b: str
    seeds: int
    images: int
    mean_a: float
    mean_b: float
    diff: float  # mean of s(A) - s(B) in the metric's own units (not sign-flipped)
    low: float
    high: float
    verdict: str


def bootstrap_mean(d: np.ndarray, *, resamples: int = RESAMPLES, level: float = LEVEL,
                   seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of d [seeds x images], resampling seeds, then images per seed."""
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 2 or d.size == 0 or np.isnan(d).any():
        raise ValueError(f"need a complete seeds x images array of differences, got shape {d.shape}")
    rng = np.random.default_rng(seed)
    n_seeds, n_images = d.shape
    seeds = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    images = rng.integers(0, n_images, size=(resamples, n_seeds, n_images))
    means = d[seeds[..., None], images].mean(axis=(1, 2))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def decide(low: float, high: float, higher_is_better: bool) -> str:
    better_low, better_high = (low, high) if higher_is_better else (-high, -low)
    if better_low > 0:
        return "reproduced"
    if better_high < 0:
        return "not reproduced"
    return "inconclusive"


def paired(per_image: pd.DataFrame, *, dataset: str, metric: str, steps: int, a: str, b: str,
           steps_b: int | None = None) -> np.ndarray:
    """[seeds x images] values of A and B on the images both have (rows: per_image.csv, + a `seed`
    column for multi-seed studies; absent means one seed)."""
    df = per_image[(per_image["dataset"] == dataset) & (per_image["metric"] == metric)]
    if "seed" not in df.columns:
        df = df.assign(seed=0)

    def pick(variant: str, s: int) -> pd.Series:
        rows = df[(df["variant"] == variant) & (df["steps"] == s)]
        return rows.set_index(["seed", "id"])["value"].astype(float)

    both = pd.concat({"a": pick(a, steps), "b": pick(b, steps if steps_b is None else steps_b)}, axis=1).dropna()
    if both.empty:
        return np.empty((2, 0, 0))
    seeds = sorted(both.index.get_level_values("seed").unique())
    ids = sorted(set.intersection(*[set(both.loc[s].index) for s in seeds]))
    return np.stack([[both.loc[s]["a"].reindex(ids).to_numpy(), both.loc[s]["b"].reindex(ids).to_numpy()]
                     for s in seeds], axis=1)  # [2, seeds, images]


def judge(per_image: pd.DataFrame, claim: str, *, dataset: str, metric: str, steps: int, a: str, b: str,
          steps_b: int | None = None) -> Verdict | None:
    """The verdict on "a beats b" for one (dataset, metric, steps); None when the pair is not in the data."""
    values = paired(per_image, dataset=dataset, metric=metric, steps=steps, a=a, b=b, steps_b=steps_b)
    if values.shape[-1] == 0:
        return None
    d = values[0] - values[1]
    low, high = bootstrap_mean(d)
    better = registry.higher_better(metric)
    return Verdict(claim, dataset, metric, steps, a, b, d.shape[0], d.shape[1], float(values[0].mean()),
                   float(values[1].mean()), float(d.mean()), low, high, decide(low, high, better))


def to_frame(verdicts: list[Verdict]) -> pd.DataFrame:
    """One row per verdict; with its columns even when there is none, so its CSV reads back."""
    return pd.DataFrame([v.__dict__ for v in verdicts if v is not None], columns=list(Verdict.__dataclass_fields__))


def to_markdown(frame: pd.DataFrame) -> str:
    """One row per (claim, dataset, metric, steps): means, difference with its 95% interval, verdict."""
    lines = ["| Claim | Set | Metric | Steps | A | B | Seeds × images | A | B | A − B [95% CI] | Verdict |",
             "|---|---|---|---:|---|---|---:|---:|---:|---|---|"]
    for r in frame.itertuples():
        lines.append(f"| {r.claim} | {r.dataset} | {r.metric} {registry.arrow(r.metric)} | {r.steps} | {r.a} | {r.b} | "
                     f"{r.seeds} × {r.images} | {r.mean_a:.4g} | {r.mean_b:.4g} | "
                     f"{r.diff:+.3g} [{r.low:+.3g}, {r.high:+.3g}] | {r.verdict} |")
    return "\n".join(lines) + "\n"


def verdicts(per_image: pd.DataFrame, specs: list[dict], steps: list[int]) -> pd.DataFrame:
    """Every spec {claim, a, b, metrics, steps?, b_steps?} judged on each dataset of `per_image` and each step
    count (the spec's, else `steps`); B is taken at `b_steps` when given (0: a method without steps, such
    as bicubic), else at A's. Pairs absent from the data (a set without the variant) are left out."""
    out = []
    for spec in specs:
        for dataset in sorted(per_image["dataset"].unique()):
            for s in spec.get("steps", steps):
                out += [judge(per_image, spec["claim"], dataset=dataset, metric=m, steps=s, a=spec["a"], b=spec["b"],
                              steps_b=spec.get("b_steps")) for m in spec["metrics"]]
    return to_frame(out)
