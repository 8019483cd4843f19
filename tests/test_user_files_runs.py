"""Training never deletes or replaces a file it cannot prove it wrote (checkpoints, final/, the run
folder), never leaves half a save that reads as whole, and writes weights others can read like
the rest of the folder. (A new user's and a hostile user's trials: each test names what it
found.)"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from .conftest import train_overrides
from .test_hostile import _assert_one_line as _one_line
from .test_hostile import _cli, _one_line_error, _run_cli

pytestmark = pytest.mark.hostile


def test_resume_auto_never_starts_over_on_a_finished_run(
    tuned_run, prepared, tiny_model_dir, tmp_path, capsys
):
    """A finished run whose checkpoints were deleted (to free disk): ``resume=auto`` started over
    silently, emptied metrics.jsonl and wrote the new model into the old final/ (a LoRA adapter
    beside the old full weights, sealed together). Now refused; ``overwrite=true`` is the way."""
    from .conftest import train_overrides

    out = tmp_path / "run"
    shutil.copytree(tuned_run, out)
    # a user's copy of a checkpoint is not one (a review: it let the run start over)
    newest = sorted((out / "checkpoints").glob("step-*"))[-1]
    shutil.copytree(newest, out / "kept-backup")
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    (out / "checkpoints").mkdir()
    (out / "kept-backup").rename(out / "checkpoints" / f"{newest.name}-backup")
    before = {p.name: p.read_bytes() for p in (out / "final").iterdir() if p.is_file()}
    metrics = (out / "metrics.jsonl").read_text()
    for extra in ((), ("lora.enabled=true",)):
        code, err = _run_cli(
            capsys,
            "train",
            "--config",
            "tiny",
            *train_overrides(prepared, tiny_model_dir, out, "resume=auto", *extra),
        )
        _one_line(code, err, "train", "finished run", "overwrite=true")
    assert {p.name: p.read_bytes() for p in (out / "final").iterdir() if p.is_file()} == before
    assert (out / "metrics.jsonl").read_text() == metrics


def test_a_final_save_killed_midway_leaves_the_previous_final_whole(
    tiny_cfg, tiny_tok, tiny_model_dir, tmp_path, monkeypatch
):
    """A resumed run (train.max_steps raised on a finished run) wrote its new final/ over the old
    one file by file: a kill between the weights and the rest left new weights under the old
    config and card, and a full model's old weights beside a new adapter. Now the new final/ is
    written aside and swapped in whole; a save that dies leaves the old one as it was."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from amazon_sft import saving
    from amazon_sft.loss import SummedAnswerLoss
    from amazon_sft.trained_on import TrainedOn

    out = tmp_path / "run"
    final = out / "final"
    final.mkdir(parents=True)
    (final / "model.safetensors").write_bytes(b"old weights")
    (final / "adapter_model.safetensors").write_bytes(b"an older run's adapter")
    before = {p.name: p.read_bytes() for p in final.iterdir()}
    model = SummedAnswerLoss(AutoModelForCausalLM.from_pretrained(tiny_model_dir), 64)
    from amazon_sft.run_files import RunSummary

    accelerator = Accelerator(cpu=True)
    data = TrainedOn(str(tmp_path / "data"), "0" * 64)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the job is killed after the weights are written

    monkeypatch.setattr(saving, "write_resolved", killed)
    with pytest.raises(KeyboardInterrupt):
        saving.save_final(accelerator, tiny_cfg, model, tiny_tok, out, RunSummary(1, None, 0), data)
    assert {p.name: p.read_bytes() for p in final.iterdir()} == before

    monkeypatch.undo()
    saving.save_final(accelerator, tiny_cfg, model, tiny_tok, out, RunSummary(1, None, 0), data)
    names = {p.name for p in final.iterdir()}
    assert "adapter_model.safetensors" not in names  # nothing of the old final is mixed in
    assert {
        "model.safetensors",
        "checksums.json",
        "amazon_sft_config.yaml",
        "trained_on.json",
    } <= names
    assert [p.name for p in out.iterdir()] == ["final"]  # no staging left beside it


