"""LDM-SR: the loss's inputs, the adapter contract, eta, the training stage (resume), the released-folder loader."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, LDMSuperResolutionPipeline, UNet2DModel, VQModel
from safetensors.torch import save_file

from methods.base import SRMethod
from yonos.baselines import ldmsr as L
from yonos.config import run_dir
from yonos.data.degradations import degrade
from yonos.errors import UserError
from yonos.models import LatentCodec
from yonos.plugins import load_method
from yonos.resize import imresize
from yonos.sampler import per_image_generators

VAE_F2 = dict(block_out_channels=[8, 16], layers_per_block=1, latent_channels=4, norm_num_groups=4)
UNET = dict(block_out_channels=[8, 16], layers_per_block=1, down_block_types=["DownBlock2D", "AttnDownBlock2D"],
            up_block_types=["AttnUpBlock2D", "UpBlock2D"], norm_num_groups=4, attention_head_dim=8)
LCFG = dict(unet=UNET, num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0155, timestep_spacing="trailing",
            eta=1.0, steps=3)


def _vae(**kw) -> AutoencoderKL:
    n = len(kw["block_out_channels"])
    return AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n, **kw)


def _perturb(*modules, seed=1, scale=0.05):
    """Random weights everywhere (a fresh UNet2DModel's conv_out is zero: it would predict eps = 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.add_(torch.randn(p.shape, generator=g) * scale)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and 2-thread OpenMP spins badly on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    p = L.LDMSRPipeline.from_params({"ldmsr": LCFG}, 4, seed=0, vae=_vae(**VAE_F2))
    _perturb(p.unet)
    return p


# --- the loss sees [z_t, LR pixels in [-1, 1] at latent size] ---------------------------------------


def test_loss_feeds_noisy_latent_then_lr_pixels_at_latent_size(pipe):
    hr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    codec = LatentCodec(pipe.vae)
    z_h = codec.encode(hr).detach()
    batch = {"hr": hr, "seed": torch.tensor([4, 5]), "z_h": z_h, "t": torch.tensor([10, 900]),
             "eps": torch.randn(z_h.shape, generator=torch.Generator().manual_seed(6))}
    seen = {}

    def unet(x, t):
        seen["x"], seen["t"] = x, t
        return type("Out", (), {"sample": torch.zeros(x.shape[0], 4, *x.shape[-2:])})

    task = L.LDMSRTask(codec, pipe.scheduler.alphas_cumprod, 4, {"kind": "bicubic"})
    loss = L.ldmsr_loss(unet, batch, task=task)
    torch.testing.assert_close(loss, batch["eps"].pow(2).mean())  # L2 on eps, unweighted
    abar = pipe.scheduler.alphas_cumprod[batch["t"]].view(-1, 1, 1, 1)
    torch.testing.assert_close(seen["x"][:, :4], abar.sqrt() * z_h + (1 - abar).sqrt() * batch["eps"])
    lr = degrade(hr, [4], [4, 5], {"kind": "bicubic"})[4]  # 4 x 4; the f = 2 latent is 8 x 8
    torch.testing.assert_close(seen["x"][:, 4:], imresize(lr * 2 - 1, size=(8, 8)))
    assert torch.equal(seen["t"], batch["t"])
    assert pipe.scheduler.config.beta_schedule == "scaled_linear" and pipe.scheduler.config.prediction_type == "epsilon"
    torch.testing.assert_close(pipe.scheduler.betas[[0, -1]], torch.tensor([0.0015, 0.0155]))


# --- adapter -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("ldmsr") / "ckpt"
    pipe.save_pretrained(path)
    return path


def test_adapter_honours_the_contract(checkpoint, pipe):
    method = load_method("ldmsr", checkpoint=str(checkpoint))
    assert isinstance(method, SRMethod) and method.is_diffusion and method.scales == (4,)
    lr = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(5))  # padded to the U-Net's multiple
    sr = method.upscale(lr, scale=4, steps=3, generator=per_image_generators([7, 8]))
    assert sr.shape == (2, 3, 20, 28) and sr.dtype == torch.float32
    assert 0 <= float(sr.min()) and float(sr.max()) <= 1 and float(sr.std()) > 0.01
    alone = method.upscale(lr[1:], scale=4, steps=3, generator=per_image_generators([8]))
    torch.testing.assert_close(alone, sr[1:], atol=1e-5, rtol=0)  # per image, whatever the batch
    again = pipe.upscale_batch(lr[1:], steps=3, generator=per_image_generators([8]))  # the saved folder reloads
    torch.testing.assert_close(again, alone, atol=1e-5, rtol=0)
    other = method.upscale(lr[1:], scale=4, steps=3, generator=per_image_generators([9]))
    assert (other - alone).abs().max() > 1e-3  # the generator matters
    with pytest.raises(UserError, match="x4"):
        method.upscale(lr, scale=2, steps=3)
    with pytest.raises(UserError, match="steps=0"):
        method.upscale(lr, scale=4, steps=0)


