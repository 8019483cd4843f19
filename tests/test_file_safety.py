"""What deletes, moves or replaces files keeps what it cannot prove its own: checkpoint
pruning and a cut save's clean-up, the fallback swap, ``make clean`` of a run folder, synth's
record, and the checks that refuse a checkpoint or an output place. (A mutation audit: each
test names the change to the code it was written to catch; all are unit-level.)"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from .test_hostile import _assert_one_line as _one_line
from .test_hostile import _run_cli

pytestmark = [pytest.mark.hostile, pytest.mark.unit]


def test_keep_last_of_zero_is_refused_before_it_prunes_every_checkpoint():
    """``keep_last=0`` gives pruning no place to keep: the save just written, the newest,
    would be deleted with the rest (a mutation audit: ``keep_last < 0`` passed every test)."""
    from amazon_sft.config import load_run_config
    from amazon_sft.errors import UserError

    with pytest.raises(UserError, match=r"checkpoint\.keep_last >= 1"):
        load_run_config("tiny", ["checkpoint.keep_last=0"])
    assert load_run_config("tiny", ["checkpoint.keep_last=1"]).checkpoint.keep_last == 1


def test_a_cut_saves_clean_up_removes_only_a_marked_staging_folder(tmp_path):
    """A full disk removes the cut save's ``step-N.tmp`` at once, but only one a save marked:
    a user's folder under that name (a copy with notes in it) or another name the glob
    ``step-*.tmp`` finds is theirs (a mutation audit: a name check alone passed every test)."""
    from amazon_sft.checkpoint_staging import start_staging
    from amazon_sft.checkpointing import after_a_cut_save

    root = tmp_path / "run" / "checkpoints"
    cut = root / "step-00000006.tmp"
    start_staging(cut)  # as the cut save began
    (cut / "optimizer.bin").write_bytes(b"cut")
    theirs = [root / "step-00000004.tmp", root / "step-00000003-before-lr-change.tmp"]
    for folder in theirs:
        folder.mkdir()
        (folder / "NOTES.txt").write_text("mine")
    said = after_a_cut_save(tmp_path / "run", main_process=True)
    assert not cut.exists() and "no checkpoint of this run was complete" in said
    assert all((folder / "NOTES.txt").read_text() == "mine" for folder in theirs)


def test_a_start_leaves_other_step_names_and_never_follows_a_link(tmp_path):
    """Only ``step-<8 or more digits>.tmp`` is a save's staging: a user's ``step-3.tmp`` stays
    where it is. A link of a save's name is set aside, even one to a folder holding a save's
    mark (another run's killed save): it is never taken for this run's (a mutation audit:
    neither the digits' count nor the link check was tried)."""
    from amazon_sft.checkpoint_staging import SAVE_MARK, start_staging
    from amazon_sft.checkpointing import clear_killed_saves

    root = tmp_path / "run" / "checkpoints"
    mine = root / "step-3.tmp"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    other = tmp_path / "other-run-staging"
    start_staging(other)
    (other / "model.safetensors").write_bytes(b"another run's")
    (root / "step-00000007.tmp").symlink_to(other, target_is_directory=True)
    done = clear_killed_saves(tmp_path / "run")
    assert (mine / "notes.txt").read_text() == "mine"
    assert done == ["set aside step-00000007.tmp"], done
    assert (other / SAVE_MARK).is_file() and (other / "model.safetensors").is_file()
    (aside,) = root.glob("step-00000007.tmp.yours-*")
    assert aside.is_symlink()


def _checkpoint(folder: Path) -> Path:
    """A checkpoint's files and their list, as a save writes them."""
    from amazon_sft.checkpoint_checksums import write_checksums

    folder.mkdir(parents=True)
    for name in ("model.safetensors", "optimizer.bin", "trainer_state.json"):
        (folder / name).write_text(name)
    write_checksums(folder)
    return folder


def test_a_step_folder_with_a_checksum_list_but_no_complete_is_set_aside_by_its_save(tmp_path):
    """A folder at ``checkpoints/step-N`` without ``COMPLETE`` no save finished, whatever list
    it holds (a user's ``mv final checkpoints/step-00000001``: a saved model lists its files
    too): the save of step N sets it aside whole, never replaces the files its list names (a
    mutation audit: ``COMPLETE`` unchecked passed every test)."""
    import torch
    from accelerate import Accelerator

    from amazon_sft.checkpointing import TrainerState, checkpoint_dir, save_checkpoint

    out = tmp_path / "run"
    step = _checkpoint(checkpoint_dir(out, 1))
    accelerator, model = Accelerator(cpu=True), torch.nn.Linear(2, 2)
    save_checkpoint(accelerator, model, out, TrainerState(step=1), 3, {"config": {}})
    (aside,) = step.parent.glob(f"{step.name}.yours-*")
    assert (aside / "model.safetensors").read_text() == "model.safetensors"


def test_an_empty_checksum_list_or_an_unlisted_engine_shard_is_refused(tmp_path):
    """``checksums.json`` of ``{}`` verified nothing (the weights loaded unchecked), and a
    DeepSpeed shard in ``pytorch_model/`` that the list leaves out was loaded unchecked (a
    mutation audit: neither was tried)."""
    from amazon_sft.checkpoint_checksums import (
        CHECKSUMS,
        ENGINE_FOLDER,
        CorruptCheckpoint,
        verify_checkpoint,
    )

    step = _checkpoint(tmp_path / "step-00000004")
    (step / CHECKSUMS).write_text("{}")
    with pytest.raises(CorruptCheckpoint, match="does not list its files"):
        verify_checkpoint(step)
    step = _checkpoint(tmp_path / "step-00000006")
    verify_checkpoint(step)
    (step / ENGINE_FOLDER).mkdir()
    (step / ENGINE_FOLDER / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"o")
    with pytest.raises(CorruptCheckpoint, match=r"optim_states\.pt is loaded but not in"):
        verify_checkpoint(step)


def test_a_swap_without_the_exchange_call_keeps_the_old_output_until_the_new_is_in(
    tmp_path, monkeypatch
):
    """Where ``renameat2`` is missing, the old output is renamed aside, the new one in, and
    only then the old one deleted: a kill between the renames leaves the old one, which the
    next run restores (a mutation audit: deleting it before the new one was in passed)."""
    from amazon_sft import atomic

    out = tmp_path / "data"
    out.mkdir()
    (out / "manifest.json").write_text("old")
    staging = atomic.new_staging(out)
    (staging / "manifest.json").write_text("new")
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    real_rename = Path.rename

    def killed_as_the_new_one_moves_in(self, target):
        if self == staging:
            raise KeyboardInterrupt
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", killed_as_the_new_one_moves_in)
    with pytest.raises(KeyboardInterrupt):
        atomic.swap_into_place(staging, out)
    monkeypatch.undo()
    assert not out.exists()
    monkeypatch.setattr(atomic, "_pid_alive", lambda pid: False)  # the killed process
    done = atomic.remove_stale(out)
    assert (out / "manifest.json").read_text() == "old", done
    monkeypatch.undo()
    staging = atomic.new_staging(out)
    (staging / "manifest.json").write_text("new")
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    atomic.swap_into_place(staging, out)
    assert (out / "manifest.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_make_clean_keeps_what_no_run_wrote_among_a_runs_names(tmp_path):
    """A run folder's ``make clean`` check: a user's ``checkpoints/step-N.tmp`` no save marked,
    a file named as a checkpoint, and a file in ``previous/`` are the user's (a mutation
    audit: dropping each of those checks passed every test, and ``make clean`` then removed
    the folder with them)."""
    from amazon_sft.checkpoint_staging import start_staging
    from amazon_sft.clean_outputs import foreign_in_run
    from amazon_sft.ownership import RUN_MARKER

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / RUN_MARKER).write_text("{}\n")
    start_staging(run / "checkpoints" / "step-00000002.tmp")  # a killed save's: the run's
    assert foreign_in_run(run) == []
    (run / "checkpoints" / "step-00000004.tmp").mkdir()
    (run / "checkpoints" / "step-00000004.tmp" / "notes.txt").write_text("mine")
    (run / "checkpoints" / "step-00000006").write_text("my notes on step 6")
    (run / "previous").mkdir()
    (run / "previous" / "why.txt").write_text("mine")
    assert foreign_in_run(run) == [
        "checkpoints/step-00000004.tmp",
        "checkpoints/step-00000006",
        "previous/why.txt",
    ]


def test_an_output_inside_a_runs_checkpoints_is_refused_like_one_inside_its_final(tmp_path):
    """A run's ``checkpoints/`` is its saves' as much as ``final/`` is (a mutation audit: only
    ``final/`` was tried); beside them is the user's choice."""
    from amazon_sft.output_places import owner_above
    from amazon_sft.ownership import RUN_MARKER

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / RUN_MARKER).write_text("{}\n")
    for owned in ("checkpoints", "final"):
        found = owner_above(run / owned / "best")
        assert found is not None and found[0] == run / owned, found
    assert owner_above(run / "eval") is None


def test_a_start_without_a_lock_leaves_the_staging_a_live_save_may_be_writing(
    tmp_path, monkeypatch
):
    """On a filesystem without locks another train may be saving into the same folder: its
    marked ``step-N.tmp`` is cleared only under the lock (a mutation audit: clearing without
    it passed every test)."""
    import errno
    import fcntl
    from types import SimpleNamespace

    from accelerate import Accelerator

    from amazon_sft.checkpoint_staging import start_staging
    from amazon_sft.ownership import RUN_MARKER
    from amazon_sft.run_folder import claim_out_dir

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / RUN_MARKER).write_text("{}\n")
    live = out / "checkpoints" / "step-00000004.tmp"
    start_staging(live)
    cfg = SimpleNamespace(resume="auto", overwrite=False)

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    lock, _ = claim_out_dir(cfg, Accelerator(cpu=True), out)
    lock.release()
    assert live.is_dir()
    monkeypatch.undo()
    lock, _ = claim_out_dir(cfg, Accelerator(cpu=True), out)  # locked: a killed save's
    lock.release()
    assert not live.exists()


