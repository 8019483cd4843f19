"""A command never deletes or replaces a file it cannot prove it wrote (a new user's and a hostile
user's trials found nine ways it did: synth, eval, prepare --overwrite, the index build, demo,
resume=auto, a symlinked --out, two evals at once, the lock file), never leaves half an output
that reads as whole (a final save or an eval report killed midway), and writes weights others
can read like the rest of the folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .conftest import PREPARED_OVERRIDES, train_overrides
from .test_hostile import _assert_one_line as _one_line
from .test_hostile import _cli, _one_line_error, _run_cli

pytestmark = pytest.mark.hostile


def test_synth_never_writes_over_an_existing_file_without_overwrite(tmp_path, capsys):
    """``synth --out`` replaced any file silently (a copy of the real rows became 5 generated
    lines). Now an existing file is refused unless ``--overwrite`` names the intent."""
    mine = tmp_path / "trn.json.gz"
    mine.write_bytes(b"precious")
    code, err = _run_cli(capsys, "synth", "--rows", "5", "--out", str(mine))
    _one_line(code, err, "synth", str(mine), "--overwrite")
    assert mine.read_bytes() == b"precious"
    code, err = _run_cli(capsys, "synth", "--rows", "5", "--out", str(tmp_path))
    _one_line(code, err, "synth", "folder")
    code, _ = _run_cli(capsys, "synth", "--rows", "5", "--out", str(mine), "--overwrite")
    assert code == 0 and mine.read_bytes() != b"precious"
    code, err = _run_cli(capsys, "synth", "--rows", "5", "--out", f"{tmp_path / 'new'}/")
    _one_line(code, err, "synth", "folder")  # it wrote a file named new (an outside review)
    assert not (tmp_path / "new").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_eval_never_replaces_a_report_it_did_not_write(prepared, tmp_path, capsys):
    """``eval --out`` wrote report.md, report.json, answers.jsonl over the user's files of those
    names. Now a folder holding one of them without eval's marker is refused before any model
    loads; a folder eval wrote (marker, or a report.json of an eval from before the marker) is
    written again with --overwrite (a new user's walkthrough: without it, refused)."""
    from amazon_sft.eval_ownership import EVAL_MARKER

    out = tmp_path / "eval"
    out.mkdir()
    (out / "report.md").write_text("precious\n")
    (out / "mine.txt").write_text("mine\n")
    questions = tmp_path / "q.jsonl"
    row = json.loads((prepared / "heldout.jsonl").read_text().splitlines()[0])
    questions.write_text(
        json.dumps({"question": row["title"], "uid": row["uid"], "kind": "partial"}) + "\n"
    )
    base = ["eval", "--data", str(prepared), "--model", "config:tiny", "--out", str(out)]
    for extra in ([], ["--questions", str(questions)]):
        code, err = _run_cli(capsys, *base, *extra)
        _one_line(code, err, "eval", "report.md", "did not write")
        assert (out / "report.md").read_text() == "precious\n"
    (out / "report.md").unlink()
    code, err = _run_cli(capsys, *base, "--questions", str(questions), "--max-new-tokens", "2")
    assert code == 0, err[-2000:]
    assert (out / EVAL_MARKER).is_file() and (out / "mine.txt").read_text() == "mine\n"
    again = [*base, "--questions", str(questions), "--max-new-tokens", "2"]
    before = (out / "report.json").read_bytes()
    code, err = _run_cli(capsys, *again)  # a new user's base-vs-tuned report went without a word
    _one_line(code, err, "eval", "already holds an eval report", "--overwrite")
    assert (out / "report.json").read_bytes() == before
    code, err = _run_cli(capsys, *again, "--overwrite")
    assert code == 0, err[-2000:]  # its own report is written again when asked
    (out / "report.md").write_text("# my notes on it\n")  # edited since: the user's now
    code, err = _run_cli(capsys, *again, "--overwrite")
    _one_line(code, err, "eval", "report.md", "changed since")
    assert (out / "report.md").read_text() == "# my notes on it\n"
    (out / "report.md").unlink()
    (out / EVAL_MARKER).unlink()  # an eval folder from before the marker: report.json proves it
    code, err = _run_cli(capsys, *again, "--overwrite")
    assert code == 0, err[-2000:]


def test_a_report_json_that_is_not_an_evals_does_not_prove_the_folder(tmp_path):
    """Any report.json with "models" and "data" keys was taken for an eval's from before the
    marker (a file-safety audit: a user's benchmark results were replaced)."""
    from amazon_sft.errors import UserError
    from amazon_sft.eval_ownership import check_eval_dir

    mine = {"models": ["gpt-4o"], "data": "bench-v3", "scores": [0.8]}
    (tmp_path / "report.json").write_text(json.dumps(mine))
    with pytest.raises(UserError, match="did not write"):
        check_eval_dir(tmp_path)
    ours = {"models": {}, "data": "d", "mode": "end to end", "groups": {}}
    (tmp_path / "report.json").write_text(json.dumps(ours))
    check_eval_dir(tmp_path)


@pytest.mark.parametrize("inside", ["shard-00000/mine.npy.txt", "index/notes.txt", "index/x/y"])
def test_prepare_overwrite_refuses_files_of_the_users_inside_its_folders(
    prepared, catalogue, tmp_path, capsys, inside
):
    """The check for foreign entries read only the top level: a file of the user's inside a shard
    or the index folder was deleted by ``--overwrite`` without a word."""
    from amazon_sft.answering.index_build import build_index

    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    build_index(out)
    mine = out / inside
    mine.parent.mkdir(parents=True, exist_ok=True)
    mine.write_text("mine\n")
    args = ("prepare", str(catalogue), "--out", str(out), "--config", "tiny", "--quiet")
    code, err = _run_cli(capsys, *args, "--overwrite")
    _one_line(code, err, "prepare", inside, "did not write")
    assert mine.read_text() == "mine\n"
    if inside == "index/notes.txt":  # an index from before stats.json listed its files
        stats = json.loads((out / "index" / "stats.json").read_text())
        del stats["files"]
        (out / "index" / "stats.json").write_text(json.dumps(stats))
        code, err = _run_cli(capsys, *args, "--overwrite")
        _one_line(code, err, "prepare", inside, "did not write")
        assert mine.read_text() == "mine\n"
    mine.unlink()
    if mine.parent.name == "x":
        mine.parent.rmdir()
    code, err = _run_cli(capsys, *args, "--overwrite")  # its own index and shards: replaced
    assert code == 0, err[-2000:]


def test_index_build_never_deletes_a_users_file_in_the_index_folder(prepared, tmp_path, capsys):
    """``amazon-sft index`` (and ``ask``'s build on first use) swaps a new index folder in and
    deletes the old one, whatever it held. Now a file the build did not write stops it."""
    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    (out / "index").mkdir(exist_ok=True)
    mine = out / "index" / "notes.txt"
    mine.write_text("mine\n")
    code, err = _run_cli(capsys, "index", str(out))
    _one_line(code, err, "index", "notes.txt", "did not write")
    assert mine.read_text() == "mine\n"
    mine.unlink()
    code, err = _run_cli(capsys, "index", str(out))
    assert code == 0, err[-2000:]
    code, err = _run_cli(capsys, "index", str(out))  # its own index: built again
    assert code == 0, err[-2000:]


def test_demo_never_writes_into_a_folder_of_the_users(tmp_path, capsys):
    """``demo --out`` wrote demo.log, trn.json.gz (synth), answers.json, ... into any folder. Now
    a folder that holds anything and is not an earlier demo's is refused before any step."""
    from amazon_sft.ownership import DEMO_MARKER, claim_demo_dir

    out = tmp_path / "mine"
    out.mkdir()
    (out / "answers.json").write_text("mine\n")
    code, err = _run_cli(capsys, "demo", "--config", "tiny", "--out", str(out))
    _one_line(code, err, "demo", "answers.json", "not a demo folder")
    assert sorted(p.name for p in out.iterdir()) == ["answers.json"]
    earlier = tmp_path / "demo_out"  # a demo folder from before the marker: its log proves it
    earlier.mkdir()
    (earlier / "demo.log").write_text("$ amazon-sft synth --rows 10\n")
    claim_demo_dir(earlier)
    claim_demo_dir(tmp_path / "new")
    assert (earlier / DEMO_MARKER).is_file() and (tmp_path / "new" / DEMO_MARKER).is_file()


def test_an_index_folder_without_its_list_keeps_a_users_npy(prepared, tmp_path, capsys):
    """With no stats.json in index/, any ``.npy`` or ``.json`` there passed for the build's own
    and was deleted by the build (``ask`` builds it on first use). Now only the build's file
    names pass, and they are the files a real build lists."""
    from amazon_sft.answering.index_build import build_index
    from amazon_sft.ownership import INDEX_FILES

    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    build_index(out)
    listed = set(json.loads((out / "index" / "stats.json").read_text())["files"])
    assert (listed - {"catalogue.jsonl"}) | {"stats.json"} == INDEX_FILES
    shutil.rmtree(out / "index")
    (out / "index" / "title").mkdir(parents=True)
    mine = [out / "index" / "my_vectors.npy", out / "index" / "title" / "notes.json"]
    for path in mine:
        path.write_text("mine\n")
    code, err = _run_cli(capsys, "ask", "anything", "--index", str(out), "--sources-only")
    _one_line(code, err, "ask", "my_vectors.npy", "did not write")
    assert all(path.read_text() == "mine\n" for path in mine)


def test_a_symlinked_out_and_a_killed_builds_leftovers(prepared, catalogue, tmp_path, capsys):
    """``prepare --overwrite --out LINK`` swapped the link itself aside and crashed on rmtree of
    it; a killed index build's staging folder was never cleaned, and prepare then refused the
    folder for it."""
    from amazon_sft.atomic import remove_stale

    real = tmp_path / "real"
    shutil.copytree(prepared, real)
    link = tmp_path / "data"
    link.symlink_to(real)
    args = ("prepare", str(catalogue), "--out", str(link), "--config", "tiny", "--quiet")
    code, err = _run_cli(capsys, *args, "--overwrite")
    _one_line(code, err, "prepare", "symbolic link", str(real))
    assert link.is_symlink() and (real / "manifest.json").is_file()
    aside = tmp_path / ".x.tmp-999999999"  # a dead process's staging that is a link
    aside.symlink_to(real)
    assert remove_stale(tmp_path / "x") and not aside.is_symlink()
    assert (real / "manifest.json").is_file()  # the link went, never what it pointed to
    (real / ".index.tmp-999999999").mkdir()  # a killed index build's
    code, err = _run_cli(capsys, "index", str(real))
    assert code == 0, err[-2000:]
    assert not (real / ".index.tmp-999999999").exists()


def test_a_staging_folder_written_on_another_machine_is_never_cleaned_here(tmp_path, monkeypatch):
    """On a cluster's shared filesystem another node's run writes beside the same output; its
    process id means nothing on this node, and the cleanup of killed runs deleted its staging
    folder while it was being written (and put an old output it had set aside back in place)."""
    import socket

    from amazon_sft import atomic

    out = tmp_path / "x"
    monkeypatch.setattr(socket, "gethostname", lambda: "node-a")
    monkeypatch.setattr(atomic.os, "getpid", lambda: 999999999)  # not a process on this node
    writing = atomic.new_staging(out)
    (writing / "shard-00000.bin").write_bytes(b"half written")
    aside = atomic.staging_name(out, "old")  # node-a is mid-swap: its old output set aside
    aside.mkdir()
    monkeypatch.undo()
    monkeypatch.setattr(socket, "gethostname", lambda: "node-b")
    assert atomic.remove_stale(out) == []
    assert (writing / "shard-00000.bin").read_bytes() == b"half written"
    assert aside.is_dir() and not out.exists()
    monkeypatch.setattr(socket, "gethostname", lambda: "node-a")  # node-a itself, its run dead
    assert len(atomic.remove_stale(out)) == 2
    assert not writing.exists() and out.is_dir() and not aside.exists()


@pytest.mark.parametrize("locks", [True, False])
def test_a_prepare_killed_on_another_node_is_cleaned_by_the_next_under_its_lock(
    catalogue, tiny_cfg, tmp_path, monkeypatch, locks
):
    """A prepare killed on one node and requeued onto another left its staging folder on the
    shared disk for good: only this machine's dead processes' are cleaned. Under prepare's
    lock no live prepare of the folder exists anywhere, so another node's goes too; without
    locks nothing of another node's is touched; and a sibling folder's staging
    (``prepared.tmp-x``'s) is never read as this folder's (an earlier fix was reverted for
    that)."""
    import errno
    import fcntl

    import amazon_sft.prepare as prep

    out = tmp_path / "prepared"
    killed = tmp_path / ".prepared.tmp-node_b-4242"
    killed.mkdir()
    (killed / "shard-00000.bin").write_bytes(b"half written")
    sibling = tmp_path / ".prepared.tmp-x.tmp-node_b-4243"  # the staging of prepared.tmp-x
    sibling.mkdir()
    if not locks:

        def no_locks(fd, op):
            raise OSError(errno.ENOLCK, "No locks available")

        monkeypatch.setattr(fcntl, "flock", no_locks)
    prep.prepare(catalogue, out, tiny_cfg, progress=False)
    assert (out / "manifest.json").is_file()
    assert killed.exists() is not locks
    assert sibling.is_dir()


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


def test_eval_is_one_writer_and_leaves_no_older_reports_file(prepared, tmp_path, capsys):
    """Two evals into one --out both ran (the README says a second writer is refused); an end to
    end report written where a closed-book one was kept the old report.png beside it."""
    from amazon_sft.eval_ownership import EVAL_MARKER
    from amazon_sft.output_lock import OutputLock

    out = tmp_path / "eval"
    out.mkdir()
    (out / EVAL_MARKER).write_text("{}\n")
    (out / "report.png").write_bytes(b"an older eval's plot")
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps({"question": "a red kayak", "uid": "absent", "kind": "absent"}) + "\n"
    )
    args = ["eval", "--data", str(prepared), "--model", "config:tiny", "--out", str(out)]
    args += ["--questions", str(questions), "--max-new-tokens", "2", "--overwrite"]
    with OutputLock(out, "a first eval"):
        code, err = _run_cli(capsys, *args)
    _one_line(code, err, "eval", "being written by another process", "a first eval")
    code, err = _run_cli(capsys, *args)
    assert code == 0, err[-2000:]
    assert (out / "report.md").is_file() and not (out / "report.png").exists()


