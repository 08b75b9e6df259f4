"""evaluate: every variant on every selected set, at every DDIM step count, timed in the same call
that is scored. Methods are found by name in the `yonos.methods` registry and used only through
the common `upscale` contract, plus optional capabilities (`has_latents`) instead of name checks.

Writes runs/<profile>/evaluate/{results.csv, per_image.csv, images/<set>/<variant>_s<steps>/<id>.png}.
results.csv is tidy: method, variant, dataset, degradation, steps, metric, value, seconds_per_image, note,
and the provenance of each row: profile (the params profile that produced it), run_date (UTC) and commit
(git HEAD, `+changes` when tracked files differed from it).
latent_psnr = 10 log10(range(z_h)^2 / MSE(z-hat, z_h)) per image, range = max - min of that image's
E(HR); it shows the U-Net's error where the decoder bounds pixel metrics.
"""

from __future__ import annotations

import datetime
import math
import subprocess
import tempfile
import time
import zlib
from collections import defaultdict
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from yonos.config import run_dir
from yonos.data.eval_sets import resolve_eval_set
from yonos.errors import UserError
from yonos.io import atomic_path, save_image
from yonos.metrics import Scorer
from yonos.metrics.results import subset_note
from yonos.plugins import load_method
from yonos.sampler import per_image_generators
from yonos.stages._common import device_of, stage_main

NAME = "evaluate"
RESULT_COLUMNS = ("method", "variant", "dataset", "degradation", "steps", "metric", "value", "seconds_per_image",
                  "note")
PROVENANCE = ("profile", "run_date", "commit")


def image_seed(seed: int, image_id: str) -> int:
    """Noise seed of one image: a function of its id, never of its position in a batch."""
    return (zlib.crc32(image_id.encode()) + 1_000_003 * int(seed)) % 2**31


def latent_psnr(z_hat: torch.Tensor, z_h: torch.Tensor) -> torch.Tensor:
    """PSNR of z-hat against E(HR), over E(HR)'s range. `upscale` pads the LR bottom/right to the U-Net's
    multiple, so z-hat of an image of another size has extra rows/columns there: they are cropped off."""
    z_hat = z_hat[..., : z_h.shape[-2], : z_h.shape[-1]]
    mse = (z_hat.float() - z_h.float()).pow(2).mean(dim=(1, 2, 3))
    rng = z_h.flatten(1).amax(1) - z_h.flatten(1).amin(1)
    return 10 * torch.log10(rng.pow(2) / mse)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batches(pairs, batch_size: int):
    """Consecutive batches of same-sized pairs (classic sets mix sizes)."""
    by_size = defaultdict(list)
    for item in pairs:
        by_size[tuple(item[1].shape)].append(item)
    for items in by_size.values():
        for i in range(0, len(items), batch_size):
            chunk = items[i: i + batch_size]
            yield [c[0] for c in chunk], torch.stack([c[1] for c in chunk]), torch.stack([c[2] for c in chunk])


def set_options(entry, ecfg: dict) -> tuple[str, dict]:
    """A set is a name, or {name: ..., steps: [...], metrics: [...], images: N} overriding the defaults for
    it (e.g. fewer step counts on 512^2 RealSR crops, which a CPU evaluates 16x slower per image; `images`:
    N of its images, evenly spaced in name order, where every image costs minutes)."""
    if isinstance(entry, str):
        return entry, {"steps": ecfg["steps"], "metrics": ecfg["metrics"], "images": None}
    images = entry.get("images")
    if images is not None and (not isinstance(images, int) or isinstance(images, bool) or images < 1):
        raise UserError(f"params.yaml: set {entry['name']}: images must be a whole number >= 1 (or absent: all), "
                        f"got {images!r}")
    return entry["name"], {"steps": entry.get("steps", ecfg["steps"]), "metrics": entry.get("metrics", ecfg["metrics"]),
                           "images": images}


def subset_sizes(cfg: dict, set_name: str) -> set[int]:
    """The `images: N` subsets any evaluation stage of this profile scores `set_name` on (the baselines')."""
    sizes = set()
    for key in ("sets", "real_sets"):
        for entry in (cfg.get("evaluate_baselines") or {}).get(key) or []:
            if isinstance(entry, dict) and entry.get("name") == set_name and entry.get("images"):
                sizes.add(int(entry["images"]))
    return sizes


def grid_ids(cfg: dict, set_name: str, eset, k: int) -> set[str]:
    """The ids whose images a stage saves for the visual grids: the first k, plus the first k of each
    evenly spaced subset another stage scores this set on, so that a method scored on every image and one
    scored on a subset (`images: N`) save the same images, and the grid shows them side by side."""
    ids = set(eset.ids[:k])
    for n in subset_sizes(cfg, set_name):
        ids |= set(eset.spread(n).ids[:k])
    return ids


