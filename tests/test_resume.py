"""Training resumes exactly, or refuses (yonos/checkpoint.py, yonos/train.py `fit`).

Fast tests drive `fit` on a tiny MLP; the slow test SIGKILLs the smoke teacher stage at seeded random
points (one inside a checkpoint write, widened by YONOS_TEST_SLOW_CHECKPOINT) and compares the final
weights of the resumed run with an uninterrupted one, bit for bit.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch.utils.data import Dataset

from yonos import checkpoint
from yonos.errors import UserError
from yonos.stages._common import run_stage
from yonos.train import example_seed, fit, fit_timing, make_accelerator


# --- fast: fit on a tiny model --------------------------------------------------------------------
class Points(Dataset):
    """x ~ N(0, 1)^4, y = sum(x^2): every example a function of (seed, index), like the real streams."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        x = torch.randn(4, generator=torch.Generator().manual_seed(example_seed(0, "points", i)))
        return {"x": x, "y": x.pow(2).sum(0, keepdim=True)}


def mse(model, batch):
    return torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])


def new_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def ident(steps: int = 20) -> dict:
    return {"teacher": {"scale": 2, "steps": steps}, "seed": 0, "init": "new"}


def train(state: Path, steps: int = 20, *, identity: dict | None = None, fresh: bool = False, every: int = 3,
          loss=mse, model=None):
    model = model if model is not None else new_model()
    result = fit(model, loss, Points, accelerator=make_accelerator({"device": "cpu"}), steps=steps, batch_size=4,
                 lr=1e-2, warmup_steps=2, state_dir=state, identity=identity or ident(steps), fresh=fresh,
                 checkpoint_every=every, desc="test")
    return model, result


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_resume_after_a_crash_is_exact(tmp_path):
    reference, ref_result = train(tmp_path / "ref" / "state")

    def crash_at_step_8(model, batch, calls=[0]):  # noqa: B006 (a counter)
        calls[0] += 1
        if calls[0] == 8:  # after the state of step 6, before that of step 9
            raise KeyboardInterrupt
        return mse(model, batch)

    state = tmp_path / "run" / "state"
    with pytest.raises(KeyboardInterrupt):
        train(state, loss=crash_at_step_8)
    saved = json.loads((state / checkpoint.STATE_JSON).read_text())
    assert saved["step"] == 6 and saved["train_seconds"] > 0
    got = {}

    def resume(cfg):  # a stage whose one link resumes, nested like distill_student's {x4: ...}
        got["model"], got["result"] = train(state)
        return {"timing": {"x4": fit_timing(got["result"])}}

    run_stage("toy", resume, {"profile": "toy", "run_root": str(tmp_path / "runs")})
    resumed, result = got["model"], got["result"]
    assert_same_weights(resumed, reference)
    assert result.losses == ref_result.losses and result.steps == 20
    # The training time of the crashed call is carried in the state, so the stage reports all of it.
    assert ref_result.earlier_seconds == 0 and result.earlier_seconds == saved["train_seconds"]
    total = json.loads((state / checkpoint.STATE_JSON).read_text())["train_seconds"]
    assert saved["train_seconds"] < total <= saved["train_seconds"] + result.seconds
    timing = json.loads((tmp_path / "runs" / "toy" / "toy" / "timing.json").read_text())
    assert timing["seconds"] == pytest.approx(timing["call_seconds"] + saved["train_seconds"], abs=0.02)


def test_resume_refuses_a_changed_config_in_one_line(tmp_path):
    state = tmp_path / "state"
    train(state, steps=20)
    before = (state / checkpoint.MODEL_TENSORS).read_bytes()
    with pytest.raises(UserError) as err:
        train(state, steps=30)
    msg = str(err.value)
    assert "\n" not in msg
    assert "teacher.steps: 20 -> 30" in msg and "--fresh" in msg and str(state) in msg
    assert (state / checkpoint.MODEL_TENSORS).read_bytes() == before  # refused before touching anything


def test_fresh_starts_from_scratch(tmp_path):
    state = tmp_path / "state"
    train(state, steps=20)
    fresh, result = train(state, steps=30, fresh=True)
    clean, _ = train(tmp_path / "clean" / "state", steps=30)
    assert_same_weights(fresh, clean)
    assert result.steps == 30 and len(result.losses) == 30
    assert json.loads((state / checkpoint.STATE_JSON).read_text())["identity"]["teacher"]["steps"] == 30


def test_a_changed_init_checkpoint_is_named(tmp_path):
    state = tmp_path / "state"
    train(state, identity=dict(ident(), init="sha256:" + "a" * 64))
    with pytest.raises(UserError, match=r"init: sha256:a+… -> sha256:b+…"):
        train(state, identity=dict(ident(), init="sha256:" + "b" * 64))


