"""One-GPU benchmark at SD-2.1-base scale: YONOS one step vs LDM-SR-100 and StableSR-200, 128 -> 512.

Random weights built from config dicts (no download, no checkpoint): the cost of a call depends only
on the shapes, and these are SD 2.1-base's (the paper's backbone) and the baselines' published ones.
Measured in one run, so the ratios share the machine's state:
  - GEMM rate: a large bf16 matmul (the "achievable" peak for FLOP-based utilisation);
  - YONOS one-step 512^2 end to end (bicubic up -> VAE encode -> one U-Net call on the 64^2 latent ->
    VAE decode), through `YonosPipeline.upscale_batch`, the code path `evaluate` scores, at batch 1
    and 8; its parts alone; FLOPs (torch.utils.flop_counter) and utilisation;
  - StableSR-shaped 200 steps and LDM-SR-shaped 100 steps (diffusers' LDMSuperResolutionPipeline),
    with the cost model from their parts and the one-step speed-up.
Flags: bf16, SDPA attention, channels_last, torch.compile (falls back to eager, recorded, on failure).
A global deadline (default 450 s) skips what does not fit and records why; the JSON is rewritten
atomically after every section, so even a run killed from outside leaves what it measured.

    bench/gpu.sh                         # or: make bench-gpu; prints nvidia-smi, runs this under a timeout
    python bench/gpu_bench.py --tiny     # same code path, tiny configs, CPU fp32: the test's check
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
SCHEMA = "yonos-bench/gpu-bench/1"
GOAL_ONE_STEP_512_MS = 11.0  # issue 10 item 5: about 2x the FLOP bound of ~4.44 TFLOP at ~790 TFLOP/s (PAPER.md §5)
# Nominal dense bf16 tensor-core peak, by device-name substring. NVIDIA H200 datasheet (2024): "BF16 Tensor Core
# 1,979 TFLOPS" is quoted with 2:4 sparsity; dense is half of it. Other devices: utilisation against the measured
# GEMM rate only.
NOMINAL_BF16_DENSE_PEAK = {"H200": 989.4e12}
NOMINAL_PEAK_SOURCE = "NVIDIA H200 Tensor Core GPU datasheet: BF16 1,979 TFLOP/s with sparsity, /2 for dense"

# --- configs ---------------------------------------------------------------------------------------
# stabilityai/stable-diffusion-2-1-base unet/config.json (diffusers), as published. Note diffusers' legacy
# naming: for this class `attention_head_dim` is the number of heads per level (5, 10, 20, 20 -> 64 channels each).
# YONOS widens conv_in 4 -> 8 with yonos.models.widen_conv_in (z_t and z_l concatenated).
SD21_BASE_UNET = {
    "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "upcast_attention": False,
    "use_linear_projection": True,
}
# stabilityai/stable-diffusion-2-1-base vae/config.json (sample_size only sets diffusers' tiling default).
SD21_BASE_VAE = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
# CompVis/ldm-super-resolution-4x-openimages unet/ and vqvae/ config.json and its DDIM scheduler
# (values from the released model card: ldm-super-resolution-4x-openimages). The U-Net sees
# [latent (3), LR pixels (3)] at the LR size (VQ-f4).
LDM_SR_UNET = {
    "act_fn": "silu",
    "attention_head_dim": 32,
    "block_out_channels": [160, 320, 320, 640],
    "down_block_types": ["DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 6,
    "layers_per_block": 2,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 64,
    "time_embedding_type": "positional",
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"],
}
LDM_SR_VQVAE = {
    "block_out_channels": [128, 256, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "in_channels": 3,
    "latent_channels": 3,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "num_vq_embeddings": 8192,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "vq_embed_dim": None,
}
LDM_SR_SCHEDULER = {"beta_schedule": "scaled_linear", "beta_start": 0.0015, "beta_end": 0.0155,
                    "num_train_timesteps": 1000, "clip_sample": False, "set_alpha_to_one": True, "steps_offset": 1}
# StableSR's time-aware encoder (EncoderUNetModelWT, BASELINES.md §3.1): 4-channel LR latent in, model_channels
# 256, channel_mult [1,1,2,2], 2 res blocks per level, attention at ds 1/2/4 and in the middle, 4 heads (here
# 64-channel heads: same FLOPs), own time embedding 256 -> 1024. Built as the down path + middle block of a
# diffusers UNet2DModel; see TimeAwareEncoder for what else is approximated.
STABLESR_ENCODER = {
    "act_fn": "silu",
    "attention_head_dim": 64,
    "block_out_channels": [256, 256, 512, 512],
    "down_block_types": ["AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
    "in_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 4,
    "up_block_types": ["UpBlock2D"] * 4,  # required by the class; removed after construction (encoder only)
}
STABLESR_FEATURES = 256  # fea_tran output channels, the SPADE condition
STABLESR_SPADE_HIDDEN = 128  # SPADE's nhidden

# Tiny stand-ins with the same structure (levels, block types), for the CPU check only.
TINY = {
    "unet": {**SD21_BASE_UNET, "attention_head_dim": [2, 4], "block_out_channels": [16, 32], "cross_attention_dim": 16,
             "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "layers_per_block": 1, "norm_num_groups": 8,
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "sample_size": 8},
    "vae": {**SD21_BASE_VAE, "block_out_channels": [8, 8, 16, 16], "layers_per_block": 1, "norm_num_groups": 4,
            "sample_size": 64},
    "ldm_unet": {**LDM_SR_UNET, "attention_head_dim": 8, "block_out_channels": [8, 16],
                 "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "layers_per_block": 1, "norm_num_groups": 4,
                 "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "sample_size": 16},
    "ldm_vqvae": {**LDM_SR_VQVAE, "block_out_channels": [8, 8, 16], "layers_per_block": 1, "norm_num_groups": 4,
                  "num_vq_embeddings": 64, "sample_size": 64},
    "stablesr_encoder": {**STABLESR_ENCODER, "attention_head_dim": 8, "block_out_channels": [8, 16],
                         "down_block_types": ["AttnDownBlock2D", "DownBlock2D"], "layers_per_block": 1,
                         "norm_num_groups": 4, "up_block_types": ["UpBlock2D"] * 2},
    "features": 8,
    "spade_hidden": 8,
}
FULL = {"unet": SD21_BASE_UNET, "vae": SD21_BASE_VAE, "ldm_unet": LDM_SR_UNET, "ldm_vqvae": LDM_SR_VQVAE,
        "stablesr_encoder": STABLESR_ENCODER, "features": STABLESR_FEATURES, "spade_hidden": STABLESR_SPADE_HIDDEN}

SECTIONS = ("matmul", "yonos", "stablesr", "ldm_sr")


def _args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", help="JSON path (default reports/bench/gpu_<device-slug>.json in the repository; "
                                 "--tiny: runs/bench/gpu_tiny.json)")
    p.add_argument("--tiny", action="store_true", help="tiny configs on CPU in fp32, no compile: the test's check")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the networks (default: on for CUDA, off for --tiny)")
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode: default | max-autotune-no-cudagraphs | ... (autotuning takes minutes)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--batch-sizes", default=None, help="comma-separated YONOS batch sizes (default 1,8; tiny 1,2)")
    p.add_argument("--ldm-steps", type=int, default=None, help="LDM-SR sampling steps (default 100; tiny 3)")
    p.add_argument("--stablesr-steps", type=int, default=None, help="StableSR sampling steps (default 200; tiny 4)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--deadline-s", type=float, default=450.0,
                   help="global budget from start: later measurements are skipped and recorded (default 7.5 min)")
    p.add_argument("--min-start-s", type=float, default=None,
                   help="do not start a section with less than this left (default: its estimated compile time)")
    return p.parse_args(argv)


def _validate(args) -> None:
    """One-line errors for bad input, before any model is built."""
    from yonos.errors import UserError

    if not args.tiny and not torch.cuda.is_available():
        raise UserError("no CUDA device: bench/gpu_bench.py measures SD-2.1-base shapes on a GPU; "
                        "run it on a GPU host (bench/gpu.sh) or pass --tiny for the CPU check")
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        raise UserError(f"--sections: unknown {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    try:
        sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else None
    except ValueError:
        sizes = [0]
    if sizes is not None and (not sizes or min(sizes) < 1):
        raise UserError(f"--batch-sizes {args.batch_sizes!r}: give positive integers, e.g. 1,8")
    if args.ldm_steps is None:
        args.ldm_steps = 3 if args.tiny else 100  # tiny: the loop's code path, not its length, is what is checked
    if args.stablesr_steps is None:
        args.stablesr_steps = 4 if args.tiny else 200
    if args.ldm_steps < 1 or args.stablesr_steps < 1:
        raise UserError("--ldm-steps and --stablesr-steps must be >= 1")
    if args.out and Path(args.out).is_dir():
        raise UserError(f"--out {args.out}: is a folder; give a file path, e.g. {args.out}/gpu.json")


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def sig(x: float, digits: int = 4) -> float:
    """Round to significant digits: tiny CPU rates and H200 rates both keep their precision."""
    return float(f"{x:.{digits}g}")


def count_flops(fn) -> int:
    """FLOPs of one eager call, as torch.utils.flop_counter counts them (matmuls, convolutions, SDPA)."""
    mode = FlopCounterMode(display=False)
    with mode:
        fn()
    return int(mode.get_total_flops())


class Compiler:
    """torch.compile in place of a module attribute, undoable: eager views for FLOP counting, fallback on failure."""

    def __init__(self, enabled: bool, mode: str):
        self.enabled, self.mode = enabled, mode
        self.swaps: list[tuple[object, str, torch.nn.Module]] = []
        self.failure: str | None = None

    def wrap(self, owner, name: str) -> None:
        if not self.enabled or any(o is owner and n == name for o, n, _ in self.swaps):
            return
        eager = getattr(owner, name)
        # dynamic=False: one static graph per batch size, the fastest kernels for each.
        setattr(owner, name, torch.compile(eager, mode=self.mode, dynamic=False))
        self.swaps.append((owner, name, eager))

    @contextlib.contextmanager
    def eager(self):
        compiled = [(o, n, getattr(o, n)) for o, n, _ in self.swaps]
        for o, n, e in self.swaps:
            setattr(o, n, e)
        try:
            yield
        finally:
            for o, n, c in compiled:
                setattr(o, n, c)

    def disable(self, exc: BaseException) -> None:
        for o, n, e in self.swaps:
            setattr(o, n, e)
        self.swaps.clear()
        self.enabled = False
        self.failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"


class TimeAwareEncoder(torch.nn.Module):
    """StableSR's per-step extra work by shape: the time-aware encoder and the SPADE layers it feeds.

    Approximations (the cost, not the function, is what is measured):
    - the encoder is the down path + middle block of a diffusers UNet2DModel with StableSR's widths; the
      feature before each downsampling and the middle output are mapped to 256 channels by a ResnetBlock2D
      each (StableSR's `fea_tran`);
    - SPADE (every res block of the SD U-Net: GroupNorm(h)(1 + gamma) + beta, gamma/beta = Conv3x3(ReLU(
      Conv3x3(s, 128)))) runs here, beside the U-Net, on stand-in tensors of each res block's output shape,
      not inside it: the same FLOPs and memory traffic, without fusion into the U-Net's kernels;
    - CFW (the decoder's fusion layers) is not modelled: StableSR's decode is timed as SD's decoder.
    """

    def __init__(self, cfg: dict, unet, latent: int, batch: int, features: int, hidden: int):
        super().__init__()
        from diffusers import UNet2DModel
        from diffusers.models.resnet import ResnetBlock2D

        self.body = UNet2DModel(**cfg)
        self.body.up_blocks = torch.nn.ModuleList()  # encoder only
        self.body.conv_norm_out = self.body.conv_act = self.body.conv_out = None
        temb = self.body.time_embedding.linear_2.out_features
        groups = cfg["norm_num_groups"]
        widths = list(cfg["block_out_channels"])
        self.fea_tran = torch.nn.ModuleList(
            # one per feature: before each downsampling (levels 0..n-2), then the middle block's output
            ResnetBlock2D(in_channels=c, out_channels=features, temb_channels=temb, groups=groups) for c in widths)
        # One SPADE per res block of the U-Net: (spatial size, channels) of its output.
        n = len(unet.down_blocks)
        specs = [(latent >> i, r.out_channels) for i, b in enumerate(unet.down_blocks) for r in b.resnets]
        specs += [(latent >> (n - 1), r.out_channels) for r in unet.mid_block.resnets]
        specs += [(latent >> (n - 1 - j), r.out_channels) for j, b in enumerate(unet.up_blocks) for r in b.resnets]
        self.specs = specs
        self.unet_groups = unet.config.norm_num_groups
        self.shared = torch.nn.ModuleList(torch.nn.Conv2d(features, hidden, 3, padding=1) for _ in specs)
        self.gamma = torch.nn.ModuleList(torch.nn.Conv2d(hidden, c, 3, padding=1) for _, c in specs)
        self.beta = torch.nn.ModuleList(torch.nn.Conv2d(hidden, c, 3, padding=1) for _, c in specs)
        for i, (s, c) in enumerate(specs):
            self.register_buffer(f"h{i}", torch.randn(batch, c, s, s), persistent=False)

    def forward(self, z_l: torch.Tensor, t: torch.Tensor) -> list[torch.Tensor]:
        b = self.body
        emb = b.time_embedding(b.time_proj(t).to(z_l.dtype))
        h = b.conv_in(z_l)
        feats = []
        for blk in b.down_blocks:
            h, res = blk(hidden_states=h, temb=emb)
            if blk.downsamplers is not None:
                feats.append(res[-2])  # before downsampling
        feats.append(b.mid_block(h, emb))
        cond = {f.shape[-1]: tran(f, emb) for f, tran in zip(feats, self.fea_tran)}
        out = []
        for i, (s, _) in enumerate(self.specs):
            a = F.relu(self.shared[i](cond[s]))
            h_i = getattr(self, f"h{i}")
            out.append(F.group_norm(h_i, self.unet_groups) * (1 + self.gamma[i](a)) + self.beta[i](a))
        return out


class Bench:
    def __init__(self, args):
        self.t0 = time.monotonic()
        self.args = args
        self.tiny = args.tiny
        self.device = torch.device("cuda" if (torch.cuda.is_available() and not args.tiny) else "cpu")
        self.dtype = torch.float32 if args.tiny else torch.bfloat16
        self.cfg = TINY if args.tiny else FULL
        self.lr_size, self.scale = (16 if args.tiny else 128), 4
        self.batch_sizes = ([int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes
                            else ([1, 2] if args.tiny else [1, 8]))
        compile_on = args.compile if args.compile is not None else (self.device.type == "cuda")
        self.compiler = Compiler(compile_on, args.compile_mode)
        # Repeats: enough calls for a stable median on the GPU; the CPU check only needs numbers to exist.
        self.policy = ({"warmup": 1, "min_repeats": 1, "max_repeats": 1, "min_time_s": 0.0,
                        "loop_warmup": 0, "loop_repeats": 1} if args.tiny else
                       {"warmup": 3, "min_repeats": 20, "max_repeats": 200, "min_time_s": 1.0,
                        "loop_warmup": 1, "loop_repeats": 3})
        self.compile_s_per_module: list[float] = []
        self.notes: list[str] = []
        self.results: dict = {}
        self.ratios: dict = {}
        self.matmul: dict | None = None
        self.name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        self.nominal_peak = next((v for k, v in NOMINAL_BF16_DENSE_PEAK.items() if k in self.name), None)
        # A tiny CPU run checks the code path; its numbers are no report, so it goes to the ignored runs/ tree.
        default_out = (REPO / "runs" / "bench" / "gpu_tiny.json" if self.tiny
                       else REPO / "reports" / "bench" / f"gpu_{slug(self.name)}.json")
        self.out = Path(args.out) if args.out else default_out
        self._yonos = self._stablesr = self._ldm = None
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # pick the fastest conv algorithm per shape

    # --- time ------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def remaining(self) -> float:
        return self.args.deadline_s - self.elapsed()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_mb(self) -> float:
        if self.device.type == "cuda":
            return round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # whole process, monotonic

    def first_call(self, fn, rec: dict) -> None:
        """The first call (compilation happens here); on a compile failure, fall back to eager and say so."""
        t = time.perf_counter()
        try:
            fn()
            self.sync()
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:
            if not self.compiler.swaps:
                raise
            self.compiler.disable(exc)
            note = f"torch.compile failed ({self.compiler.failure}); measured eager from here on"
            rec["notes"].append(note)
            self.notes.append(note)
            t = time.perf_counter()
            fn()
            self.sync()
        rec["first_call_s"] = round(time.perf_counter() - t, 3)

    def time_calls(self, fn, rec: dict, *, loop: bool = False) -> dict:
        """Median wall time of `fn` over repeated synchronised calls, after warm-up; stops at the deadline."""
        p = self.policy
        for _ in range(p["loop_warmup"] if loop else p["warmup"]):
            fn()
        self.sync()
        lo, hi = (p["loop_repeats"], p["loop_repeats"]) if loop else (p["min_repeats"], p["max_repeats"])
        times, start = [], time.perf_counter()
        while len(times) < hi:
            self.sync()
            t = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t)
            if len(times) >= lo and time.perf_counter() - start >= (0.0 if loop else p["min_time_s"]):
                break
            if self.remaining() <= 0:
                rec["notes"].append(f"deadline reached: {len(times)} of {lo} repeats timed")
                break
        return {"median_ms": sig(statistics.median(times) * 1e3), "min_ms": sig(min(times) * 1e3),
                "max_ms": sig(max(times) * 1e3), "repeats": len(times)}

    def utilisation(self, flops: int, seconds: float) -> dict:
        achieved = flops / seconds
        rate = self.matmul["flops_per_s"] if self.matmul else None
        return {
            "achieved_tflops": sig(achieved / 1e12),
            "fraction_of_measured_matmul": sig(achieved / rate) if rate else None,
            "fraction_of_nominal_peak": sig(achieved / self.nominal_peak) if self.nominal_peak else None,
            "flop_bound_ms": sig(flops / rate * 1e3) if rate else None,
        }

    # --- models (built once, on the device, in the benchmark dtype) ------------------------------
    def _prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        module = module.to(self.device, self.dtype).eval().requires_grad_(False)
        if self.args.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return module

    def yonos_pipe(self):
        if self._yonos is None:
            from diffusers import AutoencoderKL, UNet2DConditionModel

            from yonos.config import load_params
            from yonos.models import widen_conv_in
            from yonos.pipeline import YonosPipeline
            from yonos.sampler import make_scheduler

            model_cfg = load_params(REPO / "params.yaml", "paper")["model"]  # SD's schedule, v-prediction, 77 tokens
            torch.manual_seed(0)
            with torch.device(self.device):
                unet = widen_conv_in(UNet2DConditionModel(**self.cfg["unet"]))
                vae = AutoencoderKL(**self.cfg["vae"])
            null_emb = torch.zeros(1, model_cfg["null_text_tokens"], unet.config.cross_attention_dim)
            pipe = YonosPipeline(self._prepare(unet), self._prepare(vae), make_scheduler(model_cfg),
                                 null_emb.to(self.device, self.dtype), self.scale)
            self._yonos = pipe
        return self._yonos

    def stablesr(self):
        if self._stablesr is None:
            from diffusers import DDPMScheduler, UNet2DConditionModel

            pipe = self.yonos_pipe()  # StableSR shares SD's VAE
            latent = self.lr_size * self.scale // 2 ** (len(self.cfg["vae"]["block_out_channels"]) - 1)
            torch.manual_seed(1)
            with torch.device(self.device):
                unet = UNet2DConditionModel(**self.cfg["unet"])
                aux = TimeAwareEncoder(self.cfg["stablesr_encoder"], unet, latent, 1, self.cfg["features"],
                                       self.cfg["spade_hidden"])
            # StableSR's respaced ancestral DDPM over SD's schedule (BASELINES.md §3.2), eps-prediction.
            sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                  beta_schedule="scaled_linear", clip_sample=False)
            self._stablesr = {"unet": self._prepare(unet), "aux": self._prepare(aux), "scheduler": sched,
                              "codec": pipe.codec, "null_emb": pipe.null_emb, "latent": latent}
        return self._stablesr

    def ldm_pipe(self):
        if self._ldm is None:
            from diffusers import DDIMScheduler, LDMSuperResolutionPipeline, UNet2DModel, VQModel

            torch.manual_seed(2)
            with torch.device(self.device):
                unet = UNet2DModel(**self.cfg["ldm_unet"])
                vq = VQModel(**self.cfg["ldm_vqvae"])
            pipe = LDMSuperResolutionPipeline(vqvae=self._prepare(vq), unet=self._prepare(unet),
                                              scheduler=DDIMScheduler(**LDM_SR_SCHEDULER))
            # Nearest-code search in fp32 (bf16 distances to 8192 codes would pick wrong codes; the cost is small).
            pipe.vqvae.quantize = _Fp32(pipe.vqvae.quantize.float())
            pipe.set_progress_bar_config(disable=True)
            self._ldm = pipe
        return self._ldm

    def lr(self, batch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return torch.rand(batch, 3, self.lr_size, self.lr_size, generator=g).to(self.device)

    # --- sections --------------------------------------------------------------------------------
    def section_matmul(self, rec: dict) -> None:
        n = 256 if self.tiny else 8192
        g = torch.Generator(self.device).manual_seed(0)
        a = torch.randn(n, n, device=self.device, dtype=self.dtype, generator=g)
        b = torch.randn(n, n, device=self.device, dtype=self.dtype, generator=g)
        timing = self.time_calls(lambda: a @ b, rec)
        rate = 2 * n**3 / (timing["median_ms"] / 1e3)
        rec.update(n=n, dtype=str(self.dtype).removeprefix("torch."), timing=timing, flops_per_s=sig(rate),
                   tflops=sig(rate / 1e12),
                   fraction_of_nominal_peak=sig(rate / self.nominal_peak) if self.nominal_peak else None)
        self.matmul = rec

    def section_yonos(self, rec: dict, batch: int) -> None:
        from yonos.resize import bicubic_up
        from yonos.sampler import denoise, per_image_generators

        pipe = self.yonos_pipe()
        lr = self.lr(batch)
        up = bicubic_up(lr, self.scale)
        z_l = pipe.codec.encode(up)
        # z_t / z-hat_0 stand-ins laid out as the sampler's are (fp32, contiguous): compiled graphs are specialised
        # on strides, so the parts alone reuse the end-to-end graphs instead of compiling new ones.
        z = torch.randn(z_l.shape, device=self.device, generator=torch.Generator(self.device).manual_seed(0))
        t = torch.full((batch,), pipe.scheduler.config.num_train_timesteps - 1, device=self.device, dtype=torch.long)
        # Per-image generators on the device: the noise is drawn there, no host-to-device copy.
        e2e = lambda: pipe.upscale_batch(  # noqa: E731
            lr, steps=1, generator=per_image_generators(range(batch), device=self.device))
        parts = {
            "bicubic": lambda: bicubic_up(lr, self.scale),
            "encoder": lambda: pipe.codec.encode(up),
            "unet": lambda: denoise(pipe.unet, z.to(self.dtype), z_l, t, pipe.null_emb),
            "decoder": lambda: pipe.codec.decode(z),
        }
        with self.compiler.eager():
            rec["flops"] = count_flops(e2e)
            rec["part_flops"] = {k: count_flops(f) for k, f in parts.items()}
        for owner, name in ((pipe, "unet"), (pipe.vae, "encoder"), (pipe.vae, "decoder")):
            self.compiler.wrap(owner, name)
        self.reset_peak()
        self.first_call(e2e, rec)
        self._note_compile(rec, 3)
        rec["latency"] = self.time_calls(e2e, rec)
        rec["peak_memory_mb"] = self.peak_memory_mb()
        sec = rec["latency"]["median_ms"] / 1e3
        rec["per_image_ms"] = sig(rec["latency"]["median_ms"] / batch)
        rec.update(self.utilisation(rec["flops"], sec))
        rec["parts"] = {}
        for k, f in parts.items():
            if self.remaining() <= 0:
                rec["notes"].append(f"deadline reached: part {k} and later not timed")
                break
            rec["parts"][k] = self.time_calls(f, rec)
        if len(rec["parts"]) == len(parts):
            total = sum(p["median_ms"] for p in rec["parts"].values())
            rec["parts_sum_ms"] = sig(total)
            rec["pipeline_overhead"] = round(rec["latency"]["median_ms"] / total, 4)  # end to end / parts alone
            rec["part_share"] = {k: round(p["median_ms"] / total, 4) for k, p in rec["parts"].items()}
        if batch == 1 and not self.tiny:
            rec["goal_ms"] = GOAL_ONE_STEP_512_MS
            rec["goal_met"] = rec["latency"]["median_ms"] <= GOAL_ONE_STEP_512_MS
        rec["compiled"] = bool(self.compiler.swaps)
        rec["attention_processors"] = sorted({type(p).__name__ for p in pipe.unet.attn_processors.values()})

    def section_stablesr(self, rec: dict) -> None:
        from yonos.resize import bicubic_up

        ss, steps = self.stablesr(), self.args.stablesr_steps
        codec, sched = ss["codec"], ss["scheduler"]
        lr = self.lr(1)
        up = bicubic_up(lr, self.scale)
        z_l = codec.encode(up)
        z = torch.randn(z_l.shape, device=self.device, generator=torch.Generator(self.device).manual_seed(0))
        ctx = ss["null_emb"]
        tt = torch.full((1,), 999, device=self.device, dtype=torch.long)

        def step(z_t, z_cond, t):
            ss["aux"](z_cond, t)  # time-aware encoder on the LR latent at the original timestep, every step
            return ss["unet"](z_t.to(self.dtype), t, encoder_hidden_states=ctx).sample

        def run():
            z_cond = codec.encode(bicubic_up(lr, self.scale))
            g = torch.Generator(self.device).manual_seed(0)
            z = torch.randn(z_cond.shape, generator=g, device=self.device)
            sched.set_timesteps(steps)  # timesteps on the host: the scheduler's index lookups need no device sync
            for t in sched.timesteps:
                eps = step(z, z_cond, torch.full((1,), int(t), device=self.device, dtype=torch.long))
                z = sched.step(eps.float(), t, z, generator=g).prev_sample
            return codec.decode(z).clamp(0, 1)

        parts = {"encoder": lambda: codec.encode(up), "step": lambda: step(z, z_l, tt),
                 "unet": lambda: ss["unet"](z.to(self.dtype), tt, encoder_hidden_states=ctx).sample,
                 "time_aware_encoder": lambda: ss["aux"](z_l, tt), "decoder": lambda: codec.decode(z)}
        with self.compiler.eager():
            flops = {k: count_flops(parts[k]) for k in ("encoder", "step", "decoder")}
        rec["part_flops"] = flops
        rec["flops"] = flops["encoder"] + steps * flops["step"] + flops["decoder"]
        self.compiler.wrap(ss, "unet")
        self.compiler.wrap(ss, "aux")
        self._run_loop(rec, run, parts, steps, compiles=2)
        rec["approximation"] = (TimeAwareEncoder.__doc__.split("\n\n")[1].strip())

    def section_ldm_sr(self, rec: dict) -> None:
        pipe, steps = self.ldm_pipe(), self.args.ldm_steps
        lr = self.lr(1) * 2 - 1  # the pipeline takes tensors in [-1, 1] as they are
        run = lambda: pipe(image=lr, num_inference_steps=steps, eta=1.0, output_type="pt").images  # noqa: E731
        lat = torch.randn(1, pipe.unet.config.in_channels // 2, *lr.shape[-2:], device=self.device, dtype=self.dtype)
        x = torch.cat([lat, lr.to(self.dtype)], 1)
        t = torch.tensor(999, device=self.device)
        parts = {"step": lambda: pipe.unet(x, t).sample, "decoder": lambda: pipe.vqvae.decode(lat).sample}
        with self.compiler.eager():
            flops = {k: count_flops(f) for k, f in parts.items()}
        rec["part_flops"] = flops
        rec["flops"] = steps * flops["step"] + flops["decoder"]
        self.compiler.wrap(pipe, "unet")
        self.compiler.wrap(pipe.vqvae, "decoder")
        self._run_loop(rec, run, parts, steps, compiles=2)
        rec["sampler"] = "diffusers LDMSuperResolutionPipeline, DDIM eta=1 (LDM's notebook setting)"

    def _run_loop(self, rec: dict, run, parts: dict, steps: int, *, compiles: int) -> None:
        """A multi-step baseline: end to end, its parts alone, and the cost model the parts predict."""
        rec["steps"] = steps
        self.reset_peak()
        self.first_call(run, rec)
        self._note_compile(rec, compiles)
        rec["latency"] = self.time_calls(run, rec, loop=True)
        rec["peak_memory_mb"] = self.peak_memory_mb()
        rec.update(self.utilisation(rec["flops"], rec["latency"]["median_ms"] / 1e3))
        rec["parts"] = {}
        for k, f in parts.items():
            if self.remaining() <= 0:
                rec["notes"].append(f"deadline reached: part {k} and later not timed")
                break
            rec["parts"][k] = self.time_calls(f, rec)
        p = {k: v["median_ms"] for k, v in rec["parts"].items()}
        if "step" in p and "decoder" in p:
            predicted = p.get("encoder", 0.0) + steps * p["step"] + p["decoder"]
            rec["cost_model"] = {"formula": ("encoder + " if "encoder" in p else "") + "steps x step + decoder",
                                 "predicted_ms": sig(predicted),
                                 "measured_over_predicted": round(rec["latency"]["median_ms"] / predicted, 4)}
        rec["compiled"] = bool(self.compiler.swaps)

    def _note_compile(self, rec: dict, modules: int) -> None:
        if self.compiler.swaps and modules:
            self.compile_s_per_module.append(rec["first_call_s"] / modules)

    # --- driver ----------------------------------------------------------------------------------
    def plan(self) -> list[tuple[str, object, int]]:
        """(name, runner, modules it compiles anew). Order = priority: what matters most runs first."""
        chosen = self.args.sections.split(",")
        plan = []
        if "matmul" in chosen:
            plan.append(("matmul", self.section_matmul, 0))
        if "yonos" in chosen:
            plan.append((f"yonos_one_step_b{self.batch_sizes[0]}",
                         lambda rec: self.section_yonos(rec, self.batch_sizes[0]), 3))
        if "stablesr" in chosen:
            plan.append((f"stablesr_{self.args.stablesr_steps}", self.section_stablesr, 2))
        if "ldm_sr" in chosen:
            plan.append((f"ldm_sr_{self.args.ldm_steps}", self.section_ldm_sr, 2))
        if "yonos" in chosen:
            plan += [(f"yonos_one_step_b{b}", (lambda rec, b=b: self.section_yonos(rec, b)), 3)
                     for b in self.batch_sizes[1:]]
        return plan

    def needed_s(self, compiles: int) -> float:
        """Time a section needs before it can measure anything: mostly compilation."""
        if self.args.min_start_s is not None:
            return self.args.min_start_s
        if not self.compiler.enabled:
            return 5.0
        per_module = max(self.compile_s_per_module) if self.compile_s_per_module else 60.0
        return compiles * per_module + 10.0

    def run(self) -> int:
        # Tiny models are bound by per-op overhead: one thread avoids OpenMP hand-offs, which on a shared
        # CPU cost 10-50x (measured: a tiny one-step upscale 0.07 s on 1 thread, 0.8-7 s on 2 under load).
        threads = torch.get_num_threads()
        if self.tiny:
            torch.set_num_threads(1)
        try:
            return self._run()
        finally:
            torch.set_num_threads(threads)

    def _run(self) -> int:
        for name, runner, compiles in self.plan():
            rec = {"status": "running", "notes": []}
            self.results[name] = rec
            need = self.needed_s(compiles)
            if self.remaining() < need:
                rec.update(status="skipped", reason=f"deadline: {max(self.remaining(), 0):.0f} s left of "
                           f"{self.args.deadline_s:.0f} s, this section needs ~{need:.0f} s")
                print(f"{name}: skipped ({rec['reason']})", flush=True)
                continue
            self.write(complete=False)
            start = time.monotonic()
            try:
                self._attempt(runner, rec)
                rec["status"] = "ok"
            except torch.OutOfMemoryError as exc:
                rec.update(status="oom", reason=f"out of memory: {str(exc).splitlines()[0][:300]}")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
            except Exception as exc:  # record and go on: one failing method must not lose the others
                rec.update(status="error", reason=f"{type(exc).__name__}: {str(exc).strip()[:500]}")
            rec["wall_s"] = round(time.monotonic() - start, 2)
            print(self.summary(name, rec), flush=True)
            self.write(complete=False)
        self.speedups()
        self.write(complete=True)
        print(f"wrote {self.out}", flush=True)
        return 1 if any(r["status"] == "error" for r in self.results.values()) else 0

    def _attempt(self, runner, rec: dict) -> None:
        """Run a section; if it fails while compiled (a recompile for a new shape, say), once more in eager."""
        try:
            with torch.inference_mode():
                runner(rec)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:
            if not self.compiler.swaps:
                raise
            self.compiler.disable(exc)
            notes = rec["notes"] + [f"torch.compile failed ({self.compiler.failure}); section rerun eager"]
            self.notes.append(f"torch.compile failed ({self.compiler.failure}); eager from here on")
            rec.clear()
            rec.update(status="running", notes=notes)
            with torch.inference_mode():
                runner(rec)

    def speedups(self) -> None:
        one = self.results.get(f"yonos_one_step_b{self.batch_sizes[0]}", {})
        if one.get("status") != "ok" or self.batch_sizes[0] != 1:
            return
        for name, rec in self.results.items():
            if rec.get("status") == "ok" and "steps" in rec:
                entry = {"measured": round(rec["latency"]["median_ms"] / one["latency"]["median_ms"], 3)}
                if "parts_sum_ms" in one and "cost_model" in rec:
                    entry["predicted_from_parts"] = round(rec["cost_model"]["predicted_ms"] / one["parts_sum_ms"], 3)
                self.ratios[f"{name}_over_yonos_one_step"] = entry

    def summary(self, name: str, rec: dict) -> str:
        if rec["status"] != "ok":
            return f"{name}: {rec['status']} ({rec.get('reason', '')})"
        if name == "matmul":
            peak = f", {rec['fraction_of_nominal_peak']:.0%} of nominal" if rec["fraction_of_nominal_peak"] else ""
            return f"matmul {rec['n']}^3 {rec['dtype']}: {rec['tflops']:.4g} TFLOP/s{peak}"
        lat = rec["latency"]["median_ms"]
        line = f"{name}: {lat:.4g} ms median of {rec['latency']['repeats']}, {rec['flops'] / 1e9:.4g} GFLOP, " \
               f"{rec['achieved_tflops']:.4g} TFLOP/s"
        if rec.get("fraction_of_measured_matmul") is not None:
            line += f" = {rec['fraction_of_measured_matmul']:.0%} of measured matmul"
        if rec.get("fraction_of_nominal_peak") is not None:
            line += f", {rec['fraction_of_nominal_peak']:.0%} of nominal peak"
        if "goal_ms" in rec:
            line += f" | goal <= {rec['goal_ms']:.0f} ms: {'met' if rec['goal_met'] else 'missed'}"
        if "pipeline_overhead" in rec:
            line += f" | end to end / parts {rec['pipeline_overhead']:.2f}"
        if rec.get("notes"):
            line += f" | notes: {'; '.join(rec['notes'])}"
        return line

    def report(self, complete: bool) -> dict:
        import diffusers

        props = torch.cuda.get_device_properties(self.device) if self.device.type == "cuda" else None
        try:
            import triton

            triton_version = triton.__version__
        except ImportError:
            triton_version = None
        return {
            "schema": SCHEMA,
            "complete": complete,
            "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "elapsed_s": round(self.elapsed(), 2),
            "device": {"type": self.device.type, "name": self.name,
                       "capability": f"{props.major}.{props.minor}" if props else None,
                       "memory_gib": round(props.total_memory / 2**30, 1) if props else None,
                       "multiprocessors": props.multi_processor_count if props else None,
                       "host_cpu": platform.processor() or platform.machine()},
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "diffusers": diffusers.__version__, "cuda": torch.version.cuda,
                         "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                         "triton": triton_version},
            "config": {"tiny": self.tiny, "dtype": str(self.dtype).removeprefix("torch."),
                       "lr_size": self.lr_size, "scale": self.scale, "output_size": self.lr_size * self.scale,
                       "batch_sizes": self.batch_sizes, "ldm_steps": self.args.ldm_steps,
                       "stablesr_steps": self.args.stablesr_steps, "deadline_s": self.args.deadline_s,
                       "repeat_policy": self.policy, "weights": "random (shapes only)",
                       "models": {k: v for k, v in self.cfg.items()}},
            "flags": {"compile": self.args.compile if self.args.compile is not None else self.device.type == "cuda",
                      "compile_mode": self.args.compile_mode, "compile_failure": self.compiler.failure,
                      "channels_last": self.args.channels_last, "attention": "sdpa (diffusers AttnProcessor2_0)",
                      "cudnn_benchmark": self.device.type == "cuda", "inference_mode": True},
            "goal": {"yonos_one_step_512_ms": GOAL_ONE_STEP_512_MS},
            "nominal_peak": {"bf16_dense_tflops": self.nominal_peak / 1e12 if self.nominal_peak else None,
                             "source": NOMINAL_PEAK_SOURCE if self.nominal_peak else
                             "no nominal peak on record for this device"},
            "measurements": self.results,
            "speedups": self.ratios,
            "notes": self.notes,
        }

    def write(self, complete: bool) -> None:
        from yonos.io import write_json

        write_json(self.out, self.report(complete))


class _Fp32(torch.nn.Module):
    """Run a module in fp32 and hand its tensors back in the caller's dtype (for the VQ codebook search)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, z: torch.Tensor):
        q, loss, info = self.inner(z.float())
        return q.to(z.dtype), loss, info


def main(argv=None) -> int:
    from yonos.errors import UserError

    args = _args(argv)
    try:
        _validate(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Models are built from config dicts: nothing needs the hub, so nothing may be fetched from it.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import diffusers

    verbosity = diffusers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()  # `.to(dtype)` on random-weight models warns about from_pretrained
    try:
        return Bench(args).run()
    finally:
        diffusers.utils.logging.set_verbosity(verbosity)


if __name__ == "__main__":
    sys.exit(main())
