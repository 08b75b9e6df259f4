"""StableSR: SFT identity at initialisation, CFW with w = 0, colour fixes, sampler, adapter contract, converter."""

from __future__ import annotations

import re

import pytest
import torch
from diffusers import AutoencoderKL

from methods.base import SRMethod
from yonos.baselines import stablesr as ss
from yonos.baselines.colour import adain, colour_fix, wavelet, wavelet_lowpass
from yonos.baselines.convert_stablesr import CFW_CKPT, UNET_CKPT, convert_stablesr, pinned_hashes
from yonos.errors import UserError
from yonos.plugins import load_method
from yonos.sampler import per_image_generators, respaced_timesteps

UNET = dict(block_out_channels=[16, 32], layers_per_block=1, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], cross_attention_dim=16, attention_head_dim=8,
            norm_num_groups=8)
VAE = dict(block_out_channels=[8, 16, 16], layers_per_block=1, latent_channels=4, norm_num_groups=4,
           mid_block_add_attention=True)
CFG = {"model": {"unet": UNET, "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                 "beta_schedule": "scaled_linear", "null_text_tokens": 1},
       "autoencoder": VAE}


@pytest.fixture(scope="module")
def pipe():
    p = ss.StableSRPipeline.from_params(CFG, 4, seed=0, options={"steps": 3})
    # Training moves the SFT and CFW away from their start; do the same so that they act.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in (p.denoiser.sft, p.cfw):
            for prm in m.parameters():
                prm.copy_(torch.randn(prm.shape, generator=g) * 0.05)
    return p


def _x(n=2, h=8, w=8, seed=0):
    return torch.randn(n, 8, h, w, generator=torch.Generator().manual_seed(seed))


# --- SFT -------------------------------------------------------------------------------------------


def test_sft_at_initialisation_leaves_the_prior_unchanged():
    fresh = ss.StableSRPipeline.from_params(CFG, 4, seed=0).denoiser
    x, t = _x(), torch.tensor([999, 10])
    cond = torch.randn(2, 1, 16)
    assert len(fresh.sft.layers) == 2 + 2 + 2 * 2  # down 1+1, mid 2, up 2+2: every ResnetBlock2D
    assert torch.equal(fresh(x, t, encoder_hidden_states=cond).sample,
                       fresh.unet(x[:, :4], t, encoder_hidden_states=cond).sample)
    with torch.no_grad():  # the comparison can fail: a moved SFT layer changes the output
        fresh.sft.layers["mid_block-resnets-0"].mlp_beta.bias.fill_(0.1)
    assert not torch.equal(fresh(x, t, encoder_hidden_states=cond).sample,
                           fresh.unet(x[:, :4], t, encoder_hidden_states=cond).sample)
    assert not any(p.requires_grad for p in fresh.unet.parameters())
    assert all(p.requires_grad for p in fresh.encoder.parameters()) and all(
        p.requires_grad for p in fresh.sft.parameters())


def test_encoder_yields_one_feature_map_per_unet_resolution(pipe):
    feats = pipe.denoiser.encoder(torch.randn(2, 4, 16, 12), torch.tensor([5, 900]))
    assert sorted(feats) == [(8, 6), (16, 12)]
    assert all(f.shape[:2] == (2, 16) for f in feats.values())


# --- CFW -------------------------------------------------------------------------------------------


def test_cfw_with_weight_zero_is_the_plain_decoder(pipe):
    codec = pipe.codec
    up = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    z, feats = codec.encode_with_features(up)
    assert sorted(feats) == [1] and feats[1].shape == (1, 16, 16, 16)
    plain = (pipe.vae.decode(z / codec.scaling_factor).sample + 1) / 2
    assert torch.equal(codec.decode(z, feats=feats, w=0.0), plain)
    assert (codec.decode(z, feats=feats, w=0.5) - plain).abs().max() > 1e-4


# --- colour fixes ------------------------------------------------------------------------------------


def test_adain_maps_each_channel_mean_and_std_to_the_reference():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 24, 20, generator=g) * 0.5 + 0.3
    ref = torch.rand(2, 3, 24, 20, generator=g) ** 2
    y = adain(x, ref)
    torch.testing.assert_close(y.mean((2, 3)), ref.mean((2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.flatten(2).std(-1), ref.flatten(2).std(-1), atol=1e-5, rtol=0)
    assert (y - x).abs().max() > 0.05


def test_wavelet_fix_takes_low_frequencies_from_the_reference():
    g = torch.Generator().manual_seed(4)
    ref = torch.rand(1, 3, 40, 40, generator=g)
    cast = ref + torch.tensor([0.2, -0.1, 0.05]).view(1, 3, 1, 1)  # a colour cast is pure low frequency
    torch.testing.assert_close(wavelet(cast, ref), ref, atol=1e-5, rtol=0)
    x = torch.rand(1, 3, 40, 40, generator=g)
    y = wavelet(x, ref)
    torch.testing.assert_close(y - wavelet_lowpass(ref), x - wavelet_lowpass(x), atol=1e-6, rtol=0)
    assert torch.equal(colour_fix(x, ref, "none"), x)
    with pytest.raises(ValueError):
        colour_fix(x, ref, "histogram")


# --- sampler -----------------------------------------------------------------------------------------


def test_respacing_follows_stablesr():
    ts = respaced_timesteps(200)
    assert len(ts) == 200 and ts[0] == 999 and ts[-1] == 0 and ts == sorted(ts, reverse=True)
    assert ts[-2] == 5 and ts[1] == 994  # stride (999 / 199) = 5.02, rounded
    assert respaced_timesteps(1) == [999] and respaced_timesteps(2) == [999, 0]


def test_tiles_covering_the_latent_equal_the_untiled_network(pipe):
    x, t, cond = _x(1, 8, 12), torch.tensor([500]), torch.zeros(1, 1, 16)
    full = pipe.denoiser(x, t, encoder_hidden_states=cond).sample
    torch.testing.assert_close(ss.aggregate_tiles(pipe.denoiser, x, t, cond, tile=12, overlap=4), full)
    tiled = ss.aggregate_tiles(pipe.denoiser, x, t, cond, tile=8, overlap=4)
    assert tiled.shape == full.shape and torch.isfinite(tiled).all()


# --- adapter -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("stablesr") / "ckpt"
    pipe.save_pretrained(path)
    return path


def test_adapter_honours_the_contract(checkpoint, pipe):
    method = load_method("stablesr", checkpoint=str(checkpoint))
    assert isinstance(method, SRMethod) and method.is_diffusion
    lr = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(5))
    sr = method.upscale(lr, scale=4, steps=2, generator=per_image_generators([7, 8]))
    assert sr.shape == (2, 3, 20, 28) and sr.dtype == torch.float32
    assert 0 <= float(sr.min()) and float(sr.max()) <= 1
    alone = method.upscale(lr[1:], scale=4, steps=2, generator=per_image_generators([8]))
    torch.testing.assert_close(alone, sr[1:], atol=1e-5, rtol=0)  # per image, whatever the batch
    # the saved folder reloads to the same pixels
    again = pipe.upscale_batch(lr[1:], steps=2, generator=per_image_generators([8]))
    torch.testing.assert_close(again, alone, atol=1e-5, rtol=0)
    d = method.describe()
    for knob in ("default_steps", "sampler", "eta", "colour_fix", "cfw_weight", "tiling", "dtype"):
        assert knob in d
    tiled = load_method("stablesr", checkpoint=str(checkpoint), tile=4)
    assert tiled.describe()["tiling"]["overlap"] == 2
    assert tiled.upscale(lr[:1], scale=4, steps=2, generator=per_image_generators([7])).shape == (1, 3, 20, 28)
    with pytest.raises(UserError, match="colour_fix"):
        load_method("stablesr", checkpoint=str(checkpoint), colour_fix="histogram")


# --- converter: a tiny checkpoint in the released key layout ------------------------------------------

_RESNET_INV = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def _res(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{_RESNET_INV[head]}.{tail}"


def _ldm_unet(unet, lpb: int) -> dict:
    """diffusers UNet2DConditionModel keys -> openaimodel keys (model.diffusion_model.*), written by LDM's rules."""
    top = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
           "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0", "conv_out": "out.2"}
    out = {}
    for k, v in unet.state_dict().items():
        mod, _, p = k.rpartition(".")
        if mod in top:
            new = f"{top[mod]}.{p}"
        elif m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k):
            new = f"input_blocks.{1 + int(m[1]) * (lpb + 1) + int(m[2])}.0.{_res(m[3])}"
        elif m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", k):
            new = f"input_blocks.{1 + int(m[1]) * (lpb + 1) + int(m[2])}.1.{m[3]}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", k):
            new = f"input_blocks.{(int(m[1]) + 1) * (lpb + 1)}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d)\.(.+)", k):
            new = f"middle_block.{2 * int(m[1])}.{_res(m[2])}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.+)", k):
            new = f"middle_block.1.{m[1]}"
        elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k):
            new = f"output_blocks.{int(m[1]) * (lpb + 1) + int(m[2])}.0.{_res(m[3])}"
        elif m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", k):
            new = f"output_blocks.{int(m[1]) * (lpb + 1) + int(m[2])}.1.{m[3]}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", k):
            b = int(m[1])
            has_attn = hasattr(unet.up_blocks[b], "attentions")
            new = f"output_blocks.{b * (lpb + 1) + lpb}.{2 if has_attn else 1}.conv.{m[2]}"
        else:
            raise AssertionError(k)
        out[new] = v
    return out