@pytest.mark.parametrize("damage", ["delete model", "delete optimizer", "delete json", "truncate model"])
def test_an_incomplete_state_is_never_loaded(tmp_path, damage):
    state = tmp_path / "state"
    train(state)
    action, what = damage.split()
    name = {"model": checkpoint.MODEL_TENSORS, "optimizer": checkpoint.STATE_TENSORS,
            "json": checkpoint.STATE_JSON}[what]
    if action == "delete":
        (state / name).unlink()
    else:
        data = (state / name).read_bytes()
        (state / name).write_bytes(data[: len(data) // 2])
    model = new_model()
    untouched = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match=f"incomplete trainer state \\({name}") as err:
        train(state, model=model)
    assert "\n" not in str(err.value) and "--fresh" in str(err.value)
    assert all(torch.equal(untouched[k], v) for k, v in model.state_dict().items())


def test_a_state_from_the_old_format_is_refused(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / checkpoint.STATE_JSON).write_text(json.dumps({"step": 5, "param_groups": [], "scalars": {}}))
    (state / checkpoint.STATE_TENSORS).write_bytes(b"")
    with pytest.raises(UserError, match="older version"):
        train(state)


@pytest.mark.parametrize("kill_at", [1, 2, 3, 4, 5])
def test_a_kill_anywhere_in_a_save_leaves_the_old_or_the_new_state(tmp_path, monkeypatch, kill_at):
    """`_pause` marks every window of a save (after each file and each rename); dying there must leave
    exactly the previous state or exactly the new one loadable, and never a half-written folder."""
    folder = tmp_path / "state"
    old_model, new_model_ = new_model(), new_model()
    with torch.no_grad():
        new_model_[0].weight.add_(1.0)
    opt = torch.optim.AdamW(old_model.parameters())
    checkpoint.save_state(folder, old_model, opt, 1, identity=ident())

    calls = []

    def die(*_):
        calls.append(1)
        if len(calls) == kill_at:
            raise SystemExit("killed")  # nothing in save_state cleans up on the way out, as under SIGKILL

    monkeypatch.setattr(checkpoint, "_pause", die)
    with pytest.raises(SystemExit):
        checkpoint.save_state(folder, new_model_, torch.optim.AdamW(new_model_.parameters()), 2, identity=ident())
    monkeypatch.undo()

    loaded = new_model()
    with torch.no_grad():
        loaded[0].weight.zero_()
    meta = checkpoint.load_state(folder, loaded, torch.optim.AdamW(loaded.parameters()), identity=ident())
    expected = {1: old_model, 2: new_model_}[meta["step"]]
    assert meta["step"] == (2 if kill_at == 5 else 1)
    assert_same_weights(loaded, expected)
    # the next save clears the leftovers and the state reads back
    checkpoint.save_state(folder, new_model_, torch.optim.AdamW(new_model_.parameters()), 3, identity=ident())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]
    assert checkpoint.load_state(folder, loaded, torch.optim.AdamW(loaded.parameters()), identity=ident())["step"] == 3


# --- slow: SIGKILL the smoke teacher stage, resume, compare with an uninterrupted run ---------------
STAGE = [sys.executable, "-m", "yonos.stages.train_teacher", "--profile", "smoke"]
UPSTREAM = ("prepare_data", "train_autoencoder", "encode_latents")
SLOW_SAVE = 0.3  # YONOS_TEST_SLOW_CHECKPOINT: each of a save's 5 windows lasts this long


@pytest.fixture(scope="module")
def teacher_inputs(tmp_path_factory, repo_root):
    """The teacher's inputs (smoke prepare_data, train_autoencoder, encode_latents), made once, and a
    params file that checkpoints every 2 of the 20 steps (checkpoint_every is not part of the identity)."""
    from yonos.config import load_params
    from yonos.stages.run_all import run_all

    root = tmp_path_factory.mktemp("upstream")
    cfg = dict(load_params(repo_root / "params.yaml", "smoke"), run_root=str(root))
    threads, cwd = torch.get_num_threads(), os.getcwd()
    torch.set_num_threads(1)  # in this process (saves a ~9 s start), on one thread like the children
    os.chdir(repo_root)
    try:
        run_all(cfg, until=UPSTREAM[-1])
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["smoke"]["train"]["checkpoint_every"] = 2
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    return root, params


def one_thread(**extra: str) -> dict:
    """Children run on one thread: 2-thread OpenMP spins badly on a shared 2-core machine, and each
    comparison is within one setting (the uninterrupted and the resumed runs use the same)."""
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)


def copy_inputs(src: Path, dst: Path) -> Path:
    for name in UPSTREAM:
        shutil.copytree(src / "smoke" / name, dst / "smoke" / name)
    return dst


