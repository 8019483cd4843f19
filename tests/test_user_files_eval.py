"""eval never deletes or replaces a report it cannot prove it wrote, and never leaves half a report
that reads as whole. (A new user's and a hostile user's trials: each test names what it found.)"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .test_hostile import _assert_one_line as _one_line
from .test_hostile import _run_cli

pytestmark = pytest.mark.hostile


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
    code, err = _run_cli(capsys, *again, "--overwrite")
    assert code == 0, err[-2000:]
    # a copy without the dotfile (``cp dir/* copy/``): eval's report.json, but whether report.md
    # was edited cannot be told (an outside review: the notes added to it were replaced)
    (out / EVAL_MARKER).unlink()
    (out / "report.md").write_text((out / "report.md").read_text() + "MY NOTES\n")
    code, err = _run_cli(capsys, *again, "--overwrite")
    _one_line(code, err, "eval", "cannot be told", "report.md")
    assert (out / "report.md").read_text().endswith("MY NOTES\n")


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
    (tmp_path / "report.json").write_text(json.dumps(ours))  # eval's, from before the marker
    with pytest.raises(UserError, match=r"from before eval kept digests.*cannot be told"):
        check_eval_dir(tmp_path)


def test_an_eval_marker_that_is_a_link_proves_nothing_and_is_never_written_through(tmp_path):
    """An outside review: eval wrote its marker with ``write_text``, so a
    ``.amazon_sft_eval.json`` linked to the user's diary replaced the diary with eval's record
    of its files (and the link proved the folder eval's). Now the link is refused, and the
    marker is only ever replaced whole."""
    from amazon_sft.errors import UserError
    from amazon_sft.eval_ownership import (
        EVAL_MARKER,
        check_eval_dir,
        claim_eval_dir,
        is_our_eval,
        record_eval_files,
    )

    diary = tmp_path / "diary.txt"
    diary.write_text("my diary\n")
    out = tmp_path / "eval"
    out.mkdir()
    (out / EVAL_MARKER).symlink_to(diary)
    assert not is_our_eval(out)
    for call in (check_eval_dir, claim_eval_dir):
        with pytest.raises(UserError, match=f"{EVAL_MARKER} is a link"):
            call(out)
    (out / "report.md").write_text("mine\n")
    with pytest.raises(UserError, match="link"):
        check_eval_dir(out)
    record_eval_files(out, {"report.md": ["0" * 64]})  # were it reached: the link replaced
    assert diary.read_text() == "my diary\n" and not (out / EVAL_MARKER).is_symlink()


def test_eval_is_one_writer_and_leaves_no_older_reports_file(prepared, tmp_path, capsys):
    """Two evals into one --out both ran (the README says a second writer is refused); an end to
    end report written where a closed-book one was kept the old report.png beside it."""
    from amazon_sft.eval_ownership import EVAL_MARKER
    from amazon_sft.output_lock import OutputLock

    out = tmp_path / "eval"
    out.mkdir()
    (out / "report.png").write_bytes(b"an older eval's plot")
    plot = hashlib.sha256(b"an older eval's plot").hexdigest()
    (out / EVAL_MARKER).write_text(json.dumps({"files": {"report.png": [plot]}}))
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


def test_a_report_moved_in_midway_is_never_taken_for_a_whole_one(tmp_path, monkeypatch):
    """eval moved its new report files in one by one over the old ones: a kill between two moves
    left the old report.json beside the new answers.jsonl, read as one report. Now the old report
    goes first and report.json (what scripts read) is moved in last: a folder with a report.json
    holds one whole report."""
    from amazon_sft.eval_ownership import EVAL_MARKER
    from amazon_sft.evaluation import report

    out = tmp_path / "eval"
    out.mkdir()
    names = ("report.json", "answers.jsonl", "report.md")
    for name in names:
        (out / name).write_text("old")
    old = hashlib.sha256(b"old").hexdigest()  # an earlier eval's, as its marker records them
    (out / EVAL_MARKER).write_text(json.dumps({"files": {name: [old] for name in names}}))
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


def test_a_killed_evals_staging_is_cleared_by_the_next_eval_and_no_longer_blocks_prepare(
    tmp_path,
):
    """``kill -9`` while eval wrote its report left ``.OUT.tmp-MACHINE-PID/`` (a whole-looking
    report.json inside) for good: later evals removed only their own pid's, and with
    ``--out prepared/eval`` it made ``prepare --overwrite`` refuse the folder (an outside
    review). The next eval removes a dead process's staging, never a live one's: inside
    ``--out``, where it stages now (a mount point), and beside it, where older versions did."""

    from amazon_sft import atomic
    from amazon_sft.evaluation.report import write_staged

    out = tmp_path / "eval"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    out.mkdir()
    beside = atomic.staging_name(out, pid=int(dead.stdout))
    killed = atomic.staging_name(out / "report", pid=int(dead.stdout))
    for folder in (beside, killed):
        folder.mkdir()
        (folder / "report.json").write_text("{}")
    live = atomic.staging_name(out / "report", pid=1)  # pid 1 lives
    live.mkdir()
    write_staged(out, {"report.json": lambda path: path.write_text('{"ok": 1}')})
    assert (out / "report.json").read_text() == '{"ok": 1}'
    assert not killed.exists() and not beside.exists() and live.is_dir()


def test_a_stopped_eval_says_so_in_one_line_and_leaves_no_report(prepared, tmp_path):
    """SIGTERM (a scheduler's stop, ``kill``) ended eval with no line at all, its ``finally``
    blocks never run (a review). It stops as a Ctrl-C does: one line, exit 143, no report and
    no staging left in ``--out``."""
    import signal
    import time

    out, questions = tmp_path / "eval", tmp_path / "q.jsonl"
    rows = [{"question": f"a red kayak {i}", "uid": "absent", "kind": "absent"} for i in range(40)]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [sys.executable, "-m", "amazon_sft.cli", "eval", "--data", str(prepared), "--model"]
    cmd += ["config:tiny", "--out", str(out), "--questions", str(questions)]
    proc = subprocess.Popen([*cmd, "--max-new-tokens", "64"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / ".eval.lock").exists():
        assert proc.poll() is None and time.time() < deadline, "eval ended before its lock"
        time.sleep(0.05)
    time.sleep(2)  # into loading or answering
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err[-2000:]
    assert "amazon-sft eval: stopped by SIGTERM" in err and "Traceback" not in err, err
    assert not out.exists() or not [p for p in out.iterdir() if p.name.startswith(("report", "."))]


def test_a_stop_that_lands_in_a_callback_python_drops_still_stops(tmp_path):
    """A SIGTERM that came while Python ran a weakref callback (importlib's module locks, on
    each import) was printed as "Exception ignored" and lost: eval answered on, wrote its report
    and ended 0 (CI). A dropped stop is sent again, outside the callback, and stops."""
    script = (
        "import os, signal, sys, time, weakref\n"
        "from amazon_sft import process_stops as stops\n"
        "class Thing: pass\n"
        "def callback(_):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    sum(range(10**6))  # the handler runs here, inside the callback\n"
        "thing = Thing(); ref = weakref.ref(thing, callback)\n"
        "try:\n"
        "    with stops.stops_raised():\n"
        "        del thing\n"
        "        time.sleep(10)\n"
        "        print('ran on')\n"
        "except stops.Stopped as stop:\n"
        "    sys.exit(128 + stop.signum)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 143 and "ran on" not in done.stdout, done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr


def test_a_stop_while_eval_loads_its_code_says_so_in_one_line(tmp_path):
    """eval's modules (torch, transformers: two seconds) were imported before its stop handlers
    were set: a SIGTERM then ended it with no line, a Ctrl-C with a traceback through torch's
    import (a hostile user's trial). The stop now comes while they load."""
    script = (
        "import builtins, os, signal, sys\n"
        "from amazon_sft import cli\n"
        "real = builtins.__import__\n"
        "def importing(name, *args, **kwargs):\n"
        "    if name == 'amazon_sft.evaluation.main':\n"
        "        os.kill(os.getpid(), getattr(signal, sys.argv[1]))\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = importing\n"
        "sys.exit(cli.main(['eval', '--help']))\n"
    )
    for stop, said, code in (
        ("SIGTERM", "stopped by SIGTERM", 143),
        ("SIGINT", "interrupted", 130),
    ):
        done = subprocess.run([sys.executable, "-c", script, stop], capture_output=True, text=True)
        assert done.returncode == code and said in done.stderr, (done.returncode, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr


def test_a_stop_while_the_report_moves_in_lands_after_it_whole(tmp_path, monkeypatch):
    """eval stops on SIGTERM as on Ctrl-C and says nothing partial was left; a stop between
    the report's moves left a folder of new answers without its report.json (a review). The
    stop is held for the moves, then delivered: the report is whole, then eval stops."""
    import os
    import signal

    from amazon_sft.evaluation import report

    out = tmp_path / "eval"
    moved = []
    real_replace = os.replace

    def replace_then_stopped(src, dst):  # os.replace everywhere: the marker's writes too
        real_replace(src, dst)
        if Path(dst).name in ("answers.jsonl", "report.md", "report.json"):
            moved.append(Path(dst).name)
            if len(moved) == 1:
                os.kill(os.getpid(), signal.SIGTERM)

    def stop(signum, frame):
        raise KeyboardInterrupt

    monkeypatch.setattr(report.os, "replace", replace_then_stopped)
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(KeyboardInterrupt):
            report.write_staged(
                out,
                {
                    "answers.jsonl": lambda p: p.write_text("{}\n"),
                    "report.md": lambda p: p.write_text("# r\n"),
                    "report.json": lambda p: p.write_text("{}"),
                },
            )
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert moved == ["answers.jsonl", "report.md", "report.json"]
    assert (out / "report.json").read_text() == "{}"
