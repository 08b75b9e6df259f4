"""Ablation arms of a profile, each judged against the main run on paired per-image scores.

    python -m yonos.study run ARM [ARM ...] [--profile embedded]   # train + evaluate each arm (resumable)
    python -m yonos.study report [--profile embedded]              # reports/claims/ (README.md, CSVs)

An arm is a set of params overrides (ARMS; dotted keys as `dvc exp run -S` takes them). It reuses the
main run's data, autoencoder and latent bank (runs/<profile>/{scan_data, prepare_data, train_autoencoder,
encode_latents}: linked, never written), trains the U-Net stages again under runs/study/<arm>/<profile>/
(teacher, student, direct, decoder; those whose settings the arm leaves alone are linked: `reused`, from the
main run, or for a replicate <arm>_seedN from the seed arm seedN), evaluates them on the profile's STUDY_SETS
and runs diagnose_onestep. The chain arm (chain_x8) distils on to x8 and scores each link on B100 only. The main run
(`dvc repro`) must have finished first. `report` pairs each arm's per-image scores with the main run's on
the same images and noise seeds and judges "arm beats main" with the bootstrap of yonos/report/claims.py;
the seed arms and the main run (seed 0) together give the paper's claims (report.claims) over training seeds.
Both commands file each run's per-image scores beside the report (reports/claims/scores/, yonos/study_scores.py),
so the report stays whole when the runs are gone (a new machine): a run is read from there, else from its folder.

This is not part of `dvc repro`: the arms retrain every U-Net stage (~20 min each on 2 CPU cores).
Why not `dvc exp run --queue`: an experiment re-runs evaluate_real (~25 min) and writes the main report;
an arm needs neither, and its outputs must sit beside the main run's to be paired image by image.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import pandas as pd

from yonos import study_scores
from yonos.checkpoint import display_path
from yonos.config import load_params, run_dir
from yonos.errors import UserError
from yonos.io import atomic_path, write_text
from yonos.report import claims
from yonos.stages._common import run_stage

SEED_ARMS = {"seed1": 1, "seed2": 2}  # training seeds (init and example stream); the main run is seed 0
BASE_ARMS: dict[str, dict] = {
    "ema": {"train.ema_decay": 0.999},                       # issue 8 item 6: does EMA help one step?
    "start_condition": {"model.start": "condition"},         # DDIM from alpha_T z_l + sigma_T eps
    "prior": {"teacher.init": "prior"},                      # the teacher fine-tunes the pinned prior, as the paper SD
    # Claim 2's control: the decoder gets the same extra steps on E(HR), not on one-step latents. If the
    # paper's decoder beats it, the gain comes from the one-step latents, not from more decoder training.
    "decoder_control": {"decoder.latents": "autoencoder"},
    # The one-step default (params.yaml [choice]) taken apart: without zero-terminal SNR, and the previous default
    # (SD's schedule, the teacher on the student's noise, t uniform), whose own study (reports/claims/
    # previous_default/) found these three options together (its arm `combined`) best at one step.
    "base_schedule": {"model.rescale_betas_zero_snr": False},
    "previous_default": {"model.rescale_betas_zero_snr": False, "distill.teacher_noise": "same",
                         "distill.t_sampling": "uniform", "direct.t_sampling": "uniform"},
    # Twice and four times the U-Net budget (teacher, student and direct): does more training close the gap to
    # issue 8's +0.5 dB over bicubic at one step?
    "longer": {"teacher.steps": 1600, "distill.steps": 1000, "direct.steps": 1000},
    "longest": {"teacher.steps": 3200, "distill.steps": 2000, "direct.steps": 2000},
    # The U-Net 1.5x as wide (~2.2x the parameters and compute) at the main run's step budget: since `longest`
    # gains nothing over `longer`, is capacity the lever for the +0.5 dB target?
    "wider": {"model.unet.block_out_channels": [96, 192, 192]},
}
BUDGET_SCALED = ("longer", "longest")
CAPACITY = ("wider",)
# Claim 1 against the budget: the student's and the direct model's optimiser steps (equal for both, so only
# the target differs) over 4x around the main run's 500, and the teacher at twice its 800 steps. Judged as
# distilled vs direct within each arm (claim1_budget), not against the main run.
CLAIM1_ARMS: dict[str, dict] = {
    "claim1_s250": {"distill.steps": 250, "direct.steps": 250},
    "claim1_s1000": {"distill.steps": 1000, "direct.steps": 1000},
    "claim1_t1600": {"teacher.steps": 1600},
}
# Claim 1's mechanism checks (yonos.train.draw_noise, distillation_loss), each judged within its own run:
# - the direct model from scratch, the paper's baseline (the main run starts it from the teacher, as the student);
# - the teacher on the student's own noisy latent (the default gives it independent noise): does the student
#   gain by copying the teacher's z_t-specific errors?
# - student and direct trained with t uniform (the default over-samples the high end, where the one step starts);
# - the teacher's target at t >= 500 its own 4-step DDIM sample from z_t, not its one-step (mean) prediction.
CLAIM1_MECHANISM: dict[str, dict] = {
    "claim1_direct_scratch": {"direct.init": "scratch"},
    "claim1_same_noise": {"distill.teacher_noise": "same"},
    "claim1_uniform_t": {"distill.t_sampling": "uniform", "direct.t_sampling": "uniform"},
    "claim1_multistep": {"distill.target_steps": 4, "distill.target_from_t": 500},
}
# The x2 -> x4 -> x8 chain (issue 7): the x4 student distilled on to x8, each link scored on full B100 images at
# one step against bicubic at the link's own scale (chain_verdicts). Only the students are retrained.
CHAIN_ARMS: dict[str, dict] = {"chain_x8": {"distill.scales": [2, 4, 8]}}
CHAIN_LINKS = (("teacher_x2", "bicubic_x2", 2), ("distilled_x4", "bicubic", 4), ("distilled_x8", "bicubic_x8", 8))
CHAIN_SETS = ("b100",)

# Arms replicated over the training seeds (<arm>_seed1, <arm>_seed2): judged against the main run's seeds
# pair by pair, and the paper's claims again under the arm's settings. A Claim 1 arm's gap is judged over
# the seeds it has (claim1_budget).
REPLICATED = ("prior", "base_schedule", "previous_default")
# Arms whose own runs are judged on the paper's claims and the target against bicubic: the replicated arms once
# they have a replicate, the budget and capacity arms at the seeds they have (the target is about the final
# output's level).
CLAIMED_UNDER = (*REPLICATED, *BUDGET_SCALED, *CAPACITY)
_BASE = {**BASE_ARMS, **CLAIM1_ARMS, **CLAIM1_MECHANISM, **CHAIN_ARMS}
ARMS: dict[str, dict] = {
    **_BASE,
    **{arm: {"seed": seed} for arm, seed in SEED_ARMS.items()},
    **{f"{arm}_{tag}": {**_BASE[arm], "seed": seed}
       for arm in (*REPLICATED, *CLAIM1_ARMS, *CLAIM1_MECHANISM) for tag, seed in SEED_ARMS.items()},
}
# A baseline at a multiple of the equal budget (yonos/baselines/budget.py): is its shortfall the budget or
# its implementation? Overrides scale teacher.steps and distill.steps, from which the budget is derived.
BUDGET_ARMS: dict[str, tuple[str, dict]] = {
    "ldmsr_budget5": ("ldmsr", {"teacher.steps": 4000, "distill.steps": 2500}),  # 5 x 1300 optimiser steps
}
SHARED_STAGES = ("scan_data", "prepare_data", "train_autoencoder", "encode_latents", "train_prior")
TRAIN_STAGES = ("train_teacher", "distill_student", "train_direct", "finetune_decoder")
STUDY_SETS = ("embedded", "b100")  # of the profile's evaluate.sets: the sweep crops and full B100
STUDY_STEPS = [1, 2, 4]            # an arm's step sweep: the few-step end, where the claims are made
COMPARED = ("direct_x4", "distilled_x4", "distilled_x4+decoder")
TRAINED_BY = {"direct_x4": "train_direct", "distilled_x4": "distill_student",  # the stage each model comes from
              "distilled_x4+decoder": "finetune_decoder"}
CHECKPOINT_EVERY = 100
# The study as run under the previous one-step default (before params.yaml switched to zero-terminal SNR, the
# teacher's independent noise and high-t sampling on its evidence), kept beside the current one in reports/claims/.
PREVIOUS = Path("previous_default")
PREVIOUS_CHOSEN = "combined"  # its arm that became the default (its settings: the `claim` column of its rows)
METRICS = ("psnr", "ssim", "lpips")
MAIN = "main"  # the main run's name among the filed scores (study_scores)


def settings(arm: str) -> str:
    """An arm's overrides as `dvc exp run -S` takes them: "teacher.init=prior"."""
    return ", ".join(f"{k}={v}" for k, v in ARMS[arm].items())