def test_saved_weights_are_readable_like_every_other_file(tuned_run, tmp_path):
    """transformers writes model.safetensors 0600 while every other file follows the umask: a
    serving account reading the run folder could load its tokenizer but not its weights."""

    from amazon_sft.answering.export import export_model

    umask = os.umask(0)
    os.umask(umask)
    export_model(str(tuned_run), tmp_path / "exported")
    for folder in (tuned_run / "final", tmp_path / "exported"):
        modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir() if p.is_file()}
        assert set(modes.values()) == {0o666 & ~umask}, modes


def test_saved_adapters_are_readable_like_their_config(tmp_path):
    """A LoRA run's final/ has no config.json, so its adapter_model.safetensors stayed 0600
    (a helper's audit: a serving account could not read the adapters)."""
    from amazon_sft.saving import readable_like_the_rest

    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_config.json").chmod(0o644)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    (tmp_path / "adapter_model.safetensors").chmod(0o600)
    readable_like_the_rest(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").stat().st_mode & 0o777 == 0o644


def test_saving_a_step_again_never_deletes_its_complete_checkpoint_first(tmp_path, monkeypatch):
    """A stop in the first step after a resume re-saves the step resumed from: its complete
    checkpoint was deleted before the new one was written, so a kill during the save (SLURM's
    SIGKILL after the grace period, a second Ctrl-C) left no checkpoint, and resume=auto
    started over at step 0."""
    from accelerate import Accelerator

    from amazon_sft import checkpointing
    from amazon_sft.checkpointing import COMPLETE, TrainerState, checkpoint_dir, save_checkpoint

    out = tmp_path / "run"
    kept = checkpoint_dir(out, 3)
    kept.mkdir(parents=True)
    (kept / "model.safetensors").write_bytes(b"the weights of step 3")
    checkpointing.write_checksums(kept)
    (kept / COMPLETE).write_text("step 3\n")
    accelerator = Accelerator(cpu=True)

    model = __import__("torch").nn.Linear(2, 2)  # all trained: saved whole

    def killed(folder, **_):  # accelerate's save_state: os.makedirs(exist_ok=True)
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(accelerator, "save_state", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(accelerator, model, out, TrainerState(step=3), 3, {"config": {}})
    assert checkpointing.complete_checkpoints(out) == [kept]
    assert (kept / "model.safetensors").read_bytes() == b"the weights of step 3"

    monkeypatch.setattr(
        accelerator, "save_state", lambda folder, **_: Path(folder).mkdir(exist_ok=True)
    )
    save_checkpoint(
        accelerator, model, out, TrainerState(step=3), 3, {"config": {}}
    )  # replaced whole
    assert checkpointing.complete_checkpoints(out) == [kept]
    assert not (kept / "model.safetensors").exists()
    assert [p.name for p in (out / "checkpoints").iterdir()] == [kept.name]


def test_a_checkpoint_saved_again_keeps_the_files_a_user_put_in_it(tmp_path):
    """A hostile review: a stop between the micro-batches of the first step after a resume
    drops the step and saves the same step again; the new save was swapped over the checkpoint
    resumed from and the old folder deleted, with the user's notes in it (pruning keeps such a
    folder; the re-save did not). The files its save did not write move into the new one."""
    import torch
    from accelerate import Accelerator

    from amazon_sft.checkpointing import TrainerState, checkpoint_dir, save_checkpoint

    out = tmp_path / "run"
    accelerator, model = Accelerator(cpu=True), torch.nn.Linear(2, 2)
    save_checkpoint(accelerator, model, out, TrainerState(step=1), 3, {"config": {}})
    kept = checkpoint_dir(out, 1)
    (kept / "my_notes.txt").write_text("precious")
    (kept / "eval").mkdir()
    (kept / "eval" / "report.md").write_text("mine")
    save_checkpoint(accelerator, model, out, TrainerState(step=1), 3, {"config": {}})
    assert (kept / "my_notes.txt").read_text() == "precious"
    assert (kept / "eval" / "report.md").read_text() == "mine"
    assert [p.name for p in (out / "checkpoints").iterdir()] == [kept.name]


def test_a_save_killed_after_its_checksums_is_still_known_as_a_killed_save(tmp_path, monkeypatch):
    """The save's mark was removed before its state, checksums and ``COMPLETE`` were written:
    a SIGKILL then left a whole checkpoint's staging folder that the next start set aside as
    the user's, for good (~100 GB at 7B; an ML engineer's trial). The mark goes just before
    the folder takes its step's name."""
    import torch
    from accelerate import Accelerator

    from amazon_sft import checkpointing
    from amazon_sft.checkpoint_staging import killed_save
    from amazon_sft.checkpointing import TrainerState, save_checkpoint

    def killed(old, new):  # the last step before the swap
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpointing, "_carry_files_not_ours", killed)
    accelerator, model = Accelerator(cpu=True), torch.nn.Linear(2, 2)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(accelerator, model, out, TrainerState(step=1), 3, {"config": {}})
    (staging,) = (out / "checkpoints").iterdir()
    assert (staging / checkpointing.COMPLETE).is_file() and killed_save(staging)


def test_a_start_removes_only_the_staging_folders_a_save_writes(tmp_path):
    """A hostile review: any ``checkpoints/step-*.tmp`` was removed as a killed save's, a
    user's ``step-00000003-before-lr-change.tmp`` backup with it. Only ``step-<8 digits>.tmp``
    is a save's."""
    from amazon_sft.checkpoint_staging import start_staging
    from amazon_sft.checkpointing import clear_killed_saves

    root = tmp_path / "run" / "checkpoints"
    theirs = root / "step-00000003-before-lr-change.tmp"
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("backup")
    killed, later = root / "step-00000004.tmp", root / "step-100000000.tmp"
    for staging in (killed, later):
        start_staging(staging)  # as a save starts
    clear_killed_saves(tmp_path / "run")
    assert (theirs / "notes.txt").read_text() == "backup"
    assert not killed.exists() and not later.exists()  # step 100,000,000 has 9 digits


def test_a_save_staging_name_a_save_did_not_leave_is_set_aside_not_removed(tmp_path):
    """A hostile user's trial: a link named ``checkpoints/step-N.tmp`` was "removed, left by a
    killed save" (it was not: rmtree fails on a link, silently) and the save of step N wrote
    through it, over a file in the user's folder; a user's copy of a checkpoint by that name,
    notes in it, was deleted. Only a folder a save marked is removed; the rest is set aside."""
    from amazon_sft.checkpoint_staging import start_staging
    from amazon_sft.checkpointing import clear_killed_saves

    root = tmp_path / "run" / "checkpoints"
    root.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "model.safetensors").write_text("precious")
    (root / "step-00000006.tmp").symlink_to(victim)
    copy = root / "step-00000004.tmp"
    copy.mkdir()
    (copy / "NOTES.txt").write_text("mine")
    (copy / "model.safetensors").write_text("a checkpoint's")
    start_staging(root / "step-00000002.tmp")  # a killed save's
    clear_killed_saves(tmp_path / "run")
    names = sorted(p.name for p in root.iterdir())
    assert len(names) == 2 and all(".tmp.yours-" in n for n in names), names
    aside = next(root.glob("step-00000004.tmp.yours-*"))
    assert (aside / "NOTES.txt").read_text() == "mine"
    assert next(root.glob("step-00000006.tmp.yours-*")).is_symlink()
    assert (victim / "model.safetensors").read_text() == "precious"
    start_staging(root / "step-00000006.tmp")  # the save of step 6 now writes its own folder
    assert not (root / "step-00000006.tmp").is_symlink()
    assert sorted(p.name for p in victim.iterdir()) == ["model.safetensors"]


