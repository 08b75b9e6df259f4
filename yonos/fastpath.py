"""Opt-in inference speed-ups of a pipeline, each a declared knob (issue 10, item 2).

    pipe.fast = FastPath(bf16=True, channels_last=True)   # or `yonos upscale --fast bf16,channels_last`

- bf16: `torch.autocast` to bfloat16 around the networks (convolutions and matmuls in bf16, fp32
  accumulation; the sampler's arithmetic and the output stay fp32). CPUs with AVX-512 BF16 / AMX and
  CUDA GPUs run it natively; elsewhere it may be slower.
- channels_last: the U-Net's and the autoencoder's weights in NHWC, so convolutions skip layout changes.
- compile: `torch.compile` of the U-Net and of the autoencoder's encoder and decoder (the first call of
  each input shape compiles: seconds to minutes; needs a C++ compiler on CPU).
- inference_mode: `torch.inference_mode` instead of `torch.no_grad` (no version counters).
`yonos upscale` runs `auto` by default: bf16 + inference_mode where the device runs bf16 natively (CUDA GPUs
with bf16, CPUs with AVX-512 BF16 or AMX), channels_last + inference_mode elsewhere; `--fast fp32` turns every
flag off. Each passed the gate of issue 10 (bench/test_bench_fastpath.py, reports/bench.md): faster, and the
embedded evaluation's PSNR-Y moves by at most 0.05 dB (bf16: -0.0045 dB; the layout flags: 0.000).
bf16 and channels_last together are faster still, but not the default: oneDNN's bf16 NHWC kernels depend on
the batch size (on the smoke U-Net an image moved by up to 0.04 between batch 3 and batch 1), and an image
must come out the same whatever the batch (tests/test_fastpath.py).
compile stays opt-in: its first call compiles for tens of seconds per input shape.
The library (`YonosPipeline`, the `yonos` method) and the evaluation stages stay at fp32 unless told (as
diffusers' pipelines do): the reported numbers are then the same on every machine, bf16 or not.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, fields

import torch

from yonos.errors import UserError


@dataclass(frozen=True)
class FastPath:
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    inference_mode: bool = False

    @classmethod
    def auto(cls, device: torch.device | str = "cpu") -> FastPath:
        """The flags that passed the gate: bf16 where `device` runs it natively (elsewhere it is emulated and
        slower than fp32), else channels_last; never both (see the module's docstring)."""
        bf16 = native_bf16(device)
        return cls(bf16=bf16, channels_last=not bf16, inference_mode=True)

    @classmethod
    def parse(cls, text: str | None, device: torch.device | str = "cpu") -> FastPath:
        """"bf16,channels_last" -> FastPath(bf16=True, channels_last=True); "" or None or "fp32" -> all off;
        "auto" -> FastPath.auto(device)."""
        if (text or "").strip() == "auto":
            return cls.auto(device)
        names = [n.strip() for n in (text or "").split(",") if n.strip() and n.strip() != "fp32"]
        known = [f.name for f in fields(cls)]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UserError(f"--fast {text}: unknown flag {', '.join(unknown)}; choose auto, fp32 or from "
                            f"{', '.join(known)}")
        return cls(**{n: True for n in names})

    def label(self) -> str:
        """"bf16+channels_last", or "fp32" when every flag is off."""
        return "+".join(n for n, on in asdict(self).items() if on) or "fp32"

    def describe(self) -> dict:
        return {"fast_path": self.label()}

    def prepare(self, *modules: torch.nn.Module) -> None:
        """In place: weights to NHWC (back to NCHW without channels_last), and each module's forward compiled
        (`nn.Module.compile`: the module keeps its attributes and save_pretrained; torch.compile caches per
        input shape)."""
        for m in modules:
            m.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
            if self.compile:
                m.compile(dynamic=False)

    def context(self, device: torch.device) -> contextlib.AbstractContextManager:
        """Where the networks run: inference mode or no_grad, plus bf16 autocast when asked."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode() if self.inference_mode else torch.no_grad())
        if self.bf16:
            stack.enter_context(torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16))
        return stack


def native_bf16(device: torch.device | str) -> bool:
    """Whether `device` computes in bf16 natively: a CUDA GPU that supports it, a CPU with AVX-512 BF16 or
    AMX (torch.cpu's private probes; False where a torch build lacks them)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(p() for p in probes if p is not None)
    return False
