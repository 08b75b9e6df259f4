"""Ratios in one run (issue 10, item 1): YONOS one step against the multi-step methods, same LR, 128 -> 512.

One pytest-benchmark group, "ratios 128->512" (LR 1x3x128x128, x4):
    YONOS-1 (reference), YONOS-50                 the method adapter (`upscale`), trained checkpoint when present
    StableSR-200, LDM-SR-100, SR3-100             the trained embedded baselines (runs/embedded/train_stablesr_cfw,
                                                  train_ldmsr, train_sr3) through their pipelines, as evaluate scores
                                                  them; without a checkpoint, a random-weight stand-in (below)
    diffusers-LDM-SR-100                          diffusers' LDMSuperResolutionPipeline, tiny VQModel + UNet2DModel
    SD-upscale-1, SD-upscale-75                   diffusers' StableDiffusionUpscalePipeline, tiny CLIP, same VAE
The diffusers pipelines, and the stand-ins of absent checkpoints, have random weights at the embedded U-Net's
widths (params.yaml embedded.model.unet) and share the embedded autoencoder where their method uses one of that
kind: time depends on shapes, not values. Each row's JSON says which weights it timed.

Every benchmark's extra_info holds what bench/report.py needs (and nothing typed in):
    parts              seconds of each part timed alone (median of 2-5 calls after a warm-up)
    cost_model         parts run once and parts run every step; predicted_seconds = once + steps x per_step
    steps, steps_target the steps timed and the method's own count; fewer when the budget below is short
    peak_memory_mb     peak during the timed call(s) (peak_memory_kind says which peak)
YONOS-1 also holds the pipeline overhead (end to end / its parts), the FLOPs of the one-step upscale
(torch.utils.flop_counter), and the GEMM rate measured in this run (fp32, and bf16 where supported).

Budget: the file aims at <= 8 minutes on 2 idle cores. Multi-step loops run once (rounds=1, no warm-up round:
their parts were just timed, so nothing is cold). A loop gets LOOP_BUDGET_S[method] seconds (less when the file
runs late); if steps_target x (one step timed alone) exceeds it, it is timed at fewer steps, says so in
extra_info (`reduced`), and the report extrapolates with the cost model. YONOS_BENCH_RATIOS_BUDGET_S sets the
file's budget. With --benchmark-disable (a code-path check) every loop runs CHECK_STEPS steps and every part once.
Also: YONOS_BENCH_CHECKPOINT (bench/conftest.py), YONOS_BENCH_{STABLESR,LDMSR,SR3}_CHECKPOINT (a baseline's trained
folder; default runs/embedded/<its training stage>/checkpoint), YONOS_BENCH_LR (LR side, default 128; smaller only
for quick checks).

    pytest bench/test_bench_ratios.py --benchmark-only --benchmark-json reports/bench/bench_cpu.json
    python bench/report.py reports/bench/bench_cpu.json --out reports/bench.md
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from conftest import REPO, device, peak_memory_kind, peak_memory_mb, reset_peak, sync
from torch.utils.flop_counter import FlopCounterMode

from yonos.resize import bicubic_up
from yonos.sampler import denoise, per_image_generators
from yonos.tiling import needs_tiling

LR_SIZE = int(os.environ.get("YONOS_BENCH_LR", "128"))  # the 128 -> 512; smaller only for checks
SCALE = 4
GROUP = f"ratios {LR_SIZE}->{SCALE * LR_SIZE}"
FILE_BUDGET_S = float(os.environ.get("YONOS_BENCH_RATIOS_BUDGET_S", "450"))
# Seconds for each multi-step loop (a time budget, not a measurement), in the order the tests run.
LOOP_BUDGET_S = {"YONOS-50": 45.0, "SD-upscale-75": 40.0, "diffusers-LDM-SR-100": 45.0, "LDM-SR-100": 45.0,
                 "StableSR-200": 150.0, "SR3-100": 120.0}
PART_RESERVE_S = 20.0  # per method still to run: building it and timing its parts
CHECK_STEPS = 2  # --benchmark-disable: the loop's code path, not its length
PART_MIN_REPEATS, PART_MAX_REPEATS, PART_MIN_TIME_S = 2, 5, 2.0
REFERENCE_ROUNDS = 5  # YONOS-1 end to end, after one warm-up round
GEMM_N = 2048  # fp32: 17 GFLOP per call
WEIGHTS_RANDOM = "random weights (shapes only)"


def sig(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")


def time_part(fn: Callable, *, check: bool) -> float:
    """Median seconds of fn() alone, synchronised, under no_grad: one warm-up call, then 2-5 calls (>= 2 s)."""
    with torch.no_grad():
        if not check:
            fn()
            sync()
        times: list[float] = []
        while not times or (not check and len(times) < PART_MAX_REPEATS
                            and (len(times) < PART_MIN_REPEATS or sum(times) < PART_MIN_TIME_S)):
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def count_flops(fn: Callable) -> int:
    """FLOPs of one call as torch.utils.flop_counter counts them (convolutions, matmuls, attention)."""
    mode = FlopCounterMode(display=False)
    with torch.no_grad(), mode:
        fn()
    return int(mode.get_total_flops())


@dataclass
class Subject:
    """A method as the ratios need it: its end-to-end call at a step count, and its parts alone."""

    name: str  # label stem: "StableSR" -> "StableSR-200"
    run: Callable[[int], object]  # steps -> SR output, the method's whole code path
    parts: dict[str, Callable]  # part -> a call of that part alone
    once: list[str]  # parts the cost model counts once per upscale
    per_step: list[str]  # parts it counts once per step
    weights: str
    info: dict = field(default_factory=dict)  # what the method is (sampler, shapes), for the JSON
    informative: list[str] = field(default_factory=list)  # timed for shares, not in the cost model
    timed: dict[str, float] | None = None

    def predicted(self, steps: int) -> float:
        assert self.timed is not None
        return sum(self.timed[k] for k in self.once) + steps * sum(self.timed[k] for k in self.per_step)


def time_parts(subject: Subject, check: bool) -> dict[str, float]:
    if subject.timed is None:  # shared by the subject's tests (YONOS-1 and -50, SD-upscale-1 and -75)
        subject.timed = {k: time_part(f, check=check) for k, f in subject.parts.items()}
    return subject.timed


# --- the run's clock ------------------------------------------------------------------------------------
TEST_LABELS = {"test_yonos_50": "YONOS-50", "test_sd_upscale_75": "SD-upscale-75",
               "test_diffusers_ldm_sr_100": "diffusers-LDM-SR-100", "test_ldm_sr_100": "LDM-SR-100",
               "test_stablesr_200": "StableSR-200", "test_sr3_100": "SR3-100"}


class Clock:
    """The file's time budget, shared out among the multi-step loops selected in this session."""

    def __init__(self, selected: list[str]):
        self.start, self.pending = time.monotonic(), [m for m in LOOP_BUDGET_S if m in selected]

    def loop_budget(self, label: str) -> float:
        later = [m for m in self.pending if m != label]
        left = FILE_BUDGET_S - (time.monotonic() - self.start) - PART_RESERVE_S * len(later)
        share = LOOP_BUDGET_S[label] / (LOOP_BUDGET_S[label] + sum(LOOP_BUDGET_S[m] for m in later))
        return max(0.0, min(LOOP_BUDGET_S[label], left * share))

    def done(self, label: str) -> None:
        if label in self.pending:
            self.pending.remove(label)


