"""YONOS-SR: one-step super-resolution with a latent diffusion model trained by scale distillation.

Noroozi et al., "You Only Need One Step: Fast Super-Resolution with Stable Diffusion via Scale
Distillation", ECCV 2024 (arXiv 2401.17258). Public API:

    from yonos import YonosPipeline
    sr = YonosPipeline.from_pretrained("runs/embedded/finetune_decoder/checkpoint").upscale(image)
"""

import logging

__version__ = "0.1.0"

# diffusers imports bitsandbytes (a pyiqa dependency) when present; on CPUs with AVX512-BF16 it warns
# about an optional kernel we never use, on every import. Keep our one-line errors one line.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def __getattr__(name):  # lazy: `import yonos` must not pull in torch for `yonos --help`
    if name == "YonosPipeline":
        from yonos.pipeline import YonosPipeline

        return YonosPipeline
    raise AttributeError(name)
