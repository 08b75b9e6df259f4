"""Convert StableSR's released checkpoints into a StableSR checkpoint folder (safetensors + JSON).

    python -m yonos.baselines.convert_stablesr [WEIGHTS_DIR] OUT_DIR --null-text SD_DIR_OR_FILE

Inputs (Hugging Face `Iceclear/StableSR`, pinned by sha256 in yonos/data/pins/hf_files.tsv, entry
"stablesr"; `yonos download stablesr` puts them in weights/stablesr/):
    stablesr_000117.ckpt   Lightning checkpoint: "state_dict" with model.diffusion_model.* (SD 2.1-base
                           U-Net incl. .spade.*), structcond_stage_model.* (time-aware encoder),
                           first_stage_model.* (SD VAE), cond_stage_model.* (OpenCLIP; not used)
    vqgan_cfw_00011.ckpt   "state_dict" with encoder.*, decoder.* (incl. decoder.fusion_layer_{1,2}.*),
                           quant_conv.*, post_quant_conv.*, loss.* (discriminator/LPIPS; not used)

Both are read with `torch.load(weights_only=True)` (plain tensors and containers only; no pickled
objects are executed) after their sha256 is checked. Key mapping (docs/baselines.md has the table):
    U-Net, VAE          diffusers' own LDM converters (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint)
    <resnet>.spade.*    sft/layers.<resnet path, - for .>.{norm <- param_free_norm, mlp_shared.0, mlp_gamma, mlp_beta}
    structcond_stage_model.*   encoder/ (mapping in `convert_encoder`)
    decoder.fusion_layer_<i>.*   cfw/fusion_layers.<i>.* (names below unchanged)

The text condition is StableSR's frozen OpenCLIP (SD 2.1's) of the empty prompt; it is a constant, taken
from the SD 2.1-base folder the paper profile already uses (null_text_embedding.safetensors, or its
text_encoder/ + tokenizer/), never recomputed from the pickled OpenCLIP weights.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

from yonos.baselines.stablesr import (
    CFW,
    SFTAdapter,
    StableSRDenoiser,
    StableSRPipeline,
    TimeAwareEncoder,
    make_ddpm_scheduler,
    sft_key,
)
from yonos.errors import UserError
from yonos.weights import sha256

UNET_CKPT = "stablesr_000117.ckpt"
CFW_CKPT = "vqgan_cfw_00011.ckpt"
DEFAULT_DIR = Path("weights/stablesr")
UNET_PREFIX, ENC_PREFIX = "model.diffusion_model.", "structcond_stage_model."

# The released architecture (configs/stableSRNew/v2-finetune_text_T_512.yaml; SD 2.1-base in diffusers terms).
SD21_BASE_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, norm_num_groups=32)
SD21_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    sample_size=512, scaling_factor=0.18215)
STABLESR_ENCODER = dict(in_channels=4, model_channels=256, channel_mult=(1, 1, 2, 2), num_res_blocks=2,
                        attention_levels=(True, True, True, False), num_heads=4, out_channels=256)
SPADE_CONFIG = dict(hidden=128, norm_num_groups=32)  # spade.py: nhidden = 128, GroupNorm32
CFW_CONFIG = dict(num_fuse_block=2, num_grow_ch=32, norm_num_groups=32)  # Fuse_sft_block_RRDB(num_block=2)
SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def pinned_hashes() -> dict[str, str]:
    """{file: sha256} of the "stablesr" entry (yonos/data/pins/hf_files.tsv, via the sources registry)."""
    from yonos.data.sources import file_pins

    return {p.path: p.sha256 for p in file_pins("stablesr") if p.sha256}


def read_checkpoint(path: Path, want_sha256: str | None) -> dict[str, torch.Tensor]:
    """sha256 check, then torch.load(weights_only=True)["state_dict"]: tensors only, nothing executed."""
    if want_sha256 is not None:
        got = sha256(path)
        if got != want_sha256:
            raise UserError(f"{path}: sha256 {got[:12]}... is not the pinned {want_sha256[:12]}...; "
                            f"re-download it with `yonos download stablesr`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for objects outside the safe set, or a truncated file
        raise UserError(f"{path}: cannot be read as plain tensors ({type(exc).__name__}); "
                        f"it is not a released StableSR checkpoint") from exc
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise UserError(f"{path}: no state_dict inside; expected a Lightning checkpoint")
    return sd


# --- key mappings ---------------------------------------------------------------------------------

_LDM_RESNET = (("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("emb_layers.1", "time_emb_proj"),
               ("out_layers.0", "norm2"), ("out_layers.3", "conv2"), ("skip_connection", "conv_shortcut"))


def _resnet_key(rest: str) -> str:
    for old, new in _LDM_RESNET:
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    raise KeyError(rest)


def _attention(sd: dict, src: str, dst: str, heads: int) -> dict:
    """openaimodel AttentionBlock (legacy QKV order: per head q, k, v) -> diffusers Attention."""
    out = {f"{dst}.group_norm.weight": sd[f"{src}.norm.weight"], f"{dst}.group_norm.bias": sd[f"{src}.norm.bias"]}
    w, b = sd[f"{src}.qkv.weight"], sd[f"{src}.qkv.bias"]
    c = w.shape[1]
    w, b = w.reshape(heads, 3, c // heads, c), b.reshape(heads, 3, c // heads)
    for i, name in enumerate(("to_q", "to_k", "to_v")):
        out[f"{dst}.{name}.weight"] = w[:, i].reshape(c, c).clone()
        out[f"{dst}.{name}.bias"] = b[:, i].reshape(c).clone()
    out[f"{dst}.to_out.0.weight"] = sd[f"{src}.proj_out.weight"].reshape(c, c)
    out[f"{dst}.to_out.0.bias"] = sd[f"{src}.proj_out.bias"]
    return out


def convert_encoder(sd: dict, config) -> dict:
    """structcond_stage_model.* (EncoderUNetModelWT) -> TimeAwareEncoder state dict."""
    src = {k[len(ENC_PREFIX):]: v for k, v in sd.items() if k.startswith(ENC_PREFIX)}
    out = {"time_embedding.linear_1.weight": src["time_embed.0.weight"],
           "time_embedding.linear_1.bias": src["time_embed.0.bias"],
           "time_embedding.linear_2.weight": src["time_embed.2.weight"],
           "time_embedding.linear_2.bias": src["time_embed.2.bias"],
           "conv_in.weight": src["input_blocks.0.0.weight"], "conv_in.bias": src["input_blocks.0.0.bias"]}
    used = {"time_embed.0.weight", "time_embed.0.bias", "time_embed.2.weight", "time_embed.2.bias",
                         "input_blocks.0.0.weight", "input_blocks.0.0.bias"}

    def resnet(prefix_src: str, prefix_dst: str):
        for k in [k for k in src if k.startswith(prefix_src + ".")]:
            out[f"{prefix_dst}.{_resnet_key(k[len(prefix_src) + 1:])}"] = src[k]
            used.add(k)

    def attn(prefix_src: str, prefix_dst: str):
        out.update(_attention(src, prefix_src, prefix_dst, config["num_heads"]))
        used.update(k for k in src if k.startswith(prefix_src + "."))

    k, mult = 1, config["channel_mult"]
    for level in range(len(mult)):
        for j in range(config["num_res_blocks"]):
            resnet(f"input_blocks.{k}.0", f"down_blocks.{level}.resnets.{j}")
            if config["attention_levels"][level]:
                attn(f"input_blocks.{k}.1", f"down_blocks.{level}.attentions.{j}")
            k += 1
        if level != len(mult) - 1:
            for p in ("weight", "bias"):
                out[f"down_blocks.{level}.downsamplers.0.conv.{p}"] = src[f"input_blocks.{k}.0.op.{p}"]
                used.add(f"input_blocks.{k}.0.op.{p}")
            k += 1
    resnet("middle_block.0", "mid_block.resnets.0")
    attn("middle_block.1", "mid_block.attentions.0")
    resnet("middle_block.2", "mid_block.resnets.1")
    for i in range(len(mult)):
        resnet(f"fea_tran.{i}", f"fea_tran.{i}")
    left = sorted(set(src) - used)
    if left:
        raise UserError(f"time-aware encoder: {len(left)} unmapped keys (e.g. {ENC_PREFIX}{left[0]}); "
                        f"the checkpoint's encoder differs from the configured architecture")
    return out


def convert_unet(sd: dict, unet_config: dict) -> tuple[dict, dict]:
    """model.diffusion_model.* -> (UNet2DConditionModel state dict, SFTAdapter state dict)."""
    conv = convert_ldm_unet_checkpoint({k: v for k, v in sd.items() if k.startswith(UNET_PREFIX)}, unet_config)
    unet_sd, sft_sd = {}, {}
    for k, v in conv.items():
        m = re.match(r"(.+)\.spade\.(.+)$", k)
        if m is None:
            unet_sd[k] = v
        else:
            sft_sd[f"layers.{sft_key(m[1])}.{m[2].replace('param_free_norm', 'norm')}"] = v
    return unet_sd, sft_sd


def convert_vae(sd: dict, vae_config: dict) -> tuple[dict, dict]:
    """CFW checkpoint -> (AutoencoderKL state dict, CFW state dict); loss.* is dropped."""
    parts = ("encoder", "decoder", "quant_conv", "post_quant_conv")
    vae_src = {k: v for k, v in sd.items() if k.split(".")[0] in parts and ".fusion_layer_" not in k}
    cfw_sd = {}
    for k, v in sd.items():
        m = re.match(r"decoder\.fusion_layer_(\d+)\.(.+)$", k)
        if m:
            cfw_sd[f"fusion_layers.{m[1]}.{m[2]}"] = v
    return convert_ldm_vae_checkpoint(vae_src, vae_config), cfw_sd


def _load(model: torch.nn.Module, sd: dict, what: str, source: Path) -> None:
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise UserError(f"{source}: {what} does not match the configured architecture "
                        f"({len(missing)} missing, e.g. {missing[:1]}; "
                        f"{len(unexpected)} unexpected, e.g. {unexpected[:1]})")


def convert_stablesr(folder: str | os.PathLike, out: str | os.PathLike, *, null_emb: torch.Tensor,
                     unet_config: dict = SD21_BASE_UNET, vae_config: dict = SD21_VAE,
                     encoder_config: dict = STABLESR_ENCODER, sft_config: dict = SPADE_CONFIG,
                     cfw_config: dict = CFW_CONFIG, schedule: dict = SD_SCHEDULE,
                     hashes: dict[str, str] | None = None, scale: int = 4, options: dict | None = None) -> Path:
    """Read the two released files from `folder` (hash-checked), write a StableSR checkpoint folder `out`."""
    folder, out = Path(folder), Path(out)
    missing = [f for f in (UNET_CKPT, CFW_CKPT) if not (folder / f).is_file()]
    if missing:
        raise UserError(f"{folder}: StableSR weights missing ({', '.join(missing)}); run `yonos download stablesr` "
                        f"or put {UNET_CKPT} and {CFW_CKPT} from huggingface.co/Iceclear/StableSR in {folder}/")
    if out.exists():
        raise UserError(f"{out}: already exists; choose a new output folder (an existing one is never overwritten)")
    hashes = pinned_hashes() if hashes is None else hashes
    sd = read_checkpoint(folder / UNET_CKPT, hashes.get(UNET_CKPT))
    unet = UNet2DConditionModel(**unet_config)
    encoder = TimeAwareEncoder(**encoder_config)
    sft = SFTAdapter.for_unet(unet, cond_channels=encoder_config["out_channels"], norm=True, **sft_config)
    unet_sd, sft_sd = convert_unet(sd, dict(unet.config))
    _load(unet, unet_sd, "U-Net", folder / UNET_CKPT)
    _load(sft, sft_sd, "SPADE layers", folder / UNET_CKPT)
    _load(encoder, convert_encoder(sd, encoder.config), "time-aware encoder", folder / UNET_CKPT)
    del sd
    sd = read_checkpoint(folder / CFW_CKPT, hashes.get(CFW_CKPT))
    vae = AutoencoderKL(**vae_config)
    cfw = CFW.for_vae(vae, **cfw_config)
    vae_sd, cfw_sd = convert_vae(sd, dict(vae.config))
    _load(vae, vae_sd, "VAE", folder / CFW_CKPT)
    _load(cfw, cfw_sd, "CFW fusion layers", folder / CFW_CKPT)
    pipe = StableSRPipeline(StableSRDenoiser(unet, encoder, sft), vae, cfw, make_ddpm_scheduler(schedule),
                            null_emb.float(), scale, options)
    pipe.save_pretrained(out, source={UNET_CKPT: hashes.get(UNET_CKPT), CFW_CKPT: hashes.get(CFW_CKPT)})
    return out


def _null_text(path: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    from yonos.models import compute_clip_null_embedding

    if path.is_file():
        return load_file(path)["null_text_embedding"]
    if (path / "null_text_embedding.safetensors").is_file():
        return load_file(path / "null_text_embedding.safetensors")["null_text_embedding"]
    if (path / "text_encoder").is_dir():
        return compute_clip_null_embedding(str(path))
    raise UserError(f"{path}: no null_text_embedding.safetensors or text_encoder/ + tokenizer/ (SD 2.1-base folder)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights", nargs="?", default=str(DEFAULT_DIR), help=f"folder with {UNET_CKPT}, {CFW_CKPT}")
    ap.add_argument("out", help="new checkpoint folder, e.g. runs/paper/stablesr_released")
    ap.add_argument("--null-text", required=True, help="SD 2.1-base folder or null_text_embedding.safetensors")
    args = ap.parse_args(argv)
    try:
        convert_stablesr(args.weights, args.out, null_emb=_null_text(Path(args.null_text)))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