def test_eta_defaults_to_one_and_is_stated(checkpoint):
    method = load_method("ldmsr", checkpoint=str(checkpoint))
    d = method.describe()
    assert d["eta"] == 1.0 and "eta=1" in d["sampler"]
    for knob in ("default_steps", "sampler", "eta", "autoencoder", "condition", "padding", "tiling", "dtype"):
        assert knob in d
    assert "stands in for LDM's VQ-f4" in d["autoencoder"] and "bicubic x2" in d["condition"]
    assert L.LDMSRPipeline(method.pipe.unet, method.pipe.vae, method.pipe.scheduler, 4).options["eta"] == 1.0
    lr = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(2))

    def run(**options):
        m = load_method("ldmsr", checkpoint=str(checkpoint), **options)
        return m.upscale(lr, scale=4, steps=3, generator=per_image_generators([3]))

    default, eta1, eta0 = run(), run(eta=1.0), run(eta=0.0)
    assert torch.equal(default, eta1) and (default - eta0).abs().max() > 1e-3  # eta = 1 draws step noise
    assert load_method("ldmsr", checkpoint=str(checkpoint), eta=0.0).describe()["eta"] == 0.0
    with pytest.raises(UserError, match="eta"):
        load_method("ldmsr", checkpoint=str(checkpoint), eta=2.0)


# --- training stage ----------------------------------------------------------------------------------


@pytest.fixture()
def smoke_run(smoke_cfg, tmp_path):
    """The smoke profile with its upstream faked: a tiny autoencoder and a 16-crop latent bank (f = 2)."""
    cfg = copy.deepcopy(smoke_cfg)
    cfg.update(run_root=str(tmp_path / "runs"), device="cpu")
    cfg["teacher"]["steps"], cfg["distill"]["steps"] = 6, 2  # budget: 6 + 1 link x 2 = 8 steps
    cfg["train"].update(batch_size=4, checkpoint_every=3)
    torch.manual_seed(0)
    from yonos.models import build_autoencoder

    vae = build_autoencoder(cfg["autoencoder"])
    vae.save_pretrained(run_dir(cfg, "train_autoencoder", "vae"), safe_serialization=True)
    hr = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    hr = (hr * 255).round() / 255
    with torch.no_grad():
        z_h = LatentCodec(vae).encode(hr)
    bank = run_dir(cfg, "encode_latents", "bank.safetensors")
    bank.parent.mkdir(parents=True)
    save_file({"hr": (hr * 255).round().to(torch.uint8), "seed": torch.arange(16), "z_h": z_h.contiguous()}, str(bank))
    return cfg


