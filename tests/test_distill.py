"""Scale distillation (PAPER.md Eq. 2) and the ablation's fairness, through the real stage code on tiny models.

Eq. 2: the student regresses onto z-hat_phi(z_t, z'_l, t), the FROZEN teacher's clean-latent prediction
on the student's own z_t and t, with z'_l the x(s/2) LR of the same degradation draw. The tests recompute
that target here from the batch, with the teacher loaded afresh from disk, and compare it with the target
the training loss used at every optimiser step (so a teacher that moved during training is caught too).

Ablation: train_direct differs from distill_student only in the target: same start, same optimiser and
LR schedule, same examples in the same order, same z_t and t.
"""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

import yonos.stages._unet as unet_stage
import yonos.train as train
from yonos.config import run_dir
from yonos.data.degradations import degrade
from yonos.models import LatentCodec, build_autoencoder
from yonos.pipeline import YonosPipeline
from yonos.resize import bicubic_up

STEPS = 3  # optimiser steps per stage: enough for the student to move away from its start


def perturb_(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Random weights everywhere: a fresh U-Net zero-initialises its z_l input channels (widen_conv_in),
    and a teacher that ignores z_l could not tell the x2 LR from the x4 one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def folder_digest(folder) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def stage_cfg(tmp_path, smoke_cfg):
    """A run folder holding what distill_student and train_direct read: the frozen VAE, a x2 teacher
    checkpoint, and training images (no latent bank, so latents are encoded from each batch)."""
    cfg = copy.deepcopy(smoke_cfg)
    cfg["run_root"] = str(tmp_path / "runs")
    cfg["train"].update(batch_size=2, checkpoint_every=0)
    cfg["distill"].update(scales=[2, 4], steps=STEPS)
    cfg["direct"].update(scale=4, steps=STEPS, init="teacher")
    torch.manual_seed(0)
    vae = build_autoencoder(cfg["autoencoder"])
    perturb_(vae, 1, 0.01)
    vae.save_pretrained(run_dir(cfg, "train_autoencoder", "vae"), safe_serialization=True)
    teacher = YonosPipeline.from_params(cfg, 2, seed=0, vae=vae)
    perturb_(teacher.unet, 2)
    teacher.save_pretrained(run_dir(cfg, "train_teacher", "checkpoint"))
    images = run_dir(cfg, "prepare_data", "train")
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(2):
        x = torch.nn.functional.avg_pool2d(torch.from_numpy(rng.random((1, 3, 64, 64))).float(), 5, 1, 2)[0]
        Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(images / f"{k}.png")
    return cfg


@pytest.fixture
def spy(monkeypatch):
    """Record, per stage run: the trained U-Net's starting weights, fit's settings, the optimiser and LR
    schedule fit builds, every batch the loss sees, and every (z_t, z_l, t, target) of the latent loss."""
    runs: list[dict] = []
    real_fit, real_loss, real_sched = unet_stage.fit, train._weighted_latent_loss, train.get_cosine_schedule_with_warmup

    def fit(model, loss_fn, dataset_factory, **kwargs):
        run = {"init": {k: v.detach().clone() for k, v in model.state_dict().items()}, "batches": [], "loss": [],
               "kwargs": {k: v for k, v in kwargs.items() if k not in ("accelerator", "on_done", "desc",
                                                                       "state_dir", "identity")},
               "accum": kwargs["accelerator"].gradient_accumulation_steps}
        runs.append(run)

        def recording_loss(m, batch):
            run["batches"].append({k: v.detach().clone() for k, v in batch.items()})
            return loss_fn(m, batch)

        return real_fit(model, recording_loss, dataset_factory, **kwargs)

    def weighted_latent_loss(unet, task, z_t, z_l, t, *, target):
        runs[-1]["loss"].append({"z_t": z_t.detach().clone(), "z_l": z_l.detach().clone(), "t": t.clone(),
                                 "target": target.detach().clone()})
        return real_loss(unet, task, z_t, z_l, t, target=target)

    def schedule(optimizer, warmup, total, *a, **k):
        runs[-1]["optimizer"] = (type(optimizer).__name__, {k: v for k, v in optimizer.defaults.items()
                                                            if k not in ("params",)})
        runs[-1]["schedule"] = (warmup, total)
        return real_sched(optimizer, warmup, total, *a, **k)

    monkeypatch.setattr(unet_stage, "fit", fit)
    monkeypatch.setattr(train, "_weighted_latent_loss", weighted_latent_loss)
    monkeypatch.setattr(train, "get_cosine_schedule_with_warmup", schedule)
    return runs


def teacher_z0(teacher: YonosPipeline, z_t, z_l, t) -> torch.Tensor:
    """z-hat_phi(z_t, z_l, t) for v-prediction, from the raw diffusers U-Net: x0 = alpha z_t - sigma v."""
    abar = teacher.scheduler.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    cond = teacher.null_emb.expand(z_t.shape[0], -1, -1)
    with torch.no_grad():
        v = teacher.unet(torch.cat([z_t, z_l], 1), t, encoder_hidden_states=cond).sample
    return abar.sqrt() * z_t - (1 - abar).sqrt() * v


# --- Eq. 2 --------------------------------------------------------------------------------------------------
def test_distillation_target_is_the_frozen_teachers_prediction_on_the_same_draw(stage_cfg, spy):
    from yonos.stages import distill_student

    assert stage_cfg["model"]["prediction_type"] == "v_prediction"  # teacher_z0 below assumes it
    teacher_dir = run_dir(stage_cfg, "train_teacher", "checkpoint")
    before = folder_digest(teacher_dir)
    distill_student.run(stage_cfg)
    (run,) = spy
    assert len(run["batches"]) == len(run["loss"]) == STEPS

    teacher = YonosPipeline.from_pretrained(teacher_dir)  # afresh from disk: the weights before distillation
    codec = LatentCodec(teacher.vae)
    for batch, used in zip(run["batches"], run["loss"]):
        hr, seeds, t, eps = batch["hr"], batch["seed"].tolist(), batch["t"], batch["eps"]
        with torch.no_grad():
            z_h = codec.encode(hr)
            lr = degrade(hr, [4, 2], seeds, stage_cfg["degradation"])
            z_l4, z_l2 = codec.encode(bicubic_up(lr[4], 4)), codec.encode(bicubic_up(lr[2], 2))
        abar = teacher.scheduler.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        z_t = abar.sqrt() * z_h + (1 - abar).sqrt() * eps
        torch.testing.assert_close(used["t"], t, rtol=0, atol=0)
        torch.testing.assert_close(used["z_t"], z_t, rtol=0, atol=1e-6)
        torch.testing.assert_close(used["z_l"], z_l4, rtol=0, atol=1e-6)  # the student sees the x4 LR
        torch.testing.assert_close(used["target"], teacher_z0(teacher, z_t, z_l2, t), rtol=0, atol=1e-5)
    # The teacher's weights are untouched (on disk, and in memory: the last step's target matched too),
    # while the student did train.
    assert folder_digest(teacher_dir) == before
    student = YonosPipeline.from_pretrained(run_dir(stage_cfg, "distill_student", "x4", "checkpoint"))
    assert student.scale == 4
    assert any(not torch.equal(a, b) for a, b in zip(student.unet.parameters(), teacher.unet.parameters()))


def test_teacher_lr_comes_from_the_students_degradation_draw(smoke_cfg):
    """With a random degradation (Real-ESRGAN), z'_l must be the x2 LR of the student's own draw: the
    target equals the teacher's prediction with that LR and differs from one with another draw's LR."""
    pipe = YonosPipeline.from_params(smoke_cfg, 4, seed=0)
    perturb_(pipe.unet, 3)
    teacher = YonosPipeline.from_params(smoke_cfg, 2, seed=1, vae=pipe.vae)
    perturb_(teacher.unet, 4)
    degradation = {"kind": "realesrgan"}
    task = train.LatentSR(LatentCodec(pipe.vae), pipe.scheduler.alphas_cumprod, pipe.null_emb,
                               "v_prediction", "truncated_snr", degradation)
    g = torch.Generator().manual_seed(0)
    hr = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 32, 32, generator=g), 3, 1, 1)
    batch = {"hr": hr, "seed": torch.tensor([11, 12]), "t": torch.tensor([300, 999]),
             "eps": torch.randn(2, 4, 16, 16, generator=g)}
    captured = {}
    real = train._weighted_latent_loss

    def grab(unet, task_, z_t, z_l, t, *, target):
        captured.update(z_t=z_t, target=target)
        return real(unet, task_, z_t, z_l, t, target=target)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "_weighted_latent_loss", grab)
        train.distillation_loss(pipe.unet, batch, task=task, scale=4, teacher=teacher.unet, teacher_scale=2)
    codec = LatentCodec(pipe.vae)
    with torch.no_grad():
        same = degrade(hr, [4, 2], [11, 12], degradation)[2]
        other = degrade(hr, [4, 2], [13, 14], degradation)[2]
        z_same, z_other = codec.encode(bicubic_up(same, 2)), codec.encode(bicubic_up(other, 2))
    expected = teacher_z0(teacher, captured["z_t"], z_same, batch["t"])
    torch.testing.assert_close(captured["target"], expected, rtol=0, atol=1e-5)
    assert (teacher_z0(teacher, captured["z_t"], z_other, batch["t"]) - expected).abs().max() > 1e-3


