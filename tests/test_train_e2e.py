"""The real training entrypoint on CPU: files, resume=auto, SIGKILL resume, SIGTERM stop."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from amazon_sft.optim import lr_factor

from .conftest import train_command, train_here, train_overrides

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]


def _train(*args, check=True, **kwargs):
    cmd = [sys.executable, str(REPO / "amazon_sft" / "train.py"), "--config", "tiny", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, **kwargs)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _losses(out_dir: Path) -> dict[int, float]:
    """Loss per step; a step logged twice (before a kill and after resume) keeps the last."""
    rows = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def test_train_writes_everything_then_resumes(prepared, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    base = train_overrides(
        prepared, tiny_model_dir, out, "train.global_batch_size=4", "train.micro_batch_size=2"
    )
    proc = _train(*base, "train.max_steps=4", "checkpoint.every_steps=2", "checkpoint.keep_last=1")
    # a new user had to look for final/: the run says where the model is and what comes next
    assert f"the model is in {out / 'final'}; next: amazon-sft ask" in proc.stderr
    assert (out / "config.yaml").is_file()
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000004"]  # keep_last=1
    assert (out / "checkpoints" / "step-00000004" / "COMPLETE").is_file()
    # the tiny model ties its LM head to its embedding (as SmolLM2 does): accelerate's "Removed
    # shared tensor ... check by verifying" warning came at every checkpoint; said once instead
    assert "Removed shared tensor" not in proc.stderr, proc.stderr[-2000:]
    tied = "checkpoint: lm.lm_head.weight (tied to lm.model.embed_tokens.weight) saved once"
    assert proc.stderr.count(tied) == 1, proc.stderr[-2000:]
    final = out / "final"
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "README.md",
        "amazon_sft_config.yaml",
    ):
        assert (final / name).is_file(), name
    weights = load_file(str(final / "model.safetensors"))
    assert weights and all(t.numel() for t in weights.values())
    losses = _losses(out)
    assert sorted(losses) == [1, 2, 3, 4]
    assert losses[4] < losses[1]  # it learns
    # the logged lr is the one each step used (warmup_steps=1: 3e-3 from step 1 on), not the next
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    expected = [3e-3 * lr_factor(s, 1, 4, 0.1) for s in range(4)]
    assert [r["lr"] for r in rows] == pytest.approx(expected)
    # tokens seen are the documents' tokens trained on, across a resume too (a mutation audit)
    summary = json.loads((final / "run_summary.json").read_text())
    assert summary["tokens_seen"] == sum(r["real_tokens"] for r in rows) > 0

    proc = _train(*base, "train.max_steps=6", "checkpoint.every_steps=2", "resume=auto")
    assert "resumed from" in proc.stderr and "at step 4" in proc.stderr
    assert sorted(_losses(out)) == [1, 2, 3, 4, 5, 6]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((final / "run_summary.json").read_text())
    assert summary["tokens_seen"] == sum(r["real_tokens"] for r in rows)


def test_sigkill_then_resume_continues_the_loss_curve_exactly(prepared, tiny_model_dir, tmp_path):
    args = [
        "train.max_steps=30",
        "checkpoint.every_steps=1",
        "checkpoint.keep_last=3",
        "train.global_batch_size=2",
        "train.micro_batch_size=1",
        "lora.enabled=false",
    ]
    # One thread: under load MKL/OpenMP may run a reduction on fewer threads (MKL_DYNAMIC), which
    # changes its order and the last bits; bit-exact must measure the resume, not the machine.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    _train(*train_overrides(prepared, tiny_model_dir, straight, *args), env=env)

    killed = tmp_path / "killed"
    cmd = train_command(prepared, tiny_model_dir, killed, *args)
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    marker = killed / "checkpoints" / "step-00000003" / "COMPLETE"
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists() and not (killed / "final").exists(), "the kill did not land mid-run"
    resumed = _train(
        *train_overrides(prepared, tiny_model_dir, killed, *args, "resume=auto"), env=env
    )
    assert "resumed from" in resumed.stderr
    assert _losses(killed) == _losses(straight)  # bit-exact on CPU, steps 1..30


def _signalled_once_training(prepared, tiny_model_dir, out: Path, sig: int):
    """(command, exit code, stderr) of an endless tiny run sent ``sig`` once it logged a step."""
    cmd = train_command(
        prepared, tiny_model_dir, out, "train.max_steps=100000", "checkpoint.every_steps=100000",
        "train.global_batch_size=1", "train.micro_batch_size=1",
    )  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, sig)
    _, stderr = proc.communicate(timeout=60)
    return cmd, proc.returncode, stderr


def test_sigterm_saves_and_exits_zero(prepared, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cmd, rc, stderr = _signalled_once_training(prepared, tiny_model_dir, out, signal.SIGTERM)
    assert rc == 0, stderr[-2000:]
    saved = list((out / "checkpoints").glob("step-*/COMPLETE"))
    assert len(saved) == 1 and "stopping at step" in stderr
    assert not (out / "final").exists()

    # finishing there (the documented way to keep a stopped run as it is) writes the final model
    # and a summary in strict JSON (the loss was NaN: not JSON)
    step = int(saved[0].parent.name.split("-")[1])
    argv = cmd[cmd.index("--config") :]
    argv = [a for a in argv if not a.startswith("train.max_steps=")]
    _train(*argv[2:], f"train.max_steps={step}", "resume=auto")
    text = (out / "final" / "run_summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in run_summary.json"))
    # no step ran in that process: the loss is the one logged at that step (metrics.jsonl), not
    # None (an outside review: the model card said "final loss: None")
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    at_step = [row["loss"] for row in logged if row["step"] == step]
    assert summary["steps"] == step and at_step and summary["final_loss"] == at_step[-1]


def test_ctrl_c_saves_like_a_stop_signal_and_a_second_one_stops_at_once(
    prepared, tiny_model_dir, tmp_path
):
    """Ctrl-C in the terminal lost every step since the last checkpoint and said only
    "interrupted". The first one now stops after the step with a checkpoint and exits 0, as
    SIGTERM does; a second one stops at once (KeyboardInterrupt), as Python's own does."""
    from amazon_sft import stop_signal

    out = tmp_path / "run"
    _, rc, stderr = _signalled_once_training(prepared, tiny_model_dir, out, signal.SIGINT)
    assert rc == 0, stderr[-2000:]
    assert len(list((out / "checkpoints").glob("step-*/COMPLETE"))) == 1
    assert "Ctrl-C" in stderr and "stopping at step" in stderr

    previous = signal.getsignal(signal.SIGINT)
    try:
        stop_signal.install()
        os.kill(os.getpid(), signal.SIGINT)  # the first: recorded
        assert stop_signal.received() == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second: at once
    finally:
        signal.signal(signal.SIGINT, previous)
        stop_signal._received.clear()