@pytest.fixture(scope="module")
def clock(request) -> Clock:
    names = [getattr(item, "originalname", item.name) for item in request.session.items
             if getattr(item, "module", None) is request.module]
    return Clock([TEST_LABELS[n] for n in names if n in TEST_LABELS])


# --- shared inputs and models ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lr() -> torch.Tensor:
    return torch.rand(1, 3, LR_SIZE, LR_SIZE, generator=torch.Generator().manual_seed(0)).to(device())


@pytest.fixture(scope="module")
def embedded_cfg() -> dict:
    from yonos.config import load_params

    return load_params(REPO / "params.yaml", "embedded")


def unet_kwargs(cfg: dict) -> dict:
    """params.yaml embedded.model.unet as UNet2DConditionModel kwargs (lists -> tuples)."""
    kw = dict(cfg["model"]["unet"])
    for key in ("block_out_channels", "down_block_types", "up_block_types"):
        kw[key] = tuple(kw[key])
    return kw


def pixel_unet_kwargs(cfg: dict, *, attention: bool) -> dict:
    """The embedded U-Net's widths and depth as UNet2DModel kwargs (self-attention where it cross-attends)."""
    u = cfg["model"]["unet"]
    swap = {"CrossAttnDownBlock2D": "AttnDownBlock2D" if attention else "DownBlock2D",
            "CrossAttnUpBlock2D": "AttnUpBlock2D" if attention else "UpBlock2D"}
    return dict(block_out_channels=tuple(u["block_out_channels"]), layers_per_block=u["layers_per_block"],
                down_block_types=tuple(swap.get(b, b) for b in u["down_block_types"]),
                up_block_types=tuple(swap.get(b, b) for b in u["up_block_types"]),
                attention_head_dim=u["attention_head_dim"], norm_num_groups=u["norm_num_groups"],
                add_attention=attention)