def study_root(profile_cfg: dict) -> Path:
    return Path(profile_cfg.get("run_root", "runs")) / "study"


def apply(cfg: dict, overrides: dict) -> dict:
    """cfg with each dotted key set (a missing intermediate section is an error, not created)."""
    cfg = copy.deepcopy(cfg)
    for key, value in overrides.items():
        *path, last = key.split(".")
        node = cfg
        for part in path:
            if not isinstance(node.get(part), dict):
                raise UserError(f"study: override {key}: params have no section {part!r}")
            node = node[part]
        node[last] = value
    return cfg


def arm_config(cfg: dict, arm: str) -> dict:
    if arm not in ARMS and arm not in BUDGET_ARMS:
        raise UserError(f"study: unknown arm {arm!r}; choose from {', '.join([*ARMS, *BUDGET_ARMS])}")
    out = apply(cfg, ARMS[arm] if arm in ARMS else BUDGET_ARMS[arm][1])
    out["run_root"] = str(study_root(cfg) / arm)
    out["train"] = {**out["train"], "checkpoint_every": CHECKPOINT_EVERY}  # a killed arm resumes (not in identity)
    if arm in BUDGET_ARMS:
        return out  # the baseline's own evaluate stage, with the main run's sets and step sweep
    names = CHAIN_SETS if arm in CHAIN_ARMS else STUDY_SETS
    sets = [e for e in out["evaluate"]["sets"] if (e if isinstance(e, str) else e["name"]) in names]
    keep = ("distilled_x4+decoder",) if decoder_only(arm) else (*COMPARED, "bicubic")
    variants = (chain_variants(out) if arm in CHAIN_ARMS
                else {k: v for k, v in out["evaluate"]["variants"].items() if k in keep})
    out["evaluate"] = {**out["evaluate"], "sets": sets, "steps": STUDY_STEPS, "variants": variants}
    return out


def chain_variants(cfg: dict) -> dict[str, dict]:
    """Every link of the chain `distill.scales` (the teacher, then each student) beside bicubic at its scale."""
    scales, main = cfg["distill"]["scales"], cfg["evaluate"]["variants"]
    out = {"teacher_x2": main["teacher_x2"]} if scales[0] == 2 else {}
    out |= {f"distilled_x{s}": {"method": "yonos", "checkpoint": f"distill_student/x{s}/checkpoint"}
            for s in scales[1:]}
    out |= {f"bicubic_x{s}" if s != cfg["data"]["eval_scale"] else "bicubic": {"method": "bicubic", "scale": s}
            for s in scales}
    return out


# The training stages a params section changes (the stages after them read their outputs); any other key
# (teacher, model, train, seed) changes the teacher and so every stage.
RETRAINS = {"decoder.": ("finetune_decoder",), "direct.": ("train_direct",),
            "distill.": ("distill_student", "finetune_decoder")}


