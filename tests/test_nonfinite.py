"""Non-finite steps are the same on every path: their gradients never reach the weights, the
learning-rate schedule does not advance, and no checkpoint holds such a state."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from amazon_sft.nonfinite import poisoned_loss

from .conftest import REPO, free_port, train_overrides

ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
LAUNCH = {
    "ddp": (["--multi_gpu"], {"ACCELERATE_USE_CPU": "true"}),
    "zero2": (["--config_file", "launch/accelerate/zero2.yaml"], {}),
}
TIMEOUT_S = 300


def test_an_infinite_loss_with_finite_gradients_back_propagates_nan():
    w = torch.ones(3, requires_grad=True)
    back, shown, bad = poisoned_loss(w.sum() + float("inf"))  # d/dw is finite (ones)
    back.backward()
    assert w.grad.isnan().all() and shown.item() == 0.0 and bad.item() == 1.0


@pytest.mark.e2e
def test_a_finite_loss_with_an_infinite_gradient_is_skipped_too(
    prepared, tiny_model_dir, tmp_path, monkeypatch
):
    """A mutation audit: every other test makes the loss non-finite; a step whose loss is finite
    but whose gradient norm is not must not step the optimizer or the schedule, nor be saved
    (applied, its infinite weights would make step 3 non-finite too: the run would end)."""
    from amazon_sft import trainer as T

    from .conftest import train_here

    real, calls = T.Trainer.clip_gradients, []

    def infinite_at_step_2(self):
        calls.append(1)
        if len(calls) == 2:
            next(p for p in self.model.parameters() if p.grad is not None).grad.fill_(float("inf"))
        return real(self)

    monkeypatch.setattr(T.Trainer, "clip_gradients", infinite_at_step_2)
    steps = ("train.max_steps=3", "train.warmup_steps=0", "checkpoint.every_steps=1")
    train_here(*train_overrides(prepared, tiny_model_dir, tmp_path, *steps,
                                "checkpoint.keep_last=10"))  # fmt: skip
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["non_finite"] for r in rows] == [False, True, False]
    assert [r["optimizer_stepped"] for r in rows] == [True, False, True]
    assert rows[2]["lr"] == rows[1]["lr"]  # the schedule did not advance on the skipped step
    saved = sorted(p.parent.name for p in (tmp_path / "checkpoints").glob("step-*/COMPLETE"))
    assert saved == ["step-00000001", "step-00000003"]


def test_a_skipped_step_steps_neither_the_optimizer_nor_the_schedule(fresh_accelerate):
    """A mutation audit: the schedule advancing on a skipped step was caught by a multiproc
    test only."""
    from accelerate import Accelerator

    from amazon_sft.nonfinite import apply_step

    w = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([w], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    w.grad = torch.ones(2)
    assert not apply_step(Accelerator(cpu=True), None, optimizer, scheduler, finite=False)
    assert scheduler.last_epoch == 0 and torch.equal(w.detach(), torch.ones(2)) and w.grad is None
    w.grad = torch.ones(2)
    assert apply_step(Accelerator(cpu=True), None, optimizer, scheduler, finite=True)
    assert scheduler.last_epoch == 1 and torch.equal(w.detach(), torch.zeros(2))


def _launch(launch: str, stand_in: str, env: dict, overrides: list[str]):
    """Two processes of ``tests/stand_ins/<stand_in>`` (train.py with a fault put in) under
    ``LAUNCH[launch]``, ``env`` added to the environment."""
    flags, launch_env = LAUNCH[launch]
    cmd = [ACCELERATE, "launch", *flags, "--num_processes", "2"]
    cmd += ["--main_process_port", str(free_port())]
    cmd += [str(REPO / "tests" / "stand_ins" / stand_in), "--config", "tiny", *overrides]
    env = {**os.environ, **launch_env, **env}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=TIMEOUT_S)


@pytest.mark.multiproc
@pytest.mark.parametrize("launch", list(LAUNCH))
def test_a_non_finite_step_on_one_rank_changes_nothing(launch, prepared, tiny_model_dir, tmp_path):
    """Rank 1's first micro-batch of step 2 (of 4) has an infinite loss with finite gradients.
    Step 2 must be skipped on both ranks, step 3 must use step 2's learning rate, and no
    checkpoint may hold the state after step 2."""
    proc = _launch(
        launch,
        "train_with_bad_step.py",
        {"BAD_CALL": "3", "BAD_RANK": "1"},  # 2 micro-batches a step
        train_overrides(
            prepared,
            tiny_model_dir,
            tmp_path,
            *("train.max_steps=4", "train.global_batch_size=4", "train.micro_batch_size=1"),
            *("train.warmup_steps=0", "checkpoint.every_steps=1", "checkpoint.keep_last=10"),
        ),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    def no_nan(word: str):
        raise ValueError(f"{word} is not JSON (a metrics review: jq and JSON.parse refuse it)")

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(x, parse_constant=no_nan) for x in lines]
    assert [r["non_finite"] for r in rows] == [False, True, False, False]
    assert rows[1]["grad_norm"] is None  # not NaN
    # nor a partial sum that counts the bad micro-batch as 0 (a review of the loss log)
    assert rows[1]["loss"] is None and all(r["loss"] > 0 for r in rows if r is not rows[1])
    assert [r["optimizer_stepped"] for r in rows] == [True, False, True, True]
    assert rows[2]["lr"] == rows[1]["lr"]  # the schedule did not advance on the skipped step
    saved = sorted(p.parent.name for p in (tmp_path / "checkpoints").glob("step-*/COMPLETE"))
    assert saved == ["step-00000001", "step-00000003", "step-00000004"]


STOPPED_STEP = """import os, signal, sys
from amazon_sft.loss import SummedAnswerLoss
from amazon_sft.train import cli
forward, calls = SummedAnswerLoss.forward, [0]
def poisoned(self, batch):  # the BAD-th forward's loss +inf; a SIGTERM at the TERM-th
    calls[0] += 1
    if calls[0] == int(os.environ["TERM"]):
        os.kill(os.getpid(), signal.SIGTERM)
    summed, n = forward(self, batch)
    return (summed + float("inf") if calls[0] == int(os.environ["BAD"]) else summed), n