def test_pruning_keeps_a_checkpoint_holding_a_users_link_to_a_folder(tmp_path):
    """A link to a folder put inside an old checkpoint was not counted as the user's (it "is a
    folder"), so keep_last pruned the checkpoint and the link with it."""
    from amazon_sft.checkpointing import not_written_by_its_save

    step = tmp_path / "step-00000002"
    step.mkdir()
    (step / "COMPLETE").write_text("step 2\n")
    (step / "checksums.json").write_text("{}")
    (tmp_path / "results").mkdir()
    (step / "my_results").symlink_to(tmp_path / "results")
    assert not_written_by_its_save(step) == ["my_results"]


def _resume_with_more_steps(capsys, prepared, model, out) -> tuple[int, str]:
    """``train --config tiny resume=auto`` with more steps than the finished run in ``out``."""
    from .conftest import train_overrides

    extra = ("resume=auto", "train.max_steps=26")
    return _run_cli(
        capsys, "train", "--config", "tiny", *train_overrides(prepared, model, out, *extra)
    )


def test_a_run_never_deletes_files_a_user_put_into_its_final(
    tuned_run, prepared, tiny_model_dir, tmp_path, capsys
):
    """A file-safety audit: notes and an eval report the user kept in ``run/final/`` were deleted
    by the next save of that run (``resume=auto`` with more steps swapped a new folder over it).
    Now refused before training; added during training, the old final/ is set aside, not
    deleted."""
    from amazon_sft.ownership import foreign_in_final

    out = tmp_path / "run"
    shutil.copytree(tuned_run, out)
    assert foreign_in_final(out / "final") == []
    (out / "final" / "NOTES.txt").write_text("mine")
    code, err = _resume_with_more_steps(capsys, prepared, tiny_model_dir, out)
    _one_line(code, err, "train", "NOTES.txt", "final")
    assert (out / "final" / "NOTES.txt").read_text() == "mine"
    assert foreign_in_final(out / "final") == ["NOTES.txt"]
    (out / "final" / ".amazon_sft_saved.json").unlink()  # a final saved before the list
    assert foreign_in_final(out / "final") == ["NOTES.txt"]