def seed_source(arm: str) -> str | None:
    """Where a replicate arm (<base>_seedN) finds the training stages its base arm leaves alone: the seed arm
    `seedN`, which trained them under the same settings and seed. None (the main run) for any other arm."""
    base, _, tag = arm.rpartition("_")
    return tag if base in _BASE and tag in SEED_ARMS else None


def retrained(arm: str) -> set[str]:
    """The training stages an arm runs again; every one for an arm outside ARMS (a baseline budget arm).
    A replicate arm retrains what its base arm does: the rest comes from its seed arm (seed_source)."""
    if arm not in ARMS:
        return set(TRAIN_STAGES)
    if arm in CHAIN_ARMS:
        return {"distill_student"}  # the chain scores the U-Nets, not the decoder
    keys = [k for k in ARMS[arm] if not (seed_source(arm) and k == "seed")]
    return {stage for key in keys
            for stage in next((v for k, v in RETRAINS.items() if key.startswith(k)), TRAIN_STAGES)}


def decoder_only(arm: str) -> bool:
    """An arm that changes only the decoder stage: it reuses the main run's U-Nets, whose training never
    reads `decoder`, and retrains and scores only the decoder."""
    return arm in ARMS and retrained(arm) == {"finetune_decoder"}


def reused(arm: str) -> tuple[str, ...]:
    """The main run's training stages an arm links instead of retraining: those whose settings it leaves alone
    (a decoder-only arm: every U-Net; a student-budget arm: the teacher; a direct-only arm: all but direct)."""
    return tuple(s for s in TRAIN_STAGES if s not in retrained(arm))


def own_shared(arm: str) -> tuple[str, ...]:
    """Shared stages an arm runs itself: a chain arm's latent bank gains the x8 LR latents (with bicubic LR its
    x2 and x4 entries are the main run's: the same crops, each LR from its HR alone)."""
    return ("encode_latents",) if arm in CHAIN_ARMS else ()


def link_shared(cfg: dict, arm_cfg: dict, arm: str) -> None:
    """The main run's data, autoencoder and bank, and the U-Nets the arm does not retrain (`reused`: the main
    run's, or for a replicate arm its seed arm's), linked into the arm's run folder."""
    source = seed_source(arm)
    for stage in [s for s in SHARED_STAGES if s not in own_shared(arm)] + list(reused(arm)):
        origin = arm_config(cfg, source) if source and stage in TRAIN_STAGES else cfg
        main, here = run_dir(origin, stage).resolve(), run_dir(arm_cfg, stage)
        if not main.is_dir():
            how = f"python -m yonos.study run {source}" if origin is not cfg else "dvc repro"
            raise UserError(f"{run_dir(origin, stage)}: missing; run it first ({how})")
        here.parent.mkdir(parents=True, exist_ok=True)
        if not here.is_symlink():
            here.symlink_to(main, target_is_directory=True)


# The params an arm's runs depend on. A run whose resolved_config.json records other values for them (made before
# params.yaml changed, e.g. before a default was switched) is stale: left out of the report, named there.
IDENTITY = ("seed", "data", "degradation", "autoencoder", "model", "train", "teacher", "distill", "direct", "decoder")


def identity(cfg: dict) -> dict:
    out = {key: cfg.get(key) for key in IDENTITY}
    out["train"] = {k: v for k, v in (out["train"] or {}).items() if k != "checkpoint_every"}  # resuming only
    return json.loads(json.dumps(out))  # tuples as lists, as the recorded JSON holds them


def stale(cfg: dict, arm: str) -> bool:
    """Whether a stage the arm ran itself recorded other settings than the current params give the arm."""
    acfg = arm_config(cfg, arm)
    want = identity(acfg)
    for stage in (*own_shared(arm), *retrained(arm), "evaluate"):
        path = run_dir(acfg, stage, "resolved_config.json")
        if path.is_file() and identity(json.loads(path.read_text())["config"]) != want:
            return True
    return False


def run_arm(cfg: dict, arm: str, *, fresh: bool = False) -> None:
    """Train and score one arm; `fresh` discards its saved trainer states (a stale arm's, made under other params)."""
    import importlib

    acfg = {**arm_config(cfg, arm), "fresh": fresh}
    link_shared(cfg, acfg, arm)
    if arm in BUDGET_ARMS:
        from yonos.stages.evaluate_baseline import run_method, stage_name

        method = BUDGET_ARMS[arm][0]
        print(f"[study] {arm}: train_{method}, {stage_name(method)}", file=sys.stderr)
        run_stage(f"train_{method}", importlib.import_module(f"yonos.stages.train_{method}").run, acfg)
        run_stage(stage_name(method), lambda c: run_method(c, method), acfg)
        file_runs(cfg, [arm])
        return
    stages = [*own_shared(arm), *(s for s in TRAIN_STAGES if s not in reused(arm)), "evaluate"]
    stages += [] if decoder_only(arm) or arm in CHAIN_ARMS else ["diagnose_onestep"]
    for stage in stages:
        print(f"[study] {arm}: {stage}", file=sys.stderr)
        run_stage(stage, importlib.import_module(f"yonos.stages.{stage}").run, acfg)
    file_runs(cfg, [arm])  # its scores outlive its run folder (study_scores)


def scores_dir(cfg: dict) -> Path | None:
    """Where the study files its runs' scores (study_scores): `scores/` in the profile's study report folder
    (report.study); None for a profile without a study, whose report reads its run folders alone."""
    folder = (cfg.get("report") or {}).get("study")
    return Path(folder) / "scores" if folder else None


def _arm_cfg(cfg: dict, name: str) -> dict:
    return cfg if name == MAIN else arm_config(cfg, name)


def paired_with(name: str) -> str | None:
    """The run whose models `name` links (so whose scores it must be paired with): a replicate arm's seed arm, else
    the main run; None for a run that links no U-Net (the main run, a seed arm, an arm that retrains them all)."""
    if name == MAIN or name not in ARMS or not reused(name):
        return None
    return seed_source(name) or MAIN