def variant_specs(cfg: dict, ecfg: dict) -> dict[str, dict]:
    """The variants a stage scores: `ecfg["variants"]` when it is a {name: spec} mapping (the baselines'
    stages), the named subset of `evaluate.variants` when it is a list (evaluate_real), else all of them."""
    chosen = ecfg.get("variants")
    if isinstance(chosen, dict):
        return dict(chosen)
    return {k: v for k, v in cfg["evaluate"]["variants"].items() if chosen is None or k in chosen}


# Keys of a variant spec read by the evaluator itself; every other key goes to the method's constructor.
# `scale`: the magnification a method without latents is scored at (bicubic beside a x2 or x8 model), else the
# set's; a latent model is scored at its own.
SPEC_KEYS = ("method", "checkpoint", "ceiling", "steps", "default_steps", "scale")


def variant_steps(spec: dict, set_steps) -> list[int]:
    """A diffusion variant's step counts on one set: the set's list, or the variant's own sweep (`steps`) when
    it has one; "default" (in either) stands for the method's default step count (`default_steps`)."""
    steps = spec["steps"] if "steps" in spec and set_steps != "default" else set_steps
    steps = [steps] if isinstance(steps, (int, str)) else steps
    return [int(spec["default_steps"]) if s == "default" else int(s) for s in steps]


def build_variants(cfg: dict, device, specs: dict[str, dict]) -> dict:
    variants = {}
    for name, spec in specs.items():
        kwargs = {k: v for k, v in spec.items() if k not in SPEC_KEYS}
        if "checkpoint" in spec:
            kwargs["checkpoint"] = run_dir(cfg, spec["checkpoint"])
            kwargs["device"] = device
        variants[name] = load_method(spec["method"], **kwargs)
    return variants


def evaluate_row(method, pairs, *, scale, steps, scorer, ecfg, device, image_dir: Path, save_ids: set):
    """Scores of one (variant, set, steps): {metric: [per-image]}, seconds per image."""
    per_image, ids_all, seconds = defaultdict(list), [], 0.0
    grey_ids = pairs.grey_ids  # single-channel ground truth: scored on grey (MATLAB)
    for ids, lr, hr in batches(pairs, ecfg["batch_size"]):
        gens = per_image_generators([image_seed(ecfg["seed"], i) for i in ids]) if method.is_diffusion else None
        lr, hr = lr.to(device), hr.to(device)
        sync(device)
        t0 = time.perf_counter()
        out = method.upscale(lr, scale=scale, steps=steps, generator=gens,
                             **({"return_latents": True} if getattr(method, "has_latents", False) else {}))
        sync(device)
        seconds += time.perf_counter() - t0
        sr, z_hat = out if isinstance(out, tuple) else (out, None)
        for metric, values in scorer.score(sr, hr, grey=[i in grey_ids for i in ids]).items():
            per_image[metric] += values.tolist()
        if z_hat is not None:
            per_image["latent_psnr"] += latent_psnr(z_hat, method.encode(hr)).tolist()
        for i, img in zip(ids, sr):
            if i in save_ids:
                save_image(img.cpu(), image_dir / f"{i}.png")
        ids_all += ids
    return ids_all, per_image, seconds / max(1, len(ids_all))


def run(cfg: dict) -> dict:
    evaluate_sets(cfg, cfg["evaluate"], run_dir(cfg, NAME), missing="error")
    return {}


def provenance(cfg: dict) -> dict:
    """profile, run_date and commit columns of the rows a run writes (carried rows keep their own)."""
    def git(*args) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if commit != "unknown" and git("status", "--porcelain", "--untracked-files=no"):
        commit += "+changes"
    return {"profile": cfg["profile"], "run_date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
            "commit": commit}


