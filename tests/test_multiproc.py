"""2-process CPU runs over gloo at the shapes users run: DDP, ZeRO-2, ZeRO-3, ZeRO-3 + LoRA,
ZeRO-3 with offloaded optimizer states.

Shapes: a model written with save_pretrained and loaded back (tied Llama; untied Mistral for
ZeRO-3), 1024-token rows of real product text, micro-batch 2, gradient accumulation 2, gradient
checkpointing on, and ``loss_chunk_tokens=256``: a micro-batch holds ~700-1500 answer tokens, so
a data-dependent chunk count would differ between ranks (the ZeRO-3 hang). Each run must finish
within its timeout (a hang fails the test instead of stalling CI), give finite losses equal to a
1-process run of the same global batch within ``REL_TOL``, and save a final model that reloads.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from amazon_sft.checkpoint_engine import Engine, saved_engine

from .conftest import REAL_SHAPE_SEQ, free_port, train_here, train_overrides

pytestmark = pytest.mark.multiproc
REPO = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
RUN_TIMEOUT_S = 420
REL_TOL = 1e-4
"""1 process and 2 ranks sum the same gradients in another order (and ZeRO partitions them);
fp32 differences after 3 steps stay around 1e-6, far below what a wrong normalisation (x2),
a lost micro-batch or documents attending to each other would change."""
SHAPE = [
    f"data.max_seq_len={REAL_SHAPE_SEQ}",
    "train.max_steps=3",
    "train.global_batch_size=8",
    "train.micro_batch_size=2",
    "train.loss_chunk_tokens=256",
    "train.gradient_checkpointing=true",
    "train.weight_decay=0.1",
    "checkpoint.every_steps=2",  # a checkpoint at step 2 under each engine, at these shapes
    # 3 held-back rows: rank 1 scores one row and a padding row, so a rank forwarding less than
    # the other (a hang under ZeRO-3) would show; scored after steps 2 and 3
    "train.validation_rows=3",
    "train.validation_every=2",
]
# no LoRA dropout: 1 process and 2 ranks draw different dropout masks, which is not what is compared
LORA = ["lora.enabled=true", "lora.r=4", "lora.alpha=8", "lora.dropout=0"]
DORA = [*LORA, "lora.dora=true"]  # DoRA reads the whole base weight in its forward
ZERO3 = ["--config_file", "launch/accelerate/zero3.yaml"]
SAVES = {"zero3_offload": ("checkpoint.every_steps=1", "checkpoint.keep_last=3")}
"""A checkpoint each step where a case resumes from step 1 (a save changes no loss)."""
CASES = {
    "ddp": (["--multi_gpu"], {"ACCELERATE_USE_CPU": "true"}, [], "llama"),
    "zero2": (["--config_file", "launch/accelerate/zero2.yaml"], {}, [], "llama"),
    "zero3": (ZERO3, {}, [], "mistral"),
    "zero3_lora": (ZERO3, {}, LORA, "llama"),
    "zero3_dora": (ZERO3, {}, DORA, "llama"),
    "zero3_offload": (
        ["--config_file", "launch/accelerate/zero3_offload.yaml"],
        {},
        [],
        "llama",
    ),
}


def _losses(out: Path) -> list[float]:
    """Every step's loss, then every validation loss (none without train.validation_rows)."""
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows] + [r["val_loss"] for r in rows if "val_loss" in r]