def local_scores(cfg: dict, name: str) -> pd.DataFrame | None:
    """A run's scores from its folder (runs/...), in the filed form; None when absent or stale."""
    path = run_dir(_arm_cfg(cfg, name), "evaluate", "per_image.csv")
    if not path.is_file() or (name != MAIN and stale(cfg, name)):
        return None
    return study_scores.canonical(pd.read_csv(path, dtype={"id": str}), steps=(0, *STUDY_STEPS), metrics=METRICS)


def filed_scores(cfg: dict, name: str) -> pd.DataFrame | None:
    """A run's filed scores when they still hold: made under the current params, and against the same run of
    what it links (paired_with) as the study now uses."""
    folder = scores_dir(cfg)
    filed = study_scores.load(folder, name) if folder else None
    if filed is None:
        return None
    frame, meta = filed
    if meta.get("identity") != identity(_arm_cfg(cfg, name)):
        return None
    for source, digest in (meta.get("paired_with") or {}).items():
        theirs = run_scores(cfg, source)
        if theirs is None or study_scores.digest(theirs) != digest:
            return None
    return frame


def run_scores(cfg: dict, name: str) -> pd.DataFrame | None:
    """A run's per-image scores as the study uses them: filed ones first (what the committed report was made
    from), else the run folder's, if the run folder it links is the run the study uses (not another machine's
    run of it, kept in the filed scores)."""
    filed = filed_scores(cfg, name)
    if filed is not None:
        return filed
    local, source = local_scores(cfg, name), paired_with(name)
    if local is None or source is None:
        return local
    linked, used = local_scores(cfg, source), run_scores(cfg, source)
    same = linked is not None and used is not None and study_scores.digest(linked) == study_scores.digest(used)
    return local if same else None


def file_runs(cfg: dict, names=None, *, refile: bool = False) -> list[str]:
    """File the scores of each run folder present (the main run, the arms) in scores_dir; returns the names filed.
    A filed run whose scores differ (another machine's run of it) is kept unless `refile`: replacing it leaves
    out every arm filed against it until that arm is run again here. One the report no longer uses (made under
    other params, or against another run of what it links) is replaced."""
    folder = scores_dir(cfg)
    if folder is None:
        return []
    done = []
    for name in names or (MAIN, *ARMS, *BUDGET_ARMS):
        if name in BUDGET_ARMS:
            done += [name] if file_budget_run(cfg, folder, name, refile=refile) else []
            continue
        local = local_scores(cfg, name)
        if local is None:
            continue
        in_use = filed_scores(cfg, name)  # None for a filed run made under other params: replaced
        if in_use is not None and study_scores.digest(in_use) == study_scores.digest(local):
            continue
        if in_use is not None and not refile:
            print(f"[study] {run_dir(_arm_cfg(cfg, name), 'evaluate', 'per_image.csv')}: differs from the filed "
                  f"{study_scores.paths(folder, name)[0]} (another run of {name}); the report uses the filed "
                  "scores; pass --refile to replace them", file=sys.stderr)
            continue
        source = paired_with(name)
        theirs = local_scores(cfg, source) if source else None  # the run folder it linked, filed or not
        if source and theirs is None:
            continue  # what it was paired with is gone: nothing to pair it with later either
        study_scores.save(folder, name, local, {
            "profile": cfg["profile"], "identity": identity(_arm_cfg(cfg, name)),
            "seconds": own_seconds(cfg, name),
            "paired_with": {source: study_scores.digest(theirs)} if source else {}})
        done.append(name)
    return done


def seed_frames(cfg: dict, arm: str | None = None) -> list[pd.DataFrame]:
    """The per-image scores of one configuration over training seeds, each with its `seed` column: the main
    run (seed 0) and the seed arms when `arm` is None, else the arm and its replicates <arm>_seed1, ...
    Runs not made yet are absent."""
    names = {0: arm or MAIN, **{seed: tag if arm is None else f"{arm}_{tag}" for tag, seed in SEED_ARMS.items()}}
    frames = []
    for seed, name in names.items():
        if name != MAIN and name not in ARMS:
            continue  # an arm without replicates
        frame = run_scores(cfg, name)
        if frame is not None:
            frames.append(frame.assign(seed=seed))
    return frames


def stale_arms(cfg: dict) -> list[str]:
    """The arms run or filed under other params, or against another run of what they link (left out of every
    table until run again)."""
    folder = scores_dir(cfg)
    return [arm for arm in ARMS
            if (run_dir(arm_config(cfg, arm), "evaluate", "per_image.csv").is_file()
                or (folder and study_scores.paths(folder, arm)[0].is_file()))
            and run_scores(cfg, arm) is None]


def compared(frames: list[pd.DataFrame], tag: str | None = None) -> pd.DataFrame | None:
    """The COMPARED variants' rows of `frames`, the variant named `<variant>@<tag>`; None when no frame."""
    if not frames:
        return None
    df = pd.concat(frames, ignore_index=True)
    df = df[df["variant"].isin(COMPARED)]
    return df.assign(variant=df["variant"] + (f"@{tag}" if tag else ""))


