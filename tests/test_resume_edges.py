"""Resuming where there is nothing to resume, or into another model (an ML engineer's trial,
2026-12-01): a SLURM requeue of a finished run rewrote its final/ (losing its final loss), a
smaller ``train.max_steps`` was taken, and a change of LoRA made every checkpoint "unusable"
with advice to start over."""

import json
import re
import shutil
from pathlib import Path

import pytest

from .conftest import train_here, train_overrides
from .test_hostile import _cli, _metrics, _one_line_error

pytestmark = pytest.mark.e2e


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def two_steps(prepared, tiny_model_dir, tmp_path_factory) -> Path:
    """A finished tiny run of 2 steps, a checkpoint each (keep_last 2): trained once for the
    tests here, in this process (``train_here``). Read, never written:
    a test that goes on from it trains a copy (``_copy``)."""
    out = tmp_path_factory.mktemp("two-steps") / "run"
    train_here(*train_overrides(prepared, tiny_model_dir, out), "train.max_steps=2",
               "checkpoint.every_steps=1")  # fmt: skip
    return out


def _copy(run: Path, to: Path) -> Path:
    """A run folder copied as a user moves one (nothing in it names its own path)."""
    shutil.copytree(run, to, symlinks=True)
    return to


def test_a_finished_run_resumed_again_keeps_its_final(
    two_steps, prepared, tiny_model_dir, tmp_path
):
    out = _copy(two_steps, tmp_path / "run")
    base = ("train", "--config", "tiny", *train_overrides(prepared, tiny_model_dir, out))
    before = _files(out / "final")
    again = _cli(*base, "train.max_steps=2", "resume=auto")  # a requeue after the end
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already finished at step 2" in again.stderr
    assert _files(out / "final") == before  # its final loss and card too
    back = _cli(*base, "train.max_steps=1", "resume=auto")
    _one_line_error(back, "train", "train.max_steps=1", "step 2")
    assert _files(out / "final") == before and [r["step"] for r in _metrics(out)] == [1, 2]


