"""StableSR training stages on smoke-sized models: train_stablesr moves only the encoder and SFT (the prior
is bit-identical), resumes exactly or refuses; train_stablesr_cfw moves only the CFW, and CFW at w = 0 is
still the plain decoder. The autoencoder has 3 levels here (smoke's has 2, which leaves no level for CFW)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from yonos import checkpoint
from yonos.baselines import stablesr as ss
from yonos.config import run_dir
from yonos.errors import UserError
from yonos.models import build_autoencoder
from yonos.plugins import load_method
from yonos.sampler import per_image_generators
from yonos.stages import train_stablesr, train_stablesr_cfw
from yonos.stages._common import run_stage
from yonos.stages.train_prior import load_prior

AE3 = {"block_out_channels": [16, 32, 32], "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 8,
       "mid_block_add_attention": False, "scaling_factor": None}


def tensors(folder) -> dict[str, torch.Tensor]:
    return load_file(str(next(folder.glob("*.safetensors"))))


def assert_equal_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def write_inputs(cfg: dict) -> None:
    """What the stages read: the frozen VAE, two training images, the latent bank, the prior folder."""
    from yonos.stages import encode_latents

    torch.manual_seed(0)
    build_autoencoder(cfg["autoencoder"]).save_pretrained(run_dir(cfg, "train_autoencoder", "vae"),
                                                          safe_serialization=True)
    images = run_dir(cfg, "prepare_data", "train")
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(2):
        x = torch.nn.functional.avg_pool2d(torch.from_numpy(rng.random((1, 3, 64, 64))).float(), 5, 1, 2)[0]
        Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(images / f"{k}.png")
    encode_latents.run(cfg)
    torch.manual_seed(3)  # train_prior's folder layout (unet/ + null text), written here instead of trained
    prior = ss.build_prior_unet(cfg["model"]["unet"], cfg["autoencoder"]["latent_channels"])
    prior.save_pretrained(run_dir(cfg, "train_prior", "unet"), safe_serialization=True)
    null = torch.randn(1, 1, prior.config.cross_attention_dim) * 0.1  # not zeros: the stage must use the prior's
    save_file({"null_text_embedding": null}, run_dir(cfg, "train_prior", "null_text_embedding.safetensors"))


@pytest.fixture(scope="module")
def cfg(tmp_path_factory, smoke_cfg):
    cfg = copy.deepcopy(smoke_cfg)
    cfg["run_root"] = str(tmp_path_factory.mktemp("runs"))
    cfg["autoencoder"] = dict(AE3)
    cfg["train"].update(latent_bank=16, batch_size=4, checkpoint_every=0, warmup_steps=1)
    cfg["teacher"]["steps"], cfg["distill"]["steps"] = 3, 1  # equal budget: 3 + 1 link x 1 = 4 steps
    cfg["decoder"].update(steps=3, batch_size=2)
    cfg["stablesr"].update(cfw_latents=4, cfw_latent_steps=2, steps=2)
    write_inputs(cfg)
    return cfg


@pytest.fixture(scope="module")
def trained(cfg):
    run_stage(train_stablesr.NAME, train_stablesr.run, cfg)
    return run_dir(cfg, train_stablesr.NAME)


def fresh_pipeline(cfg):
    """train_stablesr's starting point, rebuilt the way the stage builds it."""
    from yonos.stages._unet import load_vae

    prior, _ = load_prior(cfg)
    return ss.StableSRPipeline.from_params(cfg, cfg["direct"]["scale"], seed=cfg["seed"], vae=load_vae(cfg),
                                           unet=prior)