def judge_arms(cfg: dict) -> pd.DataFrame:
    """One verdict per (arm, variant, dataset, metric) at one step: "the arm beats the main run", paired on
    (training seed, image): the replicated arms over the seeds both have, the others on seed 0. Only the
    models the arm trains again are judged: one it links is the main run's (or its seed arm's) own."""
    main = compared(seed_frames(cfg))
    if main is None:
        raise UserError(f"{run_dir(cfg, 'evaluate', 'per_image.csv')}: missing, and no filed scores of the main run "
                        "(scores/ of the study's report); run the main pipeline first (dvc repro)")
    verdicts = []
    for arm in (*BASE_ARMS, *CLAIM1_MECHANISM):  # a mechanism also changes the models themselves
        theirs = compared(seed_frames(cfg, arm), arm)
        if theirs is None:
            continue
        both = pd.concat([main, theirs], ignore_index=True)
        for dataset in sorted(theirs["dataset"].unique()):
            pairs = [(v, v) for v in COMPARED if TRAINED_BY[v] in retrained(arm)]  # a reused model is the same
            if decoder_only(arm):  # also against the original decoder: does the arm's decoder help at all?
                pairs.append(("distilled_x4+decoder", "distilled_x4"))
            verdicts += [claims.judge(both, f"{arm}: {settings(arm)}",
                                      dataset=dataset, metric=m, steps=1, a=f"{a}@{arm}", b=b)
                         for a, b in pairs for m in METRICS]
    return claims.to_frame(verdicts)


def claims_over_seeds(cfg: dict, arm: str | None = None) -> pd.DataFrame:
    """report.claims judged over training seeds (a bootstrap level) on the main run and its seed arms, or on
    a replicated arm and its replicates (the paper's claims under that arm's settings)."""
    frames = seed_frames(cfg, arm)
    specs = (cfg.get("report") or {}).get("claims") or []
    if not frames:
        return claims.to_frame([])
    return claims.verdicts(pd.concat(frames, ignore_index=True), specs, STUDY_STEPS)


def claim1_budget(cfg: dict) -> pd.DataFrame:
    """Claim 1 (distilled beats direct) at each training budget: the main run (over its training seeds) and
    each CLAIM1_ARMS, BUDGET_SCALED and CLAIM1_MECHANISM arm run, with columns `teacher_steps` and
    `student_steps` (= the direct model's)."""
    spec = next((c for c in (cfg.get("report") or {}).get("claims") or [] if c["claim"].startswith("1")), None)
    if spec is None:
        return claims.to_frame([])
    out = []
    for arm in (None, *CLAIM1_ARMS, *BUDGET_SCALED, *CLAIM1_MECHANISM):
        frames = seed_frames(cfg, arm)
        if not frames:
            continue
        acfg = cfg if arm is None else arm_config(cfg, arm)
        scores = pd.concat(frames, ignore_index=True)
        frame = claims.verdicts(scores[scores["dataset"].isin(STUDY_SETS)], [spec], STUDY_STEPS)
        out.append(frame.assign(arm=arm or "main", teacher_steps=int(acfg["teacher"]["steps"]),
                                student_steps=int(acfg["distill"]["steps"]), direct_init=acfg["direct"]["init"]))
    return pd.concat(out, ignore_index=True) if out else claims.to_frame([])


def chain_verdicts(cfg: dict) -> pd.DataFrame:
    """Each link of a chain arm against bicubic at its own scale, at one step, paired per image (over the
    seeds run of the arm)."""
    verdicts = []
    for arm in CHAIN_ARMS:
        frames = seed_frames(cfg, arm)
        if not frames:
            continue
        scores = pd.concat(frames, ignore_index=True)
        verdicts += [claims.judge(scores, f"x{scale} link beats bicubic x{scale}", dataset=dataset, metric=metric,
                                  steps=1, a=model, b=bicubic, steps_b=0)
                     for model, bicubic, scale in CHAIN_LINKS for dataset in CHAIN_SETS for metric in METRICS]
    return claims.to_frame([v for v in verdicts if v is not None])


def claim1_figure(frame: pd.DataFrame, path: Path, metric: str = "psnr") -> Path | None:
    """The distilled - direct gap with its 95% interval against the student's budget, one panel per set and
    one line per sampling step count; a longer-trained teacher (claim1_t1600, the BUDGET_SCALED arms) as open
    markers."""
    import matplotlib.pyplot as plt

    from yonos.report.figures import COLUMN_WIDTH_IN, STYLE, save_figure
    from yonos.report.tables import dataset_title

    sub = frame[(frame["metric"] == metric) & ~frame["arm"].isin(list(CLAIM1_MECHANISM))] if len(frame) else frame
    if not len(sub):
        return None
    base_teacher = int(sub.loc[sub["arm"] == "main", "teacher_steps"].iloc[0]) if (sub["arm"] == "main").any() else None
    datasets = sorted(sub["dataset"].unique())
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(datasets), figsize=(COLUMN_WIDTH_IN, 1.6), squeeze=False, sharey=True)
        for ax, dataset in zip(axes[0], datasets):
            for k, steps in enumerate(sorted(sub["steps"].unique())):
                rows = sub[(sub["dataset"] == dataset) & (sub["steps"] == steps)]
                colour = f"C{k}"
                for longer, part in rows.groupby(rows["teacher_steps"] != base_teacher):
                    part = part.sort_values("student_steps")
                    x = part["student_steps"] * (1.06 ** (k - 1))  # steps side by side, not on top of each other
                    ax.errorbar(x, part["diff"], yerr=[part["diff"] - part["low"], part["high"] - part["diff"]],
                                color=colour, marker="o", ms=3, lw=0.8, capsize=1.5,
                                mfc="white" if longer else colour, ls="none" if longer else "-",
                                label=None if longer else f"{steps} step{'s' if steps > 1 else ''}")
            ax.axhline(0, color="0.5", lw=0.5)
            ax.set_xscale("log", base=2)
            ticks = sorted(sub["student_steps"].unique())
            ax.set_xticks(ticks, [str(v) for v in ticks])
            ax.minorticks_off()
            ax.set_title("held-out crops" if dataset == "embedded" else dataset_title(dataset))
            ax.set_xlabel("student = direct steps")
        axes[0, 0].set_ylabel(f"distilled − direct {metric.upper()}-Y (dB)" if metric == "psnr" else f"Δ {metric}")
        fullest = max(axes[0], key=lambda a: len(a.get_legend_handles_labels()[0]))  # the set with every step count
        fig.legend(*fullest.get_legend_handles_labels(), loc="upper center", ncol=3, frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 0.88))
        save_figure(fig, path)
    return path