# --- the ablation ---------------------------------------------------------------------------------------------
def test_direct_and_distilled_differ_only_in_the_target(stage_cfg, spy):
    from yonos.stages import distill_student, train_direct

    distill_student.run(stage_cfg)
    train_direct.run(stage_cfg)
    student, direct = spy
    # Same start: both U-Nets begin as the x2 teacher.
    assert student["init"].keys() == direct["init"].keys()
    assert all(torch.equal(student["init"][k], direct["init"][k]) for k in student["init"])
    # Same optimiser, settings and LR schedule.
    assert student["kwargs"] == direct["kwargs"] and student["accum"] == direct["accum"]
    assert student["optimizer"] == direct["optimizer"] and student["schedule"] == direct["schedule"]
    # Same examples in the same order, the same z_t, t and x4 condition ...
    assert len(student["batches"]) == len(direct["batches"]) == STEPS
    for a, b in zip(student["batches"], direct["batches"]):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for a, b in zip(student["loss"], direct["loss"]):
        assert torch.equal(a["t"], b["t"]) and torch.equal(a["z_t"], b["z_t"]) and torch.equal(a["z_l"], b["z_l"])
        # ... and a different target: the teacher's prediction for one, ground truth E(HR) for the other.
        assert (a["target"] - b["target"]).abs().max() > 1e-3