def test_train_stablesr_moves_only_encoder_and_sft(cfg, trained):
    ckpt = trained / "checkpoint"
    prior_file = run_dir(cfg, "train_prior", "unet")
    assert_equal_tensors(tensors(ckpt / "unet"), tensors(prior_file))  # the frozen prior, bit for bit
    assert_equal_tensors(tensors(ckpt / "vae"), tensors(run_dir(cfg, "train_autoencoder", "vae")))
    start = fresh_pipeline(cfg).denoiser
    for name, module in (("encoder", start.encoder), ("sft", start.sft)):
        after = tensors(ckpt / name)
        assert after.keys() == module.state_dict().keys()
        moved = [k for k, v in module.state_dict().items() if not torch.equal(v, after[k])]
        assert len(moved) > len(after) // 2, name
    gamma = tensors(ckpt / "sft")["layers.mid_block-resnets-0.mlp_gamma.weight"]
    assert gamma.abs().max() > 0  # zero at initialisation: the SFT hooks saw gradients
    null = load_file(str(ckpt / ss.NULL_NAME))["null_text_embedding"]
    torch.testing.assert_close(null, load_prior(cfg)[1], rtol=0, atol=0)
    config = json.loads((ckpt / ss.CONFIG_NAME).read_text())
    assert config["trained_steps"] == 4 and config["options"]["steps"] == 2 and config["stage"] == "train_stablesr"
    assert not (ckpt / "cfw").exists()
    log = json.loads((trained / "train_log.json").read_text())
    assert log["steps"] == 4 and len(log["loss_every_step"]) == 4 and np.isfinite(log["final_loss"])
    # the trainer state holds what trains: no prior weights, optimizer moments only for encoder + SFT
    state = load_file(str(trained / "state" / checkpoint.MODEL_TENSORS))
    assert state and all(k.startswith(("encoder.", "sft.")) for k in state)
    n_trainable = len(list(start.encoder.parameters())) + len(list(start.sft.parameters()))
    moments = load_file(str(trained / "state" / checkpoint.STATE_TENSORS))
    assert {k.split(".")[0] for k in moments} == {str(i) for i in range(n_trainable)}