BUDGET_COLUMNS = ["variant", "dataset", "steps", "metric", "value"]  # what budget_table reads of results.csv


def local_budget_results(cfg: dict, arm: str) -> pd.DataFrame | None:
    """A budget arm's results from its run folder (its baseline's evaluate stage, results.csv: means per set, steps
    and metric), in a fixed order; None when absent or made under other params."""
    from yonos.stages.evaluate_baseline import stage_name

    acfg = arm_config(cfg, arm)
    path = run_dir(acfg, stage_name(BUDGET_ARMS[arm][0]), "results.csv")
    recorded = path.with_name("resolved_config.json")
    if not path.is_file() or (recorded.is_file()
                              and identity(json.loads(recorded.read_text())["config"]) != identity(acfg)):
        return None
    return pd.read_csv(path)[BUDGET_COLUMNS].sort_values(BUDGET_COLUMNS[:4], kind="stable").reset_index(drop=True)


def filed_budget_results(cfg: dict, arm: str) -> pd.DataFrame | None:
    """A budget arm's results as filed, when made under the current params."""
    folder = scores_dir(cfg)
    filed = study_scores.load(folder, arm) if folder else None
    return filed[0] if filed is not None and filed[1].get("identity") == identity(arm_config(cfg, arm)) else None


def budget_results(cfg: dict, arm: str) -> pd.DataFrame | None:
    """A budget arm's results as filed, else from its run folder, as run_scores reads an arm's. No per-image
    pairing: its table sets means side by side."""
    filed = filed_budget_results(cfg, arm)
    return filed if filed is not None else local_budget_results(cfg, arm)


def file_budget_run(cfg: dict, folder: Path, arm: str, *, refile: bool = False) -> bool:
    """File a budget arm's results from its run folder, as file_runs does an arm's scores (another machine's filed
    run of it is kept unless `refile`); whether it did."""
    local, in_use = local_budget_results(cfg, arm), filed_budget_results(cfg, arm)
    if local is None or (in_use is not None and study_scores.digest(in_use) == study_scores.digest(local)):
        return False
    if in_use is not None and not refile:
        print(f"[study] {arm}: its run folder's results differ from the filed {study_scores.paths(folder, arm)[0]} "
              "(another run of it); the report uses the filed ones; pass --refile to replace them", file=sys.stderr)
        return False
    study_scores.save(folder, arm, local, {"profile": cfg["profile"], "identity": identity(arm_config(cfg, arm)),
                                           "seconds": own_seconds(cfg, arm), "paired_with": {}})
    return True


def main_baseline_results(cfg: dict, method: str) -> tuple[pd.DataFrame, str] | None:
    """The main run's results of a baseline at the equal budget, and where they came from: its evaluate stage's
    run folder, else the profile's committed report (reports/<profile>/results.csv, what `dvc repro` wrote)."""
    from yonos.config import report_dir
    from yonos.stages.evaluate_baseline import stage_name

    for path, source in ((run_dir(cfg, stage_name(method), "results.csv"), "main run"),
                         (report_dir(cfg) / "results.csv", f"main run, reports/{cfg['profile']}/results.csv")):
        if path.is_file():
            frame = pd.read_csv(path)
            frame = frame[frame["method"] == method] if "method" in frame else frame
            if len(frame):
                return frame[BUDGET_COLUMNS], source
    return None


def budget_table(cfg: dict) -> str:
    """PSNR-Y on the held-out crops against sampling steps: each budget arm beside the main run's baseline."""
    lines = []
    for arm, (method, overrides) in BUDGET_ARMS.items():
        main, theirs = main_baseline_results(cfg, method), budget_results(cfg, arm)
        if main is None or theirs is None:
            continue
        frames = {f"equal budget ({main[1]})": main[0], arm: theirs}
        rows = {label: f.query("dataset == 'embedded' and metric == 'psnr'").set_index("steps")["value"]
                for label, f in frames.items()}
        steps = sorted(set.intersection(*(set(r.index) for r in rows.values())))
        lines += [f"### {method}: {', '.join(f'{k}={v}' for k, v in overrides.items())}", "",
                  "| budget | " + " | ".join(f"{s} steps" for s in steps) + " |",
                  "|---|" + "---:|" * len(steps)]
        lines += [f"| {label} | " + " | ".join(f"{r[s]:.2f}" for s in steps) + " |" for label, r in rows.items()]
        lines.append("")
    return "\n".join(lines)


def own_seconds(cfg: dict, name: str) -> dict[str, float]:
    """{stage: seconds} of the stages a run folder ran itself (timing.json; linked stages left out)."""
    from yonos.stages.report import read_timings

    folder = run_dir(_arm_cfg(cfg, name))
    if not folder.is_dir():
        return {}
    return {stage: secs for stage, secs in read_timings(folder).items()
            if (folder / stage).is_dir() and not (folder / stage).is_symlink()}


def arm_seconds(cfg: dict) -> dict[str, dict[str, float]]:
    """{arm: {stage: seconds}} of the stages each arm ran itself: from its folder, else as filed with its scores."""
    folder = scores_dir(cfg)
    out = {}
    for arm in (*ARMS, *BUDGET_ARMS):
        out[arm] = own_seconds(cfg, arm)
        filed = study_scores.load(folder, arm) if folder and not out[arm] else None
        if filed is not None and (budget_results if arm in BUDGET_ARMS else run_scores)(cfg, arm) is not None:
            out[arm] = filed[1].get("seconds") or {}
    return {arm: stages for arm, stages in out.items() if stages}


def time_table(seconds: dict[str, dict[str, float]]) -> str:
    rows = [f"| {arm} | {', '.join(stages)} | {sum(stages.values()) / 60:.0f} |" for arm, stages in seconds.items()]
    total = sum(sum(stages.values()) for stages in seconds.values())
    return "\n".join(["| Arm | Stages run | Minutes |", "|---|---|---:|", *rows,
                      f"| **total** | | {total / 60:.0f} ({total / 3600:.1f} h) |"]) + "\n"