def _ldm_spade(sft, lpb: int) -> dict:
    out = {}
    for k, v in sft.state_dict().items():
        m = re.match(r"layers\.([^.]+)\.(.+)", k)
        path = m[1].replace("-", ".")
        probe = _ldm_unet_path(path, lpb)
        out[f"{probe}.spade.{m[2].replace('norm.', 'param_free_norm.')}"] = v
    return out


def _ldm_unet_path(resnet_path: str, lpb: int) -> str:
    kind, b, _, l_ = resnet_path.split(".") if not resnet_path.startswith("mid") else ("mid", 0, 0, resnet_path[-1])
    if kind == "down_blocks":
        return f"input_blocks.{1 + int(b) * (lpb + 1) + int(l_)}.0"
    if kind == "up_blocks":
        return f"output_blocks.{int(b) * (lpb + 1) + int(l_)}.0"
    return f"middle_block.{2 * int(l_)}"


def _legacy_attention(sd: dict, src: str, dst: str, heads: int) -> dict:
    """diffusers Attention -> openaimodel AttentionBlock (qkv conv1d, legacy order: per head q, k, v)."""
    q, k, v = (sd[f"{src}.{n}.weight"] for n in ("to_q", "to_k", "to_v"))
    c = q.shape[0]
    w = torch.stack([t.reshape(heads, c // heads, c) for t in (q, k, v)], 1).reshape(3 * c, c, 1)
    b = torch.stack([sd[f"{src}.{n}.bias"].reshape(heads, c // heads) for n in ("to_q", "to_k", "to_v")], 1)
    return {f"{dst}.norm.weight": sd[f"{src}.group_norm.weight"], f"{dst}.norm.bias": sd[f"{src}.group_norm.bias"],
            f"{dst}.qkv.weight": w, f"{dst}.qkv.bias": b.reshape(3 * c),
            f"{dst}.proj_out.weight": sd[f"{src}.to_out.0.weight"][..., None],
            f"{dst}.proj_out.bias": sd[f"{src}.to_out.0.bias"]}


def _ldm_encoder(enc) -> dict:
    cfg, sd = enc.config, enc.state_dict()
    out = {"time_embed.0.weight": sd["time_embedding.linear_1.weight"],
           "time_embed.0.bias": sd["time_embedding.linear_1.bias"],
           "time_embed.2.weight": sd["time_embedding.linear_2.weight"],
           "time_embed.2.bias": sd["time_embedding.linear_2.bias"],
           "input_blocks.0.0.weight": sd["conv_in.weight"], "input_blocks.0.0.bias": sd["conv_in.bias"]}

    def res(src, dst):
        out.update({f"{dst}.{_res(k[len(src) + 1:])}": v for k, v in sd.items() if k.startswith(src + ".")})

    k = 1
    for level in range(len(cfg.channel_mult)):
        for j in range(cfg.num_res_blocks):
            res(f"down_blocks.{level}.resnets.{j}", f"input_blocks.{k}.0")
            if cfg.attention_levels[level]:
                out.update(_legacy_attention(sd, f"down_blocks.{level}.attentions.{j}", f"input_blocks.{k}.1",
                                             cfg.num_heads))
            k += 1
        if level < len(cfg.channel_mult) - 1:
            for p in ("weight", "bias"):
                out[f"input_blocks.{k}.0.op.{p}"] = sd[f"down_blocks.{level}.downsamplers.0.conv.{p}"]
            k += 1
    res("mid_block.resnets.0", "middle_block.0")
    out.update(_legacy_attention(sd, "mid_block.attentions.0", "middle_block.1", cfg.num_heads))
    res("mid_block.resnets.1", "middle_block.2")
    for i in range(len(cfg.channel_mult)):
        res(f"fea_tran.{i}", f"fea_tran.{i}")
    return {f"structcond_stage_model.{k}": v for k, v in out.items()}


def _ldm_vae(vae: AutoencoderKL) -> dict:
    n = len(vae.config.block_out_channels)
    out = {}
    for k, v in vae.state_dict().items():
        new = (k.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
               .replace("mid_block.resnets.0", "mid.block_1").replace("mid_block.resnets.1", "mid.block_2"))
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets", r"encoder.down.\1.block", new)
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0", r"encoder.down.\1.downsample", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets", lambda m: f"decoder.up.{n - 1 - int(m[1])}.block", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0",
                     lambda m: f"decoder.up.{n - 1 - int(m[1])}.upsample", new)
        if "mid_block.attentions.0" in new:
            new = new.replace("mid_block.attentions.0", "mid.attn_1")
            for a, b in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
                new = new.replace(f".{a}.", f".{b}.")
            v = v[..., None, None] if v.ndim == 2 else v
        out[new] = v
    return out


@pytest.fixture(scope="module")
def released(pipe, tmp_path_factory):
    """A tiny released-layout pair of checkpoints from random modules of the tiny architecture."""
    torch.manual_seed(11)
    unet = ss.build_prior_unet(UNET)
    enc = ss.miniature_encoder(unet)
    sft = ss.SFTAdapter.for_unet(unet, cond_channels=16, hidden=8, norm=True, norm_num_groups=8)
    from yonos.models import build_autoencoder

    vae = build_autoencoder(VAE)
    cfw = ss.CFW.for_vae(vae, num_fuse_block=1, num_grow_ch=4, norm_num_groups=4)
    for m in (unet, enc, sft, vae, cfw):  # no zero-initialised tensors: every mapped value is distinct
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn_like(p) * 0.1)
    lpb = UNET["layers_per_block"]
    ldm_unet = _ldm_unet(unet, lpb)
    main = {f"model.diffusion_model.{k}": v for k, v in {**ldm_unet, **_ldm_spade(sft, lpb)}.items()}
    main.update(_ldm_encoder(enc))
    main.update({"first_stage_model.encoder.conv_in.weight": torch.zeros(1),  # SD's VAE copy: not used
                 "cond_stage_model.model.ln_final.weight": torch.zeros(1), "betas": torch.zeros(1000)})
    vq = _ldm_vae(vae)
    vq.update({f"decoder.fusion_layer_{k[len('fusion_layers.'):]}": v for k, v in cfw.state_dict().items()})
    vq["loss.discriminator.main.0.weight"] = torch.zeros(1)
    folder = tmp_path_factory.mktemp("weights")
    torch.save({"state_dict": main, "global_step": 1}, folder / UNET_CKPT)
    torch.save({"state_dict": vq}, folder / CFW_CKPT)
    from yonos.weights import sha256

    return folder, {UNET_CKPT: sha256(folder / UNET_CKPT), CFW_CKPT: sha256(folder / CFW_CKPT)}, (
        unet, enc, sft, vae, cfw)


def _kwargs():
    return dict(null_emb=torch.randn(1, 1, 16), unet_config=ss.build_prior_unet(UNET).config,
                vae_config=AutoencoderKL(**_vae_kwargs()).config,
                encoder_config=dict(ss.miniature_encoder(ss.build_prior_unet(UNET)).config),
                sft_config=dict(hidden=8, norm_num_groups=8),
                cfw_config=dict(num_fuse_block=1, num_grow_ch=4, norm_num_groups=4),
                schedule=CFG["model"], options={"steps": 2})


def _vae_kwargs():
    n = len(VAE["block_out_channels"])
    return dict(block_out_channels=tuple(VAE["block_out_channels"]), layers_per_block=1, latent_channels=4,
                norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * n,
                up_block_types=("UpDecoderBlock2D",) * n)


def test_converter_round_trips_a_tiny_released_checkpoint(released, tmp_path):
    folder, hashes, (unet, enc, sft, vae, cfw) = released
    kw = _kwargs()
    kw["unet_config"], kw["vae_config"] = dict(kw["unet_config"]), dict(kw["vae_config"])
    out = convert_stablesr(folder, tmp_path / "converted", hashes=hashes, **kw)
    pipe = ss.StableSRPipeline.from_pretrained(out)
    for ours, theirs in ((pipe.denoiser.unet, unet), (pipe.denoiser.encoder, enc), (pipe.denoiser.sft, sft),
                         (pipe.vae, vae), (pipe.cfw, cfw)):
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    # representative keys land where the mapping says
    sd = torch.load(folder / UNET_CKPT, weights_only=True)["state_dict"]
    assert torch.equal(pipe.denoiser.sft.layers["up_blocks-1-resnets-0"].norm.weight,
                       sd["model.diffusion_model.output_blocks.2.0.spade.param_free_norm.weight"])
    qkv = sd["structcond_stage_model.middle_block.1.qkv.weight"]  # 4 heads of 8 channels, legacy q,k,v order
    assert torch.equal(pipe.denoiser.encoder.mid_block.attentions[0].to_k.weight[8:16], qkv[32:40, :, 0])
    # the converted pieces compute what the source modules compute
    x, t, cond = _x(1, 8, 8), torch.tensor([300]), torch.zeros(1, 1, 16)
    ref = ss.StableSRDenoiser(unet, enc, sft)(x, t, encoder_hidden_states=cond).sample
    torch.testing.assert_close(pipe.denoiser(x, t, encoder_hidden_states=cond).sample, ref)
    assert pipe.describe()["sft"] == "spade (groupnorm)"
    with pytest.raises(UserError, match="already exists"):
        convert_stablesr(folder, out, hashes=hashes, **kw)


def test_converter_rejects_a_wrong_hash_and_names_missing_files(released, tmp_path):
    folder, hashes, _ = released
    kw = _kwargs()
    with pytest.raises(UserError, match="sha256"):
        convert_stablesr(folder, tmp_path / "bad", hashes={**hashes, UNET_CKPT: "0" * 64}, **kw)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(UserError, match=f"{UNET_CKPT} and {CFW_CKPT}.*{tmp_path / 'empty'}"):
        convert_stablesr(tmp_path / "empty", tmp_path / "x", hashes=hashes, **kw)
    # the default pins are the registry's (yonos/data/pins/hf_files.tsv)
    assert pinned_hashes()[UNET_CKPT].startswith("b8862bf3") and pinned_hashes()[CFW_CKPT].startswith("5b20ed9a")


def test_a_two_level_autoencoder_saves_no_cfw_and_loads_back(tmp_path):
    """A 2-level VAE has no decoder level to fuse at: the empty CFW is not written (it could not be read back)."""
    cfg = {**CFG, "autoencoder": {**VAE, "block_out_channels": [8, 16]}}
    p = ss.StableSRPipeline.from_params(cfg, 4, seed=0, options={"steps": 1})
    assert p.cfw is not None and len(p.cfw.fusion_layers) == 0
    p.save_pretrained(tmp_path / "ckpt")
    assert not (tmp_path / "ckpt" / "cfw").exists()
    assert ss.StableSRPipeline.from_pretrained(tmp_path / "ckpt").cfw is None
