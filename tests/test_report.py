"""The report stage on a small synthetic results.csv: every output written, directions and bold
from the registry, published rows marked and never ranked, n/a reasons kept and free of machine
paths, figures readable at column width."""

import json
import math
import re
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from yonos.io import save_image, write_json
from yonos.metrics import registry
from yonos.report import tables
from yonos.report.figures import COLUMN_WIDTH_IN, DPI, pareto_front
from yonos.stages import report
from yonos.stages._common import run_stage

VARIANTS = {"direct_x4": 23.0, "distilled_x4": 24.5, "distilled_x4+decoder": 24.8, "teacher_x2": 27.0}


def registry_notes(tmp, monkeypatch) -> dict[str, str]:
    """n/a reasons from the real registry code path, with every weight folder a temp folder named by
    the variables a user sets (TORCH_HOME, HF_HOME, YONOS_PYIQA_WEIGHTS); plus a reason of another
    origin (an exception's text) that carries a temp path."""
    for var in ("TORCH_HOME", "HF_HOME", registry.MIRROR_ENV):
        (tmp / var).mkdir(parents=True)
        monkeypatch.setenv(var, str(tmp / var))
    monkeypatch.setattr(registry, "_hf_cached", lambda repo, name: None)
    if "pyiqa.utils.download_util" in sys.modules:  # pyiqa fixed its folder from TORCH_HOME at import
        monkeypatch.setattr(sys.modules["pyiqa.utils.download_util"], "DEFAULT_CACHE_DIR",
                            str(tmp / "TORCH_HOME" / "hub" / "pyiqa"))
    notes = {m: registry.missing_reason(registry.get(m)) for m in ("lpips", "maniqa", "clipiqa")}
    notes["dists"] = f"pyiqa could not build dists: OSError: {tmp / 'TORCH_HOME' / 'hub' / 'x.pth'}: truncated"
    return notes


def make_results(profile_dir, notes):
    rows = []
    for ds in ("embedded", "realsr"):
        def add(variant, steps, metric, value, note="", ds=ds):
            rows.append({"method": "bicubic" if variant == "bicubic" else "yonos", "variant": variant,
                         "dataset": ds, "degradation": "bicubic", "steps": steps, "metric": metric,
                         "value": value, "note": note,
                         "seconds_per_image": 0.001 if variant == "bicubic" else 0.02 * steps})
        add("bicubic", 0, "psnr", 24.0)
        add("bicubic", 0, "ssim", 0.70)
        for metric, note in notes.items():
            add("bicubic", 0, metric, math.nan, note)
        for variant, base in VARIANTS.items():
            for s in (1, 2, 4):
                add(variant, s, "psnr", base + 0.1 * s)
                add(variant, s, "ssim", 0.60 + 0.01 * s)
                for metric, note in notes.items():
                    add(variant, s, metric, math.nan, note)
                add(variant, s, "latent_psnr", 20.0 + s)
    (profile_dir / "evaluate").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(profile_dir / "evaluate" / "results.csv", index=False)
    rng = np.random.default_rng(0)  # per-image scores for the claims: distilled ~1 dB above direct, image by image
    direct = 23.0 + rng.normal(0, 1.0, 12)
    pd.DataFrame([{"dataset": "embedded", "variant": v, "steps": 1, "metric": "psnr", "id": f"im{i}", "value": x}
                  for v, vals in (("direct_x4", direct), ("distilled_x4", direct + 1.0 + rng.normal(0, 0.1, 12)))
                  for i, x in enumerate(vals)]).to_csv(profile_dir / "evaluate" / "per_image.csv", index=False)
    write_json(profile_dir / "train_teacher" / "timing.json", {"stage": "train_teacher", "seconds": 125.0})
    g = torch.Generator().manual_seed(0)
    images = profile_dir / "evaluate" / "images" / "embedded"
    for i in range(2):
        hr = torch.rand(3, 32, 32, generator=g)
        save_image(hr, images / "hr" / f"{i}.png")
        save_image(hr[:, ::4, ::4], images / "lr" / f"{i}.png")
        for folder in ("bicubic_s0", "direct_x4_s1", "distilled_x4_s1"):  # no decoder images: caption says so
            save_image(hr.flip(-1), images / folder / f"{i}.png")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        notes = registry_notes(root / "weights", mp)
        make_results(root / "runs" / "smoke", notes)
        cfg = {"profile": "smoke", "run_root": str(root / "runs"), "report": {"out_dir": str(root / "reports"),
               "claims": [{"claim": "1", "a": "distilled_x4", "b": "direct_x4", "metrics": ["psnr", "ssim"]}]}}
        run_stage("report", report.run, cfg)
    return root, notes


@pytest.fixture(scope="module")
def reports(rendered):
    return rendered[0] / "reports"


