"""diagnose_onestep: what one-step sampling sees, measured on the embedded evaluation crops (issue 8).

SD's schedule leaves alpha_999 ~ 0.068 of the signal in a training input at t = 999, while one-step
inference starts from pure noise; this stage measures what that costs each trained model:

- latents: per-channel mean and std of the scaled autoencoder latents z_h of the HR crops (the
  encoder is shared by every variant);
- per model, the x0 error ||z-hat - z_h||^2 (mean over elements) on in-distribution inputs
  z_t = alpha_t z_h + sigma_t eps at t in `timesteps`, beside the error of the one-step sample from
  each start (model.start: pure noise, or the LR latent noised to t = T);
- bias^2 and variance of the one-step output over `seeds` noise seeds (per element, averaged), so an
  error can be told apart as systematic (bias) or noise-driven (variance);
- PSNR-Y of the decoded one-step output from each start (the start compared at equal training budget).

Writes runs/<profile>/diagnose_onestep/{latents.csv, onestep.csv}; the report renders both.
"""

from __future__ import annotations

import pandas as pd
import torch

from yonos.config import run_dir
from yonos.data.eval_sets import resolve_eval_set
from yonos.io import atomic_path
from yonos.metrics.scorer import Scorer
from yonos.pipeline import YonosPipeline
from yonos.sampler import STARTS, per_image_generators, predict_z0, sample, stacked_randn
from yonos.schedule import add_noise, alpha_sigma
from yonos.stages._common import device_of, stage_main
from yonos.stages.evaluate import image_seed

NAME = "diagnose_onestep"
DEFAULTS = {"timesteps": [999, 900, 700, 500, 200], "seeds": 8}


def latent_stats(z: torch.Tensor) -> pd.DataFrame:
    """Per-channel mean and std of latents [N, C, H, W] (population std over images and positions)."""
    flat = z.detach().transpose(0, 1).flatten(1).double().cpu()
    return pd.DataFrame({"channel": range(z.shape[1]), "mean": flat.mean(1).numpy(),
                         "std": flat.std(1, unbiased=False).numpy()})


def bias_variance(samples: torch.Tensor, target: torch.Tensor) -> tuple[float, float, float]:
    """(mse, bias^2, variance) of samples [S, N, ...] against target [N, ...], per element, averaged:
    mse = bias^2 + variance exactly (variance over seeds with 1/S)."""
    mean = samples.mean(0)
    bias2 = (mean - target).pow(2).mean().item()
    var = samples.var(0, unbiased=False).mean().item()
    return (samples - target).pow(2).mean().item(), bias2, var


@torch.no_grad()
def diagnose(pipe: YonosPipeline, ids: list[str], lr: torch.Tensor, hr: torch.Tensor, *, timesteps, seeds: int,
             scorer: Scorer, grey: list[bool]) -> list[dict]:
    """Rows of onestep.csv for one model on one batch of same-sized crops (docstring of the module)."""
    z_h, z_l = pipe.codec.encode(hr), pipe.encode_condition(lr)
    acp, ptype = pipe.scheduler.alphas_cumprod, pipe.scheduler.config.prediction_type
    gens = lambda k: per_image_generators([image_seed(k, i) for i in ids])  # noqa: E731 - seed k of each image
    rows = []
    for t in timesteps:
        tt = torch.full((len(ids),), int(t), dtype=torch.long)
        alpha, sigma = alpha_sigma(acp, tt)
        eps = stacked_randn(z_h.shape[1:], gens(0), z_h.device)
        z0 = predict_z0(pipe.unet, add_noise(z_h, eps, alpha, sigma), z_l, tt, pipe.null_emb,
                        alphas_cumprod=acp, prediction_type=ptype)
        rows.append({"probe": "z_t from z_h", "t": int(t), "start": "", "alpha_t": alpha[0].item(),
                     "latent_mse": (z0 - z_h).pow(2).mean().item()})
    for start in STARTS:
        samples = torch.stack([sample(pipe.unet, pipe.scheduler, z_l, pipe.null_emb, steps=1, generators=gens(k),
                                      start=start) for k in range(seeds)])
        mse, bias2, var = bias_variance(samples, z_h)
        psnr = scorer.score(pipe.codec.decode(samples[0]).clamp(0, 1), hr, grey=grey)["psnr"].mean().item()
        rows.append({"probe": "one step", "t": int(pipe.scheduler.config.num_train_timesteps) - 1, "start": start,
                     "alpha_t": acp[-1].sqrt().item(), "latent_mse": mse, "bias2": bias2, "variance": var,
                     "psnr_y": psnr})
    rows.append({"probe": "LR latent as is", "t": -1, "start": "", "latent_mse": (z_l - z_h).pow(2).mean().item(),
                 "psnr_y": scorer.score(pipe.codec.decode(z_l).clamp(0, 1), hr, grey=grey)["psnr"].mean().item()})
    return rows


def run(cfg: dict) -> dict:
    dcfg = {**DEFAULTS, **(cfg.get("diagnose") or {})}
    device = device_of(cfg)
    eset = resolve_eval_set("embedded", cfg, run_dir(cfg), scale=cfg["data"]["eval_scale"])
    rows, stats = [], None
    for variant, spec in cfg["evaluate"]["variants"].items():
        if spec.get("method") != "yonos" or "checkpoint" not in spec:
            continue
        pipe = YonosPipeline.from_pretrained(run_dir(cfg, spec["checkpoint"]), device=device)
        pairs = eset.pairs_at(pipe.scale)
        if pairs is None:
            print(f"[{NAME}] {variant}: no x{pipe.scale} LR in the embedded set; skipped")
            continue
        ids, lr, hr = zip(*(pairs[i] for i in range(len(pairs))))
        lr, hr = torch.stack(lr).to(device), torch.stack(hr).to(device)
        if stats is None:
            stats = latent_stats(pipe.codec.encode(hr).cpu())
        scorer = Scorer(["psnr"], device=device, border=pairs.border)
        grey = [i in pairs.grey_ids for i in ids]
        rows += [{"variant": variant, "scale": pipe.scale, "images": len(ids), **r}
                 for r in diagnose(pipe, list(ids), lr, hr, timesteps=dcfg["timesteps"], seeds=dcfg["seeds"],
                                   scorer=scorer, grey=grey)]
    out = run_dir(cfg, NAME)
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in (("latents.csv", stats if stats is not None else pd.DataFrame()),
                        ("onestep.csv", pd.DataFrame(rows))):
        with atomic_path(out / name) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    return {}


def main() -> int:
    return stage_main(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
