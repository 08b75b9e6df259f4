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
ALTERNATIVES = ("base_schedule", "previous_default", "start_condition")
JUDGED = ("direct_x4", "distilled_x4", "distilled_x4+decoder")  # the last is the final output
READING = {"reproduced": "better than the settings in force", "not reproduced": "worse",
           "inconclusive": "no difference shown"}


def _diffs(rows: pd.DataFrame) -> str:
    return ", ".join(f"{r['b']} {r['diff']:+.2f} dB [{r['low']:+.2f}, {r['high']:+.2f}]"
                     for r in rows.to_dict("records"))


def _arm_rows(ablations: pd.DataFrame | None, arm: str) -> pd.DataFrame:
    """An arm's JUDGED rows against the main run: PSNR-Y on B100 at one step."""
    if ablations is None:
        return pd.DataFrame(columns=["a", "b"])
    rows = ablations.query("dataset == 'b100' and metric == 'psnr' and steps == 1")
    return rows[rows["b"].isin(JUDGED) & (rows["a"] == rows["b"] + f"@{arm}")]


def choice(cfg: dict, ablations: pd.DataFrame | None, previous: pd.DataFrame | None = None) -> str:
    """The one-step settings in force (the profile's `model`, `distill`, `direct`) and the evidence: the study run
    under the previous default (`previous`, its ablations.csv), whose arm study.PREVIOUS_CHOSEN became the
    default, and the current study's arms that take the default apart (`ablations`); PSNR-Y on B100 at one step."""
    model = cfg["model"]
    schedule = "zero-terminal SNR" if model.get("rescale_betas_zero_snr") else "the base schedule (α_T > 0)"
    distill = cfg["distill"]
    text = (f"**Choice** (params.yaml, tagged [choice]): {model['prediction_type']}, {schedule}, the teacher on "
            f"{distill.get('teacher_noise', 'same')} noise, t sampled {distill.get('t_sampling', 'uniform')}, one step "
            f"from start = {model.get('start', 'noise')}.")
    chosen = _arm_rows(previous, study.PREVIOUS_CHOSEN)
    if len(chosen):
        n, settings = int(chosen["seeds"].max()), chosen["claim"].iloc[0].split(": ", 1)[-1]  # "arm: k=v, ..."
        text += (f" Chosen on the study run under the previous default ({study.PREVIOUS}/ in the study's folder), "
                 f"where arm `{study.PREVIOUS_CHOSEN}` ({settings}) beat that default over "
                 f"{n} training seed{'s' if n > 1 else ''} (arm − default, 95% intervals): {_diffs(chosen)}.")
    said, favoured = [], []
    for arm in ALTERNATIVES:
        mine = _arm_rows(ablations, arm)
        final = mine[mine["b"] == JUDGED[-1]]
        if final.empty:
            continue
        verdict = final["verdict"].iloc[0]
        in_force = study.apply(cfg, study.ARMS[arm]) == cfg
        favoured += [arm] if verdict == "reproduced" and not in_force else []
        n = int(mine["seeds"].max())
        said.append(f"`{arm}` ({study.settings(arm)}; {'in force' if in_force else 'not in force'}; {n} seed"
                    f"{'s' if n > 1 else ''}): {_diffs(mine)}; the final output {READING.get(verdict, verdict)}")
    if not said:
        return text + f" The study arms that test the alternatives ({', '.join(ALTERNATIVES)}) have not been run."
    text += (" The study's arms against the main run (B100, PSNR-Y, one step, arm − main, 95% intervals; "
             "the study's ablations.csv): " + "; ".join(said) + ".")
    if favoured:
        text += f" The evidence favours {' and '.join(f'`{a}`' for a in favoured)} over the settings in force."
    return text