def test_a_second_ctrl_c_is_one_line_from_the_script_too():
    """``python amazon_sft/train.py``: the KeyboardInterrupt of a second Ctrl-C was a traceback
    (``amazon-sft train`` said "interrupted")."""
    code = (
        "import amazon_sft.train as t\n"
        "def stopped():\n    raise KeyboardInterrupt\n"
        "t.main = stopped\nt.cli()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "interrupted (resume=auto" in proc.stderr


def _catches(pid: int, sig: int) -> bool:
    """Whether the process has a handler for ``sig`` (the SigCgt mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def test_a_stop_signal_during_start_up_exits_zero_without_training(
    prepared, tiny_model_dir, tmp_path
):
    """A pre-emption warning while the model loads is not fatal (it exited 143 / 138): the run
    stops before its first step, saves nothing, and exits 0 for resume=auto to pick up."""
    runs = {}
    for how, sig in (("script", signal.SIGUSR1), ("cli", signal.SIGTERM)):
        out = tmp_path / how
        cmd = train_command(prepared, tiny_model_dir, out, "train.max_steps=5")
        if how == "cli":
            cmd[1:2] = ["-m", "amazon_sft.cli", "train"]
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        runs[how] = (proc, sig, out)
    for proc, sig, out in runs.values():
        deadline = time.time() + 60
        while not _catches(proc.pid, sig) and time.time() < deadline:
            time.sleep(0.01)
        assert not (out / "metrics.jsonl").exists()  # still starting up
        proc.send_signal(sig)
    for how, (proc, _sig, out) in runs.items():
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, (how, stderr[-2000:])
        assert "stopping before the first step" in stderr, (how, stderr[-2000:])
        assert not list(out.glob("checkpoints/step-*")) and not (out / "final").exists()


def test_bad_config_and_missing_data_are_one_line_errors(tiny_model_dir, tmp_path):
    for args, needle in (
        ([f"data.path={tmp_path / 'nope'}"], "amazon-sft prepare"),
        (["train.global_batch_size=3", "train.micro_batch_size=2"], "global_batch_size=3"),
        (["train.lrr=1"], "train.lrr"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "amazon_sft.cli", "train", "--config", "tiny", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert proc.returncode == 2 and needle in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr


def test_lora_with_gradient_checkpointing_trains_and_saves_an_adapter(
    prepared, tiny_model_dir, tmp_path
):
    out = tmp_path / "run"
    train_here(
        *train_overrides(
            prepared,
            tiny_model_dir,
            out,
            "train.max_steps=2",
            "lora.enabled=true",
            "lora.r=4",
            "train.gradient_checkpointing=true",
            "lora.modules_to_save=[lm_head]",
        )
    )
    adapter = load_file(str(out / "final" / "adapter_model.safetensors"))
    assert any("lora_A" in k for k in adapter) and any("lm_head" in k for k in adapter)
    assert all(t.numel() for t in adapter.values())


def test_non_finite_steps_are_skipped_then_the_run_aborts(prepared, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    proc = _train(
        *train_overrides(
            prepared,
            tiny_model_dir,
            out,
            "train.max_steps=10",
            "train.lr=1e30",
            "train.warmup_steps=0",
            "train.max_bad_steps=2",
            "train.max_grad_norm=0",
        ),
        check=False,
    )
    assert proc.returncode == 2 and "non-finite" in proc.stderr and "Traceback" not in proc.stderr
    lines = proc.stderr.replace("\r", "\n").splitlines()  # not on the progress bar's line
    assert any(line.startswith("amazon-sft train: error: ") for line in lines), proc.stderr
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["non_finite"] is False and rows[0]["optimizer_stepped"] is True
    assert rows[-1]["non_finite"] is True and rows[-1]["optimizer_stepped"] is False
    assert not (out / "final").exists()


def test_epochs_set_the_steps_from_the_prepared_rows(prepared, tiny_model_dir, tmp_path):
    """A 7-8B run on the catalogue is sized in passes over it, not in steps counted by hand
    (the shipped configs trained the default 100 steps: under 1% of the real catalogue)."""
    import math

    import yaml

    from amazon_sft.data.manifest import read_manifest

    rows = read_manifest(prepared).rows
    out = tmp_path / "run"
    sizes = ("train.global_batch_size=64", "train.micro_batch_size=8", "train.epochs=0.5")
    train_here(*train_overrides(prepared, tiny_model_dir, out, *sizes))
    steps = math.ceil(0.5 * math.ceil(rows / 64))
    assert sorted(_losses(out)) == list(range(1, steps + 1))
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["max_steps"] == steps


def test_checkpoints_come_by_time_too(prepared, tiny_model_dir, tmp_path):
    """checkpoint.every_minutes: a cadence in time, whatever a step costs on the cards at hand
    (every_steps alone: a full 7-8B run at 50 steps saved ~100 GB every minute or two, an
    ML engineer's review). Minutes this short make every step due; steps alone, only the end."""
    base = train_overrides(prepared, tiny_model_dir, tmp_path / "x", "checkpoint.keep_last=10")

    def saved(out, *cadence):
        train_here(*base, f"out_dir={out}", "train.max_steps=3", *cadence)
        return sorted(p.name for p in (out / "checkpoints").iterdir())

    by_time = saved(tmp_path / "t", "checkpoint.every_steps=0", "checkpoint.every_minutes=1e-9")
    assert by_time == ["step-00000001", "step-00000002", "step-00000003"]
    by_steps = saved(tmp_path / "s", "checkpoint.every_steps=100")
    assert by_steps == ["step-00000003"]
    refused = _train(*base, "checkpoint.every_steps=0", check=False)
    assert refused.returncode == 2 and "checkpoint.every_minutes" in refused.stderr


@pytest.mark.parametrize(
    "how, stopped_at, finished",
    [("end", 2, True), ("end", 1, False), ("mid", 2, True), ("non-finite", 2, False)],
)
def test_a_stop_that_comes_during_the_last_step_still_writes_the_final_model(
    prepared, tiny_model_dir, tmp_path, monkeypatch, how, stopped_at, finished
):
    """A SLURM review: the pre-emption warning during the last step saved a checkpoint and no
    final/, so the batch shell requeued a finished run (a trip through the queue and a model
    load on every node to write final/). The last step done, the run is finished: final/ is
    written, also when the stop comes between its micro-batches ("mid": 16 a step, checked every
    8). A stop before the last step still stops with a checkpoint and no final/, and so does one
    whose last step was non-finite (it is retried on resume, not refused)."""
    import dataclasses

    from amazon_sft import train
    from amazon_sft import trainer as T
    from amazon_sft.run_files import read_run_summary

    real, steps = T.Trainer.train_step, []

    def stop_requested_in(self, micro, **kwargs):
        if how == "mid" and len(steps) + 1 == stopped_at:
            monkeypatch.setattr(T.Trainer, "stop_agreed", lambda self: True)
        result = real(self, micro, **kwargs)
        steps.append(result)
        now = len(steps) == stopped_at
        if how == "non-finite" and now:
            result = dataclasses.replace(result, finite=False, loss=None)
        return dataclasses.replace(result, stop_requested=now and how != "mid")

    monkeypatch.setattr(T.Trainer, "train_step", stop_requested_in)
    out = tmp_path / "run"
    batch = ["train.global_batch_size=16", "train.micro_batch_size=1"] if how == "mid" else []
    args = train_overrides(prepared, tiny_model_dir, out, "train.max_steps=2", *batch)
    assert train.main(["--config", "tiny", *args]) == 0
    assert len(steps) == stopped_at
    saved = (out / "checkpoints" / f"step-{stopped_at:08d}" / "COMPLETE").is_file()
    assert saved is (how != "non-finite")  # never a state whose last step was non-finite
    summary = read_run_summary(out / "final")
    assert (summary is not None and summary.stopped_by is None and summary.steps == 2) is finished


@pytest.mark.unit
def test_only_ties_the_model_makes_again_on_load_are_said_once(tiny_cfg, tiny_tok, tmp_path):
    """A review: a head tied by hand to the embedding of a model whose config does not tie them
    is not tied again when the checkpoint loads, so accelerate's warning about it must stand."""
    from transformers import AutoModelForCausalLM

    from amazon_sft.tied_weights import tied_names

    from .conftest import save_random_model

    tied = AutoModelForCausalLM.from_pretrained(
        save_random_model(tmp_path / "tied", tiny_cfg, tiny_tok, "llama", tied=True)
    )
    assert tied_names(tied) == {"lm_head.weight": "model.embed_tokens.weight"}
    untied = AutoModelForCausalLM.from_pretrained(
        save_random_model(tmp_path / "untied", tiny_cfg, tiny_tok, "llama", tied=False)
    )
    untied.lm_head.weight = untied.model.embed_tokens.weight  # shared at run time only
    assert tied_names(untied) == {}