def test_a_file_of_final_edited_since_the_save_is_kept_like_a_users_own(
    tuned_run, prepared, tiny_model_dir, tmp_path, capsys
):
    """A hostile review: final/ was judged by names only, so a model card (README.md) or a
    generation_config.json the user edited after the save counted as the run's, and the next
    save of the run (resume=auto with more steps) replaced it without a word; make clean
    removed a demo run holding one. Each file of final/ is recorded as saved: one edited since
    is refused before training, set aside at a save, and keeps a demo folder."""
    from amazon_sft.ownership import foreign_in_final
    from amazon_sft.saving import set_aside_foreign_final

    out = tmp_path / "run"
    shutil.copytree(tuned_run, out)
    assert foreign_in_final(out / "final") == []
    (out / "final" / "README.md").write_text("MY MODEL CARD")
    assert foreign_in_final(out / "final") == ["README.md"]
    code, err = _resume_with_more_steps(capsys, prepared, tiny_model_dir, out)
    _one_line(code, err, "train", "README.md", "final")
    aside = set_aside_foreign_final(out)  # edited while the run trained: kept whole
    assert aside is not None and (aside / "README.md").read_text() == "MY MODEL CARD"


def test_a_final_holding_a_users_file_at_save_time_is_set_aside(tuned_run, tmp_path):
    from amazon_sft.saving import set_aside_foreign_final

    out = tmp_path / "run"
    shutil.copytree(tuned_run, out)
    assert set_aside_foreign_final(out) is None and (out / "final").is_dir()
    (out / "final" / "report.md").write_text("# my eval")
    aside = set_aside_foreign_final(out)
    assert aside is not None and (aside / "report.md").read_text() == "# my eval"
    assert not (out / "final").exists() and aside.parent.parent == out


