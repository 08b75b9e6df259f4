"""train_stablesr_cfw: StableSR's controllable feature wrapping (CFW), trained on the method's own latents.

As StableSR: the trained StableSR (train_stablesr) generates latents z_0 from the LR of training crops
(`stablesr.cfw_latents` of them, `stablesr.cfw_latent_steps` respaced DDPM steps from noise, one
generator per image); the CFW modules then learn, with everything else frozen, to decode
D(z_0; w * CFW(E-features of up(x_l))) towards the HR crop, with w = 1 in training (w =
`stablesr.cfw_weight`, 0.5, at test). Loss: L1 + decoder.perceptual_weight x the perceptual term of
finetune_decoder (LPIPS, or 1 - SSIM when its weights are missing); StableSR's adversarial term is left
out. Steps, batch and lr are the decoder-side budget (`decoder.*`, yonos/baselines/budget.py), as
YONOS's decoder fine-tuning gets.

The LR-encoder features are recomputed from up(x_l) at every step (as StableSR's CFW training does),
so only z_0, up(x_l) and the HR crop are kept. With an autoencoder of fewer than 3 levels there is no
level to fuse at: the checkpoint then has an empty CFW (the plain decoder) and nothing trains.
Writes runs/<profile>/train_stablesr_cfw/{checkpoint, state, metrics.json}.
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from yonos.baselines import budget
from yonos.baselines.stablesr import CFWOnly, StableSRPipeline, cfw_loss, miniature_cfw, sample
from yonos.checkpoint import digest
from yonos.config import run_dir
from yonos.data.degradations import degrade
from yonos.errors import UserError
from yonos.io import write_json
from yonos.resize import bicubic_up
from yonos.sampler import per_image_generators
from yonos.stages._common import stage_main
from yonos.stages._unet import example_stream, task_scales, training_identity
from yonos.stages.finetune_decoder import perceptual_term
from yonos.stages.train_stablesr import NAME as SR_STAGE
from yonos.stages.train_stablesr import stablesr_options
from yonos.train import example_seed, fit, fit_timing, make_accelerator

NAME = "train_stablesr_cfw"
TRAIN_WEIGHT = 1.0  # CFW fusion weight w in training (StableSR); the test-time w is stablesr.cfw_weight


@torch.no_grad()
def generate(cfg: dict, pipe: StableSRPipeline, n: int, steps: int, *, chunk: int) -> dict[str, torch.Tensor]:
    """n training crops with their up(x_l) and the latent the trained StableSR makes from it.

    Crops and their degradation draws come from the example stream `train_stablesr_cfw` (the latent
    bank's crops when there is one); the sampling noise of example i from its own generator."""
    stream = example_stream(cfg, n, stream=NAME, with_noise=False)
    scale, device = pipe.scale, pipe.device
    parts: dict[str, list[torch.Tensor]] = {"z0": [], "up": [], "hr": []}
    for start in tqdm(range(0, n, chunk), desc="stablesr: latents for CFW", mininterval=2.0):
        idx = range(start, min(n, start + chunk))
        items = [stream[i] for i in idx]
        hr = torch.stack([it["hr"] for it in items])
        seeds = [int(it["seed"]) for it in items]
        lr = degrade(hr, task_scales(cfg), seeds, cfg["degradation"])[scale]  # the bank's draw of each crop
        up = bicubic_up(lr, scale)
        z_l = pipe.codec.encode(up.to(device))
        gens = per_image_generators([example_seed(cfg["seed"], f"{NAME}-noise", i) for i in idx])
        z0 = sample(pipe.denoiser, pipe.scheduler, z_l, pipe.null_emb, steps=steps, generators=gens)
        for key, value in (("z0", z0), ("up", up), ("hr", hr)):
            parts[key].append(value.float().cpu())
    return {k: torch.cat(v).contiguous() for k, v in parts.items()}


class GeneratedLatents(Dataset):
    """`length` examples drawn with replacement from the generated set, example i by its own seed."""

    def __init__(self, data: dict[str, torch.Tensor], length: int, *, seed: int):
        self.data, self.length, self.seed = data, length, seed
        self.size = len(data["z0"])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(example_seed(self.seed, NAME, i))
        j = int(torch.randint(0, self.size, (), generator=g))
        return {k: v[j] for k, v in self.data.items()}


def run(cfg: dict) -> dict:
    scfg, dcfg = cfg["stablesr"], cfg["decoder"]
    n, gen_steps = int(scfg["cfw_latents"]), int(scfg["cfw_latent_steps"])
    if n < 1 or gen_steps < 1:
        raise UserError(f"params.yaml: stablesr.cfw_latents ({n}) and stablesr.cfw_latent_steps ({gen_steps}) "
                        "must be at least 1")
    src = run_dir(cfg, SR_STAGE, "checkpoint")
    if not src.is_dir():
        raise UserError(f"{src}: missing; run train_stablesr first (dvc repro train_stablesr)")
    accelerator = make_accelerator(cfg)
    device = accelerator.device
    trained = StableSRPipeline.from_pretrained(src, device=device)
    torch.manual_seed(cfg["seed"])
    cfw = miniature_cfw(cfg, trained.vae).to(device)
    pipe = StableSRPipeline(trained.denoiser, trained.vae, cfw, trained.scheduler, trained.null_emb, trained.scale,
                            stablesr_options(cfg))
    pipe.denoiser.requires_grad_(False)
    pipe.vae.requires_grad_(False)
    out = run_dir(cfg, NAME)
    ckpt = out / "checkpoint"
    steps, batch = budget.decoder_steps(cfg), int(dcfg["batch_size"])
    info = {"cfw_latents": n, "cfw_latent_steps": gen_steps, "train_weight": TRAIN_WEIGHT,
            "test_weight": pipe.options["cfw_weight"], "steps": steps, "batch_size": batch}

    if not len(cfw.fusion_layers):  # a 2-level autoencoder has no level 1 .. L-2 to fuse at
        StableSRPipeline(pipe.denoiser, pipe.vae, None, pipe.scheduler, pipe.null_emb, pipe.scale,
                         pipe.options).save_pretrained(ckpt, stage=NAME, trained_steps=0,
                                                       cfw_training={**info, "steps": 0})
        write_json(out / "metrics.json", {**info, "steps": 0, "note": "autoencoder has < 3 levels: no CFW"})
        return {"timing": {"steps": 0}}

    t0 = time.perf_counter()
    data = generate(cfg, pipe, n, gen_steps, chunk=budget.batch_size(cfg))
    gen_seconds = time.perf_counter() - t0

    cfw.requires_grad_(True)
    used, perceptual = perceptual_term(dcfg["perceptual"], device)
    loss = lambda model, b: cfw_loss(model, b, perceptual=perceptual, perceptual_weight=dcfg["perceptual_weight"])

    def save(model, step):
        pipe.save_pretrained(ckpt, stage=NAME, trained_steps=step, cfw_training={**info, "perceptual": used},
                             budget=budget.describe(cfg))

    sections = {NAME: {**info, "lr": dcfg["lr"], "perceptual": dcfg["perceptual"],
                       "perceptual_weight": dcfg["perceptual_weight"]}}
    init = {part: digest(src / part) for part in ("unet", "encoder", "sft", "vae", "scheduler")}
    result = fit(
        CFWOnly(pipe.codec, TRAIN_WEIGHT), loss, lambda m: GeneratedLatents(data, m, seed=cfg["seed"]),
        accelerator=accelerator, steps=steps, batch_size=batch, lr=dcfg["lr"],
        state_dir=out / "state", identity=training_identity(cfg, sections, init=init), fresh=bool(cfg.get("fresh")),
        on_done=save, desc="stablesr CFW",
    )
    write_json(out / "metrics.json", {**info, "perceptual_term": used, "generation_seconds": round(gen_seconds, 2),
                                      "train_seconds": round(result.seconds, 2), "final_loss": result.final_loss,
                                      "loss_every_step": result.losses})
    return {"timing": {"generation_seconds": round(gen_seconds, 2), **fit_timing(result)}}


def main() -> int:
    return stage_main(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