def trained_checkpoint(method: str, stage: str):
    """A baseline's trained folder (YONOS_BENCH_<METHOD>_CHECKPOINT, else runs/embedded/<stage>/checkpoint), or
    None when there is none (the benchmark then times a random-weight stand-in and says so)."""
    from yonos.plugins import load_method

    folder = (os.environ.get(f"YONOS_BENCH_{method.upper()}_CHECKPOINT")
              or REPO / "runs" / "embedded" / stage / "checkpoint")
    if not os.path.isdir(folder):
        return None
    return load_method(method, checkpoint=folder, device=device()).pipe


@pytest.fixture(scope="module")
def yonos(yonos_method, lr) -> Subject:
    pipe = yonos_method.pipe
    up = bicubic_up(lr, pipe.scale)
    with torch.no_grad():
        z_l = pipe.codec.encode(up)
    z = torch.randn(z_l.shape, generator=torch.Generator().manual_seed(1)).to(z_l.device)
    t = torch.full((1,), pipe.scheduler.config.num_train_timesteps - 1, device=z.device, dtype=torch.long)
    return Subject(
        "YONOS",
        run=lambda steps: yonos_method.upscale(lr, scale=SCALE, steps=steps, generator=per_image_generators([0])),
        parts={"bicubic": lambda: bicubic_up(lr, pipe.scale), "encoder": lambda: pipe.codec.encode(up),
               "unet": lambda: denoise(pipe.unet, z, z_l, t, pipe.null_emb), "decoder": lambda: pipe.codec.decode(z)},
        once=["bicubic", "encoder", "decoder"], per_step=["unet"], weights=yonos_method.source,
        info={"sampler": "DDIM eta=0, trailing", "latent_shape": list(z_l.shape),
              "tiled": needs_tiling(pipe, (LR_SIZE, LR_SIZE))})