def test_a_users_copy_of_a_checkpoint_is_neither_resumed_nor_pruned(tmp_path):
    """``cp -r step-00000003 step-00000003-backup`` was taken as the newest checkpoint, resumed
    from, then deleted by keep_last; a second branch from an older step deleted the first
    branch's set-aside checkpoints."""
    from amazon_sft.checkpointing import COMPLETE, complete_checkpoints, set_aside_newer

    root = tmp_path / "run" / "checkpoints"
    for name in ("step-00000002", "step-00000003", "step-00000003-backup", "step-best"):
        (root / name).mkdir(parents=True)
        (root / name / COMPLETE).write_text("x")
    assert [p.name for p in complete_checkpoints(tmp_path / "run")] == [
        "step-00000002",
        "step-00000003",
    ]
    assert set_aside_newer(tmp_path / "run", 2) == ["step-00000003"]
    (root / "step-00000003").mkdir()  # the next branch got as far, and branches again
    (root / "step-00000003" / COMPLETE).write_text("y")
    assert set_aside_newer(tmp_path / "run", 2) == ["step-00000003"]
    kept = sorted((p.name, (p / COMPLETE).read_text()) for p in (root / ".set_aside").iterdir())
    assert len(kept) == 2 and {text for _, text in kept} == {"x", "y"}
    assert (root / "step-00000003-backup").is_dir() and (root / "step-best").is_dir()


@pytest.mark.parametrize("made", ["final_link", "previous_file"])
def test_a_run_folder_whose_final_is_a_link_or_previous_a_file_is_one_line(tmp_path, capsys, made):
    """An outside audit: a run whose ``final/`` was a link to a served model ended, after a
    whole resumed run, in a traceback (rmtree refuses a link), the user's link renamed to a
    staging name the next train deletes; ``previous`` as a file made ``overwrite=true`` a
    traceback. Both are refused before anything is written."""
    from amazon_sft.errors import UserError
    from amazon_sft.ownership import RUN_MARKER, check_run_dir

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / RUN_MARKER).write_text("{}")
    (run / "metrics.jsonl").write_text("{}\n")
    served = tmp_path / "served"
    served.mkdir()
    if made == "final_link":
        (run / "final").symlink_to(served)
        resume, overwrite, said = "auto", False, "final/ is a symbolic link"
    else:
        (run / "previous").write_text("my notes\n")
        resume, overwrite, said = "none", True, "previous is not a folder"
    with pytest.raises(UserError, match=said):
        check_run_dir(str(run), resume, overwrite)


def test_checkpoint_rotation_keeps_a_checkpoint_holding_a_users_files(tmp_path, caplog):
    """``keep_last`` removed the oldest checkpoint whole, with an eval report a user had put
    inside it, silently (an outside review). A checkpoint holding files its save did not write
    (not in its checksums) is kept and named; the others go as before."""
    from amazon_sft.checkpointing import drop_old_checkpoints, write_checksums
    from amazon_sft.ownership import COMPLETE, complete_checkpoints

    root = tmp_path / "checkpoints"
    for step in (2, 4, 6, 8):
        folder = root / f"step-{step:08d}"
        (folder / "sub").mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"w" * step)
        (folder / "sub" / "optimizer.bin").write_bytes(b"o")
        (folder / "trainer_state.json").write_text(f'{{"step": {step}}}')  # as a save writes
        write_checksums(folder)
        (folder / COMPLETE).write_text(f"step {step}\n")
    (root / "step-00000002" / "my_eval").mkdir()
    (root / "step-00000002" / "my_eval" / "report.md").write_text("mine")
    with caplog.at_level("WARNING"):
        drop_old_checkpoints(tmp_path, keep_last=2)
    names = [p.name for p in complete_checkpoints(tmp_path)]
    assert names == ["step-00000002", "step-00000006", "step-00000008"]
    assert (root / "step-00000002" / "my_eval" / "report.md").read_text() == "mine"
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "step-00000002" in said and "my_eval/report.md" in said


@pytest.mark.parametrize(
    "refused, needle",
    [(("model.path=typo-model",), "typo-model"), (("resume=step-9",), "resume=step-9")],
)
def test_a_train_refused_before_its_first_step_leaves_no_new_run_folder(
    refused, needle, prepared, tiny_model_dir, tmp_path
):
    """A mistyped model.path or resume=step-9 in a new out_dir was one line, and left the folder
    with only the run marker in it (a review): the folder this launch made goes with it."""
    out = tmp_path / "run"
    args = ("train", "--config", "tiny", *train_overrides(prepared, tiny_model_dir, out))
    _one_line_error(_cli(*args, *refused, timeout=120), "train", needle)
    assert not out.exists()
    out.mkdir()  # a folder that was there is the user's: it stays, marked as a run's
    _one_line_error(_cli(*args, *refused, timeout=120), "train", needle)
    assert out.is_dir()


