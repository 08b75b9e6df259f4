"""The one-step regime's options: where DDIM starts (pure noise or the LR latent noised to t = T) and a
zero-terminal-SNR schedule; each checked against the closed form with a network whose output is known."""

from __future__ import annotations

import pytest
import torch

from yonos.pipeline import YonosPipeline
from yonos.sampler import make_scheduler, per_image_generators, sample

MODEL = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
         "prediction_type": "v_prediction"}


class ZeroV(torch.nn.Module):
    """v = 0 everywhere, so one DDIM step returns z-hat = alpha_T * z_T exactly."""

    dtype = torch.float32

    def forward(self, x, t, encoder_hidden_states=None):
        return type("Out", (), {"sample": torch.zeros_like(x[:, : x.shape[1] // 2])})()


def one_step(model_cfg: dict, z_l: torch.Tensor, start: str) -> torch.Tensor:
    return sample(ZeroV(), make_scheduler(model_cfg), z_l, torch.zeros(1, 1, 4), steps=1,
                  generators=per_image_generators(range(z_l.shape[0])), start=start)


def test_condition_start_is_the_lr_latent_noised_to_t_max():
    z_l = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    abar = make_scheduler(MODEL).alphas_cumprod[999]
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    eps = torch.stack([torch.randn(4, 8, 8, generator=g) for g in per_image_generators(range(2))])
    torch.testing.assert_close(one_step(MODEL, z_l, "noise"), alpha * eps)
    torch.testing.assert_close(one_step(MODEL, z_l, "condition"), alpha * (alpha * z_l + sigma * eps))


def test_zero_terminal_snr_makes_both_starts_pure_noise():
    zero = {**MODEL, "rescale_betas_zero_snr": True}
    assert make_scheduler(zero).alphas_cumprod[999] < 1e-6 < make_scheduler(MODEL).alphas_cumprod[999]
    z_l = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(one_step(zero, z_l, "condition"), one_step(zero, z_l, "noise"))


def test_unknown_start_is_refused():
    with pytest.raises(ValueError, match="unknown start"):
        one_step(MODEL, torch.zeros(1, 4, 8, 8), "lr")


def test_the_start_travels_with_the_checkpoint(tmp_path, smoke_cfg):
    cfg = {**smoke_cfg, "model": {**smoke_cfg["model"], "start": "condition", "rescale_betas_zero_snr": True}}
    YonosPipeline.from_params(cfg, 4).save_pretrained(tmp_path / "ck")
    loaded = YonosPipeline.from_pretrained(tmp_path / "ck")
    assert loaded.start == "condition"
    assert loaded.scheduler.config.rescale_betas_zero_snr is True


def test_bias_and_variance_add_up_to_the_error():
    from yonos.stages.diagnose_onestep import bias_variance

    g = torch.Generator().manual_seed(0)
    target, samples = torch.randn(3, 4, generator=g), 0.5 + torch.randn(8, 3, 4, generator=g)
    mse, bias2, var = bias_variance(samples, target)
    assert mse == pytest.approx(bias2 + var, rel=1e-6)
    assert bias2 == pytest.approx((samples.mean(0) - target).pow(2).mean().item())
    assert var > 0.5  # unit-variance samples: the variance is most of it, not folded into the bias


def test_diagnostics_of_a_tiny_model_and_their_table(smoke_cfg):
    from yonos.metrics.scorer import Scorer
    from yonos.report.onestep import to_markdown
    from yonos.stages.diagnose_onestep import diagnose, latent_stats

    pipe = YonosPipeline.from_params(smoke_cfg, 4)
    g = torch.Generator().manual_seed(1)
    hr = torch.rand(2, 3, 32, 32, generator=g)
    lr = torch.nn.functional.interpolate(hr, scale_factor=0.25, mode="area")
    rows = diagnose(pipe, ["a", "b"], lr, hr, timesteps=[999, 500], seeds=3, scorer=Scorer(["psnr"]),
                    grey=[False, False])
    frame = __import__("pandas").DataFrame([{"variant": "tiny", "scale": 4, **r} for r in rows])
    assert frame["probe"].tolist() == ["z_t from z_h", "z_t from z_h", "one step", "one step", "LR latent as is"]
    alpha_999 = frame.loc[0, "alpha_t"]
    assert alpha_999 == pytest.approx(pipe.scheduler.alphas_cumprod[999].sqrt().item(), rel=1e-5)
    one = frame[frame["probe"] == "one step"]
    assert (one["latent_mse"] - one["bias2"] - one["variance"]).abs().max() < 1e-4
    assert not one["latent_mse"].iloc[0] == pytest.approx(one["latent_mse"].iloc[1])  # the two starts differ
    stats = latent_stats(pipe.codec.encode(hr))
    assert len(stats) == pipe.vae.config.latent_channels
    table = to_markdown(frame, stats, seeds=3)
    assert "| tiny (×4) |" in table and "t=999" in table and "over 3 noise seeds" in table


def _ablation(arm: str, model: str, diff: float, verdict: str, seeds: int = 3) -> dict:
    return {"claim": arm, "dataset": "b100", "metric": "psnr", "steps": 1, "a": f"{model}@{arm}", "b": model,
            "seeds": seeds, "images": 100, "mean_a": 26.0, "mean_b": 26.0 - diff, "diff": diff,
            "low": diff - 0.03, "high": diff + 0.03, "verdict": verdict}


def test_the_choice_quotes_the_studys_evidence_and_says_what_is_in_force(smoke_cfg):
    """The report's one-step choice quotes the study that chose the default (the previous default's study, its arm
    study.PREVIOUS_CHOSEN) and each alternative's arm against the main run from the current study's
    ablations.csv, says whether its settings are in force, and names an alternative the evidence favours."""
    import pandas as pd

    from yonos import study
    from yonos.report.onestep import choice

    cfg = study.apply(smoke_cfg, {"model.rescale_betas_zero_snr": True, "model.start": "noise",
                                  "distill.teacher_noise": "independent", "distill.t_sampling": "high"})
    assert "have not been run" in choice(cfg, None) and "Chosen on" not in choice(cfg, None)
    assert "the teacher on independent noise, t sampled high" in choice(cfg, None)
    previous = pd.DataFrame([{**_ablation(study.PREVIOUS_CHOSEN, "distilled_x4+decoder", 0.21, "reproduced"),
                              "claim": f"{study.PREVIOUS_CHOSEN}: model.rescale_betas_zero_snr=True"}])
    assert (f"`{study.PREVIOUS_CHOSEN}` (model.rescale_betas_zero_snr=True) beat that default over 3 training seeds "
            "(arm − default, 95% intervals): distilled_x4+decoder +0.21 dB [+0.18, +0.24]") in choice(cfg, None,
                                                                                                      previous)
    ablations = pd.DataFrame([_ablation("base_schedule", "distilled_x4", 0.2, "reproduced"),
                              _ablation("base_schedule", "distilled_x4+decoder", 0.04, "reproduced"),
                              _ablation("start_condition", "distilled_x4+decoder", 0.005, "inconclusive", seeds=1),
                              _ablation("ema", "distilled_x4+decoder", 0.5, "reproduced")])
    text = choice(cfg, ablations)
    assert "`base_schedule` (model.rescale_betas_zero_snr=False; not in force; 3 seeds)" in text
    assert "distilled_x4+decoder +0.04 dB [+0.01, +0.07]" in text and "1 seed)" in text
    assert "favours `base_schedule` over" in text and "ema" not in text  # only the one-step alternatives
    text = choice(study.apply(cfg, study.ARMS["base_schedule"]), ablations)
    assert "False; in force" in text and "favours" not in text
    worse = ablations.assign(verdict="not reproduced")
    assert "favours" not in choice(cfg, worse) and "the final output worse" in choice(cfg, worse)