def _runs_of(arm: str, frame: pd.DataFrame) -> str:
    n = int(frame["seeds"].max())
    if arm in REPLICATED:
        return f"{n} training seeds (those run of `{arm}`, {', '.join(f'`{arm}_{t}`' for t in SEED_ARMS)})"
    return f"{n} training seed{'s' if n > 1 else ''} (`{arm}` has no replicates; intervals over images only)"


def shown_runs(folder: Path) -> set[str]:
    """The runs a written report shows, read back from its tables (an arm judged over n seeds shows its n runs):
    what writing it again must not silently drop."""
    tag_of = {seed: tag for tag, seed in SEED_ARMS.items()}
    runs = set()
    for name, column in (("claims.csv", None), ("ablations.csv", "a"), ("claim1_budget.csv", "arm"),
                         ("claims_by_arm.csv", "arm")):
        if not (folder / name).is_file():
            continue
        frame = pd.read_csv(folder / name)
        arms = [str(a).rpartition("@")[2] for a in frame[column]] if column else [MAIN] * len(frame)
        for arm, seeds in zip(arms, frame["seeds"]):
            runs |= {arm} | {tag_of[s] if arm == MAIN else f"{arm}_{tag_of[s]}" for s in range(1, int(seeds))}
    text = (folder / "README.md").read_text() if (folder / "README.md").is_file() else ""
    runs |= {arm for arm in BUDGET_ARMS if f"| {arm} |" in text}  # the budget table's rows
    runs |= set(CHAIN_ARMS) if (folder / "chain.csv").is_file() else set()
    return runs


def missing_runs(cfg: dict, folder: Path) -> list[str]:
    """The runs a report in `folder` shows that have no scores here, neither filed nor in a run folder."""
    def have(name: str) -> bool:
        return (budget_results(cfg, name) if name in BUDGET_ARMS else run_scores(cfg, name)) is not None

    return sorted(name for name in shown_runs(folder) if not have(name))