def test_overwrite_whose_move_fails_part_way_puts_the_run_back(tmp_path, monkeypatch):
    """A review: when a rename of ``overwrite=true``'s move failed part way (a mount point in the
    run: EBUSY), the names already moved stayed in previous/, the run split in two (a later
    resume=auto went on without its metrics history). What was moved goes back."""
    from amazon_sft.ownership import RUN_MARKER, claim_run_dir

    out = tmp_path / "run"
    (out / "checkpoints" / "step-00000001").mkdir(parents=True)
    (out / "checkpoints" / "step-00000001" / "COMPLETE").write_text("")
    files = {RUN_MARKER: '{"written_by": "amazon_sft 0 train"}\n', "metrics.jsonl": "{}\n"}
    files["config.yaml"] = "seed: 1\n"
    for name, text in files.items():
        (out / name).write_text(text)
    rename = Path.rename

    def busy(self, target):
        if self.name == "checkpoints":
            raise OSError(16, "Device or resource busy", str(self))
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", busy)
    with pytest.raises(OSError):
        claim_run_dir(out, "none", True)
    assert {p.name: p.read_text() for p in out.iterdir() if p.is_file()} == files
    assert (out / "checkpoints" / "step-00000001" / "COMPLETE").is_file()
    assert not (out / "previous").exists()


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_a_resume_writes_config_and_its_changes_beside_never_through_a_link(tmp_path, link):
    """An outside review: each launch wrote the run's config.yaml in place, and appended to
    config_changes.jsonl: a config.yaml linked to the user's own experiment config had it
    overwritten, and a ``cp -al`` snapshot of the run changed with the run. Now both files are
    written beside and renamed: the link is replaced, what it pointed to is left as it was."""
    from amazon_sft.config import load_run_config
    from amazon_sft.config_loader import write_resolved
    from amazon_sft.resume_config import CHANGES, Change, record_changes

    run = tmp_path / "run"
    run.mkdir()
    mine = {"config.yaml": b"# my experiment\nlr: 1\n", CHANGES: b"my own lines\n"}
    for name, body in mine.items():
        (tmp_path / name).write_bytes(body)
        if link == "symbolic":
            (run / name).symlink_to(tmp_path / name)
        else:
            os.link(tmp_path / name, run / name)
    write_resolved(load_run_config("tiny"), run / "config.yaml", header="# ran\n")
    record_changes(run, 3, [Change("train.lr", 0.1, 0.2)])
    for name, body in mine.items():
        assert (tmp_path / name).read_bytes() == body, name  # the user's, as it was
        assert not (run / name).is_symlink() and (run / name).stat().st_nlink == 1
    assert (run / "config.yaml").read_text().startswith("# ran\n")
    written = (run / CHANGES).read_text().splitlines()
    assert '"key": "train.lr"' in written[-1]
    assert written[:-1] == ([] if link == "symbolic" else ["my own lines"])