@pytest.mark.parametrize("profile", ["embedded", "smoke", "paper"])
def test_params_give_the_ablation_the_students_budget(repo_root, profile):
    from yonos.config import load_params

    cfg = load_params(repo_root / "params.yaml", profile)
    assert cfg["direct"]["steps"] == cfg["distill"]["steps"], "direct must get the student's optimiser steps"
    assert cfg["direct"]["init"] == "teacher" and cfg["direct"]["scale"] == cfg["distill"]["scales"][1]


# --- Claim 1's mechanism checks (yonos/study.py: claim1_same_noise, claim1_uniform_t) ---------------------------
def test_uniform_draws_are_unchanged_and_the_options_only_add():
    """The main run's examples are what they were: the options draw after t and eps, or replace t's draw."""
    g = torch.Generator().manual_seed(7)
    t, eps = torch.randint(0, 1000, (), generator=g), torch.randn(4, 8, 8, generator=g)
    for options in ({}, {"teacher_noise": True}):
        item = {}
        train.draw_noise(item, torch.Generator().manual_seed(7), (4, 8, 8), num_timesteps=1000, **options)
        assert int(item["t"]) == int(t) and torch.equal(item["eps"], eps)
        assert ("eps_teacher" in item) == bool(options)
    assert not torch.equal(item["eps_teacher"], item["eps"])


def test_high_t_sampling_leans_towards_t_max():
    ts = []
    for i in range(4000):
        item = {}
        train.draw_noise(item, torch.Generator().manual_seed(i), (1,), num_timesteps=1000, t_sampling="high")
        ts.append(int(item["t"]))
    ts = np.array(ts)
    assert 0 <= ts.min() and ts.max() <= 999
    assert abs(ts.mean() - 2 * 1000 / 3) < 15 and abs(np.median(ts) - 707) < 20  # p(t) ~ t
    with pytest.raises(Exception, match="t_sampling must be one of uniform, high"):
        unet_stage.noise_options({"t_sampling": "late"})