def test_trained_checkpoint_upscales_through_the_adapter(trained):
    method = load_method("stablesr", checkpoint=str(trained / "checkpoint"))
    lr = torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(0))
    sr = method.upscale(lr, scale=4, steps=2, generator=per_image_generators([1, 2]))
    assert sr.shape == (2, 3, 32, 48) and torch.isfinite(sr).all()
    # the trained SFT steers the prior: the denoiser differs from the bare prior
    d = method.pipe.denoiser
    x, t = torch.randn(1, 8, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([500])
    cond = method.pipe.null_emb.expand(1, -1, -1)
    with torch.no_grad():
        assert not torch.allclose(d(x, t, encoder_hidden_states=cond).sample,
                                  d.unet(x[:, :4], t, encoder_hidden_states=cond).sample)


def test_train_stablesr_resumes_exactly_and_refuses_a_changed_config(cfg, trained, tmp_path):
    import shutil

    c = copy.deepcopy(cfg)
    c["run_root"] = str(tmp_path)
    for part in ("train_autoencoder", "prepare_data", "encode_latents", "train_prior"):
        shutil.copytree(run_dir(cfg, part), run_dir(c, part))
    c["train"]["checkpoint_every"] = 2
    real_loss, calls = ss.eps_loss, [0]

    def crash_at_step_3(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:  # after the state of step 2
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_stablesr, "eps_loss", crash_at_step_3)
        with pytest.raises(KeyboardInterrupt):
            train_stablesr.run(c)
    out = run_dir(c, train_stablesr.NAME)
    assert json.loads((out / "state" / checkpoint.STATE_JSON).read_text())["step"] == 2
    assert not (out / "checkpoint").exists()
    train_stablesr.run(c)  # resumes at step 2 (checkpoint_every is not part of the identity)
    for name in ("encoder", "sft"):
        assert_equal_tensors(tensors(out / "checkpoint" / name), tensors(trained / "checkpoint" / name))
    log, ref = (json.loads((d / "train_log.json").read_text()) for d in (out, trained))
    assert log["loss_every_step"] == ref["loss_every_step"]
    c["train"]["lr"] = 2e-3
    with pytest.raises(UserError, match=r"train\.lr: 0\.001 -> 0\.002.*--fresh") as err:
        train_stablesr.run(c)
    assert "\n" not in str(err.value)
    c["fresh"] = True
    train_stablesr.run(c)  # --fresh: retrains under the new config
    assert not torch.equal(tensors(out / "checkpoint" / "sft")["layers.mid_block-resnets-0.mlp_gamma.weight"],
                           tensors(trained / "checkpoint" / "sft")["layers.mid_block-resnets-0.mlp_gamma.weight"])


def test_eps_loss_refuses_timesteps_outside_the_prior_schedule(cfg):
    from yonos.train import LatentSR

    task = LatentSR(codec=None, alphas_cumprod=torch.ones(10), null_emb=torch.zeros(1, 1, 16),
                    prediction_type="epsilon", weighting="none", degradation={})
    batch = {"t": torch.tensor([3, 10]), "z_h": torch.zeros(2, 4, 8, 8), "z_l_x4": torch.zeros(2, 4, 8, 8),
             "eps": torch.zeros(2, 4, 8, 8)}
    with pytest.raises(ValueError, match="outside the prior's schedule"):
        ss.eps_loss(lambda *a: a[0][:, :4], batch, task=task, scale=4)
    c = copy.deepcopy(cfg)
    c["prior"] = dict(c.get("prior") or {}, prediction_type="v_prediction")
    with pytest.raises(UserError, match="prior.prediction_type"):
        train_stablesr.check_prior(c)


@pytest.fixture(scope="module")
def cfw_trained(cfg, trained):
    run_stage(train_stablesr_cfw.NAME, train_stablesr_cfw.run, cfg)
    return run_dir(cfg, train_stablesr_cfw.NAME)


def test_cfw_stage_moves_only_the_cfw(cfg, trained, cfw_trained):
    before, after = trained / "checkpoint", cfw_trained / "checkpoint"
    for name in ("unet", "encoder", "sft", "vae"):
        assert_equal_tensors(tensors(after / name), tensors(before / name))
    assert load_file(str(after / ss.NULL_NAME)).keys() == {"null_text_embedding"}
    torch.manual_seed(cfg["seed"])
    start = ss.miniature_cfw(cfg, build_autoencoder(cfg["autoencoder"])).state_dict()
    cfw = tensors(after / "cfw")
    assert cfw.keys() == start.keys() and any(k.startswith("fusion_layers.1.") for k in cfw)
    moved = [k for k in start if not torch.equal(start[k], cfw[k])]
    assert len(moved) > len(start) // 2
    config = json.loads((after / ss.CONFIG_NAME).read_text())
    assert config["options"]["cfw_weight"] == 0.5 and config["cfw_training"]["train_weight"] == 1.0
    metrics = json.loads((cfw_trained / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["perceptual_term"] == "ssim" and metrics["generation_seconds"] > 0


def test_trained_cfw_at_weight_zero_is_the_plain_decoder(cfw_trained):
    method = load_method("stablesr", checkpoint=str(cfw_trained / "checkpoint"))
    assert method.describe()["cfw"] == "yes"
    codec, vae = method.pipe.codec, method.pipe.vae
    up = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        z, feats = codec.encode_with_features(up)
        plain = (vae.decode(z / codec.scaling_factor).sample + 1) / 2
        assert torch.equal(codec.decode(z, feats=feats, w=0.0), plain)
        assert (codec.decode(z, feats=feats, w=0.5) - plain).abs().max() > 1e-5
    sr = method.upscale(torch.rand(1, 3, 8, 8), scale=4, steps=2, generator=per_image_generators([0]))
    assert sr.shape == (1, 3, 32, 32)


def test_generated_latents_are_per_image(cfg, trained):
    pipe = ss.StableSRPipeline.from_pretrained(trained / "checkpoint")
    whole = train_stablesr_cfw.generate(cfg, pipe, 3, 2, chunk=3)
    split = train_stablesr_cfw.generate(cfg, pipe, 3, 2, chunk=2)
    assert whole["z0"].shape == (3, 4, 8, 8) and whole["up"].shape == whole["hr"].shape == (3, 3, 32, 32)
    torch.testing.assert_close(split["z0"], whole["z0"], atol=1e-4, rtol=0)  # batched-conv rounding
    assert not torch.allclose(whole["z0"][0], whole["z0"][1])


def test_cfw_stage_with_a_two_level_autoencoder_keeps_the_plain_decoder(smoke_cfg, tmp_path):
    c = copy.deepcopy(smoke_cfg)
    c["run_root"] = str(tmp_path)
    p = ss.StableSRPipeline.from_params(c, 4, seed=0)
    ss.StableSRPipeline(p.denoiser, p.vae, None, p.scheduler, p.null_emb, 4).save_pretrained(
        run_dir(c, "train_stablesr", "checkpoint"))  # as train_stablesr saves it: no CFW
    train_stablesr_cfw.run(c)
    method = load_method("stablesr", checkpoint=str(run_dir(c, train_stablesr_cfw.NAME, "checkpoint")))
    assert method.describe()["cfw"] == "none"
    assert json.loads((run_dir(c, train_stablesr_cfw.NAME) / "metrics.json").read_text())["steps"] == 0


def test_cfw_stage_without_a_trained_stablesr_names_the_stage_to_run(smoke_cfg, tmp_path):
    c = dict(copy.deepcopy(smoke_cfg), run_root=str(tmp_path))
    with pytest.raises(UserError, match="missing; run train_stablesr first") as err:
        train_stablesr_cfw.run(c)
    assert "\n" not in str(err.value)