@pytest.mark.parametrize("made", ["notes", "prepared", "link"])
def test_a_save_never_replaces_a_step_folder_no_save_wrote(tmp_path, caplog, made):
    """A hostile user's trial: a ``checkpoints/step-N`` that no save wrote (a user's notes, a
    prepared folder or a run put there, a link) was replaced by the save of step N, all of it
    deleted. It is set aside under a name of its own, whole, and named in the log."""
    import torch
    from accelerate import Accelerator

    from amazon_sft.checkpointing import TrainerState, checkpoint_dir, save_checkpoint
    from amazon_sft.ownership import complete_checkpoints

    out, theirs = tmp_path / "run", tmp_path / "elsewhere"
    step = checkpoint_dir(out, 1)
    step.parent.mkdir(parents=True)
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    if made == "prepared":
        (theirs / "manifest.json").write_text("{}")
        (theirs / "shard-00000").mkdir()
        (theirs / "shard-00000" / "input_ids.npy").write_bytes(b"rows")
    if made == "link":
        step.symlink_to(theirs, target_is_directory=True)
    else:
        theirs.rename(step)
    kept = {p.relative_to(step): p.read_bytes() for p in step.rglob("*") if p.is_file()}
    accelerator, model = Accelerator(cpu=True), torch.nn.Linear(2, 2)
    with caplog.at_level("WARNING"):
        save_checkpoint(accelerator, model, out, TrainerState(step=1), 3, {"config": {}})
    assert complete_checkpoints(out) == [step] and not (step / "notes.txt").exists()
    aside = [p for p in step.parent.iterdir() if p.name.startswith(f"{step.name}.yours-")]
    assert len(aside) == 1, list(step.parent.iterdir())
    assert {
        p.relative_to(aside[0]): p.read_bytes() for p in aside[0].rglob("*") if p.is_file()
    } == kept
    said = " ".join(r.getMessage() for r in caplog.records)
    assert aside[0].name in said, said


def _saved_checkpoints(root: Path, steps: tuple[tuple[int, int], ...]) -> None:
    """Complete checkpoints ``step-N`` under ``root`` whose state records the paired step (a
    copy under another step's name where the two differ)."""
    from amazon_sft.checkpointing import write_checksums
    from amazon_sft.ownership import COMPLETE

    for step, recorded in steps:
        folder = root / f"step-{step:08d}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text(json.dumps({"step": recorded}))
        write_checksums(folder)
        (folder / COMPLETE).write_text(f"step {recorded}\n")


def _kept_after_drop(run: Path, caplog, keep_last: int) -> tuple[list[str], str]:
    """``drop_old_checkpoints`` of ``run``: the complete checkpoints left, and what it said."""
    from amazon_sft.checkpointing import drop_old_checkpoints
    from amazon_sft.ownership import complete_checkpoints

    with caplog.at_level("WARNING"):
        drop_old_checkpoints(run, keep_last=keep_last)
    said = " ".join(r.getMessage() for r in caplog.records)
    return [p.name for p in complete_checkpoints(run)], said


def test_a_copy_of_a_checkpoint_under_another_step_is_never_removed(tmp_path, caplog):
    """An outside trial: ``cp -r step-00000010 step-00000004`` (a user's copy of a checkpoint)
    was removed by ``keep_last`` without a word: its checksums were whole. Its
    ``trainer_state.json`` holds step 10, which no save of step 4 writes (resume already
    refuses to load it): it is kept and named."""
    from amazon_sft.checkpointing import drop_old_checkpoints

    root = tmp_path / "checkpoints"
    _saved_checkpoints(root, ((2, 2), (4, 8), (6, 6), (8, 8)))
    kept, said = _kept_after_drop(tmp_path, caplog, keep_last=2)
    assert kept == ["step-00000004", "step-00000006", "step-00000008"]
    assert "step-00000004" in said and "step 8" in said and "no save of that step" in said, said
    # a state file lost from the run's own save is named as such, not as a copy (a review)
    (root / "step-00000006" / "trainer_state.json").unlink()
    _saved_checkpoints(root, ((10, 10), (12, 12)))
    caplog.clear()
    with caplog.at_level("WARNING"):
        drop_old_checkpoints(tmp_path, keep_last=2)
    said = " ".join(r.getMessage() for r in caplog.records if "step-00000006" in r.getMessage())
    assert "trainer_state.json is damaged or missing" in said, said


def test_a_copy_under_a_higher_step_takes_none_of_keep_lasts_places(tmp_path, caplog):
    """The last trial's leftover: ``cp -r step-00000004 step-00000099`` (a user's copy under a
    higher step) sorted newest and took one of ``keep_last``'s places, so the run's own
    ``step-4`` was removed at the next save: only the run's own saves count."""

    _saved_checkpoints(tmp_path / "checkpoints", ((2, 2), (4, 4), (6, 6), (99, 4)))
    kept, said = _kept_after_drop(tmp_path, caplog, keep_last=2)
    assert kept == ["step-00000004", "step-00000006", "step-00000099"]
    assert "step-00000099" in said and "no save of that step" in said, said