def _run(launch: list[str], overrides: list[str], env_extra: dict | None = None):
    env = {**os.environ, **(env_extra or {})}
    cmd = [*launch, str(REPO / "amazon_sft" / "train.py"), "--config", "tiny", *overrides]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=RUN_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as err:
        tail = (err.stderr or b"")[-3000:]
        pytest.fail(f"hung: no exit after {RUN_TIMEOUT_S} s; stderr tail: {tail!r}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def models(tiny_model_dir, mistral_model_dir):
    return {"llama": tiny_model_dir, "mistral": mistral_model_dir}


@pytest.fixture(scope="module")
def references(real_shape_data, models, tmp_path_factory):
    """1-process loss curves of the same global batch (micro 2 x accumulation 4), trained in
    this process (only their metrics are read: ``train_here``)."""
    out = {}
    for name, model, extra in (
        ("llama", "llama", []),
        ("mistral", "mistral", []),
        ("llama_lora", "llama", LORA),
        ("llama_dora", "llama", DORA),
    ):
        folder = tmp_path_factory.mktemp(f"ref-{name}")
        train_here(*train_overrides(real_shape_data, models[model], folder, *SHAPE, *extra))
        out[name] = _losses(folder)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_match_one_at_real_shapes(
    case, real_shape_data, models, references, tmp_path
):
    flags, env, extra, model = CASES[case]
    launch = [
        ACCELERATE,
        "launch",
        *flags,
        "--num_processes",
        "2",
        "--main_process_port",
        str(free_port()),
    ]
    proc = _run(
        launch,
        train_overrides(
            real_shape_data, models[model], tmp_path, *SHAPE, *extra, *SAVES.get(case, ())
        ),
        env,
    )
    assert "micro 2 x accumulation 2 x world 2" in proc.stderr
    # DDP names the tied head "module.lm.lm_head.weight": said once too (tied_weights.py)
    assert "Removed shared tensor" not in proc.stderr, proc.stderr[-3000:]
    if case == "zero3_offload":  # accelerate maps our torch AdamW to DeepSpeed's CPU AdamW
        assert "optimizer: DeepSpeedCPUAdam (AdamW: decoupled weight decay)" in proc.stderr
    expected = references[
        {"zero3_dora": "llama_dora"}.get(case, f"{model}_lora" if extra else model)
    ]
    got = _losses(tmp_path)
    assert len(got) == 3 + 2  # three steps, two validations
    assert all(map(torch.isfinite, torch.tensor(got)))
    assert got == pytest.approx(expected, rel=REL_TOL)
    assert (tmp_path / "checkpoints" / "step-00000002" / "COMPLETE").is_file()
    # the layout a resume checks its engine against (checkpoint_engine), read off the real files
    stage = {"ddp": None, "zero2": 2}.get(case, 3)
    saved = saved_engine(tmp_path / "checkpoints" / "step-00000002")
    assert saved == (None if stage is None else Engine(stage, 2))
    _reloads(tmp_path, bool(extra))
    if case == "zero3_lora":
        _resumes_from_the_adapter_alone(launch, tmp_path, got, models[model], real_shape_data, env)
    if case == "zero3":
        _resumes_with_another_micro_batch(launch, tmp_path, models[model], real_shape_data, env)
    if case == "zero3_offload":
        _resumes_at_the_schedules_lr(launch, tmp_path, got, models[model], real_shape_data, env)


def _resumes_at_the_schedules_lr(launch, out: Path, losses, model, data, env) -> None:
    """An outside review: under ZeRO-3 with offloaded optimizer states the optimizer DeepSpeed
    steps (DeepSpeedCPUAdam) shares its param groups with the torch AdamW the scheduler was
    built on, until loading a checkpoint replaced them: a resumed run then stepped at the lr of
    the step it resumed from for good (``schedule_the_stepped_optimizer``), while the scheduler
    and metrics.jsonl moved on. One step after the resume cannot show it (the loaded state holds
    that step's lr), so steps 2 and 3 run again from step 1's checkpoint: step 3's update at
    step 2's lr (1.65e-3, not 3e-4) changes the validation loss scored after it."""
    checkpoint = out / "checkpoints" / "step-00000001"
    port = launch.index("--main_process_port") + 1
    launch = [*launch[:port], str(free_port()), *launch[port + 1 :]]
    again = [*SHAPE, *SAVES["zero3_offload"], f"resume={checkpoint}"]
    proc = _run(launch, train_overrides(data, model, out, *again), env)
    assert "resumed from" in proc.stderr and "at step 1" in proc.stderr
    assert _losses(out) == pytest.approx(losses, rel=REL_TOL)


def _resumes_from_the_adapter_alone(launch, out: Path, losses, model, data, env) -> None:
    """A ZeRO-3 LoRA checkpoint holds the adapter, not the frozen base (trainable_state.py):
    step 3 again from step 2's checkpoint, the base loaded from model.path, gives the same
    loss within ``REL_TOL`` (the same run's own step 3, the same schedule)."""
    checkpoint = out / "checkpoints" / "step-00000002"
    frozen_name = "model.embed_tokens.weight"  # the tied embedding: frozen under LoRA
    module = torch.load(
        next((checkpoint / "pytorch_model").glob("*model_states.pt")), weights_only=True
    )["module"]
    assert module and all("lora_" in k for k in module), sorted(module)[:4]
    assert not any(k.endswith(frozen_name) for k in module)
    port = launch.index("--main_process_port") + 1
    launch = [*launch[:port], str(free_port()), *launch[port + 1 :]]
    proc = _run(
        launch, train_overrides(data, model, out, *SHAPE, *LORA, f"resume={checkpoint.name}"), env
    )
    assert "resumed from" in proc.stderr and "at step 2" in proc.stderr
    assert _losses(out) == pytest.approx(losses, rel=REL_TOL)  # step 3 run again


def _resumes_with_another_micro_batch(launch, out: Path, model, data, env) -> None:
    """A ZeRO-3 job requeued onto cards with less memory takes a smaller micro-batch on resume
    (resume_config.APPLIED): DeepSpeed's engine then accumulates 4 micro-batches, not 2, and
    its checkpoint was written under the old accumulation. Step 3 again from step 2's
    checkpoint, micro 1 x accumulation 4 x world 2, must give the same loss and the same
    gradient norm as the run's own step 3 (a gradient scaled by a stale accumulation, or a
    boundary counted from the old micro-step counter, would not). Only the tiny-shape,
    one-process case was tested before."""
    checkpoint = out / "checkpoints" / "step-00000002"
    before = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    port = launch.index("--main_process_port") + 1
    launch = [*launch[:port], str(free_port()), *launch[port + 1 :]]
    again = [*SHAPE, "train.micro_batch_size=1", f"resume={checkpoint.name}"]
    proc = _run(launch, train_overrides(data, model, out, *again), env)
    assert "micro 1 x accumulation 4 x world 2" in proc.stderr
    assert "train.micro_batch_size: 2 -> 1" in proc.stderr
    after = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in after] == [1, 2, 3]
    assert after[2]["loss"] == pytest.approx(before[2]["loss"], rel=REL_TOL)
    assert after[2]["grad_norm"] == pytest.approx(before[2]["grad_norm"], rel=1e-3)


