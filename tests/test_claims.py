"""Claim verdicts: paired per-image differences, a two-level (seeds, images) bootstrap, and the verdict
rule; each checked against an independent computation or a case built to expose a wrong rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from yonos.report import claims
from yonos.report.claims import bootstrap_mean, decide, judge, paired


def rows(variant: str, values, *, steps=1, metric="psnr", seed=None, ids=None):
    ids = ids or [f"im{i}" for i in range(len(values))]
    out = [dict(dataset="b100", variant=variant, steps=steps, metric=metric, id=i, value=v)
           for i, v in zip(ids, values)]
    return [{**r, "seed": seed} for r in out] if seed is not None else out


def test_one_seed_interval_matches_scipy_percentile_bootstrap():
    d = np.random.default_rng(1).normal(0.3, 1.0, size=200)
    low, high = bootstrap_mean(d[None])
    ref = stats.bootstrap((d,), np.mean, n_resamples=10_000, method="percentile", random_state=0).confidence_interval
    assert low == pytest.approx(ref.low, abs=0.02) and high == pytest.approx(ref.high, abs=0.02)
    assert low < 0.3 < high


def test_between_seed_spread_widens_the_interval():
    """Images agree within each seed, but the seeds disagree: only resampling seeds shows that."""
    rng = np.random.default_rng(0)
    d = np.array([1.0, -0.9, 1.1])[:, None] + rng.normal(0, 0.05, size=(3, 50))
    low, high = bootstrap_mean(d)
    assert low < 0 < high
    pooled_low, _ = bootstrap_mean(d.reshape(1, -1))  # treating 150 images as one seed: falsely confident
    assert pooled_low > 0


@pytest.mark.parametrize(("low", "high", "higher", "want"), [
    (0.1, 0.5, True, "reproduced"), (-0.5, -0.1, True, "not reproduced"), (-0.1, 0.2, True, "inconclusive"),
    (-0.05, -0.01, False, "reproduced"), (0.01, 0.05, False, "not reproduced"),
])
def test_verdict_follows_the_metric_direction(low, high, higher, want):
    assert decide(low, high, higher) == want


def test_pairs_by_seed_and_image_and_judges_the_direction():
    per_image = pd.DataFrame(
        rows("distilled_x4", [30.0, 31.0, 29.0, 99.0], seed=0, ids=["a", "b", "c", "only_a"])
        + rows("direct_x4", [29.5, 30.4, 28.6], seed=0, ids=["a", "b", "c"])
        + rows("distilled_x4", [30.2, 30.8, 29.1], seed=1, ids=["a", "b", "c"])
        + rows("direct_x4", [29.9, 30.5, 28.9], seed=1, ids=["a", "b", "c"])
        + rows("direct_x4", [1.0, 1.0, 1.0], steps=2, seed=0, ids=["a", "b", "c"]))
    values = paired(per_image, dataset="b100", metric="psnr", steps=1, a="distilled_x4", b="direct_x4")
    assert values.shape == (2, 2, 3)  # the image only A has is left out
    v = judge(per_image, "1", dataset="b100", metric="psnr", steps=1, a="distilled_x4", b="direct_x4")
    assert (v.seeds, v.images) == (2, 3)
    assert v.diff == pytest.approx(np.mean([0.5, 0.6, 0.4, 0.3, 0.3, 0.2]))
    assert v.verdict == "reproduced" and 0 < v.low <= v.diff <= v.high
    lp = pd.DataFrame(rows("a", [0.2, 0.3, 0.25], metric="lpips") + rows("b", [0.3, 0.4, 0.35], metric="lpips"))
    assert judge(lp, "x", dataset="b100", metric="lpips", steps=1, a="a", b="b").verdict == "reproduced"
    assert judge(per_image, "1", dataset="set5", metric="psnr", steps=1, a="distilled_x4", b="direct_x4") is None


def test_no_verdict_still_writes_a_csv_that_reads_back(tmp_path):
    """A study with no arm run yet writes ablations.csv, which the report stage reads: a header, not an empty file."""
    claims.to_frame([]).to_csv(tmp_path / "ablations.csv", index=False)
    back = pd.read_csv(tmp_path / "ablations.csv")
    assert back.empty and {"a", "b", "diff", "verdict"} <= set(back.columns)
