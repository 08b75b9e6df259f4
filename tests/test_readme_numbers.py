"""The README quotes its numbers from reports/ through a generated block, never by hand: the block in
README.md is exactly what yonos.report.readme renders from the metrics.json it names, the rest of
that section carries no number, and the report stage rewrites the block (only the block)."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from yonos.errors import UserError
from yonos.report import readme, tables

REPO = Path(__file__).resolve().parents[1]
SECTION = "## What the embedded miniature shows"


def metrics(distilled_1=33.4535, direct_1=34.0036, distilled_2=34.2788, direct_2=34.5549) -> dict:
    def row(psnr, ssim, latent=None):
        out = {"psnr": psnr, "ssim": ssim, "lpips": None}
        return out if latent is None else {**out, "latent_psnr": latent}

    emb = {"bicubic@0": row(26.6719, 0.710166), "autoencoder@0": row(27.3041, 0.786287),
           "direct_x4@1": row(26.1587, 0.731679, direct_1), "direct_x4@2": row(26.3693, 0.732567, direct_2),
           "distilled_x4@1": row(26.013, 0.725704, distilled_1), "distilled_x4@2": row(26.2944, 0.729723, distilled_2),
           "distilled_x4+decoder@1": row(26.4595, 0.73295, distilled_1),
           "teacher_x2@1": row(26.6974, 0.766874, 37.4129), "teacher_x2@50": row(27.2695, 0.782351, 43.3048)}
    return {"embedded": emb, "realsr": {"bicubic@0": {"psnr": None}}}


def test_readme_block_is_what_reports_give():
    """Fails when README.md's numbers differ from reports/ (the hand-copied 34.56 vs 34.55 dB)."""
    old, new = readme.expected(REPO / "README.md")
    assert old == new, "README numbers are stale: run `python -m yonos.report.readme`"


def test_section_has_no_number_outside_the_block():
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION):]
    section = section[: section.index("\n## ", 1)]
    outside = readme.STUDY_BLOCK.sub("", readme.BLOCK.sub("", section))
    assert readme.BLOCK.search(section), "the section quotes its numbers through the generated block"
    assert re.findall(r"\d+\.\d+", outside) == [], "a hand-copied number outside the generated block"


def flat(text: str) -> str:
    """The block wraps its lines like the README; compare words."""
    return " ".join(text.split())


def claims(verdict1="not reproduced", verdict2="reproduced") -> pd.DataFrame:
    def row(claim, dataset, steps, diff, verdict):
        return {"claim": claim, "dataset": dataset, "metric": "psnr", "steps": steps, "seeds": 1, "images": 100,
                "diff": diff, "low": diff - 0.1, "high": diff + 0.1, "verdict": verdict}
    return pd.DataFrame([row("1: distilled beats direct", "b100", 1, -0.146, verdict1),
                         row("1: distilled beats direct", "embedded", 2, -0.05, "inconclusive"),
                         row("2: decoder fine-tuning helps", "b100", 1, 0.45, verdict2),
                         row("2: decoder fine-tuning helps", "embedded", 1, 0.446, "reproduced")])


def with_full_sets(b100_decoder=26.60, set14_decoder=26.60) -> dict:
    m = metrics()
    m["b100"] = {"bicubic@0": {"psnr": 25.96}, "autoencoder@0": {"psnr": 29.23},
                 "direct_x4@1": {"psnr": 26.1}, "distilled_x4@1": {"psnr": 26.0},
                 "distilled_x4+decoder@1": {"psnr": b100_decoder}}
    m["set14"] = {"bicubic@0": {"psnr": 26.00}, "autoencoder@0": {"psnr": 29.39},
                  "direct_x4@1": {"psnr": 26.2}, "distilled_x4@1": {"psnr": 26.1},
                  "distilled_x4+decoder@1": {"psnr": set14_decoder}}
    return m