@pytest.fixture(scope="module")
def stablesr(yonos_method, embedded_cfg, lr) -> Subject:
    """StableSR's miniature (yonos.baselines.stablesr) on the YONOS autoencoder's architecture and weights,
    a prior U-Net of the embedded widths, its time-aware encoder, SFT and CFW; or a trained checkpoint."""
    from yonos.baselines.colour import colour_fix
    from yonos.baselines.stablesr import StableSRPipeline, build_prior_unet

    pipe, weights = trained_checkpoint("stablesr", "train_stablesr_cfw"), "trained checkpoint"
    if pipe is None:
        vae = copy.deepcopy(yonos_method.pipe.vae)  # CFWCodec hooks its blocks: a copy keeps YONOS's VAE bare
        prior = build_prior_unet(embedded_cfg["model"]["unet"], latent_channels=vae.config.latent_channels)
        pipe = StableSRPipeline.from_params(embedded_cfg, SCALE, vae=vae, unet=prior).to(device())
        weights = f"{WEIGHTS_RANDOM}; autoencoder: {yonos_method.source}"
    d, opts = pipe.denoiser, pipe.options
    up = bicubic_up(lr, SCALE)
    with torch.no_grad():
        z_l, feats = pipe.codec.encode_with_features(up)
        z = torch.randn(z_l.shape, generator=torch.Generator().manual_seed(1)).to(z_l.device)
        sr = pipe.codec.decode(z, feats=feats, w=opts["cfw_weight"])
    t = torch.full((1,), 999, device=z.device, dtype=torch.long)
    ctx = pipe.null_emb.to(z.device).expand(1, -1, -1)
    x = torch.cat([z, z_l], 1)
    return Subject(
        "StableSR",
        run=lambda steps: pipe.upscale_batch(lr, steps=steps, generator=per_image_generators([0])),
        parts={"bicubic": lambda: bicubic_up(lr, SCALE), "encoder": lambda: pipe.codec.encode_with_features(up),
               # one sampler step: time-aware encoder on z_l, then the prior U-Net with SFT after every resnet
               "step": lambda: d(x, t, encoder_hidden_states=ctx).sample,
               "unet": lambda: d.unet(z, t, encoder_hidden_states=ctx).sample,  # the bare prior (no SFT in flight)
               "time_aware_encoder": lambda: d.encoder(z_l, t),
               "decoder": lambda: pipe.codec.decode(z, feats=feats, w=opts["cfw_weight"]),
               "colour_fix": lambda: colour_fix(sr, up, opts["colour_fix"])},
        once=["bicubic", "encoder", "decoder", "colour_fix"], per_step=["step"], weights=weights,
        informative=["unet", "time_aware_encoder"],
        info={"sampler": "DDPM ancestral, StableSR respacing", "cfw_weight": opts["cfw_weight"],
              "colour_fix": opts["colour_fix"], "tiled": opts["tile"] is not None,
              "step_is": "time-aware encoder + prior U-Net + SFT (unet and time_aware_encoder: the first two alone)"})


@pytest.fixture(scope="module")
def diffusers_ldm_sr(yonos_method, embedded_cfg, lr) -> Subject:
    """diffusers' LDMSuperResolutionPipeline: a VQ-f4 autoencoder of the embedded autoencoder's widths (3 latent
    channels, LDM-SR's 8192 codes), a UNet2DModel of the embedded U-Net's widths on [latent, LR] at LR size."""
    from diffusers import DDIMScheduler, LDMSuperResolutionPipeline, UNet2DModel, VQModel
    from gpu_bench import LDM_SR_SCHEDULER  # CompVis/ldm-super-resolution-4x-openimages' DDIM settings

    ae = embedded_cfg["autoencoder"]
    levels = len(ae["block_out_channels"])
    torch.manual_seed(2)
    vq = VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
                 up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=tuple(ae["block_out_channels"]),
                 layers_per_block=ae["layers_per_block"], latent_channels=3, num_vq_embeddings=8192,
                 norm_num_groups=ae["norm_num_groups"],
                 mid_block_add_attention=ae.get("mid_block_add_attention", False))
    unet = UNet2DModel(sample_size=LR_SIZE, in_channels=6, out_channels=3,
                       **pixel_unet_kwargs(embedded_cfg, attention=True))
    pipe = LDMSuperResolutionPipeline(vqvae=vq.eval(), unet=unet.eval(), scheduler=DDIMScheduler(**LDM_SR_SCHEDULER))
    pipe = pipe.to(device())
    pipe.set_progress_bar_config(disable=True)
    image = lr * 2 - 1  # the pipeline takes tensors in [-1, 1] as they are
    g = torch.Generator().manual_seed(1)
    lat = torch.randn(1, 3, LR_SIZE, LR_SIZE, generator=g).to(device())
    x = torch.cat([lat, image], 1)
    t = torch.tensor(999, device=device())
    return Subject(
        "diffusers-LDM-SR",
        run=lambda steps: pipe(image=image, num_inference_steps=steps, eta=1.0, output_type="pt",
                               generator=torch.Generator().manual_seed(0)).images,
        parts={"unet": lambda: pipe.unet(x, t).sample, "decoder": lambda: pipe.vqvae.decode(lat).sample},
        once=["decoder"], per_step=["unet"], weights=WEIGHTS_RANDOM,
        info={"sampler": "diffusers DDIM eta=1 (LDM-SR's setting)", "decoder_includes": "VQ code search, 8192 codes"})