def test_all_outputs_exist(reports):
    for rel in ("metrics.json", "steps_quality.csv", "README.md", "timing.md", "tables/realsr.md",
                "tables/realsr.tex", "figures/steps_embedded.png", "figures/pareto_realsr.png",
                "figures/grid_embedded.png"):
        assert (reports / rel).is_file(), rel
    assert not list(reports.rglob("*.tmp*"))  # atomic writes leave nothing behind


def test_metrics_json_is_nested_and_null_for_na(reports):
    data = json.loads((reports / "metrics.json").read_text())
    assert data["realsr"]["distilled_x4@1"]["psnr"] == pytest.approx(24.6)
    assert data["realsr"]["bicubic@0"]["lpips"] is None


def test_steps_quality_is_tidy(reports):
    df = pd.read_csv(reports / "steps_quality.csv")
    assert list(df.columns) == ["dataset", "variant", "steps", "metric", "value", "seconds_per_image"]
    assert len(df) == 2 * (6 + 4 * 3 * 7)


def test_table_arrows_bold_published_and_na(reports, rendered):
    notes = rendered[1]
    md = (reports / "tables" / "realsr.md").read_text()
    assert "| Method | Steps | PSNR ↑ | SSIM ↑ | LPIPS ↓ | DISTS ↓ | MANIQA ↑ | CLIPIQA ↑ | latent_psnr ↑ |" in md
    assert "| YONOS distilled ×4 + decoder | 1 | **24.90** |" in md      # ours, at 1 step: best of ours
    assert "| Teacher ×2 ‡ | 1 | 27.10 |" in md                          # x2 teacher is never bold
    assert "*OSEDiff (published†)* | 1 | 25.15 | 0.7341 | 0.2921 |" in md  # a reference, never ranked
    assert f"n/a LPIPS: {notes['lpips']}" in md and "arXiv 2406.08177" in md
    assert "| YONOS distilled ×4 | 2 |" not in md                         # table_steps: [1]
    emb = (reports / "tables" / "embedded.md").read_text()
    assert "| Bicubic | 0 | 24.00 | **0.7000** | n/a |" in emb           # bicubic best SSIM
    assert "| Bicubic | 0 | 24.00 | **0.7000** | n/a | n/a | n/a | n/a | – |" in emb  # no latent
    assert "published" not in emb.split("- ")[0]                         # no published rows for embedded
    tex = (reports / "tables" / "realsr.tex").read_text()
    assert r"\textbf{24.90}" in tex and r"PSNR $\uparrow$" in tex and r"\textit{OSEDiff$^\dagger$}" in tex
    assert r"LPIPS\_v0.1" in tex


def test_published_rows_never_win_nor_bold_among_themselves(reports):
    """Like with like: SD-scale published rows sit beside ours as references. OSEDiff beats our PSNR
    (25.15 vs 24.90) and is the only row with LPIPS values, yet no published cell is bold, and a column
    where only published rows have values has no bold at all."""
    md = (reports / "tables" / "realsr.md").read_text()
    published = [line for line in md.splitlines() if "(published†)" in line]
    assert len(published) == 3 and not any("**" in line for line in published)  # StableSR, OSEDiff, LDM-SR
    assert "*LDM-SR (published†)* | 200 | 25.49 | 0.7159 | 0.3129 | 0.2218 | – |" in md  # CCSR: no MANIQA
    assert "arXiv 2401.00877" in md
    cells = [line.split("|")[1:-1] for line in md.splitlines() if line.startswith("| ")][1:]  # no header
    names = ("method", "steps", "psnr", "ssim", "lpips")
    column = {name: [c[i].strip() for c in cells] for i, name in enumerate(names)}
    assert [v for v in column["psnr"] if "**" in v] == ["**24.90**"]   # ours wins PSNR, OSEDiff's 25.15 does not
    assert [v for v in column["ssim"] if "**" in v] == ["**0.7000**"]  # bicubic, over the published 0.7341
    assert not any("**" in v for v in column["lpips"])                   # only published values: no bold at all
    tex = (reports / "tables" / "realsr.tex").read_text()
    assert not any(r"\textbf" in line for line in tex.splitlines() if r"\dagger" in line and "&" in line)
    assert "never ranked" in md and "never ranked" in (reports / "README.md").read_text()
    assert "published rows included" not in (reports / "README.md").read_text()


# Absolute machine paths: a home or temp folder, the shared mirror, a Windows drive.
MACHINE_PATH = re.compile(r"(?<![\w.:/~$}-])/(home|tmp|work|root|Users|var|private|mnt)/|\b[A-Za-z]:\\")


def test_no_machine_path_in_anything_generated(rendered):
    """n/a reasons came from the registry with weight folders in temp folders (and one from an
    exception naming a temp file): no generated text file names an absolute path, and the places are
    named as a user types them."""
    from yonos.report.paths import find_absolute_paths

    root, _ = rendered
    texts = {p: p.read_text() for p in (root / "reports").rglob("*") if p.suffix in (".md", ".tex", ".json", ".csv")}
    assert len(texts) >= 8
    for path, text in texts.items():
        assert str(root) not in text and not MACHINE_PATH.search(text), path
        assert not find_absolute_paths(text), (path, find_absolute_paths(text))
    md = texts[root / "reports" / "tables" / "realsr.md"]
    assert "$TORCH_HOME/hub/pyiqa/" in md and "$YONOS_PYIQA_WEIGHTS" in md and "$HF_HOME/hub/" in md
    assert "$TORCH_HOME/hub/x.pth: truncated" in md                          # the exception's path, shown as typed


