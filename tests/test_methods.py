"""Every registered method satisfies the one contract the evaluator relies on."""

from __future__ import annotations

import torch

from methods.base import SRMethod
from yonos.plugins import load_method, method_names
from yonos.sampler import per_image_generators


def test_registry_lists_the_adapters():
    assert {"bicubic", "yonos"} <= set(method_names())


def test_adapters_follow_the_contract(tiny_checkpoint):
    lr = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(0))
    for method in (load_method("bicubic"), load_method("yonos", checkpoint=tiny_checkpoint)):
        assert isinstance(method, SRMethod)
        gens = per_image_generators([0, 1]) if method.is_diffusion else None
        sr = method.upscale(lr, scale=4, steps=2, generator=gens)
        assert sr.shape == (2, 3, 36, 44) and sr.dtype == torch.float32
        assert 0 <= float(sr.min()) and float(sr.max()) <= 1
        assert isinstance(method.describe(), dict)