@pytest.fixture(scope="module")
def ldm_sr(diffusers_ldm_sr, lr) -> Subject:
    """The trained LDM-SR miniature (yonos.baselines.ldmsr: KL f=4, DDIM eta=1), else diffusers' pipeline."""
    from yonos.baselines.ldmsr import lr_condition
    from yonos.models import vae_factor

    pipe = trained_checkpoint("ldmsr", "train_ldmsr")
    if pipe is None:
        return Subject(**{**diffusers_ldm_sr.__dict__, "name": "LDM-SR", "timed": None})
    f = vae_factor(pipe.vae)
    latent = (LR_SIZE * SCALE // f,) * 2
    c = lr_condition(lr, latent)
    z = torch.randn(1, pipe.latent_channels, *latent, generator=torch.Generator().manual_seed(1)).to(c.device)
    t = torch.tensor(999, device=c.device)
    return Subject(
        "LDM-SR",
        run=lambda steps: pipe.upscale_batch(lr, steps=steps, generator=per_image_generators([0])),
        parts={"condition": lambda: lr_condition(lr, latent), "unet": lambda: pipe.unet(torch.cat([z, c], 1), t).sample,
               "decoder": lambda: pipe.codec.decode(z)},
        once=["condition", "decoder"], per_step=["unet"], weights="trained checkpoint",
        info={"sampler": f"DDIM eta={pipe.options['eta']:g}", "latent_shape": [1, pipe.latent_channels, *latent]})


def sr3_unet(cfg: dict):
    """SR3-shaped: a pixel-space UNet2DModel on [x_t, up(LR)] at the output size, the embedded widths. No
    attention [choice]: SR3 attends only at 16^2, and with these three levels the coarsest grid of a 512^2
    output is 128^2 (16k tokens), where attention would cost more than the whole network."""
    from diffusers import UNet2DModel

    torch.manual_seed(3)
    return UNet2DModel(sample_size=SCALE * LR_SIZE, in_channels=6, out_channels=3,
                       **pixel_unet_kwargs(cfg, attention=False)).eval()


@pytest.fixture(scope="module")
def sr3(embedded_cfg, lr) -> Subject:
    """The trained SR3 miniature (yonos.baselines.sr3), else a random-weight UNet2DModel at the embedded widths."""
    from diffusers import DDPMScheduler

    from yonos.baselines.sr3 import predict_eps

    pipe = trained_checkpoint("sr3", "train_sr3")
    if pipe is not None:
        c = bicubic_up(lr, SCALE) * 2 - 1
        x = torch.randn(c.shape, generator=torch.Generator().manual_seed(1)).to(c.device)
        level = torch.ones(1, device=c.device)
        return Subject("SR3",
                       run=lambda steps: pipe.upscale_batch(lr, steps=steps, generator=per_image_generators([0])),
                       parts={"bicubic": lambda: bicubic_up(lr, SCALE),
                              "unet": lambda: predict_eps(pipe.unet, x, c, level, pipe.multiple)},
                       once=["bicubic"], per_step=["unet"], weights="trained checkpoint",
                       info={"sampler": "DDPM ancestral, respaced", "unet_input": [1, 6, *c.shape[-2:]],
                             "widths": list(pipe.unet.config.block_out_channels)})

    unet = sr3_unet(embedded_cfg).to(device())
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")  # SR3: ancestral DDPM, linear betas

    @torch.no_grad()
    def run(steps: int) -> torch.Tensor:
        up = bicubic_up(lr, SCALE) * 2 - 1
        g = torch.Generator().manual_seed(0)
        x = torch.randn(up.shape, generator=g).to(up.device)
        sched.set_timesteps(steps)
        for t in sched.timesteps:
            eps = unet(torch.cat([x, up], 1), t.to(up.device)).sample
            x = sched.step(eps, t, x, generator=g).prev_sample
        return ((x + 1) / 2).clamp(0, 1)

    up = bicubic_up(lr, SCALE) * 2 - 1
    x = torch.cat([torch.randn(up.shape, generator=torch.Generator().manual_seed(1)).to(up.device), up], 1)
    t = torch.tensor(999, device=up.device)
    return Subject("SR3", run=run,
                   parts={"bicubic": lambda: bicubic_up(lr, SCALE), "unet": lambda: unet(x, t).sample},
                   once=["bicubic"], per_step=["unet"], weights=WEIGHTS_RANDOM,
                   info={"sampler": "DDPM ancestral, linear betas", "unet_input": list(x.shape)})


# A CLIP BPE vocabulary small enough to write out (the shape of transformers' own tokenizer tests): the
# pipeline's prompt path runs offline, without downloading SD's tokenizer.
TINY_VOCAB = ["l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "lo", "l</w>", "w</w>", "r</w>", "t</w>", "low</w>",
              "er</w>", "lowest</w>", "newer</w>", "wider", "<unk>", "<|startoftext|>", "<|endoftext|>"]
TINY_MERGES = "#version: 0.2\nl o\nlo w</w>\ne r</w>\n"


@pytest.fixture(scope="module")
def sd_upscale(yonos_method, embedded_cfg, lr, tmp_path_factory) -> Subject:
    """diffusers' StableDiffusionUpscalePipeline at equal networks: the YONOS autoencoder (a copy: the pipeline
    rewrites its scaling factor), a UNet2DConditionModel of the embedded widths on [latent, noised LR] with the
    x4 upscaler's noise-level class embedding, a one-layer CLIP text encoder (width = cross-attention width) and
    a tiny BPE tokenizer. guidance_scale 1: one U-Net call per step, as YONOS (the default 9 doubles each)."""
    pytest.importorskip("transformers", reason="StableDiffusionUpscalePipeline needs transformers' CLIP classes: "
                                               "pip install -r requirements.txt")
    from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("tiny_clip")
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(TINY_VOCAB)}))
    (folder / "merges.txt").write_text(TINY_MERGES)
    tokenizer = CLIPTokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"),
                              model_max_length=77)
    width = embedded_cfg["model"]["unet"]["cross_attention_dim"]
    torch.manual_seed(4)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(TINY_VOCAB), hidden_size=width, intermediate_size=4 * width, num_hidden_layers=1,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=width,
        bos_token_id=TINY_VOCAB.index("<|startoftext|>"), eos_token_id=TINY_VOCAB.index("<|endoftext|>"),
        pad_token_id=TINY_VOCAB.index("<|endoftext|>"))).eval()
    vae = copy.deepcopy(yonos_method.pipe.vae)
    vae.register_to_config(scaling_factor=0.08333)  # the x4 upscaler's; the pipeline insists on it
    c = vae.config.latent_channels
    unet = UNet2DConditionModel(**unet_kwargs(embedded_cfg), sample_size=LR_SIZE, in_channels=c + 3, out_channels=c,
                                num_class_embeds=1000).eval()
    # stabilityai/stable-diffusion-x4-upscaler's scheduler settings (v-prediction DDIM; DDPM for the LR noise)
    pipe = StableDiffusionUpscalePipeline(
        vae=vae.eval(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        low_res_scheduler=DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.0001,
                                        beta_end=0.02),
        scheduler=DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                beta_end=0.012, prediction_type="v_prediction", clip_sample=False,
                                set_alpha_to_one=False, steps_offset=1),
        max_noise_level=350).to(device())
    pipe.set_progress_bar_config(disable=True)
    dev = device()
    with torch.no_grad():
        emb = pipe.encode_prompt("", dev, 1, False)[0]
    g = torch.Generator().manual_seed(1)
    lat = torch.randn(1, c, LR_SIZE, LR_SIZE, generator=g).to(dev)
    x = torch.cat([lat, lr * 2 - 1], 1)
    t, noise_level = torch.tensor(999, device=dev), torch.tensor([20], device=dev)
    return Subject(
        "SD-upscale",
        run=lambda steps: pipe(prompt="", image=lr, num_inference_steps=steps, guidance_scale=1.0, noise_level=20,
                               output_type="pt", generator=torch.Generator().manual_seed(0)).images,
        parts={"text_encoder": lambda: pipe.encode_prompt("", dev, 1, False),
               "unet": lambda: pipe.unet(x, t, encoder_hidden_states=emb, class_labels=noise_level).sample,
               "decoder": lambda: pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample},
        once=["text_encoder", "decoder"], per_step=["unet"], weights=f"{WEIGHTS_RANDOM}; autoencoder: "
                                                                      f"{yonos_method.source}",
        info={"sampler": "diffusers DDIM (x4 upscaler settings)", "guidance_scale": 1.0, "noise_level": 20,
              "text_encoder": "CLIPTextModel, 1 layer, tiny BPE vocabulary"})