def test_training_stage_writes_a_loadable_checkpoint_and_resumes_exactly(smoke_run, monkeypatch):
    from yonos.stages import train_ldmsr
    from yonos.stages._common import run_stage

    cfg = smoke_run
    ref = dict(copy.deepcopy(cfg), run_root=cfg["run_root"] + "-ref")
    for name in ("train_autoencoder", "encode_latents"):
        shutil.copytree(run_dir(cfg, name), run_dir(ref, name))
    run_stage(train_ldmsr.NAME, train_ldmsr.run, ref)
    out = run_dir(ref, train_ldmsr.NAME)
    log = json.loads((out / "train_log.json").read_text())
    assert log["steps"] == 8 and len(log["loss_every_step"]) == 8
    assert (out / "state").is_dir()
    assert json.loads((out / "checkpoint" / L.CONFIG_NAME).read_text())["trained_steps"] == 8
    method = load_method("ldmsr", checkpoint=str(out / "checkpoint"))
    sr = method.upscale(torch.rand(1, 3, 8, 8), scale=4, steps=2, generator=per_image_generators([0]))
    assert sr.shape == (1, 3, 32, 32)
    assert method.pipe.unet.config.in_channels == 4 + 3 and method.describe()["default_steps"] == 4

    calls = []

    def crash_at_call_5(unet, batch, task):
        calls.append(1)
        assert int(batch["t"].max()) < cfg["ldmsr"]["num_train_timesteps"]
        if len(calls) == 5:  # after the state of step 3
            raise KeyboardInterrupt
        return L.ldmsr_loss(unet, batch, task=task)

    monkeypatch.setattr(train_ldmsr, "ldmsr_loss", crash_at_call_5)
    with pytest.raises(KeyboardInterrupt):
        train_ldmsr.run(cfg)
    monkeypatch.undo()
    state = run_dir(cfg, train_ldmsr.NAME, "state")
    assert json.loads((state / "trainer_state.json").read_text())["step"] == 3
    train_ldmsr.run(cfg)  # resumes at step 3
    resumed = json.loads((run_dir(cfg, train_ldmsr.NAME) / "train_log.json").read_text())
    assert resumed["loss_every_step"] == log["loss_every_step"]
    a = load_method("ldmsr", checkpoint=str(run_dir(cfg, train_ldmsr.NAME, "checkpoint"))).pipe.unet.state_dict()
    b = method.pipe.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)
    changed = copy.deepcopy(cfg)
    changed["ldmsr"]["beta_end"] = 0.012
    with pytest.raises(UserError, match="ldmsr.beta_end.*--fresh"):
        train_ldmsr.run(changed)


def test_examples_draw_t_in_ldmsr_schedule(smoke_run):
    from yonos.stages.train_ldmsr import examples

    cfg = copy.deepcopy(smoke_run)
    cfg["ldmsr"]["num_train_timesteps"] = 50
    ts = torch.stack([examples(cfg, 64, stream="x4", latent_shape=(4, 16, 16))[i]["t"] for i in range(64)])
    assert int(ts.max()) < 50 and len(set(ts.tolist())) > 20