def _reloads(out: Path, lora: bool) -> None:
    """The final folder loads back through the product's own loader and runs."""
    from amazon_sft.evaluation.loading import load_for_eval

    model, *_ = load_for_eval(str(out), [], "cpu")
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[5, 6, 7]])).logits
    assert torch.isfinite(logits).all()
    if lora:  # the ZeRO-3 LoRA save contract: a real, trained adapter, not empty shards
        from safetensors.torch import load_file

        adapter = load_file(str(out / "final" / "adapter_model.safetensors"))
        assert adapter and all(t.numel() > 0 for t in adapter.values())
        assert any("lora_B" in k and torch.count_nonzero(t) > 0 for k, t in adapter.items())


def test_deepspeed_non_finite_steps_report_what_deepspeed_did(prepared, tiny_model_dir, tmp_path):
    """DeepSpeed steps inside backward: the metrics say whether it changed the weights
    (``was_step_applied``), not what our own guard would have done."""
    launch = [ACCELERATE, "launch", "--config_file", "launch/accelerate/zero2.yaml"]
    launch += ["--num_processes", "2", "--main_process_port", str(free_port())]
    overrides = train_overrides(
        prepared,
        tiny_model_dir,
        tmp_path,
        *("train.max_steps=6", "train.lr=1e30", "train.warmup_steps=0"),
        *("train.max_bad_steps=2", "train.max_grad_norm=0", "train.global_batch_size=4"),
    )
    cmd = [*launch, str(REPO / "amazon_sft" / "train.py"), "--config", "tiny", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=RUN_TIMEOUT_S)
    assert (
        proc.returncode != 0
        and "amazon-sft train: error: 2 optimizer steps in a row" in proc.stderr
    )
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["optimizer_stepped"] and not rows[0]["non_finite"]
    bad = [r for r in rows if r["non_finite"]]
    assert len(bad) == 2 and not any(r["optimizer_stepped"] for r in bad)  # ZeRO skipped them