def test_an_eval_record_mid_move_is_not_a_whole_report(tmp_path):
    """While eval moves its report in, its record holds the old and the new digest of each
    file: the requeue check must not take that for a report written (a mutation audit:
    ``len(sums) == 1`` was never tried)."""
    from amazon_sft.eval_ownership import (
        claim_eval_dir,
        record_eval_files,
        report_written_since,
    )

    out = tmp_path / "report"
    claim_eval_dir(out)
    started = time.time() - 10
    digests = {}
    for name in ("report.md", "report.json"):
        (out / name).write_text("new")
        digests[name] = [hashlib.sha256(b"old").hexdigest(), hashlib.sha256(b"new").hexdigest()]
    record_eval_files(out, digests)
    assert not report_written_since(out, started)
    record_eval_files(out, {name: sums[1:] for name, sums in digests.items()})
    assert report_written_since(out, started)


def test_synth_stopped_before_its_new_file_moves_in_can_replace_the_old_one(
    tmp_path, capsys, monkeypatch
):
    """The record written before the swap proves both files: a stop between it and the swap
    leaves the old file, still synth's (a mutation audit: a record of the new digest alone
    left it refused by every later ``--overwrite``)."""
    import signal

    from amazon_sft import synth_ownership
    from amazon_sft.process_stops import Stopped

    ours = tmp_path / "gen.json"
    code, err = _run_cli(capsys, "synth", "--rows", "5", "--out", str(ours))
    assert code == 0, err
    first, real = ours.read_bytes(), synth_ownership.record_synth_output

    def stopped_before_the_swap(*args):
        real(*args)
        raise Stopped(signal.SIGTERM)

    monkeypatch.setattr(synth_ownership, "record_synth_output", stopped_before_the_swap)
    code, err = _run_cli(capsys, "synth", "--rows", "6", "--out", str(ours), "--overwrite")
    assert code == 143 and ours.read_bytes() == first, err
    monkeypatch.undo()
    code, err = _run_cli(capsys, "synth", "--rows", "7", "--out", str(ours), "--overwrite")
    assert code == 0, err
    record = json.loads(synth_ownership.record_path(ours).read_text())
    assert record["rows"] == 7 and isinstance(record["sha256"], str)


def test_synth_refuses_a_file_whose_record_names_another(tmp_path, capsys):
    """A record beside ``--out`` that names another file proves nothing of this one (a
    mutation audit: only the digest was tried)."""
    from amazon_sft.synth_ownership import record_path

    ours = tmp_path / "gen.json"
    code, err = _run_cli(capsys, "synth", "--rows", "5", "--out", str(ours))
    assert code == 0, err
    record = json.loads(record_path(ours).read_text())
    record_path(ours).write_text(json.dumps({**record, "file": "other.json"}))
    code, err = _run_cli(capsys, "synth", "--rows", "5", "--out", str(ours), "--overwrite")
    _one_line(code, err, "synth", str(ours), "names another file")