SummedAnswerLoss.forward = poisoned
cli()
"""


@pytest.mark.e2e
def test_a_step_dropped_after_a_non_finite_one_saves_no_checkpoint_of_it(
    prepared, tiny_model_dir, tmp_path
):
    """A resume review: with 16 micro-batches a step, a stop between micro-batches of step 4
    dropped it and saved a checkpoint at step 3, which had been non-finite (the README: no
    checkpoint after such a step); finishing at step 3 then failed with advice to lower the
    learning rate. The checkpoint before it is kept, as when a stop ends a step."""
    script = tmp_path / "stopped_step.py"
    script.write_text(STOPPED_STEP)
    out = tmp_path / "run"
    args = train_overrides(prepared, tiny_model_dir, out, "train.max_steps=6",
                           "train.global_batch_size=16", "train.micro_batch_size=1",
                           "checkpoint.every_steps=2")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "BAD": "33", "TERM": "50"}  # fmt: skip
    proc = subprocess.run([sys.executable, str(script), "--config", "tiny", *args],
                          capture_output=True, text=True, env=env, timeout=TIMEOUT_S)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the step was dropped" in proc.stderr
    saved = sorted(p.parent.name for p in (out / "checkpoints").glob("step-*/COMPLETE"))
    assert saved == ["step-00000002"], saved
    assert "step 3 was non-finite" in proc.stderr, proc.stderr[-1500:]


@pytest.mark.multiproc
@pytest.mark.parametrize(
    "fails, at, said",
    [
        ("disk", 2, "the disk holding"),  # heard at step 3's first all-reduce
        ("tracker", 3, "tracking server answered 503"),  # the last step: heard at the loop's end
    ],
)
def test_a_metrics_line_rank_0_could_not_write_stops_every_rank(
    fails, at, said, prepared, tiny_model_dir, tmp_path
):
    """A review's remainder: rank 0 alone appends each step's line to metrics.jsonl. A full disk
    there raised on rank 0 while rank 1 waited at the next step's all-reduce until the launcher
    killed it (across nodes: NCCL's 10-minute timeout), a traceback on each node. The failure
    now rides the next step's first all-reduce (no synchronisation of its own): every rank
    stops before that step's optimizer step, rank 0 saying the full disk, rank 1 naming it."""
    proc = _launch(
        "ddp",
        "train_with_a_full_disk.py",
        {"FULL_AT": str(at), "FAILS": fails},
        train_overrides(
            prepared,
            tiny_model_dir,
            tmp_path,
            *("train.max_steps=3", "train.global_batch_size=2", "train.micro_batch_size=1"),
            *("train.warmup_steps=0", "checkpoint.every_steps=100"),
        ),
    )
    assert proc.returncode != 0
    assert said in proc.stderr, proc.stderr[-3000:]
    assert "rank 0 failed writing metrics.jsonl" in proc.stderr, proc.stderr[-3000:]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == at - 1
    assert not (tmp_path / "final").exists()
