"""The prior (the miniature's Stable Diffusion, issue 9 item 2) and the YONOS teacher started from it.

train_prior trains an unconditional eps-prediction latent U-Net on the bank's z_h (smoke) or copies a pin
whose sha256, recipe and autoencoder are checked (embedded); the teacher with `init: prior` widens its
conv_in with zero weights, so it starts at exactly the prior's function of z_t, whatever z_l."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from yonos.checkpoint import digest
from yonos.config import run_dir
from yonos.errors import UserError
from yonos.models import build_autoencoder
from yonos.stages import train_prior as tp
from yonos.stages._common import run_stage

BANK = 12  # crops in the test's latent bank


@pytest.fixture
def cfg(tmp_path, smoke_cfg):
    """A smoke run folder holding what train_prior and train_teacher read: an autoencoder and a latent bank."""
    cfg = copy.deepcopy(smoke_cfg)
    cfg["run_root"] = str(tmp_path / "runs")
    cfg["prior"].update(pinned=None, steps=4, batch_size=4, warmup_steps=1)
    cfg["train"].update(batch_size=2, checkpoint_every=0)
    cfg["teacher"].update(steps=2, init="scratch")
    torch.manual_seed(0)
    build_autoencoder(cfg["autoencoder"]).save_pretrained(run_dir(cfg, "train_autoencoder", "vae"),
                                                          safe_serialization=True)
    g = torch.Generator().manual_seed(0)
    side, ch = cfg["train"]["hr_crop"] // 2, cfg["autoencoder"]["latent_channels"]  # smoke: f = 2
    bank = {k: torch.randn(BANK, ch, side, side, generator=g) for k in ("z_h", "z_l_x2", "z_l_x4")}
    bank["hr"] = torch.randint(0, 256, (BANK, 3, 2 * side, 2 * side), generator=g, dtype=torch.uint8)
    bank["seed"] = torch.arange(BANK)
    path = run_dir(cfg, "encode_latents", "bank.safetensors")
    path.parent.mkdir(parents=True)
    save_file(bank, str(path))
    return cfg


def test_prior_loss_is_eps_mse_on_sd_schedule(cfg):
    from diffusers import DDPMScheduler

    from yonos.baselines.stablesr import build_prior_unet

    unet = build_prior_unet(cfg["model"]["unet"], 4)
    g = torch.Generator().manual_seed(1)
    batch = {"z_h": torch.randn(2, 4, 8, 8, generator=g), "eps": torch.randn(2, 4, 8, 8, generator=g),
             "t": torch.tensor([0, 999])}
    abar = DDPMScheduler(**tp.schedule(cfg)).alphas_cumprod
    null = torch.zeros(1, 1, 16)
    loss = tp.prior_loss(unet, batch, alphas_cumprod=abar, null_emb=null, prediction_type="epsilon")
    a, s = abar[batch["t"]].sqrt().view(-1, 1, 1, 1), (1 - abar[batch["t"]]).sqrt().view(-1, 1, 1, 1)
    z_t = a * batch["z_h"] + s * batch["eps"]
    want = (unet(z_t, batch["t"], encoder_hidden_states=null.expand(2, -1, -1)).sample - batch["eps"]).pow(2).mean()
    torch.testing.assert_close(loss, want)
    assert abs(float(abar[999]) - 0.0047) < 1e-4  # SD's scaled-linear schedule: alpha_999^2


def test_smoke_trains_a_loadable_prior(cfg):
    run_stage(tp.NAME, tp.run, cfg)
    out = run_dir(cfg, tp.NAME)
    log = json.loads((out / "train_log.json").read_text())
    assert log["steps"] == 4 and all(torch.isfinite(torch.tensor(log["loss_every_step"])))
    assert not (out / "PIN.json").exists()
    unet, null = tp.load_prior(cfg)
    assert (unet.config.in_channels, unet.config.out_channels) == (4, 4)
    assert null.shape == (1, 1, cfg["model"]["unet"]["cross_attention_dim"]) and not null.any()
    again, _, _ = tp.train_recipe(cfg)  # seeded: the same recipe gives the same weights
    for (name, p), q in zip(unet.state_dict().items(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_a_pin_is_loaded_only_when_hash_recipe_and_autoencoder_agree(cfg, tmp_path):
    from yonos.pin_prior import FILES, train_pin, verify_prior

    pin_dir = tmp_path / "pin"
    cfg["prior"]["pinned"] = str(pin_dir)
    run_stage(tp.NAME, tp.run, {**cfg, "prior": {**cfg["prior"], "pinned": None}})  # a trained run first
    train_pin(cfg)
    pin = json.loads((pin_dir / "PIN.json").read_text())
    assert pin["sha256"] == digest(pin_dir / FILES["sha256"]) and pin["steps"] == 4
    assert pin["command"] == "python -m yonos.pin_prior --profile smoke"
    assert pin["autoencoder"]["sha256"] == digest(run_dir(cfg, "train_autoencoder", "vae") / tp.WEIGHTS)
    assert str(tmp_path) not in (pin_dir / "PIN.json").read_text()  # no machine paths
    assert train_pin(cfg) and json.loads((pin_dir / "PIN.json").read_text())["sha256"] == pin["sha256"]  # resumed

    run_stage(tp.NAME, tp.run, cfg)
    out = run_dir(cfg, tp.NAME)
    assert (out / "PIN.json").is_file() and not (out / "train_log.json").exists()
    assert tp.prior_digest(cfg) == pin["sha256"]
    tp.load_prior(cfg)

    with pytest.raises(UserError, match=r"smoke\.prior\.steps differs .*python -m yonos\.pin_prior"):
        verify_prior(pin_dir, {**cfg, "prior": {**cfg["prior"], "steps": 5}})
    unet = {**cfg["model"]["unet"], "block_out_channels": [16, 48]}
    with pytest.raises(UserError, match=r"smoke\.model\.unet differs"):
        verify_prior(pin_dir, {**cfg, "model": {**cfg["model"], "unet": unet}})

    corrupt = tmp_path / "corrupt"
    shutil.copytree(pin_dir, corrupt)
    data = bytearray((corrupt / FILES["sha256"]).read_bytes())
    data[-1] ^= 1
    (corrupt / FILES["sha256"]).write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256 differs"):
        run_stage(tp.NAME, tp.run, {**cfg, "prior": {**cfg["prior"], "pinned": str(corrupt)}})
    with pytest.raises(UserError, match="pinned prior missing"):
        verify_prior(tmp_path / "absent", cfg)

    vae = build_autoencoder(cfg["autoencoder"])  # another autoencoder (other seed) in the run
    vae.save_pretrained(run_dir(cfg, "train_autoencoder", "vae"), safe_serialization=True)
    with pytest.raises(UserError, match="not the autoencoder the pinned prior .* python -m yonos.pin_prior"):
        verify_prior(pin_dir, cfg)


def test_teacher_from_the_prior_starts_at_the_prior_and_refuses_a_changed_one(cfg):
    from yonos.sampler import denoise
    from yonos.stages import train_teacher
    from yonos.stages._unet import new_pipeline

    run_stage(tp.NAME, tp.run, cfg)
    prior, null = tp.load_prior(cfg)
    pipe = new_pipeline(cfg, 2, "prior")
    assert pipe.unet.config.in_channels == 2 * prior.config.in_channels
    assert pipe.scheduler.config.prediction_type == cfg["model"]["prediction_type"]  # its own objective
    g = torch.Generator().manual_seed(2)
    z_t, z_l1, z_l2 = (torch.randn(2, 4, 16, 16, generator=g) for _ in range(3))
    t = torch.tensor([999, 17])
    with torch.no_grad():
        a, b = denoise(pipe.unet, z_t, z_l1, t, null), denoise(pipe.unet, z_t, z_l2, t, null)
        p = prior(z_t, t, encoder_hidden_states=null.expand(2, -1, -1)).sample
    assert torch.equal(a, b)  # the z_l weights are zero: no z_l can move the output
    torch.testing.assert_close(a, p, rtol=1e-5, atol=1e-5)  # and it is the prior's function of z_t

    cfg["teacher"]["init"] = "prior"
    run_stage(train_teacher.NAME, train_teacher.run, cfg)
    assert (run_dir(cfg, "train_teacher", "checkpoint") / "unet").is_dir()
    run_stage(train_teacher.NAME, train_teacher.run, cfg)  # same prior: the finished state resumes
    with torch.no_grad():
        prior.conv_out.bias.add_(0.1)  # another prior
    prior.save_pretrained(run_dir(cfg, tp.NAME, "unet"), safe_serialization=True)
    with pytest.raises(UserError, match=r"init\.prior: .*refusing to resume"):
        run_stage(train_teacher.NAME, train_teacher.run, cfg)


def test_teacher_init_scratch_keeps_the_identity_of_states_saved_before_the_key(cfg, monkeypatch):
    from yonos.stages import train_teacher

    seen = []
    monkeypatch.setattr(train_teacher, "train_unet", lambda *a, identity, **k: seen.append(identity) or {})
    train_teacher.run(cfg)
    del cfg["teacher"]["init"]
    train_teacher.run(cfg)
    assert seen[0] == seen[1] and seen[0]["init"] == "new U-Net from model.unet and seed"
    cfg["teacher"]["init"] = "sideways"
    with pytest.raises(UserError, match="teacher.init"):
        train_teacher.run(cfg)
