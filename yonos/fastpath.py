"""Opt-in inference speed-ups of a pipeline, each a declared knob (issue 10, item 2).

    pipe.fast = FastPath(bf16=True, channels_last=True)   # or `yonos upscale --fast bf16,channels_last`

- bf16: `torch.autocast` to bfloat16 around the networks (convolutions and matmuls in bf16, fp32
  accumulation; the sampler's arithmetic and the output stay fp32). CPUs with AVX-512 BF16 / AMX and
  CUDA GPUs run it natively; elsewhere it may be slower.
- channels_last: the U-Net's and the autoencoder's weights in NHWC, so convolutions skip layout changes.
- compile: `torch.compile` of the U-Net and of the autoencoder's encoder and decoder (the first call of
  each input shape compiles: seconds to minutes; needs a C++ compiler on CPU).
- inference_mode: `torch.inference_mode` instead of `torch.no_grad` (no version counters).
None is on by default: a flag becomes a default only where the embedded evaluation's PSNR-Y moves by at
most 0.05 dB with it (measured by bench/test_bench_fastpath.py, reported in reports/bench.md).
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
    def parse(cls, text: str | None) -> FastPath:
        """"bf16,channels_last" -> FastPath(bf16=True, channels_last=True); "" or None -> all off."""
        names = [n.strip() for n in (text or "").split(",") if n.strip()]
        known = [f.name for f in fields(cls)]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UserError(f"--fast {text}: unknown flag {', '.join(unknown)}; choose from {', '.join(known)}")
        return cls(**{n: True for n in names})

    def label(self) -> str:
        """"bf16+channels_last", or "fp32" when every flag is off."""
        return "+".join(n for n, on in asdict(self).items() if on) or "fp32"

    def describe(self) -> dict:
        return {"fast_path": self.label()}

    def prepare(self, *modules: torch.nn.Module) -> None:
        """In place: weights to NHWC, and each module's forward compiled (`nn.Module.compile`: the module
        keeps its attributes and save_pretrained; torch.compile caches per input shape)."""
        for m in modules:
            if self.channels_last:
                m.to(memory_format=torch.channels_last)
            if self.compile:
                m.compile(dynamic=False)

    def context(self, device: torch.device) -> contextlib.AbstractContextManager:
        """Where the networks run: inference mode or no_grad, plus bf16 autocast when asked."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode() if self.inference_mode else torch.no_grad())
        if self.bf16:
            stack.enter_context(torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16))
        return stack