def write_report(cfg: dict, out: str | Path | None = None, *, refile: bool = False, drop: bool = False) -> Path:
    """reports/claims/ (or `out`, whose scores/ it files to and reads): the runs present filed first (file_runs)."""
    out = Path(out or (cfg.get("report") or {}).get("study") or "reports/claims")
    cfg = {**cfg, "report": {**(cfg.get("report") or {}), "study": str(out)}}
    file_runs(cfg, refile=refile)
    missing = missing_runs(cfg, out)
    if missing and not drop:
        raise UserError(f"{display_path(out)}: shows {len(missing)} runs that have no scores here, filed or in a run "
                        f"folder ({', '.join(missing)}); run them (python -m yonos.study run ARM), or pass --drop "
                        "to write the report without them")
    seeds, arms, left_out = claims_over_seeds(cfg), judge_arms(cfg), stale_arms(cfg)
    under = {arm: claims_over_seeds(cfg, arm) for arm in CLAIMED_UNDER
             if len(seed_frames(cfg, arm)) > (arm in REPLICATED)}
    under_csv = pd.concat([f.assign(arm=arm) for arm, f in under.items()], ignore_index=True) if under else None
    for name, frame in (("claims.csv", seeds), ("ablations.csv", arms), ("claims_by_arm.csv", under_csv)):
        if frame is not None:
            with atomic_path(out / name) as tmp:
                frame.to_csv(tmp, index=False, float_format="%.6g")
    n = int(seeds["seeds"].max()) if len(seeds) else 1
    text = (f"# Claims and ablations ({cfg['profile']} profile)\n\n"
            "Generated by `python -m yonos.study report` from the main run (`dvc repro`) and the arms trained by "
            "`python -m yonos.study run ARM` ([yonos/study.py](../../yonos/study.py)); not part of `dvc repro`. "
            "Every arm retrains every U-Net stage from the main run's data, autoencoder and latent bank.\n\n"
            + "The per-image scores of every run, filed by the study so that it outlives the machines that ran it, "
            "are in [scores/](scores/) (yonos/study_scores.py): the report reads a run from there, else from its "
            "run folder.\n\n"
            + (f"Left out, made under other params than the current ones or against another run of the main run "
               f"(redo them with `python -m yonos.study run --fresh ARM`): "
               f"{', '.join(f'`{a}`' for a in left_out)}.\n\n" if left_out else "")
            + (f"The study run under the previous one-step default, which chose the current one: [{PREVIOUS.name}/]"
               f"({PREVIOUS.name}/README.md).\n\n" if (out / PREVIOUS.name / "README.md").is_file() else "")
            + "## The paper's claims over training seeds\n\n"
            f"{n} training seed{'s' if n > 1 else ''} (the main run is seed 0; `seed1`, `seed2` change the U-Net "
            "initialisation and the example stream). Paired per-image differences A − B; the 95% interval "
            "resamples seeds and, within each, images ([yonos/report/claims.py](../../yonos/report/claims.py)). "
            "Verdict: *reproduced* when the interval favours A, *not reproduced* when it favours B, else "
            "*inconclusive*.\n\n"
            + (claims.to_markdown(seeds) if len(seeds) else "No per-image scores yet.\n")
            + "".join(f"\n## The paper's claims under arm `{arm}` ({settings(arm)})\n\n"
                      f"The same claims on the arm's own runs, in claims_by_arm.csv: {_runs_of(arm, frame)}.\n\n"
                      + claims.to_markdown(frame) for arm, frame in under.items() if len(frame))
            + "\n## Ablations\n\nEach arm (A) against the main run (B) on the same images and noise seeds at "
            "one DDIM step. An arm with replicates (`<arm>_seed1`, `<arm>_seed2`) is paired seed by seed with the "
            "main run's seeds and its interval resamples seeds and images; an arm run at one seed has an interval "
            "over images only. The Seeds × images column gives the count. `decoder_control` is Claim 2's control: its "
            "decoder had the same extra steps on the autoencoder's own latents E(HR), not on one-step latents; "
            "*not reproduced* against the main run's decoder attributes Claim 2's gain to the one-step latents, and "
            "its row against distilled_x4 says whether the extra decoder training helps by itself. Arms not run "
            "are absent.\n\n"
            + (claims.to_markdown(arms) if len(arms) else "No arm has been run.\n"))
    budget1 = claim1_budget(cfg)
    if len(budget1):
        with atomic_path(out / "claim1_budget.csv") as tmp:
            budget1.to_csv(tmp, index=False, float_format="%.6g")
        figure = claim1_figure(budget1, out / "claim1_budget.png")
        psnr = budget1[budget1["metric"] == "psnr"]
        text += ("\n## Claim 1 against the training budget\n\n"
                 "Distilled vs direct within each run, at the main run's budget (teacher "
                 f"{int(cfg['teacher']['steps'])} steps, student = direct {int(cfg['distill']['steps'])}; over its "
                 "training seeds) and at the arms' (`python -m yonos.study run "
                 + " ".join((*CLAIM1_ARMS, *BUDGET_SCALED)) + "`: "
                 + "; ".join(f"`{a}`: {settings(a)}" for a in (*CLAIM1_ARMS, *BUDGET_SCALED))
                 + "), and the mechanism checks: "
                 + "; ".join(f"`{a}`: {settings(a)}" for a in CLAIM1_MECHANISM)
                 + " (the direct model from scratch, the paper's baseline, where the main run starts it from the "
                 "teacher; the teacher's target on its own noisy latent; t drawn with density rising to T; the "
                 "teacher's target at high t its own 4-step DDIM sample instead of its one-step prediction). "
                 "Each arm is judged over the training seeds run of it: the arm (seed 0) and its replicates "
                 "`<arm>_seed1`, `<arm>_seed2` (which retrain what the arm retrains and take the rest from `seed1`, "
                 "`seed2`); the Seeds × images column says how many. "
                 "The paper's Claim 1 predicts a positive gap, largest at few steps. All metrics in "
                 "claim1_budget.csv; arms not run yet are absent.\n\n"
                 + (f"![Claim 1 against budget]({figure.name})\n\nOpen markers: a teacher trained longer than the "
                    f"main run's {int(cfg['teacher']['steps'])} steps (the table gives each run's).\n\n"
                    if figure else "")
                 + claims.to_markdown(psnr.assign(claim=psnr["arm"] + " (teacher " + psnr["teacher_steps"].astype(str)
                                                  + ", student " + psnr["student_steps"].astype(str)
                                                  + ", direct from " + psnr["direct_init"] + ")")))
    chain = chain_verdicts(cfg)
    if len(chain):
        with atomic_path(out / "chain.csv") as tmp:
            chain.to_csv(tmp, index=False, float_format="%.6g")
        text += ("\n## The x2 → x4 → x8 chain against bicubic\n\n"
                 f"`python -m yonos.study run {' '.join(CHAIN_ARMS)}` ("
                 + "; ".join(settings(a) for a in CHAIN_ARMS)
                 + "): the x4 student distilled on to an x8 student, as the paper's chain goes on. Each link (the "
                 "x2 teacher, the x4 and x8 students, at one step, without the fine-tuned decoder) against bicubic "
                 "at its own scale on full B100 images (classic protocol: border = scale). A link cannot beat "
                 "bicubic by more than the autoencoder's ceiling allows: see the main report's ceiling rows.\n\n"
                 + claims.to_markdown(chain))
    budget = budget_table(cfg)
    if budget:
        text += ("\n## Baselines at more budget\n\nPSNR-Y (dB) on the held-out crops against sampling steps: a "
                 "baseline trained at a multiple of the equal budget beside the same baseline at it "
                 "(`python -m yonos.study run ldmsr_budget5`).\n\n" + budget)
    seconds = arm_seconds(cfg)
    if seconds:
        text += ("\n## Wall time\n\nThe stages each arm ran itself, from their timing.json, summed. Measured on a "
                 "2-core machine while two or three arms (or other jobs) shared it, so an arm alone takes roughly half "
                 "as long; an arm killed part-way counts only its finished stages. A stage resumed from a saved "
                 "trainer state counts the training of its earlier calls too, except where the state predates that "
                 "record: then only its last call counts.\n\n" + time_table(seconds))
    write_text(out / "README.md", text)
    from yonos.report import readme

    readme.update_readme(readme.README, study_path=out / "claims.csv")  # the top-level README quotes it
    return out / "README.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yonos.study", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "report"])
    parser.add_argument("arms", nargs="*", help=f"run: arms to train ({', '.join([*ARMS, *BUDGET_ARMS])})")
    parser.add_argument("--profile", default=None)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--refile", action="store_true",
                        help="report: replace filed scores that differ from the run folders' (another machine's runs)")
    parser.add_argument("--drop", action="store_true",
                        help="report: write it even though runs it shows have no scores here (they are left out)")
    parser.add_argument("--fresh", action="store_true",
                        help="run: discard the arms' saved trainer states (needed for an arm made under other params)")
    args = parser.parse_args(argv)
    try:
        cfg = load_params(args.params, args.profile)
        if args.command == "run":
            if not args.arms:
                raise UserError(f"study run: name at least one arm ({', '.join(ARMS)})")
            for arm in args.arms:
                arm_config(cfg, arm)  # every name checked before any work
            for arm in args.arms:
                run_arm(cfg, arm, fresh=args.fresh)
        else:
            print(f"[study] wrote {write_report(cfg, refile=args.refile, drop=args.drop)}", file=sys.stderr)
    except UserError as exc:
        print(f"study: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