def test_numbers_are_rounded_as_the_tables_round_them():
    text = flat(readme.render(metrics()))
    assert tables.fmt_value("latent_psnr", 37.4129) == "37.41" and "latent PSNR is 37.41 dB" in text
    assert "the held-out crops 27.30 vs 26.67 dB (+0.63)" in text and "short of the +2 dB" in text
    text = flat(readme.render(with_full_sets(), claims()))
    assert "B100 29.23 vs 25.96 dB (+3.27)" in text and "above the +2 dB we aimed for on B100" in text
    assert "B100, 1 step: -0.15 dB [-0.25, -0.05]" in text


def test_verdicts_come_from_the_claims_table():
    text = flat(readme.render(with_full_sets(), claims()))
    assert "Claim 1 (distilled beats direct, most at few steps): not reproduced on B100 at one step.**" in text
    assert "the held-out crops, 2 steps: -0.05 dB [-0.15, +0.05] (inconclusive)" in text
    assert "Claim 2 (decoder fine-tuning helps): reproduced on B100.**" in text and "1−SSIM fallback" in text
    assert "1 training seed, so the intervals cover image-to-image variation only" in text
    assert "RealSR: not scored (data absent)" in text
    flipped = flat(readme.render(with_full_sets(), claims(verdict1="reproduced", verdict2="inconclusive")))
    assert "most at few steps): reproduced on B100" in flipped and "helps): inconclusive on B100" in flipped
    assert "helps): not judged" in flat(readme.render(with_full_sets()))  # no claims.csv: no verdict made up
    with pytest.raises(UserError, match="lacks direct_x4@1/latent_psnr"):
        readme.render({"embedded": {k: v for k, v in metrics()["embedded"].items() if k != "direct_x4@1"}})


def test_the_full_image_target_follows_the_numbers():
    assert "Set14 and B100: met." in flat(readme.render(with_full_sets(), claims()))
    assert "Set14 and B100: met on one set only." in flat(readme.render(with_full_sets(set14_decoder=26.2)))
    assert "Set14 and B100: missed." in flat(readme.render(with_full_sets(26.0, 26.2)))


def write_readme(folder: Path, source: str) -> Path:
    path = folder / "README.md"
    begin = readme.BEGIN.format(source=source)
    path.write_text(f"# Title\n\nbefore 1.5\n\n{begin}\nstale 34.56\n{readme.END}\n\nafter 2.5\n")
    return path


