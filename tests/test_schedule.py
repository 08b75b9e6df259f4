"""Properties of the diffusion maths: an oracle prediction recovers z0 with the real sampler."""

from __future__ import annotations

import pytest
import torch

from yonos.sampler import make_scheduler, per_image_generators, sample
from yonos.schedule import PREDICTION_TYPES, add_noise, alpha_sigma, log_snr, loss_weight, snr, target_for, to_z0


class OracleUNet(torch.nn.Module):
    """Outputs the exact target of its parameterisation for a known clean latent z0."""

    def __init__(self, z0: torch.Tensor, alphas_cumprod: torch.Tensor, prediction_type: str):
        super().__init__()
        self.z0, self.abar, self.kind = z0, alphas_cumprod, prediction_type
        self.dtype = torch.float32  # what the sampler casts inputs to

    def forward(self, x, t, encoder_hidden_states=None):
        z_t = x[:, : self.z0.shape[1]].double()
        alpha, sigma = alpha_sigma(self.abar.double(), t)
        a, s = alpha.view(-1, 1, 1, 1), sigma.view(-1, 1, 1, 1)
        eps = (z_t - a * self.z0) / s
        return type("Out", (), {"sample": target_for(self.kind, self.z0, eps, alpha, sigma).float()})()


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("steps", [1, 3, 25])
def test_oracle_recovers_z0_in_k_ddim_steps(smoke_cfg, prediction_type, steps):
    cfg = dict(smoke_cfg["model"], prediction_type=prediction_type)
    scheduler = make_scheduler(cfg)
    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1)).double()
    unet = OracleUNet(z0, scheduler.alphas_cumprod, prediction_type)
    z_l = torch.zeros(2, 4, 8, 8)
    out = sample(unet, scheduler, z_l, torch.zeros(1, 1, 4), steps=steps, generators=per_image_generators([0, 1]))
    # epsilon at t = 999 divides by alpha_999 ~ 0.068: float32 error grows ~15x, hence the tolerance
    torch.testing.assert_close(out.double(), z0, atol=2e-5 if prediction_type != "epsilon" else 2e-4, rtol=0)


def test_one_step_starts_at_the_last_timestep(smoke_cfg):
    scheduler = make_scheduler(smoke_cfg["model"])
    scheduler.set_timesteps(1)
    assert scheduler.timesteps.tolist() == [999]
    scheduler.set_timesteps(1000)
    assert scheduler.timesteps[0] == 999 and scheduler.timesteps[-1] == 0


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_parameterisations_invert(prediction_type):
    g = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(5, 4, 6, 6, generator=g).double(), torch.randn(5, 4, 6, 6, generator=g).double()
    abar = torch.linspace(0.999, 0.01, 5).double()
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    z_t = add_noise(z0, eps, alpha, sigma)
    pred = target_for(prediction_type, z0, eps, alpha, sigma)
    torch.testing.assert_close(to_z0(prediction_type, pred, z_t, alpha, sigma), z0)


def test_sd_schedule_and_weighting(smoke_cfg):
    scheduler = make_scheduler(smoke_cfg["model"])
    alpha, sigma = alpha_sigma(scheduler.alphas_cumprod, torch.tensor([0, 999]))
    assert abs(float(alpha[1]) - 0.0683) < 1e-3  # SD's schedule is not zero-terminal-SNR
    torch.testing.assert_close(log_snr(alpha, sigma).exp(), snr(alpha, sigma))
    w = loss_weight("truncated_snr", alpha, sigma)
    assert float(w[1]) == 1.0 and float(w[0]) == pytest.approx(float(snr(alpha, sigma)[0]))