def start(root: Path, params: Path, repo_root: Path, log: Path, *extra: str, slow: float = 0.0):
    with log.open("ab") as fh:
        return subprocess.Popen([*STAGE, "--params", str(params), "--run-root", str(root), *extra], cwd=repo_root,
                                env=one_thread(YONOS_TEST_SLOW_CHECKPOINT=str(slow)), stdout=fh,
                                stderr=subprocess.STDOUT)


def saved_step(state: Path) -> int:
    try:
        return json.loads((state / checkpoint.STATE_JSON).read_text())["step"]
    except (OSError, ValueError):
        return -1


def wait_for(proc, condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the stage ended (rc {proc.returncode}) before the planned kill"
        assert time.monotonic() < deadline, "timed out waiting for the stage"
        time.sleep(0.005)


def unet_tensors(root: Path) -> dict[str, torch.Tensor]:
    return load_file(str(root / "smoke" / "train_teacher" / "checkpoint" / "unet" /
                         "diffusion_pytorch_model.safetensors"))


@pytest.mark.slow
def test_teacher_killed_and_resumed_is_bit_identical(teacher_inputs, tmp_path, repo_root, capsys):
    upstream, params = teacher_inputs
    ref_root, root = copy_inputs(upstream, tmp_path / "ref"), copy_inputs(upstream, tmp_path / "killed")
    reference = start(ref_root, params, repo_root, tmp_path / "ref.log")  # runs beside the kill series

    out = root / "smoke" / "train_teacher"
    state = out / "state"
    rng = random.Random(20240607)
    # Kinds of kill, at seeded random moments: "step" between two saves, "during" inside a save (its
    # files or its renames), "renames" after STATE -> STATE.old and before the new STATE is in place.
    plan = ["step", "during", "renames", "step", "during"]
    where = []
    for n, kind in enumerate(plan):
        before = max(saved_step(state), saved_step(state.with_name("state.old")), 0)
        stale = set(out.glob("state.tmp-*"))
        proc = start(root, params, repo_root, tmp_path / f"kill{n}.log", slow=SLOW_SAVE if kind != "step" else 0.0)
        if kind == "step":  # after the first save of this process, a random time into the next steps
            wait_for(proc, lambda b=before: saved_step(state) >= b + 2)
            deadline = time.monotonic() + rng.uniform(0.0, 0.25)
            while time.monotonic() < deadline and saved_step(state) < before + 4:  # bounded progress
                time.sleep(0.002)
        elif kind == "during":  # a random moment of the first save
            wait_for(proc, lambda s=stale: bool(set(out.glob("state.tmp-*")) - s))
            time.sleep(rng.uniform(0.0, 4 * SLOW_SAVE))
        else:
            wait_for(proc, lambda: state.with_name("state.old").exists() and not state.exists())
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, f"kill {n} ({kind}) came too late"
        leftovers = sorted(p.name for p in out.iterdir() if p.name.startswith("state."))
        where.append((kind, before, saved_step(state), leftovers))
    # where: (kind, saved step before, after, leftovers of the save it interrupted)
    assert sum(bool(w[3]) for w in where) >= 2, f"no kill landed inside a checkpoint write: {where}"
    assert any("state.old" in w[3] and w[2] == -1 for w in where), f"no kill between the renames: {where}"

    final = start(root, params, repo_root, tmp_path / "final.log")
    assert final.wait() == 0, (tmp_path / "final.log").read_text()[-2000:]
    assert reference.wait() == 0, (tmp_path / "ref.log").read_text()[-2000:]

    got, want = unet_tensors(root), unet_tensors(ref_root)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name
    log = json.loads((out / "train_log.json").read_text())
    ref_log = json.loads((ref_root / "smoke" / "train_teacher" / "train_log.json").read_text())
    assert log["loss_every_step"] == ref_log["loss_every_step"] and log["steps"] == 20
    timing = json.loads((out / "timing.json").read_text())  # counts the killed calls' saved training too
    assert timing["seconds"] > timing["call_seconds"] and timing["earlier_seconds"] > 0

    # A changed config is refused by the stage's command line with one line, and --fresh is the way out
    # (run here in-process: a process start costs ~9 s of imports).
    from yonos.stages.train_teacher import main

    raw = yaml.safe_load(params.read_text())
    raw["smoke"]["teacher"]["steps"] = 30
    changed = tmp_path / "params_steps30.yaml"
    changed.write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    cwd = os.getcwd()
    os.chdir(repo_root)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sys, "argv", [*STAGE[2:], "--params", str(changed), "--run-root", str(root)])
            assert main() == 2
    finally:
        os.chdir(cwd)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "teacher.steps: 20 -> 30" in lines[0] and "--fresh" in lines[0], lines
    after = unet_tensors(root)  # refused before touching anything
    assert all(torch.equal(after[k], want[k]) for k in want)