def test_readme_links_and_captions_everything(reports):
    text = (reports / "README.md").read_text()
    for rel in ("figures/steps_embedded.png", "figures/pareto_realsr.png", "figures/grid_embedded.png",
                "tables/realsr.tex", "metrics.json", "steps_quality.csv", "docs/metrics.md"):
        assert rel in text, rel
    assert re.search(r"Not available: [^*]*\+ decoder", text)
    assert "| train_teacher | 125.0 | 0:02:05 |" in text


def test_figures_fit_a_paper_column(reports):
    with Image.open(reports / "figures" / "steps_embedded.png") as img:
        width_in = img.size[0] / DPI
    assert COLUMN_WIDTH_IN * 0.9 < width_in < COLUMN_WIDTH_IN * 1.25


def test_pareto_front():
    secs = [1.0, 2.0, 3.0, 0.5]
    vals = [10.0, 12.0, 11.0, 9.0]
    assert list(pareto_front(pd.Series(secs).to_numpy(), pd.Series(vals).to_numpy(), True)) == [3, 0, 1]
    assert list(pareto_front(pd.Series(secs).to_numpy(), pd.Series(vals).to_numpy(), False)) == [3]


def test_value_formatting():
    assert tables.fmt_value("psnr", 24.567) == "24.57" and tables.fmt_value("ssim", 0.5) == "0.5000"
    assert tables.fmt_value("lpips", math.nan) == "n/a"


def test_committed_reports_have_no_machine_path():
    """Everything under reports/ is committed: no home, temp or mirror folder of the machine that ran."""
    from pathlib import Path

    from yonos.report.paths import find_absolute_paths

    root = Path(__file__).resolve().parents[1] / "reports"
    texts = [p for p in root.rglob("*") if p.suffix in (".md", ".tex", ".json", ".csv")]
    assert texts
    for path in texts:
        text = path.read_text()
        assert not MACHINE_PATH.search(text) and not find_absolute_paths(text), path


def test_claims_are_judged_on_paired_per_image_scores(reports):
    frame = pd.read_csv(reports / "claims.csv")
    # Only pairs present in per_image.csv: psnr at 1 step (no ssim scores, no other step counts).
    assert frame[["metric", "steps", "verdict"]].values.tolist() == [["psnr", 1, "reproduced"]]
    assert 0.9 < frame["low"][0] < frame["diff"][0] < frame["high"][0] < 1.1
    readme = (reports / "README.md").read_text()
    assert "## Claims" in readme and "| reproduced |" in readme and "(claims.md)" in readme
    assert (reports / "claims.md").read_text().startswith("# Claims")


def test_rows_on_part_of_a_set_are_marked_and_their_na_reasons_kept():
    from yonos.metrics.results import subset_note

    note = subset_note(10, 100)
    df = pd.DataFrame([
        dict(method="bicubic", variant="bicubic", dataset="realsr", degradation="", steps=0, metric="psnr",
             value=25.0, note=""),
        dict(method="stablesr", variant="stablesr_x4", dataset="realsr", degradation="", steps=200, metric="psnr",
             value=24.0, note=note),
        dict(method="stablesr", variant="stablesr_x4", dataset="realsr", degradation="", steps=200, metric="lpips",
             value=math.nan, note=f"{note}; LPIPS weights missing"),
    ])
    block = tables.build_blocks(df, table_steps=(1, 200), with_published=False)[0]
    text = tables.to_markdown(block)
    assert re.search(r"\| StableSR[^|]* § \| 200 \|", text) and not re.search(r"\| Bicubic[^|]*§", text)
    assert "§ Scored on 10 of 100 images, evenly spaced in name order" in text
    assert "- n/a LPIPS: LPIPS weights missing" in text  # the reason, without the subset part
    assert "subset:" not in text and r"\S{}" in tables.to_latex(block)


def test_grid_shows_the_images_most_columns_saved(tmp_path):
    from yonos.report.figures import shared_ids

    hr, a, b = tmp_path / "hr", tmp_path / "a", tmp_path / "b"
    for folder, names in ((hr, "0123"), (a, "0123"), (b, "03")):  # b: a method scored on a subset
        for n in names:
            save_image(torch.zeros(3, 4, 4), folder / f"{n}.png")
    assert shared_ids(hr, [hr, a, b], 2) == ["0.png", "3.png"]
    assert shared_ids(hr, [hr, a], 2) == ["0.png", "1.png"]  # all saved alike: name order