# --- the released LDMSuperResolutionPipeline folder ------------------------------------------------------


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A tiny folder of the released class and layout: model_index.json, unet/, vqvae/, scheduler/, .bin weights."""
    torch.manual_seed(0)
    unet = UNet2DModel(in_channels=6, out_channels=3, sample_size=16, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8, norm_num_groups=4)
    vq = VQModel(block_out_channels=(8, 8, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                 up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=3, num_vq_embeddings=64, norm_num_groups=4,
                 layers_per_block=1, sample_size=32)
    _perturb(unet, vq, seed=4)
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0155, num_train_timesteps=1000,
                          clip_sample=False, set_alpha_to_one=True, steps_offset=1)
    folder = tmp_path_factory.mktemp("released") / "ldm_sr_x4"
    ref = LDMSuperResolutionPipeline(vqvae=vq, unet=unet, scheduler=sched)
    ref.save_pretrained(folder, safe_serialization=False)
    files = ("unet/diffusion_pytorch_model.bin", "vqvae/diffusion_pytorch_model.bin")
    hashes = {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in files}
    ref.set_progress_bar_config(disable=True)
    return folder, hashes, ref


def test_released_folder_runs_as_diffusers_pipeline(released, monkeypatch):
    folder, hashes, ref = released
    monkeypatch.setenv(L.ENV_DIR, str(folder))
    method = load_method("ldmsr", sha256=hashes)  # no checkpoint: $YONOS_LDMSR_DIR
    assert method.scales == (4,) and isinstance(method.pipe.vae, VQModel)
    for ours, theirs in ((method.pipe.unet, ref.unet), (method.pipe.vae, ref.vqvae)):
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    d = method.describe()
    assert d["eta"] == 1.0 and "leading spacing, steps_offset 1" in d["sampler"] and "VQ-f4" in d["autoencoder"]
    lr = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    method.pipe.set_options(eta=0.0)  # diffusers draws eta > 0 noise from the global RNG: compare at eta = 0
    ours = method.upscale(lr, scale=4, steps=4, generator=per_image_generators([5, 6]))
    theirs = ref(image=lr * 2 - 1, num_inference_steps=4, eta=0.0, generator=per_image_generators([5, 6]),
                 output_type="pt").images
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert (ours - theirs).abs().max() < 1e-5 and float(ours.std()) > 0.01
    odd = method.upscale(lr[:1, :, :5, :7], scale=4, steps=2, generator=per_image_generators([5]))
    assert odd.shape == (1, 3, 20, 28)


def test_released_loader_checks_hashes_and_names_missing_files(released, tmp_path, monkeypatch):
    folder, hashes, _ = released
    with pytest.raises(UserError, match="sha256 .* is not the pinned") as err:
        load_method("ldmsr", checkpoint=str(folder), sha256={**hashes, "vqvae/diffusion_pytorch_model.bin": "0" * 64})
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="sha256 .* is not the pinned .*932989fbccc2"):  # the published pins
        load_method("ldmsr", checkpoint=str(folder))
    pins, unet_bin, vq_bin = L.released_pins(), "unet/diffusion_pytorch_model.bin", "vqvae/diffusion_pytorch_model.bin"
    assert pins[unet_bin] >= {"932989fbccc2aa77e143bb8e3f5db46b650c1a7bb0003b5d541d417e18c6f3b3", L.FP16_PINS[unet_bin]}
    assert "c58407fc41070ccb9ab63f4ddfb1d13a3e607881033541e41232e41c66b877c9" in pins[vq_bin]
    monkeypatch.setenv(L.ENV_DIR, str(tmp_path / "nowhere"))
    with pytest.raises(UserError) as err:
        load_method("ldmsr")
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "nowhere") in msg and "yonos download ldm_sr_x4" in msg
    for f in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.bin",
              "vqvae/diffusion_pytorch_model.bin", "scheduler/scheduler_config.json"):
        assert f in msg
    with pytest.raises(UserError, match="not an LDM-SR checkpoint"):
        load_method("ldmsr", checkpoint=str(tmp_path))


# --- converter: StableSR's fine-tuned LDM-SR in the CompVis key layout -----------------------------------

_RES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
        "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def _compvis_unet(unet) -> dict:
    """UNet2DModel -> openaimodel UNetModel keys, written by LDM's rules (AttentionBlock: legacy per-head qkv)."""
    lpb = unet.config.layers_per_block
    top = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
           "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0", "conv_out": "out.2"}
    out, attn = {}, {}
    for k, v in unet.state_dict().items():
        mod, _, p = k.rpartition(".")
        if mod in top:
            out[f"{top[mod]}.{p}"] = v
        elif m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(\w+)$", k):
            out[f"input_blocks.{1 + int(m[1]) * (lpb + 1) + int(m[2])}.0.{_RES[m[3]]}.{m[4]}"] = v
        elif m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)$", k):
            attn.setdefault(f"input_blocks.{1 + int(m[1]) * (lpb + 1) + int(m[2])}.1", {})[m[3]] = v
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)$", k):
            out[f"input_blocks.{(int(m[1]) + 1) * (lpb + 1)}.0.op.{m[2]}"] = v
        elif m := re.match(r"mid_block\.resnets\.(\d)\.(\w+)\.(\w+)$", k):
            out[f"middle_block.{2 * int(m[1])}.{_RES[m[2]]}.{m[3]}"] = v
        elif m := re.match(r"mid_block\.attentions\.0\.(.+)$", k):
            attn.setdefault("middle_block.1", {})[m[1]] = v
        elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(\w+)$", k):
            out[f"output_blocks.{int(m[1]) * (lpb + 1) + int(m[2])}.0.{_RES[m[3]]}.{m[4]}"] = v
        elif m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)$", k):
            attn.setdefault(f"output_blocks.{int(m[1]) * (lpb + 1) + int(m[2])}.1", {})[m[3]] = v
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)$", k):
            b = int(m[1])
            out[f"output_blocks.{b * (lpb + 1) + lpb}.{2 if hasattr(unet.up_blocks[b], 'attentions') else 1}"
                f".conv.{m[2]}"] = v
        else:
            raise AssertionError(k)
    for prefix, a in attn.items():
        c = a["to_q.weight"].shape[0]
        heads = c // unet.config.attention_head_dim
        out[f"{prefix}.qkv.weight"] = torch.stack(
            [a[f"to_{x}.weight"].reshape(heads, c // heads, c) for x in "qkv"], 1).reshape(3 * c, c, 1)
        out[f"{prefix}.qkv.bias"] = torch.stack([a[f"to_{x}.bias"].reshape(heads, c // heads) for x in "qkv"],
                                                1).reshape(3 * c)
        out[f"{prefix}.proj_out.weight"], out[f"{prefix}.proj_out.bias"] = a["to_out.0.weight"][..., None], a[
            "to_out.0.bias"]
        out[f"{prefix}.norm.weight"], out[f"{prefix}.norm.bias"] = a["group_norm.weight"], a["group_norm.bias"]
    return {L.UNET_PREFIX + k: v for k, v in out.items()}


def _compvis_vq(vq) -> dict:
    """VQModel -> LDM's VQModelInterface keys (encoder.down.i.block.j, decoder.up.<reversed level>, mid.attn_1
    with 1x1 convs)."""
    n = len(vq.config.block_out_channels)
    out = {}
    for k, v in vq.state_dict().items():
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets", r"encoder.down.\1.block", k)
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0", r"encoder.down.\1.downsample", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets", lambda m: f"decoder.up.{n - 1 - int(m[1])}.block", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0", lambda m: f"decoder.up.{n - 1 - int(m[1])}.upsample",
                     new)
        new = re.sub(r"mid_block\.resnets\.(\d)", lambda m: f"mid.block_{int(m[1]) + 1}", new)
        new = new.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        if "mid_block.attentions.0" in new:
            new = new.replace("mid_block.attentions.0", "mid.attn_1").replace("group_norm", "norm")
            for d, o in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
                new = new.replace(f".{d}.", f".{o}.")
            v = v[:, :, None, None] if v.ndim == 2 else v
        out[L.VQ_PREFIX + new] = v
    return out


class NotATensor:  # anything torch.load(weights_only=True) must refuse
    pass


def test_finetune_converter_round_trips_a_tiny_compvis_checkpoint(released, tmp_path):
    _, _, ref = released
    sd = {**_compvis_unet(ref.unet), **_compvis_vq(ref.vqvae), "betas": ref.scheduler.betas.clone(),
          "model_ema.num_updates": torch.tensor(5)}
    ckpt = tmp_path / L.FINETUNE_CKPT
    torch.save({"state_dict": sd, "global_step": 119}, ckpt)
    pin = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    kw = dict(unet_config=ref.unet.config, vq_config=ref.vqvae.config, scheduler_config=L.LDM_SR_SCHEDULER)
    out = L.convert_finetune(ckpt, tmp_path / "converted", sha256=pin, **kw)
    assert sorted(p.name for p in out.iterdir()) == ["conversion.json", "model_index.json", "scheduler", "unet",
                                                     "vqvae"]
    method = load_method("ldmsr", checkpoint=str(out))  # read like the release: hashes from conversion.json
    for ours, theirs in ((method.pipe.unet, ref.unet), (method.pipe.vae, ref.vqvae)):
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    qkv = sd[L.UNET_PREFIX + "middle_block.1.qkv.weight"]  # 2 heads of 8 channels: rows q0 k0 v0 q1 k1 v1
    assert torch.equal(method.pipe.unet.mid_block.attentions[0].to_k.weight[8:16], qkv[32:40, :, 0])
    assert method.describe()["eta"] == 1.0
    with pytest.raises(UserError, match="already exists"):
        L.convert_finetune(ckpt, out, sha256=pin, **kw)
    (out / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"tampered")
    with pytest.raises(UserError, match="is not the pinned"):
        load_method("ldmsr", checkpoint=str(out))


def test_finetune_converter_checks_hash_refuses_objects_and_names_missing_files(released, tmp_path):
    _, _, ref = released
    kw = dict(unet_config=ref.unet.config, vq_config=ref.vqvae.config, scheduler_config=L.LDM_SR_SCHEDULER)
    ckpt = tmp_path / L.FINETUNE_CKPT
    torch.save({"state_dict": {**_compvis_unet(ref.unet), **_compvis_vq(ref.vqvae)}, "extra": NotATensor()}, ckpt)
    with pytest.raises(UserError, match="sha256 is not the pinned 000000000000"):
        L.convert_finetune(ckpt, tmp_path / "a", sha256="0" * 64, **kw)
    with pytest.raises(UserError, match="cannot be read as plain tensors"):
        L.convert_finetune(ckpt, tmp_path / "b", sha256=hashlib.sha256(ckpt.read_bytes()).hexdigest(), **kw)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(UserError, match=f"{L.FINETUNE_CKPT}: missing.*stablesr_ldm_x4.*{tmp_path / 'none'}/") as err:
        L.convert_finetune(tmp_path / "none" / L.FINETUNE_CKPT, tmp_path / "c", **kw)
    assert "\n" not in str(err.value)
    assert L.finetune_pin() == "a4977665bc20d5976c6cfafbb914aca162578f4012252ef2df4839a718be12da"