# --- measurement ---------------------------------------------------------------------------------------
def measure(benchmark, subject: Subject, *, steps: int, target: int, rounds: int = 1, warmup: int = 0,
            **extra) -> None:
    """Time subject.run(steps) with pytest-benchmark and put the cost model beside it in extra_info."""
    timed = subject.timed
    benchmark.group = GROUP
    benchmark.extra_info.update(
        method=f"{subject.name}-{target}", steps=steps, steps_target=target,
        parts={k: sig(v) for k, v in timed.items()},
        cost_model={"once": subject.once, "per_step": subject.per_step, "informative": subject.informative,
                    "formula": " + ".join(subject.once) + f" + steps x ({' + '.join(subject.per_step)})"},
        predicted_seconds=sig(subject.predicted(steps)), predicted_seconds_target=sig(subject.predicted(target)),
        weights=subject.weights, lr_shape=[1, 3, LR_SIZE, LR_SIZE], output_size=SCALE * LR_SIZE,
        device=str(device()), torch_threads=torch.get_num_threads(), peak_memory_kind=peak_memory_kind(),
        **subject.info, **extra)
    sync()
    reset_peak()

    def call():
        with torch.no_grad():
            subject.run(steps)
        sync()

    benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=warmup)
    benchmark.extra_info["peak_memory_mb"] = round(peak_memory_mb(), 1)