def test_a_checkpoint_whose_checksums_are_lost_is_never_removed_whole(tmp_path, caplog):
    """A hostile user's trial: a checkpoint whose ``checksums.json`` was lost counted as all
    the run's, so ``keep_last`` removed it with the user's notes in it, and so did ``make
    clean``. What its save wrote cannot be told: it is kept and named."""
    from amazon_sft.checkpointing import CHECKSUMS, drop_old_checkpoints, write_checksums
    from amazon_sft.clean_outputs import foreign_in_run
    from amazon_sft.ownership import COMPLETE, complete_checkpoints

    root = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        folder = root / f"step-{step:08d}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"w" * step)
        (folder / "trainer_state.json").write_text(f'{{"step": {step}}}')  # as a save writes
        write_checksums(folder)
        (folder / COMPLETE).write_text(f"step {step}\n")
    lost = root / "step-00000002"
    (lost / CHECKSUMS).unlink()
    (lost / "notes.txt").write_text("mine")
    assert "checkpoints/step-00000002/notes.txt" in foreign_in_run(tmp_path)
    with caplog.at_level("WARNING"):
        drop_old_checkpoints(tmp_path, keep_last=1)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-00000002", "step-00000006"]
    assert (lost / "notes.txt").read_text() == "mine"
    assert "step-00000002" in " ".join(r.getMessage() for r in caplog.records)


def test_a_checksum_list_cut_to_leave_weights_out_is_refused(tmp_path):
    """A hostile user's trial: another run's ``model.safetensors`` copied into a checkpoint,
    its ``checksums.json`` cut to the other files: the resume took it as "the newest complete"
    and trained from the other run's weights; a ``final/`` cut so loaded in ask and export.
    A file a load reads must be listed; a user's notes need not be."""
    from amazon_sft.checkpointing import CorruptCheckpoint, verify_checkpoint, write_checksums

    step = tmp_path / "step-00000004"
    step.mkdir()
    for name in ("model.safetensors", "optimizer.bin", "trainer_state.json"):
        (step / name).write_text(name)
    write_checksums(step)
    (step / "NOTES.txt").write_text("mine, not listed")
    (step / "my_eval").mkdir()  # a folder of the user's: theirs, whatever it holds
    (step / "my_eval" / "model.safetensors").write_text("another model of theirs")
    verify_checkpoint(step)
    # a same-size edit (a mutation audit: every edit tried changed the size, and a size check
    # alone passed them all)
    (step / "optimizer.bin").write_text("Optimizer.bin")
    with pytest.raises(CorruptCheckpoint, match=r"optimizer\.bin does not match its checksum"):
        verify_checkpoint(step)
    (step / "optimizer.bin").write_text("optimizer.bin")
    listed = json.loads((step / "checksums.json").read_text())
    del listed["model.safetensors"]
    (step / "checksums.json").write_text(json.dumps(listed))
    with pytest.raises(CorruptCheckpoint, match=r"model\.safetensors is loaded but not in"):
        verify_checkpoint(step)
    write_checksums(step, ("*.safetensors",))  # a final/'s list, then an adapter put in
    (step / "adapter_config.json").write_text("{}")
    with pytest.raises(CorruptCheckpoint, match=r"adapter_config\.json is loaded but not in"):
        verify_checkpoint(step)


@pytest.mark.unit
def test_an_input_that_is_itself_a_moved_output_is_refused(tmp_path):
    """A mutation audit: only inputs inside a moved output were tried (``model.path=RUN/final``
    is the output itself, the case the refusal was written for)."""
    from amazon_sft.errors import UserError
    from amazon_sft.ownership import refuse_moving_inputs

    (tmp_path / "final").mkdir()
    with pytest.raises(UserError, match=r"model\.path=.*inside the previous run"):
        refuse_moving_inputs(tmp_path, True, {"model.path": str(tmp_path / "final")})
    refuse_moving_inputs(tmp_path, False, {"model.path": str(tmp_path / "final")})  # not moved