def test_the_lock_never_truncates_a_users_file_of_its_name(catalogue, tmp_path, capsys):
    """The lock ``.<out>.lock`` was opened and emptied whatever it was: a file of the user's of
    that name (or a link's target) lost its text. A lock file is empty or holds a holder's note."""
    notes = tmp_path / ".data.lock"
    notes.write_text("my important notes\n")
    args = ("prepare", str(catalogue), "--out", str(tmp_path / "data"), "--config", "tiny")
    code, err = _run_cli(capsys, *args, "--quiet")
    _one_line(code, err, "prepare", ".data.lock", "not amazon-sft's lock file")
    assert notes.read_text() == "my important notes\n"
    notes.unlink()
    target = tmp_path / "precious.txt"
    target.write_text("mine\n")
    notes.symlink_to(target)
    code, err = _run_cli(capsys, *args, "--quiet")
    _one_line(code, err, "prepare", "symbolic link")
    assert target.read_text() == "mine\n"


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


def test_a_report_moved_in_midway_is_never_taken_for_a_whole_one(tmp_path, monkeypatch):
    """eval moved its new report files in one by one over the old ones: a kill between two moves
    left the old report.json beside the new answers.jsonl, read as one report. Now the old report
    goes first and report.json (what scripts read) is moved in last: a folder with a report.json
    holds one whole report."""
    from amazon_sft.eval_ownership import EVAL_MARKER
    from amazon_sft.evaluation import report

    out = tmp_path / "eval"
    out.mkdir()
    (out / EVAL_MARKER).write_text("{}\n")
    for name in ("report.json", "answers.jsonl", "report.md"):
        (out / name).write_text("old")
    writers = {
        name: (lambda path: path.write_text("new"))
        for name in ("report.json", "answers.jsonl", "report.md")
    }
    moves = []

    def killed_after_one(src, dst):
        if moves:
            raise KeyboardInterrupt
        moves.append(dst)
        return real_replace(src, dst)

    real_replace = report.os.replace
    monkeypatch.setattr(report.os, "replace", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        report.write_staged(out, writers)
    monkeypatch.undo()
    left = {p.name: p.read_text() for p in out.iterdir() if p.name != EVAL_MARKER}
    assert "report.json" not in left and "old" not in left.values(), left
    report.write_staged(out, writers)
    left = {p.name: p.read_text() for p in out.iterdir() if p.name != EVAL_MARKER}
    assert left == {name: "new" for name in writers}


def test_saved_weights_are_readable_like_every_other_file(tuned_run, tmp_path):
    """transformers writes model.safetensors 0600 while every other file follows the umask: a
    serving account reading the run folder could load its tokenizer but not its weights."""
    import os

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
    (kept / COMPLETE).write_text("step 3\n")
    (kept / "model.safetensors").write_bytes(b"the weights of step 3")
    accelerator = Accelerator(cpu=True)

    model = __import__("torch").nn.Linear(2, 2)  # all trained: saved whole

    def killed(folder, **_):
        Path(folder).mkdir(parents=True)
        (Path(folder) / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(accelerator, "save_state", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(accelerator, model, out, TrainerState(step=3), 3, {"config": {}})
    assert checkpointing.complete_checkpoints(out) == [kept]
    assert (kept / "model.safetensors").read_bytes() == b"the weights of step 3"

    monkeypatch.setattr(accelerator, "save_state", lambda folder, **_: Path(folder).mkdir())
    save_checkpoint(
        accelerator, model, out, TrainerState(step=3), 3, {"config": {}}
    )  # replaced whole
    assert checkpointing.complete_checkpoints(out) == [kept]
    assert not (kept / "model.safetensors").exists()
    assert [p.name for p in (out / "checkpoints").iterdir()] == [kept.name]


def test_prepare_overwrite_never_replaces_a_file_edited_since_prepare_wrote_it(
    prepared, catalogue, tmp_path, capsys
):
    """A hostile review: a product added by hand to ``catalogue.jsonl`` (the README says an
    edited catalogue is expected: ``amazon-sft index`` rebuilds its index) went without a word
    with ``prepare --overwrite``, as eval's and the demo's edited files do not. The manifest
    keeps each file's digest as prepare wrote it; an edited one is refused, named."""
    out = tmp_path / "data"
    args = ("prepare", str(catalogue), "--out", str(out), "--config", "tiny", "--quiet")
    code, err = _run_cli(capsys, *args)
    assert code == 0, err[-2000:]
    mine = out / "catalogue.jsonl"
    added = '{"uid": "MY0001", "title": "Mine", "content": "My own product.", "split": "train"}\n'
    mine.write_text(mine.read_text() + added)
    code, err = _run_cli(capsys, *args, "--overwrite")
    _one_line(code, err, "prepare", "catalogue.jsonl", "changed since")
    assert mine.read_text().endswith(added)
    original = mine.read_text()[: -len(added)]
    i = len(original) // 2  # an edit that keeps the size (a price changed), mid-file
    edited = original[:i] + ("X" if original[i] != "X" else "Y") + original[i + 1 :]
    mine.write_text(edited)
    code, err = _run_cli(capsys, *args, "--overwrite")
    _one_line(code, err, "prepare", "catalogue.jsonl", "changed since")
    mine.write_text(original)  # as prepare wrote it: replaced
    code, err = _run_cli(capsys, *args, "--overwrite")
    assert code == 0, err[-2000:]


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


def test_a_start_removes_only_the_staging_folders_a_save_writes(tmp_path):
    """A hostile review: any ``checkpoints/step-*.tmp`` was removed as a killed save's, a
    user's ``step-00000003-before-lr-change.tmp`` backup with it. Only ``step-<8 digits>.tmp``
    is a save's."""
    from amazon_sft.checkpointing import clear_killed_saves

    root = tmp_path / "run" / "checkpoints"
    theirs = root / "step-00000003-before-lr-change.tmp"
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("backup")
    killed, later = root / "step-00000004.tmp", root / "step-100000000.tmp"
    killed.mkdir(), later.mkdir()
    clear_killed_saves(tmp_path / "run")
    assert (theirs / "notes.txt").read_text() == "backup"
    assert not killed.exists() and not later.exists()  # step 100,000,000 has 9 digits


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


def test_eval_into_a_dangling_link_or_a_file_is_one_line_before_any_model_loads(
    prepared, tmp_path, capsys
):
    """A link to a folder not there yet was a FileExistsError traceback after the whole eval."""
    link = tmp_path / "dang"
    link.symlink_to(tmp_path / "nowhere")
    base = ["eval", "--data", str(prepared), "--model", "config:tiny", "--n", "1"]
    code, err = _run_cli(capsys, *base, "--out", str(link))
    _one_line(code, err, "eval", str(link), "does not exist")
    (tmp_path / "file").write_text("mine")
    code, err = _run_cli(capsys, *base, "--out", str(tmp_path / "file"))
    _one_line(code, err, "eval", "is a file")
    assert (tmp_path / "file").read_text() == "mine"


def test_make_clean_removes_only_the_folders_its_tools_marked(tmp_path):
    """``make clean`` ran ``rm -rf $(DEMO_DIR) gpu_check_out``: a ``demo_out`` the demo had
    refused as not its own, a user's ``gpu_check_out`` and any folder a ``DEMO_DIR`` in the
    environment named were deleted (an outside review). Only a folder holding its tool's marker
    goes now; any other is kept and named."""
    from amazon_sft.ownership import DEMO_MARKER

    shutil.copy(Path(__file__).resolve().parents[1] / "Makefile", tmp_path / "Makefile")
    mine, check, marked = tmp_path / "demo_out", tmp_path / "gpu_check_out", tmp_path / "d2"
    for folder in (mine, check, marked):
        folder.mkdir()
        (folder / "thesis.txt").write_text("mine\n")
    (marked / DEMO_MARKER).write_text("{}\n")
    (tmp_path / ".d2.lock").write_text("")
    make = ["make", "-s", "-C", str(tmp_path), "clean", f"PYTHON={sys.executable}"]
    kept = subprocess.run(make, capture_output=True, text=True, timeout=60)
    assert kept.returncode == 0, kept.stderr
    assert (mine / "thesis.txt").is_file() and (check / "thesis.txt").is_file()
    assert "kept" in kept.stdout + kept.stderr and "demo_out" in kept.stdout + kept.stderr
    env = {**os.environ, "DEMO_DIR": str(marked)}
    # a marked folder holding a file the demo did not write is kept, the file named (an
    # outside audit: it went whole, the user's eval-mine/report.md with it)
    kept = subprocess.run(make, capture_output=True, text=True, timeout=60, env=env)
    assert kept.returncode == 0 and "thesis.txt" in kept.stdout, kept.stdout + kept.stderr
    assert (marked / "thesis.txt").is_file()
    (marked / "thesis.txt").unlink()
    for name in ("prepared", "run", "eval"):  # what the demo writes goes, with its locks
        (marked / name).mkdir()
        (marked / f".{name}.lock").write_text("")
    (marked / "answers.json").write_text("{}")
    gone = subprocess.run(make, capture_output=True, text=True, timeout=60, env=env)
    assert gone.returncode == 0, gone.stderr
    assert not marked.exists() and not (tmp_path / ".d2.lock").exists(), gone.stdout
    assert (mine / "thesis.txt").is_file()


def _kept_by_clean(demo: Path, path: Path) -> str:
    """The user's ``path`` written into the demo folder: make clean keeps the folder and the
    file; its line."""
    from amazon_sft.clean_outputs import clean

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("mine")
    line = clean(demo)
    assert line.startswith(f"make clean: kept {demo}"), line
    assert path.read_text() == "mine"
    return line


def test_make_clean_keeps_user_files_named_like_its_litter_or_its_logs(tmp_path):
    """A hostile review: any hidden ``.X.tmp-*``, ``.X.old-*`` or ``.X.lock`` entry counted as
    a killed run's leftovers, a folder with all in it (``eval/.figures.tmp-v2/fig.md``), and any
    TensorBoard events file in a demo run's logs/ as the run's, though the demo trains with
    ``train.trackers=[]`` (a baseline copied in to compare): make clean removed them. Staging
    names carry the machine and process; a lock file is empty or its holder's note; events
    files are the run's only where its config.yaml logs to TensorBoard."""
    from amazon_sft.atomic import staging_name
    from amazon_sft.clean_outputs import clean, is_litter
    from amazon_sft.ownership import DEMO_MARKER

    demo = tmp_path / "demo_out"
    (demo / "eval").mkdir(parents=True)
    (demo / DEMO_MARKER).write_text("{}\n")
    (demo / "run" / "logs").mkdir(parents=True)
    (demo / "run" / ".amazon_sft_run.json").write_text("{}\n")
    (demo / "run" / "config.yaml").write_text("train:\n  trackers: []\n")
    litter = [staging_name(demo / "prepared"), demo / ".prepared.lock"]
    for path in litter:
        path.write_text("pid 12 on host\n" if path.suffix == ".lock" else "")
        assert is_litter(path), path
    users = [
        demo / "eval" / ".figures.tmp-v2" / "fig.md",
        demo / ".analysis.old-2" / "notes.md",
        demo / "run" / ".todo.lock",
        demo / "run" / "logs" / "baseline" / "events.out.tfevents.1.host.1.0",
    ]
    for path in users:
        _kept_by_clean(demo, path)
        path.unlink()
        if path.parent.name != "logs" and path.parent.name.startswith("."):
            path.parent.rmdir()
    # a review of the fix: a file named like a run's folder was the run's
    shutil.rmtree(demo / "run" / "logs")
    for name in ("final", "checkpoints", "logs"):
        (demo / "run" / name).write_text("my notes")
        line = clean(demo)
        assert line.startswith(f"make clean: kept {demo}") and f"run/{name}" in line, line
        (demo / "run" / name).unlink()
    # staging names without the machine (one morning's demo, compatibility dropped 2026-12-05)
    # are not litter: a user's file may carry such a name, so the folder is kept
    for name in (".demo.log.tmp-12345.log", ".trn.json.gz.tmp-12346"):
        (demo / name).write_text("x")
        assert not is_litter(demo / name)
        assert clean(demo).startswith(f"make clean: kept {demo}")
        (demo / name).unlink()
    assert clean(demo) == f"removed {demo}" and not demo.exists()


def test_make_clean_keeps_a_demo_holding_a_user_file_at_any_depth(tmp_path):
    """A hostile review: ``make clean`` checked the demo folder's top-level names only, then
    removed it whole: the user's ``eval/my_analysis.md``, ``run/my_run_notes.txt`` and a note
    in a checkpoint went with it. Each part is checked as its command checks it; the same
    folder without the user's files goes (and the GPU check's folder, whose demo/ is a demo)."""
    from amazon_sft.clean_outputs import GPU_MARKER, clean
    from amazon_sft.ownership import DEMO_MARKER

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import gpu_check

    assert GPU_MARKER == gpu_check.MARKER
    demo = tmp_path / "demo_out"
    for name in ("eval", "eval-oracle", "prepared", "run/checkpoints", "run/logs/amazon_sft"):
        (demo / name).mkdir(parents=True)
    (demo / DEMO_MARKER).write_text("{}\n")
    (demo / "run" / ".amazon_sft_run.json").write_text("{}\n")
    (demo / "run" / "metrics.jsonl").write_text("{}\n")
    (demo / "run" / "config.yaml").write_text("train:\n  trackers: [tensorboard]\n")
    (demo / "run" / "logs" / "amazon_sft" / "events.out.tfevents.1.host").write_bytes(b"tb")
    step = demo / "run" / "checkpoints" / "step-00000001"
    step.mkdir()
    (step / "checksums.json").write_text('{"model.safetensors": {}}')
    (step / "model.safetensors").write_bytes(b"w")
    (step / "COMPLETE").write_text("step 1\n")
    users = [
        demo / "eval" / "my_analysis.md",
        demo / "run" / "my_run_notes.txt",
        step / "my_notes.txt",
        demo / "run" / "logs" / "amazon_sft" / "notes.md",
        demo / "run" / "previous" / "20261204T000000Z" / "thesis.txt",
    ]
    for path in users:
        line = _kept_by_clean(demo, path)
        assert str(path.relative_to(demo)) in line, line
        path.unlink()
    (demo / "eval" / ".amazon_sft_eval.json").write_text('{"files": {}}')  # eval's, no digest
    (demo / "eval" / "report.md").write_text("edited")
    line = clean(demo)  # named alone, as edited, not as "not written"
    assert "eval/report.md, edited since it wrote it" in line and "did not write" not in line
    (demo / "eval" / "report.md").unlink()
    (demo / "eval" / ".amazon_sft_eval.json").unlink()
    check = tmp_path / "gpu_check_out"
    shutil.move(demo, check / "demo")
    (check / GPU_MARKER).write_text("{}\n")
    (check / "demo" / DEMO_MARKER).unlink()  # a demo/ of the user's: no demo marker
    assert clean(check).startswith(f"make clean: kept {check}") and (check / "demo").is_dir()
    (check / "demo" / DEMO_MARKER).write_text("{}\n")
    (check / GPU_MARKER).write_text("{}\n")
    (check / "benchmark.txt").write_text("table")
    (check / "demo" / "eval" / "report.md").write_text("mine")  # eval never recorded it
    assert "demo/eval/report.md" in clean(check) and (check / "benchmark.txt").is_file()
    (check / "demo" / "eval" / "report.md").unlink()
    assert clean(check) == f"removed {check}" and not check.exists()


def test_eval_into_a_link_to_another_filesystem_keeps_the_report(prepared, tmp_path, capsys):
    """``eval --out LINK`` whose folder is on another filesystem: the report was staged beside
    the link, the old report deleted, then the move failed (EXDEV) with a traceback: neither the
    old report nor the new one was left (an outside review). Staged beside the real folder."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's folder")
    real = Path(tempfile.mkdtemp(dir=shm))
    try:
        link = tmp_path / "eval"
        link.symlink_to(real)
        questions = tmp_path / "q.jsonl"
        row = json.loads((prepared / "heldout.jsonl").read_text().splitlines()[0])
        questions.write_text(
            json.dumps({"question": row["title"], "uid": row["uid"], "kind": "partial"}) + "\n"
        )
        run = ["eval", "--data", str(prepared), "--model", "config:tiny", "--out", str(link)]
        run += ["--questions", str(questions), "--max-new-tokens", "2"]
        for extra in ([], ["--overwrite"]):
            code, err = _run_cli(capsys, *run, *extra)
            assert code == 0 and "Traceback" not in err, err[-2000:]
            assert json.loads((real / "report.json").read_text())["models"]
    finally:
        shutil.rmtree(real, ignore_errors=True)


def test_a_link_to_nowhere_as_out_is_one_line_for_train_and_demo(prepared, tmp_path, capsys):
    """``out_dir``/``--out`` a link whose folder does not exist: train and demo ended in a
    FileExistsError traceback after their lock had made the link's missing parent folder (an
    outside review). One line naming the link, and nothing made."""
    link = tmp_path / "dang"
    link.symlink_to(tmp_path / "nowhere" / "x")
    code, err = _run_cli(capsys, "demo", "--config", "tiny", "--out", str(link))
    _one_line(code, err, "demo", str(link), "does not exist")
    train = _cli("train", "--config", "tiny", f"data.path={prepared}", f"out_dir={link}")
    _one_line_error(train, "train", str(link), "does not exist")
    assert not (tmp_path / "nowhere").exists() and link.is_symlink()


@pytest.mark.parametrize("code", ["ENOLCK", "ENOSYS", "EOPNOTSUPP"])
def test_a_filesystem_without_locks_warns_and_writes(tmp_path, monkeypatch, capsys, code):
    """NFS mounted ``nolock`` (ENOLCK) or Lustre ``noflock`` (ENOSYS): every command that takes
    the one-writer lock (train, prepare, eval, export, demo) died in an OSError traceback (an
    outside review). It writes without the lock, saying so in one line."""
    import errno
    import fcntl

    from amazon_sft.output_lock import OutputLock

    def no_locks(fd, op):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with OutputLock(tmp_path / "out", "a writer"):
        (tmp_path / "out").mkdir()
    err = capsys.readouterr().err
    assert "no file locks" in err and str(tmp_path) in err and len(err.strip().splitlines()) == 1


def test_a_run_into_the_prepared_data_folder_is_one_line(prepared, tmp_path):
    """``out_dir`` = ``data.path``: the run's checkpoints and final/ went in among the shards,
    and a later ``prepare --overwrite`` of that folder refused it (an outside review)."""
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    before = sorted(p.name for p in data.iterdir())
    for out in (data, data / "run"):
        proc = _cli("train", "--config", "tiny", f"data.path={data}", f"out_dir={out}")
        _one_line_error(proc, "train", "data.path", "another out_dir")
    assert sorted(p.name for p in data.iterdir()) == before


def test_a_data_setting_given_to_train_that_the_data_was_not_prepared_with_is_one_line(
    prepared, tiny_model_dir, tmp_path
):
    """``data.grounded_fraction=1.0`` on train's command line, the data prepared with another:
    the run went on (an INFO line), taught what the data held, and its config.yaml recorded
    the value given (an outside review). A value given that differs from the manifest's is
    refused, naming both; the same value, or one train reads itself (data.seed), is fine."""
    from amazon_sft.data.manifest import read_manifest

    made = read_manifest(prepared).config["data"]
    base = ("train", "--config", "tiny", *train_overrides(prepared, tiny_model_dir, tmp_path / "r"))
    other = 0.5 if made["grounded_fraction"] != 0.5 else 0.25
    assert made["max_train_products"] is None  # prepared with every product: 50 is another
    for bad in (f"data.grounded_fraction={other}", "data.clean.min_content_chars=7",
                "data.max_train_products=50"):  # fmt: skip
        proc = _cli(*base, bad, "train.max_steps=1")
        _one_line_error(proc, "train", bad.split("=")[0], "prepare")
    same = _cli(*base, f"data.grounded_fraction={made['grounded_fraction']}", "data.seed=7",
                "data.grounded_workers=16", "data.tokenizer_backend=hf", "train.max_steps=1")  # fmt: skip
    assert same.returncode == 0, same.stderr[-2000:]


def test_a_released_lock_file_left_inside_a_prepared_folder_does_not_block_overwrite(
    catalogue, prepared, tmp_path, capsys
):
    """``eval --out prepared/eval`` leaves ``prepared/.eval.lock`` (lock files are never deleted):
    every later ``prepare --overwrite`` of that folder refused it as a file prepare did not write
    (an outside review). A released lock (empty) is amazon-sft's own; one held by a running
    process is still refused."""
    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    from amazon_sft.output_lock import OutputLock

    cmd = ["prepare", str(catalogue), "--out", str(out), "--config", "tiny", "--overwrite"]
    cmd += ["--quiet", "data.shard_rows=64"]
    with OutputLock(out / "eval", "eval"):  # a running eval's lock
        code, err = _run_cli(capsys, *cmd)
        _one_line(code, err, "prepare", ".eval.lock")
    (out / ".notes.lock").write_text("my own notes\n")
    code, err = _run_cli(capsys, *cmd)
    _one_line(code, err, "prepare", ".notes.lock")
    (out / ".notes.lock").unlink()
    assert (out / ".eval.lock").is_file()  # released, as eval leaves it
    code, err = _run_cli(capsys, *cmd)
    assert code == 0, err[-2000:]


def test_a_data_setting_in_the_config_file_that_the_data_was_not_prepared_with_is_a_warning(
    prepared, caplog
):
    """A YAML edited between prepare and train (``data.grounded_fraction`` raised, prepare not
    run again): the run teaches what the data holds and records the data's values, but said so
    only at INFO, which the default log level hides. It is a WARNING naming the key and both
    values, and what to do."""
    import logging

    from amazon_sft.config import load_run_config
    from amazon_sft.data.manifest import read_manifest
    from amazon_sft.run_data import taught_by_the_data

    manifest = read_manifest(prepared)
    other = 0.5 if manifest.data["grounded_fraction"] != 0.5 else 0.25
    cfg = load_run_config("tiny", [f"data.grounded_fraction={other}"])
    with caplog.at_level(logging.WARNING, logger="amazon_sft.train"):
        taken = taught_by_the_data(cfg, manifest)
    assert taken.data.grounded_fraction == manifest.data["grounded_fraction"]
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("data.grounded_fraction" in m and str(other) in m and "prepare" in m for m in said)


def test_every_data_setting_that_shaped_the_examples_is_recorded_as_prepared(prepared, caplog):
    """An outside review: only five data settings were taken from the data; a YAML giving
    ``max_answer_tokens``, ``heldout_fraction``, ``phrasings_per_doc`` or a question mix the data
    was not prepared with was recorded in config.yaml and final/ as if it had run, unwarned."""
    import logging

    from amazon_sft.config import load_run_config
    from amazon_sft.data.manifest import read_manifest
    from amazon_sft.run_data import taught_by_the_data

    manifest = read_manifest(prepared)
    made = manifest.data
    given = {
        "max_answer_tokens": made["max_answer_tokens"] + 7,
        "heldout_fraction": 0.3 if made["heldout_fraction"] != 0.3 else 0.2,
        "phrasings_per_doc": made["phrasings_per_doc"] + 2,
        "question_mix.title": 0.5,  # the shares sum to 1
        "question_mix.typo": 0.5,
    }
    assert made["question_mix"]["typo"] != 0.5
    cfg = load_run_config("tiny", [f"data.{k}={v}" for k, v in given.items()])
    with caplog.at_level(logging.WARNING, logger="amazon_sft.train"):
        taken = taught_by_the_data(cfg, manifest)
    assert taken.data.max_answer_tokens == made["max_answer_tokens"]
    assert taken.data.heldout_fraction == made["heldout_fraction"]
    assert taken.data.phrasings_per_doc == made["phrasings_per_doc"]
    assert taken.data.question_mix.typo == made["question_mix"]["typo"]
    assert taken.data.path == cfg.data.path  # what train reads is the config's
    said = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for key in ("max_answer_tokens", "heldout_fraction", "phrasings_per_doc", "question_mix"):
        assert f"data.{key}" in said, said


def test_templates_named_another_way_are_the_templates_the_data_was_prepared_with(
    prepared, tmp_path, monkeypatch
):
    """A review of train_local.sh's fix: it hands train ``data.templates`` whole, prepare had
    recorded ``my_t.yaml`` as typed, and train refused the string ("prepare again"); had it
    taken the manifest's value instead, final/ would name ``my_t.yaml`` relative to the repo.
    What the templates render is compared by their fingerprint (``load_data``); the path train
    was given is the one it keeps."""
    import shutil

    from amazon_sft.config import load_run_config
    from amazon_sft.data.manifest import Manifest, read_manifest
    from amazon_sft.run_data import refuse_data_not_prepared, taught_by_the_data

    monkeypatch.chdir(tmp_path)
    shutil.copy(
        Path(__file__).resolve().parents[1] / "amazon_sft/templates/questions.yaml", "my_t.yaml"
    )
    raw = read_manifest(prepared).to_dict()
    raw["config"]["data"]["templates"] = "my_t.yaml"  # as prepare recorded it, typed there
    manifest = Manifest.from_dict(raw)
    given = [f"data.templates={tmp_path / 'my_t.yaml'}"]
    cfg = load_run_config("tiny", given)
    refuse_data_not_prepared(given, cfg, manifest)
    assert taught_by_the_data(cfg, manifest).data.templates == str(tmp_path / "my_t.yaml")


def test_a_manifest_from_an_older_version_still_trains_and_keeps_what_it_does_not_say(prepared):
    """A review of the change above: a manifest written before ``data.clean.strip_citations``
    was renamed (``strip_prompt_markup``) made train refuse the folder ("unknown config key"),
    and a section it has whole replaced the config's, so keys it lacks took defaults."""
    import dataclasses

    from amazon_sft.config import load_run_config
    from amazon_sft.data.manifest import read_manifest
    from amazon_sft.run_data import taught_by_the_data

    manifest = read_manifest(prepared)
    data = {**manifest.data, "clean": dict(manifest.data["clean"])}
    data["clean"]["strip_citations"] = True  # a key since renamed
    del data["clean"]["strip_prompt_markup"]  # a key it did not have
    data["clean"]["min_content_chars"] = data["clean"]["min_content_chars"] + 3
    old = dataclasses.replace(manifest, config={**manifest.config, "data": data})
    cfg = load_run_config("tiny", ["data.clean.strip_prompt_markup=false"])
    taken = taught_by_the_data(cfg, old)
    assert taken.data.clean.min_content_chars == data["clean"]["min_content_chars"]
    assert taken.data.clean.strip_prompt_markup is False  # not said by the data: the config's


def test_an_older_manifests_question_mix_is_taken_whole_its_missing_kinds_untaught(prepared):
    """A mix is one value, not keys: merged key by key, a manifest written before a question
    kind existed kept the config's share for that kind beside its own, the shares no longer
    summed to 1, and train refused the folder. A kind the data does not name was not taught."""
    import dataclasses

    from amazon_sft.config import load_run_config
    from amazon_sft.data.manifest import read_manifest
    from amazon_sft.run_data import taught_by_the_data

    manifest = read_manifest(prepared)
    mix = {"title": 0.5, "fragment": 0.5}  # written before the other kinds were added
    data = {**manifest.data, "question_mix": mix}
    old = dataclasses.replace(manifest, config={**manifest.config, "data": data})
    cfg = load_run_config("tiny", ["data.question_mix.title=0.5", "data.question_mix.typo=0.5"])
    taken = taught_by_the_data(cfg, old, say=False)
    assert taken.data.question_mix.title == 0.5 and taken.data.question_mix.fragment == 0.5
    assert taken.data.question_mix.typo == 0.0


def test_a_killed_evals_staging_is_cleared_by_the_next_eval_and_no_longer_blocks_prepare(
    tmp_path,
):
    """``kill -9`` while eval wrote its report left ``.OUT.tmp-MACHINE-PID/`` (a whole-looking
    report.json inside) for good: later evals removed only their own pid's, and with
    ``--out prepared/eval`` it made ``prepare --overwrite`` refuse the folder (an outside
    review). The next eval removes a dead process's staging, never a live one's: inside
    ``--out``, where it stages now (a mount point), and beside it, where older versions did."""
    import subprocess
    import sys

    from amazon_sft import atomic
    from amazon_sft.evaluation.report import write_staged

    out = tmp_path / "eval"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    out.mkdir()
    beside = tmp_path / f".eval.tmp-{atomic._machine()}-{int(dead.stdout)}"
    killed = out / f".report.tmp-{atomic._machine()}-{int(dead.stdout)}"
    for folder in (beside, killed):
        folder.mkdir()
        (folder / "report.json").write_text("{}")
    live = out / f".report.tmp-{atomic._machine()}-1"  # pid 1 lives
    live.mkdir()
    write_staged(out, {"report.json": lambda path: path.write_text('{"ok": 1}')})
    assert (out / "report.json").read_text() == '{"ok": 1}'
    assert not killed.exists() and not beside.exists() and live.is_dir()


def _build_with(monkeypatch, during):
    """``build_index``'s catalogue reading, with ``during()`` run once it has read."""
    from amazon_sft.answering import catalogue_tokens

    read = catalogue_tokens.read_catalogue

    def reading_then(*args, **kwargs):
        tokens = read(*args, **kwargs)
        during()
        return tokens

    monkeypatch.setattr(catalogue_tokens, "read_catalogue", reading_then)


def test_a_file_put_into_the_index_while_it_builds_is_kept(prepared, tmp_path, monkeypatch):
    """The index folder was checked for the user's files once, before minutes of reading; one
    put there during the build was deleted by the swap (an outside review)."""
    from amazon_sft.answering.index_build import build_index
    from amazon_sft.errors import UserError

    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    build_index(out)
    mine = out / "index" / "my-notes.txt"
    _build_with(monkeypatch, lambda: mine.write_text("mine\n"))
    with pytest.raises(UserError, match=r"my-notes\.txt"):
        build_index(out)
    assert mine.read_text() == "mine\n"


def test_a_catalogue_changed_while_it_is_indexed_is_refused(prepared, tmp_path, monkeypatch):
    """The catalogue's stamp and digest were taken after reading it: a product appended during
    the build was recorded as indexed, and never found (an outside review)."""
    from amazon_sft.answering.index_build import build_index
    from amazon_sft.errors import UserError

    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    catalogue = out / "catalogue.jsonl"
    row = b'{"uid": "NEW1", "title": "Zanzibar Quokka Lantern", "content": "A lantern.", "split": "train"}\n'
    _build_with(monkeypatch, lambda: catalogue.write_bytes(catalogue.read_bytes() + row))
    with pytest.raises(UserError, match="changed while"):
        build_index(out)


def test_index_takes_the_prepared_folders_lock(prepared, tmp_path):
    """Two index builds (or an index build and prepare --overwrite) into one folder both ran
    (an outside review; the README says a second writer is refused naming the first)."""
    from amazon_sft.answering.index_build import build_index
    from amazon_sft.errors import UserError
    from amazon_sft.output_lock import OutputLock

    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    with (
        OutputLock(out, "amazon-sft prepare"),
        pytest.raises(UserError, match="amazon-sft prepare"),
    ):
        build_index(out)


def test_a_killed_index_builds_staging_does_not_block_prepare_overwrite(
    prepared, catalogue, tmp_path, capsys
):
    """A build killed mid-way left ``.index.tmp-MACHINE-PID`` in the prepared folder, and
    prepare --overwrite refused the folder for it (an outside review)."""
    import subprocess
    import sys

    from amazon_sft import atomic

    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (out / f".index.tmp-{atomic._machine()}-{int(dead.stdout)}").mkdir()
    args = ("prepare", str(catalogue), "--out", str(out), "--config", "tiny", "--quiet")
    code, err = _run_cli(capsys, *args, *PREPARED_OVERRIDES, "--overwrite")
    assert code == 0, err


def test_a_loader_waits_for_the_index_another_process_is_building(prepared, tmp_path):
    """A review of the index lock: an 8-rank eval (or serve and eval started together) on a
    folder whose index was old had every loader but one refused ("being written by another
    process"). A loader waits for the lock, then uses the index the holder built."""
    import threading
    import time

    from amazon_sft.answering import index_build
    from amazon_sft.answering.index import CatalogueIndex
    from amazon_sft.output_lock import OutputLock

    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    shutil.rmtree(out / "index", ignore_errors=True)
    loaded, built = [], []
    real_build = index_build._build_index
    with OutputLock(out, "amazon-sft index"):  # another process, building
        loader = threading.Thread(target=lambda: loaded.append(CatalogueIndex(out)))
        loader.start()
        time.sleep(1.0)
        assert loader.is_alive() and not loaded  # waiting, not refused
        real_build(out, None)
    index_build._build_index = lambda *a: built.append(a) or real_build(*a)
    try:
        loader.join(timeout=60)
    finally:
        index_build._build_index = real_build
    assert loaded and len(loaded[0]) > 0 and not built  # the holder's index, not built again


@pytest.mark.parametrize("command", ["prepare", "synth", "eval", "train", "demo"])
def test_an_output_path_through_a_folder_not_made_yet_is_checked_where_it_lands(
    command, prepared, catalogue, tiny_model_dir, tmp_path, monkeypatch, capsys
):
    """An outside audit: ``nope/../mine`` does not resolve while ``nope`` is missing, so every
    check of the path as typed saw nothing there; the command then made ``nope`` and wrote
    into the user's ``mine/`` (prepare deleted it, synth replaced the catalogue, eval the
    report, train rewrote config.yaml and appended to metrics.jsonl). Each is now checked
    where it will land, and refused as the plain path is."""
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    files = {
        "thesis.txt": "precious\n",
        "report.md": "mine\n",
        "config.yaml": "mine: 1\n",
        "metrics.jsonl": "{}\n",
        "trn.json.gz": "mine\n",
    }
    for name, text in files.items():
        (mine / name).write_text(text)
    out = "nope/../mine"
    args = {
        "prepare": ["prepare", str(catalogue), "--out", out, "--config", "tiny", "--quiet"],
        "synth": ["synth", "--out", f"{out}/trn.json.gz", "--rows", "5"],
        "eval": ["eval", "--data", str(prepared), "--model", "config:tiny", "--out", out],
        "train": ["train", "--config", "tiny", *train_overrides(prepared, tiny_model_dir, out)],
        "demo": ["demo", "--out", out],
    }[command]
    code, err = _run_cli(capsys, *args)
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert {p.name: p.read_text() for p in mine.iterdir()} == files


@pytest.mark.parametrize("overwrite", [False, True])
def test_what_arrives_in_prepares_out_while_it_runs_is_never_deleted(
    catalogue, tiny_cfg, tmp_path, monkeypatch, overwrite
):
    """An outside audit: prepare checked ``--out`` only at the start, and its swap then deleted
    whatever had arrived there since (``eval --out PREPARED/eval`` run beside a prepare
    --overwrite, or a folder the user made at the new path). It is checked again just before
    the swap; what arrived stays, and the new data is not put in place."""
    import amazon_sft.prepare as prep
    from amazon_sft.errors import UserError

    out = tmp_path / "prepared"
    if overwrite:
        prep.prepare(catalogue, out, tiny_cfg, progress=False)
    arrived = out / "eval" / "report.md"
    made = prep.write_manifest

    def manifest_then_arrival(*args, **kwargs):
        arrived.parent.mkdir(parents=True, exist_ok=True)
        arrived.write_text("precious\n")
        return made(*args, **kwargs)

    monkeypatch.setattr(prep, "write_manifest", manifest_then_arrival)
    with pytest.raises(UserError, match="changed while prepare ran"):
        prep.prepare(catalogue, out, tiny_cfg, overwrite=overwrite, progress=False)
    assert arrived.read_text() == "precious\n"
    assert not list(tmp_path.glob(".prepared.tmp-*"))  # the staging folder is removed


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


def test_a_stopped_prepare_leaves_no_hidden_copy_behind(catalogue, tmp_path):
    """SIGTERM (a scheduler's stop, ``kill``) ended prepare, export and index at once: their
    hidden staging folders (a whole copy of the output, a model's weights for export) stayed
    until a later run to the same output (an outside review). They stop as a Ctrl-C does: the
    staging is removed, one line says so, exit 143."""
    import signal
    import sys
    import time

    out = tmp_path / "prepared"
    cmd = [sys.executable, "-m", "amazon_sft.cli", "prepare", str(catalogue), "--out", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--config", "tiny", "--quiet"], stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not any(p.name.startswith(".prepared.tmp") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.time() < deadline, "prepare ended before staging"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err[-2000:]
    assert "amazon-sft prepare: stopped by SIGTERM" in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".prepared.lock") == []


def test_a_prepare_under_nohup_goes_on_after_a_hang_up(catalogue, tmp_path):
    """The stop above must not undo ``nohup``: a SIGHUP the command was started ignoring stays
    ignored (a review of the change)."""
    import signal
    import sys
    import time

    out = tmp_path / "prepared"
    cmd = [sys.executable, "-m", "amazon_sft.cli", "prepare", str(catalogue), "--out", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--config", "tiny", "--quiet"],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    deadline = time.time() + 120
    while not any(p.name.startswith(".prepared.tmp") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.time() < deadline, "prepare ended before staging"
        time.sleep(0.02)
    proc.send_signal(signal.SIGHUP)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 0 and (out / "manifest.json").is_file(), err[-2000:]


def test_a_mistyped_path_leaves_no_lock_file_beside_the_output(
    prepared, tuned_run, tmp_path, capsys
):
    """``amazon-sft index typo-prep`` said the catalogue was not found and left
    ``.typo-prep.lock`` where the user stood; eval with a mistyped --model, --data or
    --questions left ``.<out>.lock`` (a review): what they name is checked before the lock."""
    code, err = _run_cli(capsys, "index", str(tmp_path / "typo-prep"))
    _one_line(code, err, "index", "typo-prep", "amazon-sft prepare")
    out = str(tmp_path / "ev")
    base = ("eval", "--model", str(tuned_run), "--data", str(prepared), "--out", out)
    for typo, args in (
        ("typo-model", ("--model", str(tmp_path / "typo-model"))),
        ("typo-data", ("--data", str(tmp_path / "typo-data"))),
        ("typo-questions", ("--questions", str(tmp_path / "typo-questions.jsonl"))),
    ):
        code, err = _run_cli(capsys, *base, *args)
        _one_line(code, err, "eval", typo)
        assert list(tmp_path.iterdir()) == [], typo


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


def test_a_held_out_fraction_the_data_was_split_with_otherwise_is_not_sent_back_to_prepare(
    prepared, caplog
):
    """Prepared with ``data.heldout_fraction=0.1`` as the docs advise, then trained with the
    config (0.01): the warning told the student to prepare again with the config's 0.01, back to
    15 held-out products (a new user). The split is the data's: said so, not sent back."""
    import logging

    from amazon_sft.config import load_run_config
    from amazon_sft.data.manifest import read_manifest
    from amazon_sft.run_data import taught_by_the_data

    manifest = read_manifest(prepared)
    made = manifest.data["heldout_fraction"]
    cfg = load_run_config("tiny", [f"data.heldout_fraction={made / 2}"])
    with caplog.at_level(logging.WARNING, logger="amazon_sft.train"):
        taken = taught_by_the_data(cfg, manifest)
    assert taken.data.heldout_fraction == made
    said = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert f"data.heldout_fraction={made}" in said and "held-out split" in said, said
    assert "prepare again" not in said, said


def test_export_overwrite_replaces_only_an_unchanged_export(tuned_run, tmp_path, capsys):
    """Exporting a run again to its folder was refused with no way but ``rm -rf`` (an rm that
    takes the card the user edited, as the export's README invites, with it). ``--overwrite``
    replaces a folder export wrote, and refuses one holding a file export did not write or one
    edited since (its card, its weights), naming them."""
    out = tmp_path / "model"
    args = ("export", str(tuned_run), "--out", str(out))
    code, err = _run_cli(capsys, *args)
    assert code == 0, err[-2000:]
    code, err = _run_cli(capsys, *args)
    _one_line(code, err, "export", "not empty", "--overwrite")
    first = (out / "model.safetensors").stat().st_ino
    code, err = _run_cli(capsys, *args, "--overwrite")
    assert code == 0, err[-2000:]
    assert (out / "model.safetensors").stat().st_ino != first  # written again
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [
        ".model.lock"
    ]  # nothing staged left
    card = out / "README.md"
    card.write_text(card.read_text() + "\nMy upload notes.\n")
    code, err = _run_cli(capsys, *args, "--overwrite")
    _one_line(code, err, "export", "README.md", "edited since")
    assert "My upload notes." in card.read_text()
    card.write_text(card.read_text().replace("\nMy upload notes.\n", ""))
    (out / "notes.txt").write_text("mine")
    code, err = _run_cli(capsys, *args, "--overwrite")
    _one_line(code, err, "export", "notes.txt", "did not write")
    (out / "notes.txt").unlink()
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2 + 7] ^= 1  # mid-file, the same size: a sampled digest misses it
    weights.write_bytes(bytes(data))
    code, err = _run_cli(capsys, *args, "--overwrite")
    _one_line(code, err, "export", "model.safetensors", "edited since")
    data[len(data) // 2 + 7] ^= 1
    weights.write_bytes(bytes(data))
    (out / "notes").mkdir()  # the record's name, but not the record
    (out / "notes" / ".amazon_sft_export.json").write_text("mine")
    code, err = _run_cli(capsys, *args, "--overwrite")
    _one_line(code, err, "export", ".amazon_sft_export.json", "did not write")
    shutil.rmtree(out / "notes")
    code, err = _run_cli(capsys, "export", str(out), "--out", str(out), "--overwrite")
    _one_line(code, err, "export", "read from")
    (out / ".amazon_sft_export.json").unlink()  # an export from before the record
    code, err = _run_cli(capsys, *args, "--overwrite")
    _one_line(code, err, "export", "from before exports kept a record")
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.txt").write_text("mine")
    code, err = _run_cli(capsys, "export", str(tuned_run), "--out", str(other), "--overwrite")
    _one_line(code, err, "export", "thesis.txt", "did not write")
    assert (other / "thesis.txt").read_text() == "mine"


def test_the_gpu_check_never_replaces_a_file_of_its_names_that_it_did_not_write(tmp_path):
    """The GPU check's folder, once marked, took any file of its names as its own: a re-run
    wrote over an edited ``gpu_check.json`` (or a user's ``demo.txt``) and ``make clean``
    removed it. Each file it writes is now recorded with its digest in the marker; a file of
    its names edited since, or one it never wrote, is refused before any step and kept by
    ``make clean``."""
    from amazon_sft.clean_outputs import clean

    out = tmp_path / "gpu_check_out"
    cmd = [sys.executable, "scripts/gpu_check.py", "--cpu-smoke", "--out", str(out)]
    cmd += ["--skip", "benchmark,demo,logits,tests"]
    repo = Path(__file__).resolve().parents[1]

    def check() -> subprocess.CompletedProcess:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=repo, timeout=300)

    first = check()
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert check().returncode == 0  # its own files, as it wrote them: taken again
    for name, text in (("gpu_check.json", "[] my edit"), ("demo.txt", "my notes")):
        (out / name).write_text(text)
        again = check()
        assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr[-2000:]
        assert name in again.stdout and again.stdout.count("\n") == 1, again.stdout
        assert (out / name).read_text() == text
        line = clean(out)
        assert line.startswith(f"make clean: kept {out}") and name in line, line
        (out / name).unlink()
    assert check().returncode == 0  # gpu_check.json removed: written anew
    assert clean(out) == f"removed {out}"


def test_a_gpu_check_stopped_at_a_files_swap_takes_it_as_its_own(tmp_path, monkeypatch):
    """A review: ``staged`` recorded the new digest, then renamed; a stop between the two (the
    check turns SIGTERM into an exit) left the old file under the new digest, and the next
    check refused its own file as "edited since". The record holds both while it swaps."""
    import os

    from amazon_sft import gpu_check_files as own

    out = tmp_path / "check"
    out.mkdir()
    (out / own.MARKER).write_text("{}")
    own.adopt(out)
    own.write_text(out, "demo.txt", "first run\n")
    replace = os.replace

    def stopped(src, dst, *args, **kwargs):
        if Path(dst).name == "demo.txt":
            raise SystemExit(143)
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(own.os, "replace", stopped)
    with pytest.raises(SystemExit):
        own.write_text(out, "demo.txt", "second run\n")
    monkeypatch.undo()
    assert own.refusal(out) is None  # the old file: its own
    (out / "demo.txt").write_text("second run\n")  # as if renamed
    assert own.refusal(out) is None
    (out / "demo.txt").write_text("my notes")
    assert "demo.txt, edited since" in own.refusal(out)
    (out / "demo.txt").write_text("first run\n")
    own.write_text(out, "demo.txt", "third run\n")
    assert isinstance(json.loads((out / own.MARKER).read_text())["files"]["demo.txt"], str)


def test_the_gpu_check_marker_cannot_be_a_door_to_a_users_file(tmp_path):
    """A review: a marker that is a link made the check write its record into the file the link
    points to; a marker that is not the check's JSON (cut by a kill, or ``"files": []``) read as
    one from before the record, so an edited gpu_check.json was written over and ``make clean``
    removed it; a benchmark killed half-way left ``benchmark.txt`` recorded as being written
    for good, so whatever a user put there later counted as the check's."""
    from amazon_sft import gpu_check_files as own
    from amazon_sft.clean_outputs import clean

    repo = Path(__file__).resolve().parents[1]

    def check(out: Path) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "scripts/gpu_check.py", "--cpu-smoke", "--out", str(out)]
        cmd += ["--skip", "benchmark,demo,logits,tests"]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=repo, timeout=300)

    mine = tmp_path / "mine.txt"
    mine.write_text("my precious notes")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / own.MARKER).symlink_to(mine)
    proc = check(linked)
    assert proc.returncode == 2 and proc.stdout.count("\n") == 1, proc.stdout + proc.stderr
    assert mine.read_text() == "my precious notes"

    for damaged in (b'{"written_by": "amazon_sft 0.1 GPU ch', b'{"files": []}'):
        out = tmp_path / f"damaged{len(damaged)}"
        assert check(out).returncode == 0
        (out / "gpu_check.json").write_text("my edit")
        (out / own.MARKER).write_bytes(damaged)
        proc = check(out)
        assert proc.returncode == 2 and "gpu_check.json" in proc.stdout, proc.stdout
        assert (out / "gpu_check.json").read_text() == "my edit"
        assert clean(out).startswith(f"make clean: kept {out}")

    out = tmp_path / "killed"
    assert check(out).returncode == 0
    with pytest.raises(KeyboardInterrupt), own.staged(out, "benchmark.txt") as log:
        log.write_text('{"variant": "varlen"}\n')  # half-way through the benchmark
        raise KeyboardInterrupt
    assert not (out / "benchmark.txt").exists()
    (out / "benchmark.txt").write_text("my own benchmark notes")
    assert "benchmark.txt" in clean(out) and (out / "benchmark.txt").is_file()
    assert "writing" not in (out / own.MARKER).read_text()  # no record outlives its run
    (out / "benchmark.txt").unlink()

    # a check killed under the version before staging left {"benchmark.txt": "writing"}: a
    # mark that names no content, under which a user's file put there later was replaced; it
    # is refused now (the mark's compatibility was dropped, 2026-12-05)
    with own.staged(out, "benchmark.txt") as log:
        log.write_text("a table")
    note = json.loads((out / own.MARKER).read_text())
    note["files"]["benchmark.txt"] = "writing"
    (out / own.MARKER).write_text(json.dumps(note))
    (out / "benchmark.txt").write_text("my own benchmark notes")
    proc = check(out)
    assert proc.returncode == 2 and "benchmark.txt, edited since" in proc.stdout, proc.stdout
    assert (out / "benchmark.txt").read_text() == "my own benchmark notes"
    assert clean(out).startswith(f"make clean: kept {out}")


def test_the_demo_record_is_never_written_through_a_link(tmp_path):
    """The GPU check's marker was written through a link into the file it pointed to (a
    review); the demo's file record was written the same way. Records and markers are now
    replaced whole (``atomic.write_text_whole``), so a link there is replaced, not followed."""
    from amazon_sft.demo_files import RECORD, record_demo_file

    mine = tmp_path / "mine.json"
    mine.write_text('{"my": "notes"}')
    out = tmp_path / "demo_out"
    out.mkdir()
    (out / RECORD).symlink_to(mine)
    (out / "demo.log").write_text("$ amazon-sft synth\n")
    record_demo_file(out, "demo.log")
    assert mine.read_text() == '{"my": "notes"}'
    assert not (out / RECORD).is_symlink() and "demo.log" in (out / RECORD).read_text()


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