def test_sigusr1_to_the_training_processes_of_a_plain_accelerate_launch(
    prepared, tiny_model_dir, tmp_path
):
    """What the README says to do without SLURM: signal the training processes (the launcher's
    children), not the launcher. They save a checkpoint and exit 0, and so does the launcher."""
    import signal
    import time

    launch = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--main_process_port", str(free_port())]
    overrides = train_overrides(
        prepared,
        tiny_model_dir,
        tmp_path,
        *("train.max_steps=100000", "checkpoint.every_steps=100000"),
        *("train.global_batch_size=2", "train.micro_batch_size=1"),
    )
    cmd = [*launch, str(REPO / "amazon_sft" / "train.py"), "--config", "tiny", *overrides]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true"}
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + RUN_TIMEOUT_S
    while not (tmp_path / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.1)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 2, children
    for pid in children:
        os.kill(int(pid), signal.SIGUSR1)
    _, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr and "stopping at step" in stderr
    saved = list((tmp_path / "checkpoints").glob("step-*/COMPLETE"))
    assert len(saved) == 1 and not (tmp_path / "final").exists()


def test_two_cpu_processes_that_accelerate_runs_alone_are_refused(
    prepared, tiny_model_dir, tmp_path
):
    """``accelerate launch --multi_gpu --num_processes 2`` on a machine without a GPU and without
    ACCELERATE_USE_CPU: accelerate starts gloo but runs each process alone (no DDP, its
    ``reduce`` a no-op), so each rank trained on its half of the data with a gradient twice too
    large and the launch exited 0 (an outside review). It must stop in one line, before
    training, naming the fix."""
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    launch = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--main_process_port", str(free_port())]
    overrides = train_overrides(prepared, tiny_model_dir, tmp_path, "train.max_steps=2")
    cmd = [*launch, str(REPO / "amazon_sft" / "train.py"), "--config", "tiny", *overrides]
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert proc.returncode != 0, proc.stderr[-3000:]
    # the launcher's own traceback (a child exited non-zero) is accelerate's; none is ours
    assert "runs each of the 2 processes alone" in proc.stderr, proc.stderr[-3000:]
    assert "amazon_sft/" not in proc.stderr.split("runs each of")[0], proc.stderr[-3000:]
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "final").exists()


def test_a_ddp_run_resumed_on_fewer_processes_still_steps_the_optimizer(
    prepared, tiny_model_dir, tmp_path
):
    """An outside review: accelerate's checkpoint holds its micro-batch counter. Resumed on
    fewer processes (a requeue on fewer nodes: the same global batch, more accumulation), a
    counter that is not a multiple of the new accumulation made accelerate sync gradients
    mid-step and skip every later optimizer step, while the run logged normal steps and saved
    step 1's weights as final/. The resumed run now gives the uninterrupted run's losses."""
    import shutil

    out = tmp_path / "run"
    overrides = train_overrides(
        prepared,
        tiny_model_dir,
        out,
        "train.max_steps=4",
        "train.global_batch_size=4",
        "train.micro_batch_size=1",
        "checkpoint.every_steps=1",
        "checkpoint.keep_last=4",
    )
    launch = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2"]
    _run(
        [*launch, "--main_process_port", str(free_port())],
        overrides,
        {"ACCELERATE_USE_CPU": "true"},
    )  # accumulation 2: accelerate's counter is 2 at step 1
    uninterrupted = _losses(out)
    shutil.rmtree(out / "final")
    for step in (2, 3, 4):
        shutil.rmtree(out / "checkpoints" / f"step-{step:08d}")
    (out / "metrics.jsonl").write_text((out / "metrics.jsonl").read_text().splitlines()[0] + "\n")
    _run([sys.executable], [*overrides, "resume=auto"])  # one process: accumulation 4
    assert _losses(out) == pytest.approx(uninterrupted, rel=REL_TOL)


