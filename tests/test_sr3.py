"""SR3: noise levels drawn inside SR3's intervals, the L1 eps loss, respaced ancestral sampling from pure noise,
the adapter contract, and the train_sr3 stage (checkpoint, exact resume, refusal)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from methods.base import SRMethod
from yonos.baselines import sr3
from yonos.errors import UserError
from yonos.plugins import load_method
from yonos.resize import bicubic_down, bicubic_up
from yonos.sampler import per_image_generators, respaced_timesteps, stacked_randn

# Four levels: the LR multiple at x4 is 2, so odd LR sizes are padded and cropped back.
UNET = dict(block_out_channels=[8, 8, 8, 8], layers_per_block=1, norm_num_groups=4,
            down_block_types=["DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
            up_block_types=["AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"])
CFG = {"sr3": {"unet": UNET, "num_train_timesteps": 2000, "beta_start": 1e-6, "beta_end": 1e-2, "steps": 3}}


class Recorder(nn.Module):
    """Stands in for the U-Net: returns a fixed eps (zeros by default) and records its inputs."""

    def __init__(self, out: torch.Tensor | None = None):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))
        self.out, self.calls = out, []

    @property
    def dtype(self):
        return torch.float32

    def forward(self, x, timestep):
        self.calls.append((x.clone(), timestep.clone()))
        out = self.out if self.out is not None else torch.zeros_like(x[:, 3:])
        return type("Out", (), {"sample": out + 0 * self.p})()


@pytest.fixture(scope="module")
def schedule():
    return sr3.make_scheduler(CFG["sr3"])


# --- the maths -----------------------------------------------------------------------------------------


def test_schedule_is_sr3s_linear_betas(schedule):
    assert schedule.betas[0].item() == pytest.approx(1e-6) and schedule.betas[-1].item() == pytest.approx(1e-2)
    assert len(schedule.betas) == 2000 and schedule.config.prediction_type == "epsilon"
    g = sr3.gammas(schedule)
    assert g[0] == 1 and torch.all(g[1:] < g[:-1]) and g[-1] < 1e-4  # gamma_T ~ 4.5e-5: nearly pure noise


class _Crops(torch.utils.data.Dataset):
    def __len__(self):
        return 3000

    def __getitem__(self, i):
        return {"hr": torch.zeros(3, 8, 8), "seed": i}


def test_gamma_is_drawn_inside_its_neighbouring_interval(schedule):
    g = sr3.gammas(schedule)
    ds = sr3.NoiseLevels(_Crops(), g, seed=0, stream="x4/sr3-noise")
    items = [ds[i] for i in range(len(ds))]
    t = torch.stack([it["t"] for it in items])
    gamma = torch.stack([it["gamma"] for it in items])
    assert t.min() >= 1 and t.max() <= 2000 and len(t.unique()) > 1000  # t ~ U{1..T}
    assert torch.all(gamma <= g[t - 1]) and torch.all(gamma >= g[t])  # gamma_t <= gamma <= gamma_{t-1}
    u = (g[t - 1] - gamma) / (g[t - 1] - g[t])  # where in its interval each gamma fell: uniform
    assert 0.45 < float(u.mean()) < 0.55 and float(u.min()) < 0.02 and float(u.max()) > 0.98
    assert items[0]["eps"].shape == (3, 8, 8)
    again = ds[17]  # a pure function of the example index: resumable
    assert torch.equal(again["eps"], items[17]["eps"]) and again["gamma"] == items[17]["gamma"]


def test_the_loss_is_l1_on_eps_conditioned_on_sqrt_gamma():
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 16, 16, generator=g)
    eps = torch.randn(2, 3, 16, 16, generator=g)
    gamma = torch.tensor([0.9, 0.04], dtype=torch.float64)
    out = eps + torch.randn(2, 3, 16, 16, generator=g) * 0.3
    net = Recorder(out)
    loss = sr3.sr3_loss(net, {"hr": hr, "eps": eps, "gamma": gamma, "seed": torch.tensor([0, 1])},
                        scale=4, degradation={"kind": "bicubic"})
    torch.testing.assert_close(loss, (out - eps).abs().mean())
    assert abs(loss.item() - (out - eps).pow(2).mean().item()) > 0.05  # not L2
    (x, level), = net.calls
    torch.testing.assert_close(level, 1000 * gamma.sqrt().float())  # continuous sqrt(gamma), as a float
    torch.testing.assert_close(x[:, :3], bicubic_up(bicubic_down(hr, 4).clamp(0, 1), 4) * 2 - 1)
    torch.testing.assert_close(x[:, 3:], gamma.sqrt().float().view(2, 1, 1, 1) * (hr * 2 - 1)
                               + (1 - gamma).sqrt().float().view(2, 1, 1, 1) * eps)


def test_one_step_starts_from_pure_noise_at_the_last_timestep(schedule):
    c = torch.rand(2, 3, 8, 8) * 2 - 1
    net = Recorder()
    x0 = sr3.sample(net, schedule, c, steps=1, generators=per_image_generators([3, 4]))
    (x, level), = net.calls
    x_T = stacked_randn((3, 8, 8), per_image_generators([3, 4]), "cpu")
    assert torch.equal(x[:, :3], c) and torch.equal(x[:, 3:], x_T)  # [c, x_T], x_T ~ N(0, I)
    sqrt_g = schedule.alphas_cumprod[1999].double().sqrt()
    torch.testing.assert_close(level, (1000 * sqrt_g).float().expand(2))
    # eps-hat = 0: x0-hat = x_T / sqrt(gamma_T), clipped to [-1, 1], and the step to t = -1 adds no noise
    torch.testing.assert_close(x0, (x_T / sqrt_g.float()).clamp(-1, 1), atol=1e-6, rtol=0)


def test_respaced_sampling_runs_at_three_steps(schedule):
    c = torch.rand(1, 3, 8, 8) * 2 - 1
    net = Recorder()
    x0 = sr3.sample(net, schedule, c, steps=3, generators=per_image_generators([5]))
    ts = respaced_timesteps(3, 2000)
    assert ts == [1999, 1000, 0] and len(net.calls) == 3
    levels = [float(lv[0]) for _, lv in net.calls]
    expected = [1000 * schedule.alphas_cumprod[t].double().sqrt().item() for t in ts]
    assert levels == pytest.approx(expected, rel=1e-6)  # sqrt(gamma) of each respaced step
    assert x0.shape == c.shape and torch.isfinite(x0).all() and x0.abs().max() <= 1 + 1e-3
    assert not torch.equal(net.calls[1][0][:, 3:], net.calls[2][0][:, 3:])


# --- the adapter -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    pipe = sr3.SR3Pipeline.from_params(CFG, 4, seed=0)
    path = tmp_path_factory.mktemp("sr3") / "ckpt"
    pipe.save_pretrained(path, trained_steps=0)
    return path


def test_adapter_honours_the_contract(checkpoint):
    method = load_method("sr3", checkpoint=str(checkpoint))
    assert isinstance(method, SRMethod) and method.is_diffusion and method.scales == (4,)
    assert sorted(p.name for p in checkpoint.iterdir()) == ["scheduler", "sr3_config.json", "unet"]
    assert (checkpoint / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    lr = torch.rand(3, 3, 5, 7, generator=torch.Generator().manual_seed(5))
    sr = method.upscale(lr, scale=4, steps=3, generator=per_image_generators([7, 8, 9]))
    assert sr.shape == (3, 3, 20, 28) and sr.dtype == torch.float32
    assert 0 <= float(sr.min()) and float(sr.max()) <= 1 and float(sr.std()) > 0.01
    for k, seed in enumerate([7, 8, 9]):  # image k alone == image k in the batch of 3
        alone = method.upscale(lr[k : k + 1], scale=4, steps=3, generator=per_image_generators([seed]))
        # float rounding of batched convolutions, amplified by 1 / sqrt(gamma_T) ~ 150 in x0-hat
        torch.testing.assert_close(alone, sr[k : k + 1], atol=1e-4, rtol=0)
    other = method.upscale(lr[1:2], scale=4, steps=3, generator=per_image_generators([99]))
    assert (other - sr[1:2]).abs().max() > 1e-2  # the seed matters, so the comparison above can fail
    d = method.describe()
    for knob in ("default_steps", "sampler", "eta", "conditioning", "clip_denoised", "colour_fix", "tiling", "dtype"):
        assert knob in d
    assert d["default_steps"] == 3 and "1000 x sqrt(gamma)" in d["conditioning"]
    with pytest.raises(UserError, match="x4 model"):
        method.upscale(lr, scale=2)


def test_a_folder_that_is_not_a_checkpoint_is_refused_in_one_line(tmp_path, checkpoint):
    with pytest.raises(UserError) as err:
        load_method("sr3", checkpoint=str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and "sr3_config.json" in msg and "train_sr3" in msg
    bad = tmp_path / "old"
    bad.mkdir()
    cfg = json.loads((checkpoint / sr3.CONFIG_NAME).read_text())
    (bad / sr3.CONFIG_NAME).write_text(json.dumps({**cfg, "format": 0}))
    with pytest.raises(UserError, match="format 0"):
        sr3.SR3Pipeline.from_pretrained(bad)


# --- the training stage ----------------------------------------------------------------------------------


@pytest.fixture()
def stage_cfg(smoke_cfg, tmp_path):
    """The smoke profile in a tmp run root, with a tiny latent bank (HR crops and seeds) and a 4-step budget."""
    cfg = copy.deepcopy(smoke_cfg)
    cfg["run_root"] = str(tmp_path / "runs")
    cfg["teacher"]["steps"], cfg["distill"]["steps"] = 3, 1  # budget: 3 + 1 x 1 link = 4 steps
    cfg["train"]["batch_size"] = 4
    crop = cfg["train"]["hr_crop"]
    bank = tmp_path / "runs" / "smoke" / "encode_latents" / "bank.safetensors"
    bank.parent.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    save_file({"hr": torch.randint(0, 256, (6, 3, crop, crop), generator=g, dtype=torch.uint8),
               "seed": torch.arange(6)}, str(bank))
    return cfg


def _unet(ckpt):
    return load_file(str(ckpt / "unet" / "diffusion_pytorch_model.safetensors"))


def test_train_sr3_writes_a_checkpoint_resumes_exactly_and_refuses_a_changed_config(stage_cfg, tmp_path,
                                                                                   monkeypatch):
    from yonos.config import run_dir
    from yonos.stages import train_sr3
    from yonos.stages._common import run_stage

    run_stage("train_sr3", train_sr3.run, stage_cfg)
    out = run_dir(stage_cfg, "train_sr3")
    log = json.loads((out / "train_log.json").read_text())
    assert log["steps"] == 4 and len(log["loss_every_step"]) == 4
    method = load_method("sr3", checkpoint=str(out / "checkpoint"))
    assert method.describe()["trained_steps"] == 4 and method.describe()["budget"]["sr_steps"] == 4
    sr = method.upscale(torch.rand(1, 3, 8, 8), scale=4, steps=2, generator=per_image_generators([0]))
    assert sr.shape == (1, 3, 32, 32)
    full = _unet(out / "checkpoint")

    # The same run in another root, killed after its state at step 2, then resumed: the same weights.
    other = copy.deepcopy(stage_cfg)
    other["run_root"] = str(tmp_path / "other")
    (tmp_path / "other" / "smoke").mkdir(parents=True)
    (tmp_path / "other" / "smoke" / "encode_latents").symlink_to(tmp_path / "runs" / "smoke" / "encode_latents")
    other["train"]["checkpoint_every"] = 2  # not part of the identity
    calls = []

    def crash_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return sr3.sr3_loss(*args, **kwargs)

    monkeypatch.setattr(train_sr3, "sr3_loss", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        train_sr3.run(other)
    monkeypatch.undo()
    state = json.loads((run_dir(other, "train_sr3", "state") / "trainer_state.json").read_text())
    assert state["step"] == 2
    train_sr3.run(other)
    resumed = _unet(run_dir(other, "train_sr3", "checkpoint"))
    assert full.keys() == resumed.keys()
    for k in full:
        torch.testing.assert_close(resumed[k], full[k], atol=1e-6, rtol=0)

    changed = copy.deepcopy(stage_cfg)
    changed["train"]["lr"] = 5e-4
    with pytest.raises(UserError, match="train.lr"):
        train_sr3.run(changed)
