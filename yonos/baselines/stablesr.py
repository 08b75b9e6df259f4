"""StableSR (Wang et al., IJCV 2024) on diffusers blocks: a frozen prior U-Net steered by SFT.

    z_l = E(up(x_l))                         the LR latent (posterior mode), as YONOS's condition
    F   = encoder(z_l, t)                    time-aware encoder: one feature map per U-Net resolution
    h  <- h * (1 + gamma(F)) + beta(F)       SFT after every ResBlock of the frozen U-Net (eps-prediction)
    x   = D(z_0; w * CFW(E-features of up(x_l)))   controllable feature wrapping in the decoder, w = 0.5

Pieces (each a diffusers ModelMixin, so each saves as safetensors + JSON config):
- `TimeAwareEncoder`: the down path of a diffusers UNet2DModel (ResnetBlock2D, AttnDownBlock2D with a
  fixed head count, UNetMidBlock2D, sinusoidal timestep embedding), then one ResnetBlock2D per
  feature (StableSR's `fea_tran`) mapping each to `out_channels`. Features are taken before each
  downsampling and after the middle block, keyed by their spatial size.
- `SFTAdapter`: one SFT layer per ResnetBlock2D of the U-Net's down, mid and up blocks, applied by a
  forward hook on that block's `conv2`, i.e. to the residual branch before the skip addition, which is
  where StableSR's ResBlockDual applies its SPADE. diffusers' code is not modified.
- `CFW`: fusion blocks (ResBlock -> RRDB x n -> ResBlock on [enc, dec]) added, times w, to the VAE
  decoder's features after the resnets of levels 1 .. L-2, by hooks on a diffusers AutoencoderKL.
- Training (stages train_stablesr, train_stablesr_cfw): `eps_loss` on `SteeringOnly` (encoder + SFT; the
  prior frozen and outside the trainer state), then `cfw_loss` on `CFWOnly` (the CFW; VAE frozen).

Two variants of the SFT layer: `norm=False` (the miniature: h * (1 + gamma) + beta with gamma and beta
zero-initialised, so at initialisation the frozen prior's output is unchanged exactly) and `norm=True`
(the released weights: StableSR's SPADE normalises h with an affine GroupNorm(32) first, so its frozen
prior is perturbed from the first step; needed to run the converted checkpoint as trained).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block
from safetensors.torch import load_file, save_file

from yonos.baselines.colour import COLOUR_FIXES, colour_fix
from yonos.checkpoint import read_folder_config
from yonos.errors import UserError
from yonos.io import atomic_folder, write_json
from yonos.models import LatentCodec, lr_multiple, unet_multiple, vae_factor
from yonos.resize import bicubic_up
from yonos.sampler import per_image_generators, respaced_timesteps, stacked_randn
from yonos.tiling import gaussian_weights, tile_windows

# StableSR's Gaussian tile weight: var = 0.01 of the tile side squared, i.e. std = 0.1 x side
# (`_gaussian_weights` in its ddpm.py). yonos.tiling uses 0.25 for one-step YONOS; we keep StableSR's.
STABLESR_TILE_STD = 0.1


# ------------------------------------------------------------------------------------------------
# Time-aware encoder


class TimeAwareEncoder(ModelMixin, ConfigMixin):
    """StableSR's EncoderUNetModelWT with diffusers blocks: z_l, t -> {(h, w): features}.

    The paper-profile sizes are StableSR's: model_channels 256, channel_mult (1, 1, 2, 2), 2 res blocks,
    attention at the first three levels and in the middle, 4 heads, 256 output channels.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        model_channels: int = 256,  # width of level 0; level i has channel_mult[i] x this
        channel_mult: Sequence[int] = (1, 1, 2, 2),  # one entry per U-Net resolution
        num_res_blocks: int = 2,
        attention_levels: Sequence[bool] = (True, True, True, False),  # StableSR: attention_resolutions [4, 2, 1]
        num_heads: int = 4,  # fixed head count (head width = channels / heads), as StableSR's num_heads
        out_channels: int = 256,  # channels of every feature map handed to the SFT layers
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,  # openaimodel's GroupNorm32 default
    ):
        super().__init__()
        temb = 4 * model_channels
        self.time_proj = Timesteps(model_channels, flip_sin_to_cos=True, downscale_freq_shift=0)  # cat[cos, sin]
        self.time_embedding = TimestepEmbedding(model_channels, temb)
        self.conv_in = nn.Conv2d(in_channels, model_channels, 3, padding=1)
        self.down_blocks = nn.ModuleList()
        ch, feat_ch = model_channels, []
        for level, mult in enumerate(channel_mult):
            out = mult * model_channels
            last = level == len(channel_mult) - 1
            self.down_blocks.append(get_down_block(
                "AttnDownBlock2D" if attention_levels[level] else "DownBlock2D", num_layers=num_res_blocks,
                in_channels=ch, out_channels=out, temb_channels=temb, add_downsample=not last,
                resnet_eps=norm_eps, resnet_act_fn="silu", resnet_groups=norm_num_groups,
                attention_head_dim=out // num_heads, downsample_padding=1))
            ch = out
            if not last:
                feat_ch.append(ch)
        self.mid_block = UNetMidBlock2D(ch, temb, resnet_eps=norm_eps, resnet_act_fn="silu",
                                        resnet_groups=norm_num_groups, attention_head_dim=ch // num_heads)
        feat_ch.append(ch)
        self.fea_tran = nn.ModuleList(
            ResnetBlock2D(in_channels=c, out_channels=out_channels, temb_channels=temb, eps=norm_eps,
                          groups=norm_num_groups) for c in feat_ch)

    def forward(self, z_l: torch.Tensor, t: torch.Tensor) -> dict[tuple[int, int], torch.Tensor]:
        t = t.expand(z_l.shape[0]) if t.ndim == 1 and t.shape[0] == 1 else t
        emb = self.time_embedding(self.time_proj(t).to(z_l.dtype))
        h = self.conv_in(z_l)
        feats = []
        for block in self.down_blocks:
            h, states = block(h, emb)
            if block.downsamplers is not None:
                feats.append(states[-2])  # the level's output before its downsampling
        feats.append(self.mid_block(h, emb))
        return {tuple(f.shape[-2:]): tran(f, emb) for f, tran in zip(feats, self.fea_tran, strict=True)}


# ------------------------------------------------------------------------------------------------
# SFT layers and the steered U-Net


class SFT(nn.Module):
    """h -> norm(h) * (1 + gamma(s)) + beta(s); gamma, beta = Conv3x3(ReLU(Conv3x3(s))) (StableSR's SPADE)."""

    def __init__(self, channels: int, cond_channels: int, hidden: int = 128, norm: bool = False,
                 norm_num_groups: int = 32):
        super().__init__()
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-5) if norm else None
        self.mlp_shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3, padding=1)
        if not norm:  # zero-initialised modulation: the prior is unchanged until training moves it
            for conv in (self.mlp_gamma, self.mlp_beta):
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    def forward(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        actv = self.mlp_shared(s.to(h.dtype))
        x = self.norm(h) if self.norm is not None else h
        return x * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


def unet_resnets(unet: UNet2DConditionModel) -> dict[str, ResnetBlock2D]:
    """Every ResnetBlock2D of the U-Net's down, mid and up blocks, by its module path."""
    return {name: m for name, m in unet.named_modules()
            if isinstance(m, ResnetBlock2D) and name.split(".")[0] in ("down_blocks", "mid_block", "up_blocks")}


def sft_key(resnet_path: str) -> str:
    """ModuleDict key of a resnet's SFT layer ("down_blocks.0.resnets.1" -> "down_blocks-0-resnets-1")."""
    return resnet_path.replace(".", "-")


class SFTAdapter(ModelMixin, ConfigMixin):
    """The SFT layers of one U-Net architecture: a ModuleDict keyed by `sft_key(resnet path)`."""

    @register_to_config
    def __init__(self, resnet_channels: dict[str, int] | None = None, cond_channels: int = 256,
                 hidden: int = 128, norm: bool = False, norm_num_groups: int = 32):
        super().__init__()
        self.layers = nn.ModuleDict({
            sft_key(path): SFT(ch, cond_channels, hidden, norm, norm_num_groups)
            for path, ch in (resnet_channels or {}).items()})

    @classmethod
    def for_unet(cls, unet: UNet2DConditionModel, **kwargs) -> SFTAdapter:
        return cls({p: r.conv2.out_channels for p, r in unet_resnets(unet).items()}, **kwargs)


class StableSRDenoiser(nn.Module):
    """The frozen prior U-Net + time-aware encoder + SFT, called like YONOS's U-Net on x = [z_t, z_l].

    Same signature and output type as UNet2DConditionModel, so yonos.sampler.denoise and the tiling
    helpers run it unchanged. eps-prediction (StableSR's 512 model), whatever the prior was trained with.
    """

    def __init__(self, unet: UNet2DConditionModel, encoder: TimeAwareEncoder, sft: SFTAdapter):
        super().__init__()
        self.unet, self.encoder, self.sft = unet, encoder, sft
        self.unet.requires_grad_(False)
        self._feats: dict | None = None
        resnets = unet_resnets(unet)
        missing = [p for p in resnets if sft_key(p) not in sft.layers]
        if missing or len(resnets) != len(sft.layers):
            raise ValueError(f"SFT layers do not match the U-Net's resnets (missing: {missing[:3]})")
        self._hooks = [r.conv2.register_forward_hook(self._hook(sft.layers[sft_key(p)])) for p, r in resnets.items()]

    def _hook(self, layer: SFT):
        def apply(module, inputs, h):
            if self._feats is None:  # the bare prior (no SR condition in flight)
                return None
            return layer(h, self._feats[tuple(h.shape[-2:])])
        return apply

    @property
    def config(self):  # the U-Net's (tiling and unet_multiple read block_out_channels from it)
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def forward(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor, **kwargs):
        c = self.unet.config.in_channels
        z_t, z_l = x[:, :c], x[:, c:]
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        self._feats = self.encoder(z_l, t)
        try:
            return self.unet(z_t, t, encoder_hidden_states=encoder_hidden_states, **kwargs)
        finally:
            self._feats = None


# ------------------------------------------------------------------------------------------------
# CFW: controllable feature wrapping in the VAE decoder


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv3x3 twice, 1x1 shortcut when the width changes (StableSR's CFW ResBlock)."""

    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_out = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return h + (self.conv_out(x) if self.conv_out is not None else x)


class _DenseBlock(nn.Module):
    """ESRGAN's residual dense block: 5 densely connected convs, LeakyReLU 0.2, residual scaled by 0.2."""

    def __init__(self, nf: int, gc: int):
        super().__init__()
        for i in range(5):
            setattr(self, f"conv{i + 1}", nn.Conv2d(nf + i * gc, gc if i < 4 else nf, 3, padding=1))

    def forward(self, x):
        feats = [x]
        for i in range(1, 5):
            feats.append(F.leaky_relu(getattr(self, f"conv{i}")(torch.cat(feats, 1)), 0.2))
        return self.conv5(torch.cat(feats, 1)) * 0.2 + x


class _RRDB(nn.Module):
    """Residual-in-residual dense block (ESRGAN): three dense blocks, residual scaled by 0.2."""

    def __init__(self, nf: int, gc: int):
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = _DenseBlock(nf, gc), _DenseBlock(nf, gc), _DenseBlock(nf, gc)

    def forward(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class FuseBlock(nn.Module):
    """CFW's residual: ResBlock(cat[enc, dec]) -> RRDB x n -> ResBlock (StableSR's Fuse_sft_block_RRDB)."""

    def __init__(self, channels: int, num_block: int = 2, num_grow_ch: int = 32, groups: int = 32):
        super().__init__()
        self.encode_enc_1 = _ResBlock(2 * channels, channels, groups)
        self.encode_enc_2 = nn.Sequential(*[_RRDB(channels, num_grow_ch) for _ in range(num_block)])
        self.encode_enc_3 = _ResBlock(channels, channels, groups)

    def forward(self, enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        return self.encode_enc_3(self.encode_enc_2(self.encode_enc_1(torch.cat([enc, dec], 1))))


def cfw_levels(vae: AutoencoderKL) -> list[int]:
    """Levels that get a fusion block: 1 .. L-2 (StableSR: levels 1 and 2 of SD's 4-level VAE)."""
    return list(range(1, len(vae.config.block_out_channels) - 1))


class CFW(ModelMixin, ConfigMixin):
    """Fusion blocks keyed by VAE level (str); `fusion_layers[str(i)]` is StableSR's `fusion_layer_i`."""

    @register_to_config
    def __init__(self, level_channels: dict[str, int] | None = None, num_fuse_block: int = 2,
                 num_grow_ch: int = 32, norm_num_groups: int = 32):
        super().__init__()
        self.fusion_layers = nn.ModuleDict({
            str(level): FuseBlock(ch, num_fuse_block, num_grow_ch, norm_num_groups)
            for level, ch in (level_channels or {}).items()})

    @classmethod
    def for_vae(cls, vae: AutoencoderKL, **kwargs) -> CFW:
        chans = vae.config.block_out_channels
        return cls({str(i): int(chans[i]) for i in cfw_levels(vae)}, **kwargs)


class CFWCodec(LatentCodec):
    """LatentCodec whose encode also captures E's features of the LR and whose decode fuses them.

        z_l, feats = codec.encode_with_features(up(x_l))
        x = codec.decode(z, feats=feats, w=0.5)      # w = 0 (or feats None): the plain decoder, exactly

    Encoder features: output of `encoder.down_blocks[i].resnets[-1]` (before the downsampler). Fusion:
    a hook on `decoder.up_blocks[L-1-i].resnets[-1]` adds w * fuse(enc_i, dec) before the upsampler.
    """

    def __init__(self, vae: AutoencoderKL, cfw: CFW | None):
        super().__init__(vae)
        self.cfw = cfw
        self._capture: dict | None = None
        self._fuse: tuple[dict, float] | None = None
        n = len(vae.config.block_out_channels)
        levels = [int(k) for k in cfw.fusion_layers] if cfw is not None else []
        for i in levels:
            vae.encoder.down_blocks[i].resnets[-1].register_forward_hook(self._capture_hook(i))
            vae.decoder.up_blocks[n - 1 - i].resnets[-1].register_forward_hook(self._fuse_hook(i))

    def _capture_hook(self, level: int):
        def hook(module, inputs, out):
            if self._capture is not None:
                self._capture[level] = out
        return hook

    def _fuse_hook(self, level: int):
        def hook(module, inputs, dec):
            if self._fuse is None:
                return None
            feats, w = self._fuse
            return dec + w * self.cfw.fusion_layers[str(level)](feats[level].to(dec.dtype), dec)
        return hook

    def encode_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        self._capture = {}
        try:
            z = self.encode(x)
            return z, self._capture
        finally:
            self._capture = None

    def decode(self, z: torch.Tensor, feats: dict | None = None, w: float = 0.0) -> torch.Tensor:
        if feats is None or w == 0 or self.cfw is None or not len(self.cfw.fusion_layers):
            return super().decode(z)
        self._fuse = (feats, float(w))
        try:
            return super().decode(z)
        finally:
            self._fuse = None


# ------------------------------------------------------------------------------------------------
# Sampling


def make_ddpm_scheduler(model_cfg: dict) -> DDPMScheduler:
    """SD's schedule, eps-prediction, no clipping (LatentDiffusion sets clip_denoised=False), fixed-small variance."""
    return DDPMScheduler(num_train_timesteps=model_cfg["num_train_timesteps"], beta_start=model_cfg["beta_start"],
                         beta_end=model_cfg["beta_end"], beta_schedule=model_cfg["beta_schedule"],
                         prediction_type="epsilon", variance_type="fixed_small", clip_sample=False)


def aggregate_tiles(model, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, *, tile: int, overlap: int,
                    std: float = STABLESR_TILE_STD) -> torch.Tensor:
    """StableSR's aggregation sampling: the network on overlapping latent tiles of x = [z_t, z_l],
    outputs blended with Gaussian weights normalised per latent pixel (tiles as yonos.tiling lays them)."""
    h, w = x.shape[-2:]
    out = norm = None
    for rows, cols in tile_windows(h, w, _TileKnobs(tile, overlap), unet_multiple(model)):
        y = model(x[..., rows, cols], t, encoder_hidden_states=cond).sample.float()
        wt = gaussian_weights(*y.shape[-2:], std=std).to(y.device)
        if out is None:
            out = torch.zeros(*y.shape[:2], h, w, device=y.device)
            norm = torch.zeros(h, w, device=y.device)
        out[..., rows, cols] += y * wt
        norm[rows, cols] += wt
    return out / norm


class _TileKnobs:
    def __init__(self, tile: int, overlap: int):
        self.tile, self.overlap = tile, overlap


@torch.no_grad()
def sample(model, scheduler: DDPMScheduler, z_l: torch.Tensor, null_emb: torch.Tensor, *, steps: int,
           generators: Sequence[torch.Generator], tile: int | None = None, overlap: int = 0) -> torch.Tensor:
    """Ancestral DDPM respaced to `steps`, from z_T ~ N(0, I); latent tiles when z_l is larger than `tile`.

    Every random draw (z_T and each step's noise) comes from the image's own generator, so an image's
    result does not depend on its batch.
    """
    if len(generators) != z_l.shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} for {z_l.shape[0]} images")
    scheduler.set_timesteps(timesteps=respaced_timesteps(steps, scheduler.config.num_train_timesteps))
    z = stacked_randn(z_l.shape[1:], generators, z_l.device, torch.float32)
    cond = null_emb.to(z_l.device, model.dtype).expand(z_l.shape[0], -1, -1)
    tiled = tile is not None and max(z_l.shape[-2:]) > tile
    for t in scheduler.timesteps:
        tt = torch.full((z.shape[0],), int(t), device=z.device, dtype=torch.long)
        x = torch.cat([z, z_l.float()], 1).to(model.dtype)
        if tiled:
            eps = aggregate_tiles(model, x, tt, cond, tile=tile, overlap=overlap)
        else:
            eps = model(x, tt, encoder_hidden_states=cond).sample.float()
        # diffusers draws the step noise per image when given a list of generators (randn_tensor)
        z = scheduler.step(eps, int(t), z, generator=list(generators)).prev_sample
    return z


# ------------------------------------------------------------------------------------------------
# Training: the two objectives and the modules `yonos.train.fit` optimises


class SteeringOnly(nn.Module):
    """The trainable part of a StableSRDenoiser (time-aware encoder + SFT) as the module `fit` trains.

    The frozen prior is held outside the module tree, so it has no optimizer state, stays out of the
    trainer state and keeps its eval mode while `fit` puts the encoder and SFT in train mode; the
    forward still runs the whole denoiser, with the SFT hooks active. Move the denoiser to the
    device yourself (accelerate only moves registered modules).
    """

    def __init__(self, denoiser: StableSRDenoiser):
        super().__init__()
        self.encoder, self.sft = denoiser.encoder, denoiser.sft
        self._denoiser = (denoiser,)  # a tuple: not a submodule

    def forward(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        return self._denoiser[0](x, t, encoder_hidden_states=encoder_hidden_states).sample


def eps_loss(model, batch: dict, *, task, scale: int) -> torch.Tensor:
    """StableSR's objective (LatentDiffusion's simple loss): E || eps - eps_theta(z_t, t; z_l) ||^2 with
    z_t = sqrt(abar_t) z_h + sqrt(1 - abar_t) eps, t uniform over the prior's schedule.

    `task` is a yonos.train.LatentSR (latents from the bank or encoded now, the schedule, the null text).
    """
    t = batch["t"]
    if int(t.max()) >= len(task.alphas_cumprod) or int(t.min()) < 0:
        raise ValueError(f"timestep {int(t.max())} outside the prior's schedule of {len(task.alphas_cumprod)}")
    z_h, z_ls = task.latents(batch, [scale])
    z_t = task.noisy(z_h, batch)
    cond = task.null_emb.to(z_t.device, z_t.dtype).expand(z_t.shape[0], -1, -1)
    eps_hat = model(torch.cat([z_t, z_ls[scale].to(z_t.dtype)], 1), t, cond)
    return F.mse_loss(eps_hat.float(), batch["eps"].float())


class CFWOnly(nn.Module):
    """D(z; w * CFW(E-features of up(x_l))) in [0, 1] with only the CFW registered: the frozen VAE is
    held outside the module tree (move it to the device yourself). w = 1 in training, as StableSR."""

    def __init__(self, codec: CFWCodec, w: float = 1.0):
        super().__init__()
        if codec.cfw is None:
            raise ValueError("CFWOnly needs a codec with a CFW")
        self.cfw, self.w = codec.cfw, float(w)
        self._codec = (codec,)

    def forward(self, z0: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        codec = self._codec[0]
        with torch.no_grad():  # the frozen encoder's features of the LR, recomputed each step as StableSR does
            _, feats = codec.encode_with_features(up)
        return codec.decode(z0, feats=feats, w=self.w)


def cfw_loss(model, batch: dict, *, perceptual=None, perceptual_weight: float = 0.0) -> torch.Tensor:
    """CFW's loss on the method's own latents: L1 + w_p * perceptual(clamped SR, HR) (StableSR adds a GAN term)."""
    sr, hr = model(batch["z0"], batch["up"]), batch["hr"]
    loss = F.l1_loss(sr, hr)
    if perceptual is not None and perceptual_weight > 0:
        loss = loss + perceptual_weight * perceptual(sr.clamp(0, 1), hr)
    return loss


# ------------------------------------------------------------------------------------------------
# Pipeline: checkpoint folder + upscale

FORMAT = 1
CONFIG_NAME = "stablesr_config.json"
NULL_NAME = "null_text_embedding.safetensors"
# Inference knobs stored in the checkpoint config (each changes pixels; describe() reports them).
DEFAULTS = {"steps": 200, "cfw_weight": 0.5, "colour_fix": "adain", "tile": None, "tile_overlap": None}


def build_prior_unet(unet_cfg: dict, latent_channels: int = 4) -> UNet2DConditionModel:
    """The prior: the profile's U-Net kwargs with `latent_channels` in and out (no LR concatenation)."""
    kwargs = dict(unet_cfg)
    kwargs.update(in_channels=latent_channels, out_channels=latent_channels)
    for key in ("block_out_channels", "down_block_types", "up_block_types"):
        kwargs[key] = tuple(kwargs[key])
    return UNet2DConditionModel(**kwargs)


def miniature_encoder(unet: UNet2DConditionModel, out_channels: int | None = None) -> TimeAwareEncoder:
    """A time-aware encoder sized for a miniature prior: one level per U-Net level, the U-Net's widths,
    attention where the U-Net has cross-attention blocks (StableSR: 256 ch, (1,1,2,2), 4 heads)."""
    c = unet.config
    width = int(c.block_out_channels[0])
    return TimeAwareEncoder(
        in_channels=c.in_channels, model_channels=width,
        channel_mult=tuple(int(b) // width for b in c.block_out_channels), num_res_blocks=c.layers_per_block,
        attention_levels=tuple("CrossAttn" in t for t in c.down_block_types), num_heads=4,
        out_channels=out_channels or width, norm_num_groups=c.norm_num_groups)


def miniature_cfw(cfg: dict, vae: AutoencoderKL) -> CFW:
    """A fresh CFW for the miniature's VAE: one RRDB per fusion block, growth 16 (StableSR: 2 and 32)."""
    groups = cfg["autoencoder"]["norm_num_groups"] if "autoencoder" in cfg else 32
    return CFW.for_vae(vae, num_fuse_block=1, num_grow_ch=16, norm_num_groups=groups)


class StableSRPipeline:
    """LR -> SR with StableSR: DDPM from noise steered by the LR latent, CFW decoding, colour fix."""

    def __init__(self, denoiser: StableSRDenoiser, vae: AutoencoderKL, cfw: CFW | None, scheduler: DDPMScheduler,
                 null_emb: torch.Tensor, scale: int, options: dict | None = None):
        self.denoiser = denoiser.eval()
        self.vae, self.cfw, self.scheduler = vae.eval(), (cfw.eval() if cfw is not None else None), scheduler
        self.codec = CFWCodec(vae, self.cfw)
        self.null_emb, self.scale = null_emb, int(scale)
        self.options = dict(DEFAULTS)
        self.set_options(**(options or {}))

    def set_options(self, **options) -> None:
        """Override inference knobs (steps, cfw_weight, colour_fix, tile, tile_overlap); None keeps the value."""
        unknown = set(options) - set(DEFAULTS)
        if unknown:
            raise UserError(f"unknown StableSR option(s) {sorted(unknown)}; known: {', '.join(DEFAULTS)}")
        self.options.update({k: v for k, v in options.items() if v is not None})
        if self.options["colour_fix"] not in COLOUR_FIXES:
            raise UserError(f"colour_fix={self.options['colour_fix']!r}: use one of {', '.join(COLOUR_FIXES)}")
        tile = self.options["tile"]
        if tile is not None and (tile <= 0 or tile % unet_multiple(self.denoiser.unet)):
            raise UserError(f"tile={tile}: must be a positive multiple of {unet_multiple(self.denoiser.unet)} "
                            f"latent pixels")

    @classmethod
    def from_params(cls, cfg: dict, scale: int, *, seed: int = 0, vae: AutoencoderKL | None = None,
                    unet: UNet2DConditionModel | None = None, options: dict | None = None) -> StableSRPipeline:
        """A fresh miniature: the given (frozen) prior or a new one of the profile's shape, new encoder,
        zero-initialised SFT, new CFW."""
        from yonos.models import build_autoencoder, null_text_embedding

        torch.manual_seed(seed)
        unet = unet if unet is not None else build_prior_unet(cfg["model"]["unet"])
        vae = vae if vae is not None else build_autoencoder(cfg["autoencoder"])
        encoder = miniature_encoder(unet)
        sft = SFTAdapter.for_unet(unet, cond_channels=encoder.config.out_channels, hidden=encoder.config.model_channels,
                                  norm=False, norm_num_groups=unet.config.norm_num_groups)
        cfw = miniature_cfw(cfg, vae)
        null_emb = null_text_embedding(unet, cfg["model"].get("null_text_tokens", 1))
        return cls(StableSRDenoiser(unet, encoder, sft), vae, cfw, make_ddpm_scheduler(cfg["model"]), null_emb,
                   scale, options)

    # --- persistence ----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> StableSRPipeline:
        path = Path(path)
        cfg = read_folder_config(path, CONFIG_NAME, FORMAT, what="a StableSR checkpoint",
                                 fix="pass a folder written by train_stablesr or "
                                     "`python -m yonos.baselines.convert_stablesr`")
        kw = {"torch_dtype": dtype, "use_safetensors": True}
        unet = UNet2DConditionModel.from_pretrained(path / "unet", **kw)
        encoder = TimeAwareEncoder.from_pretrained(path / "encoder", **kw)
        sft = SFTAdapter.from_pretrained(path / "sft", **kw)
        vae = AutoencoderKL.from_pretrained(path / "vae", **kw)
        cfw = CFW.from_pretrained(path / "cfw", **kw) if (path / "cfw").is_dir() else None
        scheduler = DDPMScheduler.from_pretrained(path / "scheduler")
        null_emb = load_file(path / NULL_NAME)["null_text_embedding"]
        pipe = cls(StableSRDenoiser(unet, encoder, sft), vae, cfw, scheduler, null_emb, cfg["scale"],
                   cfg.get("options"))
        return pipe.to(device)

    def save_pretrained(self, path: str | Path, **extra_config) -> None:
        """Write the folder beside `path`, then rename it into place (never half-written)."""
        d = self.denoiser
        with atomic_folder(path) as tmp:
            cfw = self.cfw if self.cfw is not None and len(self.cfw.fusion_layers) else None  # 2-level VAE: none
            for name, model in (("unet", d.unet), ("encoder", d.encoder), ("sft", d.sft), ("vae", self.vae),
                                ("cfw", cfw)):
                if model is not None:
                    model.save_pretrained(tmp / name, safe_serialization=True)
            self.scheduler.save_pretrained(tmp / "scheduler")
            save_file({"null_text_embedding": self.null_emb.detach().cpu().contiguous()}, tmp / NULL_NAME)
            write_json(tmp / CONFIG_NAME, {"format": FORMAT, "method": "stablesr", "scale": self.scale,
                                           "options": self.options, **extra_config})

    def to(self, device) -> StableSRPipeline:
        for m in (self.denoiser, self.vae, self.cfw):
            if m is not None:
                m.to(device)
        self.null_emb = self.null_emb.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.denoiser.unet.device

    # --- the method -----------------------------------------------------------------------------
    @property
    def lr_multiple(self) -> int:
        return lr_multiple(self.scale, self.denoiser.unet, self.vae)

    def tile_knobs(self) -> tuple[int | None, int]:
        """(tile, overlap) in latent pixels; tile None = never tile. Overlap defaults to half a tile (64/32)."""
        tile = self.options["tile"]
        overlap = self.options["tile_overlap"]
        return tile, (overlap if overlap is not None else (tile // 2 if tile else 0))

    @torch.no_grad()
    def upscale_batch(self, lr: torch.Tensor, *, steps: int | None = None,
                      generator: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """NCHW float [0, 1] LR -> NCHW float [0, 1] SR of exactly scale x the size (pad, then crop)."""
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise ValueError(f"expected N x 3 x H x W, got {tuple(lr.shape)}")
        steps = int(steps or self.options["steps"])
        lr = lr.to(self.device, torch.float32)
        generator = generator if generator is not None else per_image_generators([0] * lr.shape[0])
        h, w = lr.shape[-2:]
        m = self.lr_multiple
        ph, pw = (-h) % m, (-w) % m
        padded = F.pad(lr, (0, pw, 0, ph), mode="replicate") if (ph or pw) else lr
        up = bicubic_up(padded, self.scale)
        z_l, feats = self.codec.encode_with_features(up)
        tile, overlap = self.tile_knobs()
        z0 = sample(self.denoiser, self.scheduler, z_l, self.null_emb, steps=steps, generators=generator,
                    tile=tile, overlap=overlap)
        sr = self.codec.decode(z0, feats=feats, w=self.options["cfw_weight"])
        sr = colour_fix(sr, up.to(sr.dtype), self.options["colour_fix"])
        return sr[..., : h * self.scale, : w * self.scale].clamp(0, 1)

    def describe(self) -> dict:
        tile, overlap = self.tile_knobs()
        f = vae_factor(self.vae)
        return {
            "sampler": "DDPM ancestral, StableSR respacing (space_timesteps), from pure noise",
            "default_steps": self.options["steps"], "eta": 1.0, "prediction_type": "epsilon",
            "variance": self.scheduler.config.variance_type, "cfw_weight": self.options["cfw_weight"],
            "cfw": "yes" if self.cfw is not None and len(self.cfw.fusion_layers) else "none",
            "colour_fix": self.options["colour_fix"], "encode": "posterior mode", "upsample": "matlab-bicubic",
            "tiling": ("none" if tile is None else
                       {"tile": tile, "overlap": overlap, "unit": "latent pixels", "tile_px": tile * f,
                        "overlap_px": overlap * f, "blend": f"gaussian std={STABLESR_TILE_STD} x tile",
                        "vae_tiling": "none"}),
            "sft": "spade (groupnorm)" if self.denoiser.sft.config.norm else "sft (zero-init)",
            "dtype": str(self.denoiser.unet.dtype),
        }