def test_resume_into_lora_is_refused_with_its_diff_not_as_unusable_checkpoints(
    two_steps, prepared, tiny_model_dir, tmp_path
):
    out = _copy(two_steps, tmp_path / "run")
    base = ("train", "--config", "tiny", *train_overrides(prepared, tiny_model_dir, out))
    again = _cli(*base, "train.max_steps=3", "resume=auto", "lora.enabled=true")
    _one_line_error(again, "train", "another run", "lora.enabled: False -> True")
    assert "unusable" not in again.stderr and "overwrite=true" not in again.stderr
    # the same run resumed: its time counts both segments (it counted the last one only)
    first_seconds = json.loads((out / "checkpoints/step-00000002/trainer_state.json").read_text())
    resumed = _cli(*base, "train.max_steps=3", "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((out / "final/run_summary.json").read_text())
    assert first_seconds["train_seconds"] > 0
    assert summary["train_seconds"] > first_seconds["train_seconds"]
    assert summary["train_seconds"] >= summary["train_seconds_this_launch"] > 0


def test_a_lora_run_on_a_random_base_loads_the_base_it_was_trained_on(prepared, tmp_path):
    """``model.path: random`` (the tiny config) with LoRA: eval, ask and export built the base
    with a fresh random init each time (export's own check compared against that same wrong
    base). The base is built with the run's seed, as training built it."""
    from safetensors.torch import load_file

    from amazon_sft.evaluation.loading import load_for_eval

    out = tmp_path / "run"
    overrides = [f"data.path={prepared}", f"out_dir={out}", "train.trackers=[]"]
    train_here(*overrides, "train.max_steps=2", "lora.enabled=true")
    (checkpoint,) = (out / "checkpoints").glob("step-*")
    trained = load_file(str(checkpoint / "model.safetensors"))
    # a LoRA checkpoint holds the adapter only (trainable_state.py): the base is the one the
    # run's config builds, seeded as training builds it
    assert trained and all("lora_" in k for k in trained)
    base, *_ = load_for_eval(str(out / "config.yaml"), [], "cpu")
    embed = base.get_input_embeddings().weight.detach()
    for _ in range(2):
        model, *_ = load_for_eval(str(out), [], "cpu")
        loaded = model.get_input_embeddings().weight.detach()
        assert (loaded - embed).abs().max().item() == 0.0


def test_a_fresh_start_and_a_warmup_longer_than_the_run_are_said(
    prepared, tiny_model_dir, tmp_path
):
    """resume=auto with no checkpoint started at step 0 without a word, and a warmup longer than
    the run (the lr never reaching its peak) passed silently."""
    out = tmp_path / "run"
    base = ("train", "--config", "tiny", *train_overrides(prepared, tiny_model_dir, out))
    run = _cli(*base, "train.max_steps=2", "train.warmup_steps=10", "resume=auto")
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"resume=auto: no checkpoint in {out} yet; starting at step 0" in run.stderr
    assert "train.warmup_steps=10 is not below train.max_steps=2" in run.stderr


def test_a_checkpoint_given_as_a_model_is_named_for_what_it_is(tuned_run, tmp_path, capsys):
    from .test_hostile import _assert_one_line, _run_cli

    checkpoint = sorted((tuned_run / "checkpoints").glob("step-*"))[-1]
    code, err = _run_cli(capsys, "export", str(checkpoint), "--out", str(tmp_path / "x"))
    _assert_one_line(code, err, "export", "is a training checkpoint", "final/")


def test_tensorboard_shows_each_step_once_after_a_resume(prepared, tiny_model_dir, tmp_path):
    """metrics.jsonl dropped the rows run again after a resume, TensorBoard kept both copies."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    over = (*train_overrides(prepared, tiny_model_dir, out), "train.trackers=[tensorboard]",
            "checkpoint.every_steps=2")  # fmt: skip
    base = ("train", "--config", "tiny", *over)
    train_here(*over, "train.max_steps=4")
    shutil.rmtree(out / "checkpoints" / "step-00000004")  # killed after step 4, before its save
    again = _cli(*base, "train.max_steps=5", "resume=auto")
    assert again.returncode == 0, again.stderr[-2000:]
    events = EventAccumulator(str(out / "logs" / "amazon_sft"))  # both runs' files, as TB reads
    events.Reload()
    steps = [e.step for e in events.Scalars("loss")]
    assert steps == [1, 2, 3, 4, 5], steps


def test_resuming_from_an_older_checkpoint_sets_the_newer_ones_aside(
    prepared, tiny_model_dir, tmp_path
):
    """resume=PATH of step 2 left steps 4 and 6 of the first run in place: retention then
    deleted the branch point, and the next resume=auto (a requeue) went on from the old step 6."""
    out = tmp_path / "run"
    over = train_overrides(prepared, tiny_model_dir, out)
    base = ("train", "--config", "tiny", *over)
    every = ("checkpoint.every_steps=2", "checkpoint.keep_last=3")
    train_here(*over, *every, "train.max_steps=6")
    branch = out / "checkpoints" / "step-00000002"
    again = _cli(*base, *every, "train.max_steps=3", f"resume={branch}", "train.lr=1e-5")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "set aside" in again.stderr
    names = sorted(p.name for p in (out / "checkpoints").glob("step-*"))
    assert names == ["step-00000002", "step-00000003"], names
    assert sorted(p.name for p in (out / "checkpoints" / ".set_aside").iterdir()) == [
        "final-step-00000006",  # the abandoned branch's model: its next save replaced final/
        "step-00000004",
        "step-00000006",
    ]
    summary = out / "checkpoints" / ".set_aside" / "final-step-00000006" / "run_summary.json"
    assert json.loads(summary.read_text())["steps"] == 6
    assert json.loads((out / "final" / "run_summary.json").read_text())["steps"] == 3
    later = _cli(*base, *every, "train.max_steps=4", "resume=auto", "train.lr=1e-5")
    assert later.returncode == 0, later.stderr[-2000:]
    assert "resumed from" in later.stderr and "step-00000003 at step 3" in later.stderr


def test_another_runs_checkpoint_is_not_resumed_into_a_folder_holding_a_run(
    two_steps, prepared, tiny_model_dir, tmp_path
):
    """``out_dir=B resume=A/checkpoints/step-2`` into B's finished run went on: B's final/ was
    replaced, its metrics rows after step 2 deleted, A's rows appended to B's (an outside
    review). Refused now, before anything is written; into a new folder it is a branch."""
    a, b = two_steps, _copy(two_steps, tmp_path / "b")  # B: a finished run of its own
    before = {p: p.read_bytes() for p in sorted(b.rglob("*")) if p.is_file()}
    branch = f"resume={a / 'checkpoints' / 'step-00000002'}"
    into_b = ("train", "--config", "tiny", *train_overrides(prepared, tiny_model_dir, b))
    refused = _cli(*into_b, "checkpoint.every_steps=1", "train.max_steps=4", branch)
    _one_line_error(refused, "train", "another run", str(b), "resume=auto", "new out_dir")
    assert {p: p.read_bytes() for p in sorted(b.rglob("*")) if p.is_file()} == before
    c = tmp_path / "c"
    into_c = ("train", "--config", "tiny", *train_overrides(prepared, tiny_model_dir, c))
    (c / "logs").mkdir(parents=True)  # a launch killed before its first save (a review)
    (c / ".amazon_sft_run.json").write_text("{}\n")
    fresh = _cli(*into_c, "checkpoint.every_steps=1", "train.max_steps=3", branch)
    assert fresh.returncode == 0 and "resumed from" in fresh.stderr, fresh.stderr[-2000:]
    assert [r["step"] for r in _metrics(c)] == [3]
    # a SLURM requeue repeats the command line: the branch goes on from its own step 3
    again = _cli(*into_c, "checkpoint.every_steps=1", "train.max_steps=4", branch)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "step-00000003 at step 3" in again.stderr and [r["step"] for r in _metrics(c)] == [3, 4]


def test_tensorboard_shows_each_step_once_after_a_restart_from_step_0(
    prepared, tiny_model_dir, tmp_path
):
    """A run killed before its first checkpoint and started again with resume=auto wrote steps
    1.. twice into TensorBoard (``purge_step`` was given only after a resume)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    over = (*train_overrides(prepared, tiny_model_dir, out), "train.trackers=[tensorboard]",
            "train.max_steps=2")  # fmt: skip
    base = ("train", "--config", "tiny", *over)
    train_here(*over)
    shutil.rmtree(out / "checkpoints")  # killed after step 2, before any save
    shutil.rmtree(out / "final")
    again = _cli(*base, "resume=auto")
    assert again.returncode == 0, again.stderr[-2000:]
    events = EventAccumulator(str(out / "logs" / "amazon_sft"))
    events.Reload()
    steps = [e.step for e in events.Scalars("loss")]
    assert steps == [1, 2], steps


@pytest.mark.multiproc
def test_a_deepspeed_checkpoint_resumed_under_another_engine_names_the_launcher(
    prepared, tiny_model_dir, tmp_path
):
    """A ZeRO-2 checkpoint (DeepSpeed's own layout, 1 process) resumed by a plain ``amazon-sft
    train`` read as "unusable" and the advice was to start over; on 2 processes DeepSpeed
    stopped in a traceback. Both are one line naming the launch that loads it."""
    import subprocess
    import sys

    from .conftest import REPO, free_port

    out = tmp_path / "run"
    overrides = train_overrides(prepared, tiny_model_dir, out)
    launch = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file"]
    launch += ["launch/accelerate/zero2.yaml", "--main_process_port", str(free_port())]
    train = ["amazon_sft/train.py", "--config", "tiny", *overrides, "train.max_steps=1"]
    first = subprocess.run(
        [*launch, "--num_processes", "1", *train],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    plain = _cli("train", "--config", "tiny", *overrides, "train.max_steps=2", "resume=auto")
    _one_line_error(plain, "train", "DeepSpeed ZeRO-2 on 1 process", "zero2.yaml --num_processes 1")
    assert "overwrite=true" not in plain.stderr and "unusable" not in plain.stderr
    assert (out / "checkpoints/step-00000001/COMPLETE").is_file()


@pytest.mark.parametrize(
    "files, running, refused",
    [
        (
            [
                "zero_pp_rank_0_mp_rank_00_model_states.pt",
                "zero_pp_rank_1_mp_rank_00_model_states.pt",
                "zero_pp_rank_0_mp_rank_00_optim_states.pt",
                "zero_pp_rank_1_mp_rank_00_optim_states.pt",
            ],
            (3, 2),
            None,
        ),
        (
            [
                "zero_pp_rank_0_mp_rank_00_model_states.pt",
                "zero_pp_rank_1_mp_rank_00_model_states.pt",
                "zero_pp_rank_0_mp_rank_00_optim_states.pt",
                "zero_pp_rank_1_mp_rank_00_optim_states.pt",
            ],
            (3, 4),
            "zero3.yaml --num_processes 2",
        ),
        (
            ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"],
            (3, 1),
            r"zero2.yaml --num_processes 1 .*\(a SLURM job: nodes x GPUs per node = 1, ACCEL=zero2\)",
        ),
        (
            ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"],
            (1, 1),
            None,
        ),  # ZeRO-1 and -2 write the same layout
        ([], (3, 2), r"without DeepSpeed .*a SLURM job: ACCEL=multi_node_ddp"),
        ([], (None, 4), None),  # a checkpoint without DeepSpeed loads on any process count
    ],
)
def test_a_checkpoints_engine_is_read_off_its_files(files, running, refused, tmp_path):
    from amazon_sft.checkpoint_engine import Engine, check_same_engine
    from amazon_sft.errors import UserError

    (tmp_path / "pytorch_model").mkdir()
    for name in files:
        (tmp_path / "pytorch_model" / name).write_bytes(b"")
    if refused is None:
        check_same_engine(tmp_path, Engine(*running))
    else:
        with pytest.raises(UserError, match=refused):
            check_same_engine(tmp_path, Engine(*running))


def test_a_checkpoint_named_as_the_docs_write_it_resumes_from_any_folder(tmp_path, monkeypatch):
    """``resume=checkpoints/step-N`` (docs/finetuning.md) was read from the working folder, not
    the run's, and the folders are ``step-0000000N``: the checkpoint that was there was said to
    be "not a complete checkpoint folder"."""
    from amazon_sft.checkpointing import COMPLETE, checkpoint_dir, resume_candidates
    from amazon_sft.errors import UserError

    out = tmp_path / "run"
    for step in (2, 4):
        checkpoint_dir(out, step).mkdir(parents=True)
        (checkpoint_dir(out, step) / COMPLETE).write_text("")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for given in (
        "checkpoints/step-2",
        "checkpoints/step-00000002",
        "step-2",
        str(out / "checkpoints/step-00000002"),
    ):
        assert resume_candidates(given, out) == [checkpoint_dir(out, 2)], given
    with pytest.raises(UserError) as err:
        resume_candidates("checkpoints/step-3", out)
    assert "step-00000002, step-00000004" in str(err.value) and "no such" in str(err.value)
    # another run's checkpoint as the docs write it (runs/a/checkpoints/step-N, N unpadded)
    # branches a new run from it; a missing one lists that run's checkpoints, not the new
    # run's (a docs audit)
    branch = tmp_path / "branch"
    for given in (str(out / "checkpoints" / "step-4"), "../run/checkpoints/step-4"):
        found = resume_candidates(given, branch)
        assert [p.resolve() for p in found] == [checkpoint_dir(out, 4)], given
    with pytest.raises(UserError) as err:
        resume_candidates(str(out / "checkpoints" / "step-6"), branch)
    assert "step-00000002, step-00000004" in str(err.value), err.value


@pytest.mark.unit
def test_an_older_checkpoint_that_cannot_load_stops_a_resume_only_when_it_is_reached(tmp_path):
    """``plan_resume`` reads every checkpoint before the model loads: one older checkpoint
    written under another engine stopped a resume whose newest loads (a review's finding), and
    a checkpoint without a recorded config was warned about once per checkpoint, unnamed. The
    newest decides; an older one's refusal waits until resume falls back to it."""
    from types import SimpleNamespace

    from amazon_sft.checkpointing import COMPLETE, checkpoint_dir, write_checksums
    from amazon_sft.config import load_run_config
    from amazon_sft.config_loader import to_dict
    from amazon_sft.data.manifest import DataIdentity
    from amazon_sft.errors import UserError
    from amazon_sft.resume_config import run_record
    from amazon_sft.resuming import plan_resume

    cfg = load_run_config("tiny", [f"out_dir={tmp_path / 'run'}", "resume=auto"])
    out = tmp_path / "run"
    for step in (1, 2):
        checkpoint_dir(out, step).mkdir(parents=True)
        (checkpoint_dir(out, step) / COMPLETE).write_text("")
    (checkpoint_dir(out, 1) / "pytorch_model").mkdir()  # ZeRO-2 on one process
    (checkpoint_dir(out, 1) / "pytorch_model" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"")  # fmt: skip
    for step in (1, 2):
        write_checksums(checkpoint_dir(out, step))  # whole: their files are checked first
    accelerator = SimpleNamespace(
        num_processes=1,
        process_index=0,
        device="cpu",
        reduce=lambda v, reduction: v,
        state=SimpleNamespace(deepspeed_plugin=None),
        mixed_precision="no",
    )
    planned = plan_resume(cfg, accelerator, DataIdentity("digest", "digest"), out, None)
    newest, older = planned.values()
    assert newest is None  # no config recorded: said when (if) it is loaded
    assert isinstance(older, UserError) and "ZeRO-2" in str(older)
    record = run_record(to_dict(cfg), "another digest")  # the data changed since step 2
    (checkpoint_dir(out, 2) / "run_config.json").write_text(json.dumps(record))
    write_checksums(checkpoint_dir(out, 2))  # as a save lists it (an unlisted one: not loaded)
    with pytest.raises(UserError, match="would make it another run"):
        plan_resume(cfg, accelerator, DataIdentity("digest", "digest"), out, None)


def test_a_resume_clears_what_killed_saves_left_and_restores_a_swapped_checkpoint(
    two_steps, prepared, tiny_model_dir, tmp_path
):
    """A save killed at a step the next save does not repeat (a stop's, or SIGKILL at the time
    limit) left ``checkpoints/step-N.tmp`` for good (a 7B ZeRO-3 checkpoint: ~100 GB, whatever
    ``keep_last``), and ``final/``'s staging from another node (a requeue lands elsewhere) was
    never removed (an outside review). Train holds the folder's lock, so no live process owns
    them: cleared at the start, and a checkpoint set aside mid-swap is restored."""
    import socket

    from amazon_sft.atomic import staging_name
    from amazon_sft.checkpoint_staging import start_staging

    out = _copy(two_steps, tmp_path / "run")
    base = ("train", "--config", "tiny", *train_overrides(prepared, tiny_model_dir, out))
    every = ("checkpoint.every_steps=1",)
    ck = out / "checkpoints"
    start_staging(ck / "step-00000005.tmp")  # a save killed mid-way
    (ck / "step-00000005.tmp" / "model.safetensors").write_bytes(b"x" * 1000)
    # another machine's name as staging names write it (atomic._machine: no "-" in it)
    other = re.sub(r"[^A-Za-z0-9._]", "_", f"{socket.gethostname()}-elsewhere")
    staging_name(out / "final", machine=other, pid=12345).mkdir()
    aside = staging_name(ck / "step-00000002", "old", machine=other, pid=12345)
    (ck / "step-00000002").rename(aside)  # killed mid-swap
    again = _cli(*base, *every, "train.max_steps=3", "resume=auto")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "step-00000002 at step 2" in again.stderr  # restored, then resumed from
    left = sorted(
        p.name for p in [*out.iterdir(), *ck.iterdir()] if ".tmp" in p.name or ".old" in p.name
    )
    assert left == [], left


def test_without_a_lock_nothing_a_live_process_may_own_is_cleared(tmp_path, monkeypatch):
    """On a filesystem without locks the lock only warns, so another train may be saving
    there: a review deleted a live ``.final.tmp`` of this machine and a ``step-N.tmp`` that way.
    This machine's live processes' staging is never removed, and without the lock nothing is."""
    import errno
    import fcntl

    from amazon_sft.atomic import remove_stale, staging_name
    from amazon_sft.output_lock import OutputLock

    out = tmp_path / "run"
    out.mkdir()
    live = staging_name(out / "final")  # this machine's, this live process's
    live.mkdir()
    assert remove_stale(out / "final", any_machine=True) == [] and live.is_dir()

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with OutputLock(out, "train") as lock:
        assert not lock.locked


@pytest.mark.unit
def test_a_zero_checkpoint_missing_one_ranks_file_is_passed_over_not_read_as_another_launch(
    tmp_path,
):
    """An outside review: ``plan_resume`` counted a ZeRO checkpoint's ranks from the files
    present before checking them, so step 12 with rank 1's optimizer file missing read as
    "saved under ZeRO-2 on 1 process: --num_processes 1", and relaunched so, step 10 (whole)
    asked for 2: a user was stuck until they deleted step 12 by hand. Its files are checked
    first now: it is unusable (named), and resume goes on from the one before."""
    from types import SimpleNamespace

    from amazon_sft.checkpointing import (
        COMPLETE,
        CorruptCheckpoint,
        checkpoint_dir,
        write_checksums,
    )
    from amazon_sft.config import load_run_config
    from amazon_sft.data.manifest import DataIdentity
    from amazon_sft.resuming import plan_resume

    cfg = load_run_config("tiny", [f"out_dir={tmp_path / 'run'}", "resume=auto"])
    out = tmp_path / "run"
    for step in (10, 12):
        folder = checkpoint_dir(out, step)
        (folder / "pytorch_model").mkdir(parents=True)
        for rank in (0, 1):
            name = f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"
            (folder / "pytorch_model" / name).write_bytes(b"optimizer partition")
        write_checksums(folder)
        (folder / COMPLETE).write_text("")
    (checkpoint_dir(out, 12) / "pytorch_model" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()  # fmt: skip
    accelerator = SimpleNamespace(
        num_processes=2,
        process_index=0,
        device="cpu",
        reduce=lambda v, reduction: v + v.roll(1),  # rank 1 as this rank: the same listing
        state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=2)),
        mixed_precision="no",
    )
    planned = plan_resume(cfg, accelerator, DataIdentity("digest", "digest"), out, None)
    newest, older = planned.values()
    assert isinstance(newest, CorruptCheckpoint) and "zero_pp_rank_1" in str(newest)
    assert older is None  # whole, no config recorded: loaded (and said so) when reached


def test_a_branch_relaunched_as_typed_goes_on_after_its_first_checkpoints_rotated(
    two_steps, prepared, tiny_model_dir, tmp_path
):
    """An outside review: a branch from another run's checkpoint, relaunched with the same
    ``resume=PATH`` (a SLURM requeue repeats its command line), goes on from its own newest
    checkpoint: ``branch_goes_on`` found them by their recorded ``resume=PATH``. Relaunches
    record ``resume=auto``, so once ``checkpoint.keep_last`` rotated the first launch's away the
    next relaunch was refused as a second run in the folder. Each checkpoint of a branch records
    where it branched from. A step named unpadded, as resume reads it, is the same checkpoint
    (it was not recognised at all: a review): the launches alternate the two spellings, so each
    starts the branch or goes on from it, before and after the rotation."""
    run_a = two_steps
    branch = tmp_path / "b"
    over = train_overrides(prepared, tiny_model_dir, branch)
    # each launch the same checkpoint resume=PATH, a longer run: 3 starts the branch, 5 goes on
    # from the first launch's checkpoints, 6 and 7 from 5's after keep_last=2 rotated 3's away
    for steps, named in ((3, "step-1"), (5, "step-00000001"), (6, "step-1"), (7, "step-00000001")):
        source = f"resume={run_a / 'checkpoints' / named}"
        train_here(*over, source, f"train.max_steps={steps}", "checkpoint.every_steps=1")
        kept = sorted(p.name for p in (branch / "checkpoints").glob("step-*"))
        assert kept == [f"step-{steps - 1:08d}", f"step-{steps:08d}"], kept  # keep_last 2
    assert [r["step"] for r in _metrics(branch)] == [2, 3, 4, 5, 6, 7]


def test_a_branch_into_a_new_folder_says_where_its_earlier_steps_are_logged(
    two_steps, prepared, tiny_model_dir, tmp_path
):
    """An outside trial: ``resume=`` another run's checkpoint into a new folder started its
    ``metrics.jsonl`` at the checkpoint's step, unsaid (the curve looked cut). The launch says
    where the steps up to it are logged."""
    branch = tmp_path / "b"
    b = ("train", "--config", "tiny", *train_overrides(prepared, tiny_model_dir, branch))
    source = two_steps / "checkpoints" / "step-00000001"
    launch = _cli(*b, f"resume={source}", "train.max_steps=2")
    assert launch.returncode == 0, launch.stderr[-2000:]
    assert [r["step"] for r in _metrics(branch)] == [2]
    said = " ".join(launch.stderr.split())
    assert "metrics.jsonl starts after step 1" in said, launch.stderr[-2000:]
    assert str(two_steps / "metrics.jsonl") in said, launch.stderr[-2000:]


@pytest.mark.parametrize(
    "limit_bytes, saves",
    [(1 << 20, "checkpoint.every_steps=1"), (1 << 19, "checkpoint.every_steps=9")],
)
def test_a_save_cut_by_the_disk_gives_its_space_back_at_once(
    limit_bytes, saves, prepared, tiny_model_dir, tmp_path
):
    """An outside trial: the first checkpoint's save, cut by a full disk, stayed in
    ``checkpoints/step-N.tmp`` (its space still taken on the full disk) until a re-run with
    ``resume=auto`` removed it. The cut save is removed as the save fails; ``final/``'s too
    (a review). A file-size limit cuts them here: of 1 MiB, the checkpoint's optimizer file
    (~1.6 MB); of 512 KiB with no checkpoint before, the final model (~0.8 MB)."""
    import resource
    import subprocess
    import sys

    out = tmp_path / "run"
    base = ("train", "--config", "tiny", *train_overrides(prepared, tiny_model_dir, out))
    limit = (limit_bytes, resource.RLIM_INFINITY)
    proc = subprocess.run(
        [sys.executable, "-m", "amazon_sft.cli", *base, "train.max_steps=2", saves],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, limit),
    )  # fmt: skip
    _one_line_error(proc, "train", "could not save", "ulimit -f", "resume=auto")
    left = [p.name for p in [*out.glob("checkpoints/*"), *out.glob(".final*")]]
    assert left == [] and not (out / "final").exists(), left


def test_overwrite_refused_before_its_first_step_leaves_the_previous_run_in_place(
    two_steps, prepared, tiny_model_dir, tmp_path
):
    """``overwrite=true`` moved the previous run into ``previous/`` before the model loaded: a
    setting refused at the load (a mistyped model.path, a kernel this machine lacks) left the
    run there, and the next ``resume=auto`` started over at step 0 (an ML engineer's trial).
    A run refused before its first step puts the previous run back."""
    out = _copy(two_steps, tmp_path / "run")
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    base = ("train", "--config", "tiny", *train_overrides(prepared, tiny_model_dir, out))
    refused = _cli(*base, "overwrite=true", "train.attention=flash_attention_2")
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    again = _cli(*base, "train.max_steps=3", "resume=auto")
    assert again.returncode == 0 and "at step 2" in again.stderr, again.stderr[-2000:]