def test_update_rewrites_only_the_block(tmp_path):
    (tmp_path / "reports" / "embedded").mkdir(parents=True)
    (tmp_path / "reports" / "embedded" / "metrics.json").write_text(json.dumps(metrics()))
    path = write_readme(tmp_path, "reports/embedded/metrics.json")
    assert readme.main(["--readme", str(path), "--check"]) == 1 and "stale 34.56" in path.read_text()
    assert not readme.update_readme(path, metrics_path=tmp_path / "reports" / "smoke" / "metrics.json")  # not its own
    assert readme.update_readme(path) and not readme.update_readme(path)
    text = path.read_text()
    assert text.startswith("# Title\n\nbefore 1.5\n\n<!-- yonos:numbers:begin")
    assert text.endswith(f"{readme.END}\n\nafter 2.5\n")
    assert "stale" not in text and "27.30" in text and readme.main(["--readme", str(path), "--check"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "reports"]  # no temporary file left


def test_missing_block_or_source_is_one_line(tmp_path, capsys):
    path = tmp_path / "README.md"
    path.write_text("# no block\n")
    assert readme.main(["--readme", str(path)]) == 2
    assert "expected one block" in capsys.readouterr().err
    write_readme(tmp_path, "reports/embedded/metrics.json")
    assert readme.main(["--readme", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run the report stage first" in err


def test_report_stage_fills_the_block(tmp_path, monkeypatch):
    """The report stage rewrites the block of the README in its working folder when the block names
    the metrics.json it just wrote, and leaves it alone otherwise (a smoke run, the tests)."""
    from yonos.stages import report

    rows = [{"method": "yonos", "variant": key.split("@")[0], "dataset": "embedded", "degradation": "bicubic",
             "steps": int(key.split("@")[1]), "metric": m, "value": v, "note": ""}
            for key, vals in metrics()["embedded"].items() for m, v in vals.items() if v is not None]
    (tmp_path / "runs" / "embedded" / "evaluate").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(tmp_path / "runs" / "embedded" / "evaluate" / "results.csv", index=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(report, "write_figures", lambda *args, **kwargs: {})  # figures: test_report.py
    path = write_readme(tmp_path, "reports/embedded/metrics.json")
    report.run({"profile": "embedded", "run_root": "runs", "report": {"out_dir": "reports/other"}})
    assert "stale 34.56" in path.read_text()                          # another report: untouched
    report.run({"profile": "embedded", "run_root": "runs", "report": {"out_dir": "reports/embedded"}})
    assert "stale" not in path.read_text() and "27.30 vs 26.67 dB (+0.63)" in flat(path.read_text())


def test_baselines_and_claim_3_are_quoted_from_the_report():
    m = with_full_sets()
    m["embedded"] |= {"sr3_x4@1": {"psnr": 9.3}, "sr3_x4@100": {"psnr": 19.72}, "sr3_x4@16": {"psnr": 19.74},
                      "stablesr_x4@200": {"psnr": 21.0}}
    c = claims()
    c.loc[len(c)] = {"claim": "3: one step beats StableSR-200", "dataset": "embedded", "metric": "psnr", "steps": 1,
                     "seeds": 1, "images": 30, "diff": 4.46, "low": 4.1, "high": 4.8, "verdict": "reproduced"}
    text = flat(readme.render(m, c))
    assert "SR3 19.72 dB at 100 steps (best 19.74 at 16); StableSR 21.00 dB at 200 steps (best 21.00 at 200)." in text
    assert "YONOS − StableSR: the held-out crops psnr +4.46 dB [+4.10, +4.80] (reproduced)." in text
    c.loc[len(c)] = {"claim": "3: one step beats StableSR-200", "dataset": "realsr", "metric": "psnr", "steps": 1,
                     "seeds": 1, "images": 10, "diff": 2.5, "low": 1.7, "high": 3.4, "verdict": "reproduced"}
    text = flat(readme.render(m, c))  # a real set, scored on a subset: named, with its image count
    assert "; RealSR (10 images) psnr +2.50 dB [+1.70, +3.40] (reproduced)." in text
    assert "Baselines" not in flat(readme.render(with_full_sets(), claims()))  # none evaluated: no line


def study_claims() -> pd.DataFrame:
    row = dict(a="distilled_x4", b="direct_x4", metric="psnr", seeds=3, images=100, mean_a=25.6, mean_b=25.7)
    return pd.DataFrame([
        {**row, "claim": "1: distilled beats direct", "dataset": "b100", "steps": 1, "diff": -0.12, "low": -0.16,
         "high": -0.07, "verdict": "not reproduced"},
        {**row, "claim": "2: decoder fine-tuning helps", "dataset": "b100", "steps": 1, "diff": 0.32, "low": 0.27,
         "high": 0.39, "verdict": "reproduced"},
        {**row, "claim": "1: distilled beats direct", "dataset": "set5", "steps": 1, "seeds": 1, "diff": -0.4,
         "low": -0.5, "high": -0.3, "verdict": "not reproduced"},
    ])


def test_the_study_block_quotes_the_study_over_seeds(tmp_path):
    budget = study_claims().iloc[:1].assign(arm="claim1_s1000", teacher_steps=800, student_steps=1000,
                                            direct_init="teacher", seeds=1)
    text = flat(readme.render_study(study_claims(), budget))
    assert "Over 3 training seeds" in text and "B100, 1 step: -0.12 dB [-0.16, -0.07] (not reproduced)" in text
    assert "Claim 2, + decoder − distilled: B100, 1 step: +0.32 dB [+0.27, +0.39] (reproduced)" in text
    assert "set5" not in text  # one seed only: not quoted as a result over seeds
    assert "claim1_s1000 (teacher 800, student = direct 1000, direct from teacher; 1 seed) -0.12 dB" in text
    row = study_claims().iloc[0].to_dict()
    ablations = pd.DataFrame([
        {**row, "a": "distilled_x4+decoder@zero_snr", "b": "distilled_x4+decoder", "diff": 0.04, "low": 0.01,
         "high": 0.07, "verdict": "reproduced"},
        {**row, "a": "direct_x4@zero_snr", "b": "direct_x4", "diff": 0.3, "low": 0.2, "high": 0.4}])
    chain = pd.DataFrame([{**row, "a": "teacher_x2", "b": "bicubic_x2", "diff": -1.85, "low": -2.09, "high": -1.63,
                           "verdict": "not reproduced"}])
    by_arm = pd.DataFrame([{**row, "claim": "target: beats bicubic", "a": "distilled_x4+decoder", "b": "bicubic",
                            "arm": "combined", "diff": 0.18, "low": 0.11, "high": 0.25, "verdict": "reproduced"},
                           {**row, "arm": "combined"},
                           {**row, "claim": "target: beats bicubic", "a": "distilled_x4+decoder", "b": "bicubic",
                            "arm": "longest", "seeds": 1, "diff": 0.5, "low": 0.4, "high": 0.6,
                            "verdict": "reproduced"}])
    text = flat(readme.render_study(study_claims(), budget, ablations, chain, by_arm))
    assert "against the main run's** (B100, one step, arm − main): zero_snr (3 seeds) +0.04 dB [+0.01, +0.07]" in text
    assert ("under each arm judged on its own runs** (B100, one step): combined (3 seeds) +0.18 dB [+0.11, +0.25] "
            "(reproduced); longest (1 seed) +0.50 dB [+0.40, +0.60] (reproduced).") in text
    assert "+0.30" not in text  # not the final output
    assert "teacher_x2 − bicubic_x2 -1.85 dB [-2.09, -1.63] (not reproduced)" in text
    # README with both blocks: the study block is regenerated from the CSV its marker names, and checked
    (tmp_path / "reports" / "embedded").mkdir(parents=True)
    (tmp_path / "reports" / "embedded" / "metrics.json").write_text(json.dumps(metrics()))
    (tmp_path / "reports" / "claims").mkdir(parents=True)
    study_claims().to_csv(tmp_path / "reports" / "claims" / "claims.csv", index=False)
    path = write_readme(tmp_path, "reports/embedded/metrics.json")
    path.write_text(path.read_text() + "\n" + readme.STUDY_BEGIN.format(source="reports/claims/claims.csv")
                    + "\nstale\n" + readme.STUDY_END + "\n")
    assert not readme.update_readme(path, study_path=tmp_path / "elsewhere.csv")
    assert readme.update_readme(path, study_path=tmp_path / "reports" / "claims" / "claims.csv")
    assert "Over 3 training seeds" in path.read_text() and "stale" not in path.read_text()
    assert readme.main(["--readme", str(path), "--check"]) == 0


def test_wall_time_is_read_from_timing_md(tmp_path):
    from yonos.report.tables import timing_markdown

    path = tmp_path / "timing.md"
    path.write_text(timing_markdown({"evaluate_real_stablesr": 4123.4, "train_teacher": 936.2, "evaluate": 1770.4,
                                     "report": 19.1}))
    timing = readme.read_timing(path)
    assert timing == {"evaluate_real_stablesr": 4123.4, "train_teacher": 936.2, "evaluate": 1770.4, "report": 19.1}
    text = flat(readme.render(with_full_sets(), claims(), timing))
    assert "1.9 h in all; the largest evaluate_real_stablesr 69 min, evaluate 30 min, train_teacher 16 min." in text
    assert readme.read_timing(tmp_path / "absent.md") == {}
