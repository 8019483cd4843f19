"""prepare never deletes or replace a file they cannot prove it wrote, and never leaves half an
output that reads as whole; the data settings a run is given are the ones it was prepared with.
(A new user's and a hostile user's trials: each test names what it found.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import train_overrides
from .test_hostile import _assert_one_line as _one_line
from .test_hostile import _cli, _one_line_error, _run_cli

pytestmark = pytest.mark.hostile


@pytest.mark.parametrize(
    "inside",
    ["shard-00000/mine.npy.txt", "index/notes.txt", "index/x/y", "shard-00009/input_ids.npy"],
)
def test_prepare_overwrite_refuses_files_of_the_users_inside_its_folders(
    prepared, catalogue, tmp_path, capsys, inside
):
    """The check for foreign entries read only the top level: a file of the user's inside a shard
    or the index folder was deleted by ``--overwrite`` without a word; so was a shard the
    manifest does not list, its files named as a shard's (a hostile user's trial)."""
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
    if mine.parent.name in ("x", "shard-00009"):
        mine.parent.rmdir()
    code, err = _run_cli(capsys, *args, "--overwrite")  # its own index and shards: replaced
    assert code == 0, err[-2000:]


def test_a_staging_folder_written_on_another_machine_is_never_cleaned_here(tmp_path, monkeypatch):
    """On a cluster's shared filesystem another node's run writes beside the same output; its
    process id means nothing on this node, and the cleanup of killed runs deleted its staging
    folder while it was being written (and put an old output it had set aside back in place)."""
    import socket

    from amazon_sft import atomic

    out = tmp_path / "x"
    monkeypatch.setattr(socket, "gethostname", lambda: "node-a")
    dead = dead_pid()
    monkeypatch.setattr(atomic.os, "getpid", lambda: dead)  # no process on this node now
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


def test_a_users_backup_named_like_a_staging_folder_is_never_removed_or_moved(tmp_path):
    """A hostile user's trial: ``prepare --overwrite`` deleted ``.data.old-20240101`` (a user's
    backup beside ``--out``, its number read as a dead process's), and export renamed
    ``.e2.old-1999`` into its missing ``--out``. Only names with the machine, and a number a
    process can have, are a killed run's."""
    from amazon_sft import atomic

    out = tmp_path / "data"
    names = (".data.old-20240101", ".data.old-1999", ".data.tmp-1999", ".data.old-backup-7")
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "WHY.txt").write_text("mine")
    huge = atomic.staging_name(out, pid=int("9" * 30))  # os.kill overflowed
    huge.mkdir()
    assert atomic.remove_stale(out, any_machine=True) == [] and not out.exists()
    assert all((tmp_path / name / "WHY.txt").read_text() == "mine" for name in names)
    ours = atomic.staging_name(out, "old", pid=dead_pid())
    ours.mkdir()
    assert len(atomic.remove_stale(out)) == 1 and out.is_dir()  # a killed swap's, restored


def dead_pid() -> int:
    """A process id no process of this machine has now (one that has just ended)."""
    import subprocess

    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


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
    from amazon_sft.atomic import staging_name

    out = tmp_path / "prepared"
    killed = staging_name(out, machine="node_b", pid=4242)
    killed.mkdir()
    (killed / "shard-00000.bin").write_bytes(b"half written")
    # the staging of a folder named prepared.amazon-sft-tmp-x
    sibling = staging_name(tmp_path / "prepared.amazon-sft-tmp-x", machine="node_b", pid=4243)
    sibling.mkdir()
    if not locks:

        def no_locks(fd, op):
            raise OSError(errno.ENOLCK, "No locks available")

        monkeypatch.setattr(fcntl, "flock", no_locks)
    prep.prepare(catalogue, out, tiny_cfg, progress=False)
    assert (out / "manifest.json").is_file()
    assert killed.exists() is not locks
    assert sibling.is_dir()


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


def test_a_stopped_prepare_leaves_no_hidden_copy_behind(catalogue, tmp_path):
    """SIGTERM (a scheduler's stop, ``kill``) ended prepare, export and index at once: their
    hidden staging folders (a whole copy of the output, a model's weights for export) stayed
    until a later run to the same output (an outside review). They stop as a Ctrl-C does: the
    staging is removed, one line says so, exit 143."""
    import signal
    import time

    out = tmp_path / "prepared"
    cmd = [sys.executable, "-m", "amazon_sft.cli", "prepare", str(catalogue), "--out", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--config", "tiny", "--quiet"], stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not any(p.name.startswith(".prepared.amazon-sft-tmp") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.time() < deadline, "prepare ended before staging"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err[-2000:]
    assert "amazon-sft prepare: stopped by SIGTERM" in err and "Traceback" not in err, err
    locks = (".prepared.lock", ".prepared.readers.lock")  # lock files are never deleted
    assert sorted(p.name for p in tmp_path.iterdir() if p.name not in locks) == []


def test_a_prepare_under_nohup_goes_on_after_a_hang_up(catalogue, tmp_path):
    """The stop above must not undo ``nohup``: a SIGHUP the command was started ignoring stays
    ignored (a review of the change)."""
    import signal
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
    while not any(p.name.startswith(".prepared.amazon-sft-tmp") for p in tmp_path.iterdir()):
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


def test_prepare_never_replaces_data_a_training_run_is_reading(
    prepared, catalogue, tiny_model_dir, tmp_path, capsys
):
    """A hostile user's trial: ``prepare --overwrite DATA`` replaced the shards a live run was
    reading; the run ended with exit 0 on deleted files, then its resume, eval and ask were
    refused (the data's digest had changed). A run holds its data for reading (shared: two runs
    on one data are fine); prepare refuses it then, and a run does not start while prepare
    writes there."""
    from amazon_sft.output_lock import DataReadLock

    from .conftest import train_overrides

    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    before = (data / "manifest.json").read_bytes()
    args = ("prepare", str(catalogue), "--out", str(data), "--config", "tiny", "--quiet")
    with DataReadLock(data, shared=True), DataReadLock(data, shared=True):  # two runs
        code, err = _run_cli(capsys, *args, "--overwrite")
        _one_line(code, err, "prepare", str(data.resolve()), "training run", "another --out")
    assert (data / "manifest.json").read_bytes() == before
    with DataReadLock(data, shared=False):  # prepare writing there
        code, err = _run_cli(
            capsys, "train", "--config", "tiny",
            *train_overrides(data, tiny_model_dir, tmp_path / "run", "train.max_steps=1"),
        )  # fmt: skip
        _one_line(code, err, "train", "being prepared", "wait")
    assert not (tmp_path / "run").exists()
    code, err = _run_cli(capsys, *args, "--overwrite")  # no run reads it now
    assert code == 0, err[-2000:]


def test_prepare_refuses_an_input_inside_the_folder_it_replaces(prepared, tmp_path, capsys):
    """A hostile-input review: ``prepare out/heldout.jsonl --out out --overwrite`` read the
    file, then the swap deleted it, and the report named it as the input of another file now
    at that path. Refused before anything is read."""
    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    given = out / "heldout.jsonl"
    before = given.read_bytes()
    code, err = _run_cli(capsys, "prepare", str(given), "--out", str(out), "--config", "tiny",
                         "--quiet", "--overwrite")  # fmt: skip
    _one_line(code, err, "prepare", "heldout.jsonl", "is inside --out")
    assert given.read_bytes() == before