def run_multi_step(benchmark, subject: Subject, target: int, clock: Clock) -> None:
    """A multi-step method: its parts alone, then one timed loop at `target` steps or as many as the budget allows."""
    label = f"{subject.name}-{target}"
    check = not benchmark.enabled
    timed = time_parts(subject, check)
    per_step = sum(timed[k] for k in subject.per_step)
    budget = clock.loop_budget(label)
    if check:
        steps, reduced = min(target, CHECK_STEPS), f"--benchmark-disable check: {min(target, CHECK_STEPS)} steps"
    else:
        steps = max(1, min(target, int(budget // per_step)))
        reduced = (None if steps == target else
                   f"timed at {steps} of {target} steps: {target} x {per_step:.3g} s per step (timed alone) exceeds "
                   f"this loop's {budget:.0f} s budget; the report extrapolates with the cost model")
    try:
        measure(benchmark, subject, steps=steps, target=target, loop_budget_s=round(budget, 1), reduced=reduced,
                per_step_seconds=sig(per_step))
    finally:
        clock.done(label)


def gemm_rates(check: bool) -> dict:
    """The machine's GEMM rate now: an n x n x n matmul, fp32 and (where the hardware has it) bf16."""
    dev, n = device(), GEMM_N
    supported = {torch.float32: (True, None)}
    if dev.type == "cuda":
        supported[torch.bfloat16] = (torch.cuda.is_bf16_supported(), "this GPU has no bf16")
    else:
        supported[torch.bfloat16] = (torch.ops.mkldnn._is_mkldnn_bf16_supported(),
                                     "this CPU has no native bf16 (oneDNN: no AVX512-BF16 / AMX)")
    out = {}
    g = torch.Generator().manual_seed(0)
    for dtype, (ok, why) in supported.items():
        name = str(dtype).removeprefix("torch.")
        if not ok:
            out[name] = {"supported": False, "reason": why}
            continue
        a, b = (torch.randn(n, n, generator=g).to(dev, dtype) for _ in range(2))
        sec = time_part(lambda a=a, b=b: a @ b, check=check)
        out[name] = {"supported": True, "n": n, "seconds": sig(sec), "flops_per_s": sig(2 * n**3 / sec)}
    return out


# --- the benchmarks, in run order (cheap first; SR3, the most elastic, last) ----------------------------
def test_yonos_1(benchmark, yonos):
    """The reference: YONOS one step end to end (5 rounds), its parts, FLOPs, the GEMM rate, the overhead."""
    check = not benchmark.enabled
    gemm = gemm_rates(check)
    timed = time_parts(yonos, check)
    flops = count_flops(lambda: yonos.run(1))
    part_flops = {k: count_flops(f) for k, f in yonos.parts.items()}
    parts_sum = sum(timed[k] for k in yonos.once + yonos.per_step)
    rounds, warmup = (1, 0) if check else (REFERENCE_ROUNDS, 1)
    measure(benchmark, yonos, steps=1, target=1, rounds=rounds, warmup=warmup, reference=True,
            flops=flops, part_flops=part_flops, gemm=gemm,
            part_share={k: sig(timed[k] / parts_sum, 4) for k in yonos.once + yonos.per_step})
    if benchmark.stats is not None:  # None under --benchmark-disable
        median = benchmark.stats.stats.median
        fp32 = gemm["float32"]["flops_per_s"]
        benchmark.extra_info.update(
            pipeline_overhead=sig(median / parts_sum, 4), achieved_flops_per_s=sig(flops / median),
            achieved_fraction_of_fp32_gemm=sig(flops / median / fp32, 4))


def test_yonos_50(benchmark, yonos, clock):
    run_multi_step(benchmark, yonos, 50, clock)


def test_sd_upscale_1(benchmark, sd_upscale):
    """diffusers' x4 upscaler pipeline at one step with networks of YONOS's size (goal: YONOS-1 faster)."""
    time_parts(sd_upscale, not benchmark.enabled)
    measure(benchmark, sd_upscale, steps=1, target=1, rounds=1 if not benchmark.enabled else 3,
            warmup=0 if not benchmark.enabled else 1)


def test_sd_upscale_75(benchmark, sd_upscale, clock):
    run_multi_step(benchmark, sd_upscale, 75, clock)  # the pipeline's default num_inference_steps


def test_diffusers_ldm_sr_100(benchmark, diffusers_ldm_sr, clock):
    run_multi_step(benchmark, diffusers_ldm_sr, 100, clock)


def test_ldm_sr_100(benchmark, ldm_sr, clock):
    run_multi_step(benchmark, ldm_sr, 100, clock)


def test_stablesr_200(benchmark, stablesr, clock):
    run_multi_step(benchmark, stablesr, 200, clock)


def test_sr3_100(benchmark, sr3, clock):
    run_multi_step(benchmark, sr3, 100, clock)