FIVE_STEPS = (
    "train.max_steps=5",
    "train.global_batch_size=4",
    "train.micro_batch_size=1",
    "checkpoint.every_steps=2",
    "checkpoint.keep_last=5",
)
"""Five steps of 4 rows, 1 a micro-batch, a checkpoint at steps 2 and 4 (and 5, the last)."""


def test_a_checkpoint_one_rank_cannot_load_is_passed_over_by_every_rank(
    prepared, tiny_model_dir, tmp_path
):
    """An outside review: resume fell back to "the one before" on each rank alone. A load
    error on one rank only (a CUDA out-of-memory while it loads its optimizer state, simulated
    here) had rank 1 resume from step 2 and rank 0 from step 4: the ranks trained from other
    weights and steps, and a mixed model was saved later. The ranks now agree: a checkpoint any
    rank cannot load is passed over by all, and the resumed run gives the uninterrupted losses.
    An out-of-memory error is not a damaged checkpoint: it stops every rank, keeping them all."""
    import shutil

    out = tmp_path / "run"
    overrides = train_overrides(prepared, tiny_model_dir, out, *FIVE_STEPS)
    launch = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2"]
    env = {"ACCELERATE_USE_CPU": "true"}
    _run([*launch, "--main_process_port", str(free_port())], overrides, env)
    uninterrupted = _losses(out)
    shutil.rmtree(out / "final")
    shutil.rmtree(out / "checkpoints" / "step-00000005")  # the last step's
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join(lines[:4]) + "\n")  # killed after step 4's save

    wrapper = tmp_path / "train_failing_on_rank_1.py"
    wrapper.write_text(
        "import os, sys, torch\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "import amazon_sft.resuming as R\n"
        "from amazon_sft.train import cli\n"
        "load = R.load_checkpoint\n"
        "def failing(accelerator, model, path):\n"
        "    if os.environ['RANK'] == '1' and path.name == 'step-00000004':\n"
        "        raise ERROR('injected: rank 1 could not load ' + path.name)\n"
        "    return load(accelerator, model, path)\n"
        "R.load_checkpoint = failing\n"
        "cli()\n"
    )
    cmd = [*launch, "--main_process_port", str(free_port()), str(wrapper), "--config", "tiny"]
    cmd += [*overrides, "resume=auto"]
    for error in ("RuntimeError", "torch.OutOfMemoryError"):
        wrapper.write_text(wrapper.read_text().replace("ERROR(", f"{error}(", 1))
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, **env},
            timeout=RUN_TIMEOUT_S,
        )
        if error == "RuntimeError":
            assert proc.returncode == 0, proc.stderr[-4000:]
            assert proc.stderr.count("resumed from") == 2, proc.stderr[-4000:]
            assert "step-00000004 at step" not in proc.stderr
            assert _losses(out) == pytest.approx(uninterrupted, rel=REL_TOL)
            wrapper.write_text(wrapper.read_text().replace("RuntimeError(", "ERROR(", 1))
            shutil.rmtree(out / "final")  # step 4 is set aside: put it back, as killed
            aside = out / "checkpoints" / ".set_aside"
            for folder in sorted(aside.iterdir()):
                if folder.name.startswith("step-"):
                    shutil.move(folder, out / "checkpoints" / folder.name)
            shutil.rmtree(out / "checkpoints" / "step-00000005")
            (out / "metrics.jsonl").write_text("\n".join(lines[:4]) + "\n")
        else:
            assert proc.returncode != 0, proc.stderr[-4000:]
            said = "amazon-sft train: error: not enough memory to load checkpoint"
            assert proc.stderr.count(said) == 2, proc.stderr[-3000:]  # one line on each rank
            assert (out / "checkpoints" / "step-00000004").is_dir()  # not set aside