def student_teacher_batch(cfg: dict, t: list[int], g: torch.Generator):
    """An x4 student, an x2 teacher on its VAE, their LatentSR and a two-image batch at timesteps `t`."""
    pipe = YonosPipeline.from_params(cfg, 4, seed=0)
    teacher = YonosPipeline.from_params(cfg, 2, seed=1, vae=pipe.vae)
    task = train.LatentSR(LatentCodec(pipe.vae), pipe.scheduler.alphas_cumprod, pipe.null_emb,
                          "v_prediction", "truncated_snr", {"kind": "bicubic"})
    batch = {"hr": torch.rand(2, 3, 32, 32, generator=g), "seed": torch.tensor([1, 2]), "t": torch.tensor(t),
             "eps": torch.randn(2, 4, 16, 16, generator=g)}
    return pipe, teacher, task, batch


def test_independent_teacher_noise_gives_the_teacher_its_own_z_t(smoke_cfg):
    g = torch.Generator().manual_seed(0)
    pipe, teacher, task, batch = student_teacher_batch(smoke_cfg, [500, 999], g)
    seen = []
    hook = teacher.unet.register_forward_pre_hook(lambda m, args: seen.append(args[0][:, :4].clone()))
    for extra in ({}, {"eps_teacher": torch.randn(2, 4, 16, 16, generator=g)}):
        train.distillation_loss(pipe.unet, {**batch, **extra}, task=task, scale=4, teacher=teacher.unet,
                                teacher_scale=2)
    hook.remove()
    z_h = LatentCodec(pipe.vae).encode(batch["hr"])
    assert torch.allclose(seen[0], task.noisy(z_h, batch), atol=1e-6)  # Eq. 2: the student's z_t
    assert torch.allclose(seen[1], task.noisy(z_h, {**batch, "eps": extra["eps_teacher"]}), atol=1e-6)
    assert (seen[1] - seen[0]).abs().max() > 0.1


class _LinearTeacher:
    """A stand-in LatentSR whose 'teacher' predicts z0 = a(t) z_t: enough to follow DDIM's arithmetic."""

    def __init__(self, scheduler):
        self.alphas_cumprod = scheduler.alphas_cumprod

    def predict_z0(self, teacher, z_t, z_l, t):
        return z_t * (0.5 + t.float() / 2000).view(-1, 1, 1, 1) + 0.1 * z_l


def test_teacher_sample_is_diffusers_ddim_from_each_examples_own_t(smoke_cfg):
    """teacher_sample, stepped per example, equals DDIMScheduler.step run on each example alone."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, prediction_type="sample", clip_sample=False)
    task = _LinearTeacher(scheduler)
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([800, 500])
    z_t, z_l = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    got = train.teacher_sample(None, task, z_t, z_l, t, task.predict_z0(None, z_t, z_l, t), steps=4)
    for i, start in enumerate(t.tolist()):
        scheduler.set_timesteps(1000 // (start // 4))  # DDIM's stride start / 4 (200, 125): start, 3/4 start, ...
        z = z_t[i:i + 1]
        for k in range(4):
            tt = torch.tensor([start - k * start // 4])
            z0 = task.predict_z0(None, z, z_l[i:i + 1], tt)
            if k < 3:
                z = scheduler.step(z0, int(tt), z, eta=0.0).prev_sample
        torch.testing.assert_close(got[i:i + 1], z0, rtol=1e-5, atol=1e-5)
    one_step = task.predict_z0(None, z_t, z_l, t)
    assert (got - one_step).abs().max() > 1e-2  # the option changes the target


def test_multistep_target_replaces_only_the_high_t_examples(smoke_cfg):
    pipe, teacher, task, batch = student_teacher_batch(smoke_cfg, [200, 900], torch.Generator().manual_seed(0))
    perturb_(teacher.unet, 4)
    targets = []
    real = train._weighted_latent_loss
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "_weighted_latent_loss",
                   lambda unet, task_, z_t, z_l, t, *, target: targets.append(target) or real(
                       unet, task_, z_t, z_l, t, target=target))
        for options in ({}, {"target_steps": 4, "target_from_t": 500}):
            train.distillation_loss(pipe.unet, batch, task=task, scale=4, teacher=teacher.unet, teacher_scale=2,
                                    **options)
    assert torch.equal(targets[0][0], targets[1][0])  # t = 200 < 500: Eq. 2's one-step target
    assert (targets[0][1] - targets[1][1]).abs().max() > 1e-3  # t = 900: the teacher's 4-step sample
    with pytest.raises(Exception, match="target_steps must be an integer >= 1"):
        unet_stage.target_options({"target_steps": 0}, 1000)
    with pytest.raises(Exception, match=r"target_from_t must be an integer in \[0, 1000\)"):
        unet_stage.target_options({"target_from_t": 1000}, 1000)
