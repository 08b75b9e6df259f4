"""EMA of the trained weights (train.ema_decay): exported instead of the last weights, resumed exactly."""

from __future__ import annotations

import pytest
import torch
from test_resume import Points  # the resume tests' example stream: (seed, index) -> example

from yonos.checkpoint import EXTRA_TENSORS
from yonos.errors import UserError
from yonos.train import fit, make_accelerator

IDENTITY = {"test": "ema"}


def mse(model, batch):
    return (model(batch["x"]) - batch["y"]).pow(2).mean()


def train(steps: int, *, ema_decay: float, state_dir=None, checkpoint_every: int = 0, loss_fn=mse):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    exported = {}
    result = fit(model, loss_fn, Points, accelerator=make_accelerator({"device": "cpu"}), steps=steps,
                 batch_size=2, lr=0.05, state_dir=state_dir, identity=IDENTITY if state_dir else None,
                 checkpoint_every=checkpoint_every, ema_decay=ema_decay,
                 on_done=lambda m, step: exported.update({k: v.clone() for k, v in m.state_dict().items()}))
    return exported, result


def test_ema_is_exported_instead_of_the_last_weights():
    last, _ = train(30, ema_decay=0.0)
    averaged, _ = train(30, ema_decay=0.9)
    # Same training trajectory (EMA does not touch the optimiser), different export.
    assert not torch.equal(last["weight"], averaged["weight"])
    # The average lags behind the falling loss: on the stream's first examples it fits worse.
    batch = {k: torch.stack([Points(8)[i][k] for i in range(8)]) for k in ("x", "y")}

    def loss(state):
        model = torch.nn.Linear(4, 1)
        model.load_state_dict(state)
        return mse(model, batch).item()

    assert loss(averaged) > loss(last)


def test_ema_resumes_exactly_after_an_interruption(tmp_path):
    whole, _ = train(12, ema_decay=0.8, state_dir=tmp_path / "whole")

    calls = {"n": 0}

    def dies_at_step_8(model, batch):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return mse(model, batch)

    with pytest.raises(KeyboardInterrupt):
        train(12, ema_decay=0.8, state_dir=tmp_path / "cut", checkpoint_every=5, loss_fn=dies_at_step_8)
    assert (tmp_path / "cut" / EXTRA_TENSORS).is_file()  # saved at step 5 with the EMA weights
    resumed, result = train(12, ema_decay=0.8, state_dir=tmp_path / "cut", checkpoint_every=5)
    assert result.steps == 12
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key  # bit-identical on CPU, EMA included


def test_a_state_without_ema_weights_is_refused_for_an_ema_run(tmp_path):
    train(5, ema_decay=0.0, state_dir=tmp_path / "state")
    # Same identity by construction here (a stage's identity holds ema_decay, so this needs a bug to happen).
    with pytest.raises(UserError, match="no EMA weights"):
        train(10, ema_decay=0.9, state_dir=tmp_path / "state")
