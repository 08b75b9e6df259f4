"""Networks: the denoiser U-Net over [z_t, z_l], the autoencoder E/D, the fixed null-text embedding.

The denoiser is diffusers' UNet2DConditionModel (the class of SD's U-Net) with 8 input channels:
the noisy latent z_t (4) concatenated with the LR condition z_l = E(up(x_l)) (4). Text
cross-attention always sees one fixed null-text embedding, so no text encoder runs at inference.
"""

from __future__ import annotations

import math

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

LATENT_CHANNELS = 4


def build_unet(cfg: dict, *, latent_channels: int = LATENT_CHANNELS) -> UNet2DConditionModel:
    """A fresh denoiser from the params' `model.unet` kwargs (embedded/smoke profiles)."""
    kwargs = dict(cfg)
    kwargs.update(in_channels=2 * latent_channels, out_channels=latent_channels)
    for key in ("block_out_channels", "down_block_types", "up_block_types"):
        kwargs[key] = tuple(kwargs[key])
    return UNet2DConditionModel(**kwargs)


@torch.no_grad()
def widen_conv_in(unet: UNet2DConditionModel, extra_channels: int = LATENT_CHANNELS) -> UNet2DConditionModel:
    """Add `extra_channels` zero-initialised input channels to conv_in, for the z_l condition.

    The new weights are zero, so for any z_l the widened U-Net computes exactly the pretrained
    function of z_t: training starts from SD's prior, not from a perturbed copy of it.
    """
    old = unet.conv_in
    new = torch.nn.Conv2d(
        old.in_channels + extra_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        bias=old.bias is not None,
        dtype=old.weight.dtype,
        device=old.weight.device,
    )
    new.weight.zero_()
    new.weight[:, : old.in_channels] = old.weight
    if old.bias is not None:
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=new.in_channels)
    return unet


def build_autoencoder(cfg: dict) -> AutoencoderKL:
    """The embedded stand-in for SD's VAE: f = 2^(levels-1), `latent_channels` channels."""
    levels = len(cfg["block_out_channels"])
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(cfg["block_out_channels"]),
        layers_per_block=cfg["layers_per_block"],
        latent_channels=cfg["latent_channels"],
        norm_num_groups=cfg["norm_num_groups"],
        mid_block_add_attention=cfg.get("mid_block_add_attention", False),
    )


def vae_factor(vae: AutoencoderKL) -> int:
    """Spatial downsampling factor f of the autoencoder (8 for SD)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def unet_multiple(unet) -> int:
    """Input sizes of a diffusers U-Net (UNet2DModel or UNet2DConditionModel) must be divisible by this so
    down- and up-sampling paths line up."""
    return 2 ** (len(unet.config.block_out_channels) - 1)


def lr_multiple(scale: int, unet, vae: AutoencoderKL | None = None) -> int:
    """LR sizes are padded to this so that scale x size is divisible by the U-Net's multiple (times the
    autoencoder's factor f for a latent method): the smallest such size multiple."""
    m = unet_multiple(unet) * (vae_factor(vae) if vae is not None else 1)
    return m // math.gcd(m, scale)


def null_text_embedding(unet: UNet2DConditionModel, tokens: int = 1) -> torch.Tensor:
    """Embedded profile's fixed null-text embedding: zeros of shape (1, tokens, cross_attention_dim).

    The paper profile instead stores SD's CLIP embedding of the empty prompt, computed once
    (see `compute_clip_null_embedding`); either way it is a constant saved with the checkpoint.
    """
    return torch.zeros(1, tokens, unet.config.cross_attention_dim)


@torch.no_grad()
def compute_clip_null_embedding(sd_dir: str) -> torch.Tensor:
    """CLIP text embedding of the empty prompt from an SD folder (tokenizer/ + text_encoder/)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(sd_dir, subfolder="tokenizer", local_files_only=True)
    encoder = CLIPTextModel.from_pretrained(sd_dir, subfolder="text_encoder", local_files_only=True)
    ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt")
    return encoder(ids.input_ids)[0]


class LatentCodec(torch.nn.Module):
    """E and D with SD's latent scaling: z = scaling_factor * mode(E(2x - 1)); x = (D(z / sf) + 1) / 2.

    Encoding uses the posterior mode, not a sample [choice], so z_l and z_h are deterministic.
    """

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.vae.dtype
        return self.vae.encode(x.to(dtype) * 2 - 1).latent_dist.mode() * self.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (self.vae.decode(z.to(self.vae.dtype) / self.scaling_factor).sample.float() + 1) / 2
