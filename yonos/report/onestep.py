"""Markdown for the one-step diagnostics (runs/<profile>/diagnose_onestep: yonos/stages/diagnose_onestep.py)."""

from __future__ import annotations

import pandas as pd

from yonos import study

INTRO = (
    "Measured by stage `diagnose_onestep` on the embedded evaluation crops. *x0 MSE at t*: the clean-latent "
    "error ‖ẑ − z_h‖² (per element) when the model is given an in-distribution input z_t = α_t z_h + σ_t ε, as "
    "in training. *One step*: the error of the one-step output from pure noise (start = noise) or from the LR "
    "latent noised to t = T (start = condition), split into bias² + variance over {seeds} noise seeds. "
    "*LR latent as is*: z_l itself, no U-Net. PSNR-Y of the decoded output (seed 0) on the same crops.")


def _fmt(x) -> str:
    return "" if pd.isna(x) else f"{x:.4g}"


def to_markdown(onestep: pd.DataFrame, latents: pd.DataFrame, *, seeds: int) -> str:
    onestep = onestep.fillna({"start": ""})
    probes = onestep[onestep["probe"] == "z_t from z_h"]
    ts = sorted(probes["t"].unique(), reverse=True)
    head = (["Model"] + [f"x0 MSE t={t} (α_t={probes[probes.t == t]['alpha_t'].iloc[0]:.3f})" for t in ts]
            + ["One step, noise: MSE = bias² + var", "One step, condition: MSE = bias² + var",
               "PSNR-Y noise", "PSNR-Y condition", "LR latent as is: MSE / PSNR-Y"])
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for variant, g in onestep.groupby("variant", sort=False):
        by = {(r.probe, r.t if r.probe == "z_t from z_h" else r.start): r for r in g.itertuples()}
        cells = [f"{variant} (×{g['scale'].iloc[0]})"] + [_fmt(by[("z_t from z_h", t)].latent_mse) for t in ts]
        one = {s: by.get(("one step", s)) for s in ("noise", "condition")}
        cells += [f"{_fmt(r.latent_mse)} = {_fmt(r.bias2)} + {_fmt(r.variance)}" if r else "" for r in one.values()]
        cells += [_fmt(r.psnr_y) if r else "" for r in one.values()]
        lr = by.get(("LR latent as is", ""))
        cells.append(f"{_fmt(lr.latent_mse)} / {_fmt(lr.psnr_y)}" if lr else "")
        lines.append("| " + " | ".join(cells) + " |")
    lat = (f"Latents z_h (scaled): per-channel mean in [{latents['mean'].min():.3g}, {latents['mean'].max():.3g}], "
           f"std in [{latents['std'].min():.3g}, {latents['std'].max():.3g}] over {len(latents)} channels "
           "(a start z_T = ε assumes zero mean and unit std).") if len(latents) else ""
    return INTRO.format(seeds=seeds) + "\n\n" + "\n".join(lines) + "\n\n" + lat + "\n"


# The study arms (yonos/study.py) that test alternatives to the one-step settings in force.
ALTERNATIVES = ("zero_snr", "start_condition", "combined")
JUDGED = ("direct_x4", "distilled_x4", "distilled_x4+decoder")  # the last is the final output
READING = {"reproduced": "better than the settings in force", "not reproduced": "worse",
           "inconclusive": "no difference shown"}


def choice(cfg: dict, ablations: pd.DataFrame | None) -> str:
    """The one-step settings in force (the profile's `model`) and the study's evidence on each alternative:
    the arm's models against the main run's, PSNR-Y on B100 at one step (the study's ablations.csv, or None
    when the study has not been run)."""
    model = cfg["model"]
    schedule = "zero-terminal SNR" if model.get("rescale_betas_zero_snr") else "the base schedule (α_T > 0)"
    text = (f"**Choice** (params.yaml `model`, tagged [choice]): {model['prediction_type']}, {schedule}, one step "
            f"from start = {model.get('start', 'noise')}.")
    rows = (ablations.query("dataset == 'b100' and metric == 'psnr' and steps == 1") if ablations is not None
            else pd.DataFrame(columns=["a", "b"]))
    said, favoured = [], []
    for arm in ALTERNATIVES:
        mine = rows[rows["b"].isin(JUDGED) & (rows["a"] == rows["b"] + f"@{arm}")]
        final = mine[mine["b"] == JUDGED[-1]]
        if final.empty:
            continue
        verdict = final["verdict"].iloc[0]
        in_force = study.apply(cfg, study.ARMS[arm]) == cfg
        favoured += [arm] if verdict == "reproduced" and not in_force else []
        n = int(mine["seeds"].max())
        said.append(f"`{arm}` ({study.settings(arm)}; {'in force' if in_force else 'not in force'}; {n} seed"
                    f"{'s' if n > 1 else ''}): " + ", ".join(f"{r['b']} {r['diff']:+.2f} dB [{r['low']:+.2f}, "
                                                          f"{r['high']:+.2f}]" for r in mine.to_dict("records"))
                    + f"; the final output {READING.get(verdict, verdict)}")
    if not said:
        return text + f" The study arms that test the alternatives ({', '.join(ALTERNATIVES)}) have not been run."
    text += (" The study's arms against the main run (B100, PSNR-Y, one step, arm − main, 95% intervals; "
             "the study's ablations.csv): " + "; ".join(said) + ".")
    if favoured:
        text += (f" The evidence favours {' and '.join(f'`{a}`' for a in favoured)}, not the default yet: switching "
                 "retrains every U-Net stage and every study arm (params.yaml's [choice] note says where this "
                 "stands).")
    return text