def evaluate_sets(cfg: dict, ecfg: dict, out: Path, *, missing: str, carry=None) -> None:
    """Score every variant of `ecfg` on every set of `ecfg`; write results.csv and per_image.csv.

    missing="error": a set whose data is absent stops the stage. missing="na": its rows come from
    `carry(set_name, variant_names)` (earlier results, marked as not re-run; evaluate_real) or, if that
    gives none, are n/a rows whose note says what to download. Models load only if some set is present.
    """
    device = device_of(cfg)
    specs = variant_specs(cfg, ecfg)
    variants = None
    prov = provenance(cfg)
    rows, image_rows = [], []
    for entry in ecfg["sets"]:
        set_name, set_cfg = set_options(entry, ecfg)
        try:
            eset = resolve_eval_set(set_name, cfg, run_dir(cfg), scale=cfg["data"]["eval_scale"])
        except UserError as exc:
            if missing == "error":
                raise
            carried = carry(set_name, list(specs)) if carry else []
            if carried:
                print(f"[{out.name}] {set_name}: data absent; {len(carried)} earlier result rows carried forward")
                rows += carried
                continue
            print(f"[{out.name}] {set_name}: n/a ({exc})")
            rows += [dict(method=spec["method"], variant=v, dataset=set_name, degradation="", steps=0,
                          metric=metric, value=math.nan, seconds_per_image=math.nan, note=f"data missing: {exc}",
                          **prov)
                     for v, spec in specs.items() for metric in set_cfg["metrics"]]
            continue
        subset = ""
        if set_cfg["images"] and set_cfg["images"] < len(eset):
            subset = subset_note(set_cfg["images"], len(eset))
            eset = eset.spread(set_cfg["images"])
        if variants is None:
            variants = build_variants(cfg, device, specs)
        scorers = {}  # by border: the classic protocol crops `scale` pixels, so a x2 or x8 row has its own
        img_root = out / "images" / set_name
        saved = grid_ids(cfg, set_name, eset, ecfg["save_images"])
        for i in saved:  # LR and HR beside the SR images, for the visual grids
            _, lr, hr = eset[eset.ids.index(i)]
            save_image(lr, img_root / "lr" / f"{i}.png")
            save_image(hr, img_root / "hr" / f"{i}.png")
        for vname, method in variants.items():
            scale = method.scales[0] if getattr(method, "has_latents", False) else specs[vname].get("scale", eset.scale)
            pairs = eset.pairs_at(scale)
            if pairs is None:
                print(f"[{out.name}] {set_name}: no x{scale} LR; {vname} not evaluated there")
                continue
            if pairs.border not in scorers:
                scorers[pairs.border] = Scorer(set_cfg["metrics"], device=device, border=pairs.border)
            scorer = scorers[pairs.border]
            steps_list = variant_steps(specs[vname], set_cfg["steps"]) if method.is_diffusion else [0]
            for steps in tqdm(steps_list, desc=f"{set_name}/{vname}", mininterval=2.0):
                ids, scores, spi = evaluate_row(method, pairs, scale=scale, steps=max(steps, 1), scorer=scorer,
                                                ecfg=ecfg, device=device, image_dir=img_root / f"{vname}_s{steps}",
                                                save_ids=saved)
                base = dict(method=method.name, variant=vname, dataset=set_name,
                            degradation=eset.degradation, steps=steps, seconds_per_image=spi, **prov)
                for metric, values in scores.items():  # n/a metrics come back as NaN: keep them, with why
                    rows.append({**base, "metric": metric, "value": sum(values) / len(values),
                                 "note": "; ".join(filter(None, (subset, scorer.reason(metric))))})
                    image_rows += [{**base, "id": i, "metric": metric, "value": v} for i, v in zip(ids, values)]
                rows += folder_metric_rows(method, pairs, base, scale=scale, steps=max(steps, 1), scorer=scorer,
                                           ecfg=ecfg, device=device)
            if getattr(method, "has_latents", False) and specs[vname].get("ceiling"):
                rows += [{**r, **prov} for r in ceiling_rows(method, pairs, scorer, ecfg, device, set_name,
                                                             eset.degradation)]
    for name, frame in (("results.csv", pd.DataFrame(rows)), ("per_image.csv", pd.DataFrame(image_rows))):
        first = [c for c in RESULT_COLUMNS if c in frame.columns]
        frame = frame[first + [c for c in frame.columns if c not in first and c not in PROVENANCE]
                      + [c for c in PROVENANCE if c in frame.columns]]
        with atomic_path(out / name) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")


def folder_metric_rows(method, pairs, base: dict, *, scale, steps, scorer, ecfg, device) -> list[dict]:
    """FID-style metrics compare the SR folder with the HR folder: write every SR image, then score."""
    rows = [{**base, "metric": m, "value": math.nan, "note": scorer.reason(m)}
            for m in scorer.folder_metrics if scorer.reason(m)]
    if not [m for m in scorer.folder_metrics if not scorer.reason(m)]:
        return rows
    with tempfile.TemporaryDirectory() as tmp:
        evaluate_row(method, pairs, scale=scale, steps=steps, scorer=scorer, ecfg=ecfg, device=device,
                     image_dir=Path(tmp), save_ids=set(pairs.ids))
        for m, value in scorer.score_folders(tmp, pairs.hr_paths[0].parent).items():
            rows.append({**base, "metric": m, "value": value, "note": scorer.reason(m) or ""})
    return rows


@torch.no_grad()
def ceiling_rows(method, pairs, scorer, ecfg, device, set_name, degradation) -> list[dict]:
    """D(E(HR)) against HR: what a perfect latent prediction would score (the autoencoder ceiling)."""
    values, grey_ids = defaultdict(list), pairs.grey_ids
    for ids, _, hr in batches(pairs, ecfg["batch_size"]):
        hr = hr.to(device)
        for metric, v in scorer.score(method.reconstruct(hr), hr, grey=[i in grey_ids for i in ids]).items():
            values[metric] += v.tolist()
    return [dict(method=method.name, variant="autoencoder", dataset=set_name, degradation=degradation, steps=0,
                 metric=m, value=sum(v) / len(v), seconds_per_image=math.nan, note="")
            for m, v in values.items()]


def main() -> int:
    return stage_main(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
