"""The denoiser's construction and the two training objectives, on tiny seeded models."""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from yonos.models import LatentCodec, widen_conv_in
from yonos.train import LatentSR, base_loss, distillation_loss


def tiny_sd_like_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=8, norm_num_groups=8)


def test_widening_conv_in_keeps_the_pretrained_function():
    unet = tiny_sd_like_unet().eval()
    z_t, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([10, 900]), torch.randn(2, 1, 16)
    with torch.no_grad():
        before = unet(z_t, t, encoder_hidden_states=ctx).sample
        widen_conv_in(unet)
        after = unet(torch.cat([z_t, 5 * torch.randn(2, 4, 8, 8)], 1), t, encoder_hidden_states=ctx).sample
    assert unet.conv_in.in_channels == 8 and unet.config.in_channels == 8
    assert torch.equal(before, after)
    assert unet.conv_in.weight[:, 4:].abs().sum() == 0


def batch_for(cfg, n=3, crop=32):
    g = torch.Generator().manual_seed(0)
    return {"hr": torch.rand(n, 3, crop, crop, generator=g), "seed": torch.arange(n),
            "t": torch.tensor([0, 500, 999])[:n], "eps": torch.randn(n, 4, crop // 2, crop // 2, generator=g)}


def task_of(pipe, cfg) -> LatentSR:
    return LatentSR(LatentCodec(pipe.vae), pipe.scheduler.alphas_cumprod, pipe.null_emb,
                    cfg["model"]["prediction_type"], cfg["model"]["weighting"], {"kind": "bicubic"})


def test_distillation_loss_is_zero_when_teacher_is_student_with_the_same_lr(tiny_pipeline, smoke_cfg):
    task, batch = task_of(tiny_pipeline, smoke_cfg), batch_for(smoke_cfg)
    loss = distillation_loss(tiny_pipeline.unet, batch, task=task, scale=4, teacher=tiny_pipeline.unet, teacher_scale=4)
    assert float(loss.detach()) == 0.0
    # ... and not zero when the teacher sees the easier x2 LR: the test can fail.
    loss2 = distillation_loss(tiny_pipeline.unet, batch, task=task, scale=4, teacher=tiny_pipeline.unet,
                              teacher_scale=2)
    assert float(loss2.detach()) > 0.0


def test_base_loss_is_finite_and_has_gradients(tiny_pipeline, smoke_cfg):
    task, batch = task_of(tiny_pipeline, smoke_cfg), batch_for(smoke_cfg)
    loss = base_loss(tiny_pipeline.unet, batch, task=task, scale=4)
    loss.backward()
    assert torch.isfinite(loss) and tiny_pipeline.unet.conv_in.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_pipeline.vae.parameters())  # the autoencoder stays frozen
