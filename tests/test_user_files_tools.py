"""synth, demo, export, make clean and the GPU check never delete or replace a file they cannot
prove they wrote. (A new user's and a hostile user's trials: each test names what it found.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .test_hostile import _assert_one_line as _one_line
from .test_hostile import _cli, _one_line_error, _run_cli

pytestmark = pytest.mark.hostile


def test_synth_replaces_only_a_file_it_wrote_and_only_with_overwrite(tmp_path, capsys):
    """``synth --out`` replaced any file silently (a copy of the real rows became 5 generated
    lines); then ``--overwrite`` still replaced any file, a user's real ``trn.json.gz`` among
    them (a review: every other command replaces only what it can prove it wrote). Now an
    existing file is replaced only with ``--overwrite`` and only when synth's record beside it
    (``.NAME.amazon_sft_synth.json``) holds its digest: not a user's file, nor one edited since."""
    mine = tmp_path / "trn.json.gz"
    mine.write_bytes(b"precious")
    code, err = _run_cli(capsys, "synth", "--rows", "5", "--out", str(mine))
    _one_line(code, err, "synth", str(mine), "--overwrite")
    code, err = _run_cli(capsys, "synth", "--rows", "5", "--out", str(mine), "--overwrite")
    _one_line(code, err, "synth", str(mine), "not a file synth wrote")
    assert mine.read_bytes() == b"precious"
    code, err = _run_cli(capsys, "synth", "--rows", "5", "--out", str(tmp_path))
    _one_line(code, err, "synth", "folder")
    ours = tmp_path / "gen.json"
    code, _ = _run_cli(capsys, "synth", "--rows", "5", "--out", str(ours))
    first = ours.read_bytes()
    code, _ = _run_cli(capsys, "synth", "--rows", "6", "--out", str(ours), "--overwrite")
    assert code == 0 and ours.read_bytes() != first  # its own file, replaced
    ours.write_bytes(ours.read_bytes() + b'{"uid": "1", "title": "mine", "content": "edited"}\n')
    edited = ours.read_bytes()
    code, err = _run_cli(capsys, "synth", "--rows", "5", "--out", str(ours), "--overwrite")
    _one_line(code, err, "synth", str(ours), "changed since")
    assert ours.read_bytes() == edited
    piped = tmp_path / "piped.json"  # a record that is a pipe hung the check; none is read
    piped.write_text("mine\n")
    os.mkfifo(tmp_path / ".piped.json.amazon_sft_synth.json")
    code, err = _run_cli(capsys, "synth", "--rows", "5", "--out", str(piped), "--overwrite")
    _one_line(code, err, "synth", str(piped), "not a regular file")
    (tmp_path / ".fresh.json.amazon_sft_synth.json").mkdir()  # the record cannot be written
    code, err = _run_cli(capsys, "synth", "--rows", "5", "--out", str(tmp_path / "fresh.json"))
    _one_line(code, err, "synth", "cannot write synth's record", "remove what is at that path")
    assert not (tmp_path / "fresh.json").exists()  # nothing written that no record proves
    code, err = _run_cli(capsys, "synth", "--rows", "5", "--out", f"{tmp_path / 'new'}/")
    _one_line(code, err, "synth", "folder")  # it wrote a file named new (an outside review)
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [
        ".fresh.json.amazon_sft_synth.json",
        ".gen.json.amazon_sft_synth.json",
        ".piped.json.amazon_sft_synth.json",
    ]  # synth's records and the test's own; no staging left


@pytest.mark.parametrize("failure", ["full disk", "stop"])
def test_synth_that_fails_to_replace_its_file_keeps_the_files_record(
    failure, tmp_path, capsys, monkeypatch
):
    """synth dropped its record before writing the new file: a full disk (or a Ctrl-C) while
    writing left the old file in place without its record, and every later ``--overwrite``
    refused the file synth itself had written (a review). The record stays in place until the
    new file is in."""
    import errno
    import signal

    from amazon_sft.data import synthetic
    from amazon_sft.process_stops import Stopped

    ours = tmp_path / "gen.json"
    code, _ = _run_cli(capsys, "synth", "--rows", "5", "--out", str(ours))
    first = ours.read_bytes()
    real = synthetic.write_catalogue

    def fails(path, *args, **kwargs):
        real(path.with_name("elsewhere.json"), *args)  # some of the work done
        if failure == "stop":
            raise Stopped(signal.SIGTERM)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(synthetic, "write_catalogue", fails)
    code, err = _run_cli(capsys, "synth", "--rows", "6", "--out", str(ours), "--overwrite")
    if failure == "stop":
        assert code == 143 and "stopped by SIGTERM" in err, err
    else:
        _one_line(code, err, "synth", str(ours), "No space left")
    assert ours.read_bytes() == first
    monkeypatch.setattr(synthetic, "write_catalogue", real)
    code, _ = _run_cli(capsys, "synth", "--rows", "6", "--out", str(ours), "--overwrite")
    assert code == 0 and ours.read_bytes() != first  # still synth's own file, replaced
    hidden = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert hidden == [".gen.json.amazon_sft_synth.json"]  # no record set aside left behind


def test_synth_stopped_as_its_new_file_takes_the_old_ones_place_can_replace_it(
    tmp_path, capsys, monkeypatch
):
    """The record was written after the new file took the old one's place, hashing it first
    (seconds for a large file): a stop or a kill then left synth's own file refused by every
    later ``--overwrite`` (a review). The record proves both files across the swap."""
    import signal

    from amazon_sft import synth_ownership
    from amazon_sft.process_stops import Stopped

    ours = tmp_path / "gen.json"
    code, _ = _run_cli(capsys, "synth", "--rows", "5", "--out", str(ours))
    first, real, calls = ours.read_bytes(), synth_ownership.record_synth_output, []

    def stopped_after_the_swap(*args):
        calls.append(args)
        if len(calls) == 2:  # the file swapped in, its record not yet narrowed to it
            raise Stopped(signal.SIGTERM)
        real(*args)

    monkeypatch.setattr(synth_ownership, "record_synth_output", stopped_after_the_swap)
    code, err = _run_cli(capsys, "synth", "--rows", "6", "--out", str(ours), "--overwrite")
    assert code == 143 and ours.read_bytes() != first, err
    monkeypatch.setattr(synth_ownership, "record_synth_output", real)
    code, err = _run_cli(capsys, "synth", "--rows", "7", "--out", str(ours), "--overwrite")
    assert code == 0, err


def test_synth_killed_while_replacing_its_file_leaves_it_replaceable(tmp_path, capsys):
    """A SIGKILL (the OOM killer) while ``synth --overwrite`` wrote left its file without its
    record, refused by every later ``--overwrite``, and the cut staging file beside it for good
    (a hostile user's trial). The record stays until the new file is in; the next synth removes
    what a killed one left."""
    import signal
    import time

    ours = tmp_path / "gen.json"
    code, _ = _run_cli(capsys, "synth", "--rows", "5", "--out", str(ours))
    cmd = [sys.executable, "-m", "amazon_sft.cli", "synth", "--rows", "2000000"]
    proc = subprocess.Popen([*cmd, "--out", str(ours), "--overwrite"], stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".gen.json.amazon-sft-tmp-*")):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    code, err = _run_cli(capsys, "synth", "--rows", "6", "--out", str(ours), "--overwrite")
    assert code == 0, err
    hidden = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert hidden == [".gen.json.amazon_sft_synth.json"]


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT"])
def test_a_stop_after_the_command_said_it_finished_keeps_its_exit_status(stop, tmp_path):
    """A stop in the half second after a command's last line, its output whole (torch's
    teardown; here a slow exit hook), killed the process with a stop's status: a script read
    a finished prepare as failed (a hostile user's trial). It ends at once, with status 0."""
    import signal

    out = tmp_path / "gen.json"
    script = (
        "import atexit, sys, time\n"
        "from amazon_sft import cli\n"
        "def slow_teardown():\n"
        "    print('tearing down', flush=True)\n"
        "    time.sleep(30)\n"
        "atexit.register(slow_teardown)\n"
        f"cli.entry(['synth', '--rows', '5', '--out', {str(out)!r}])\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert lines[0].startswith("wrote 5 lines") and lines[1] == "tearing down\n", lines
        proc.send_signal(getattr(signal, stop))
        assert proc.wait(timeout=20) == 0, proc.stderr.read()
        assert out.is_file() and "Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_synth_says_what_a_trailing_slash_and_a_full_disk_need(tmp_path, capsys, monkeypatch):
    """``--out new/`` (no such folder) was called "a folder", and a full disk asked for "a
    writable path" (a hostile user's trial)."""
    import errno

    from amazon_sft.data import synthetic

    code, err = _run_cli(capsys, "synth", "--rows", "5", "--out", f"{tmp_path / 'new'}/")
    _one_line(code, err, "synth", "ends with /", "name the file to write")
    assert "is a folder" not in err

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(synthetic, "write_catalogue", full)
    code, err = _run_cli(capsys, "synth", "--rows", "5", "--out", str(tmp_path / "f.json"))
    _one_line(code, err, "synth", "No space left", "free space")
    assert "writable" not in err


def test_synth_never_replaces_a_pipe_or_a_device_and_names_a_file_in_the_way(tmp_path, capsys):
    """A hostile user's trial: ``synth --out PIPE --overwrite`` replaced the pipe with a plain
    file and said "wrote 5 lines to PIPE" (a reader got nothing; run as root, ``--out /dev/null``
    replaced the device). ``--out FILE/x.json`` said "(File exists)"; ``x.GZ`` was not
    compressed."""
    import gzip
    import stat

    pipe = tmp_path / "p"
    os.mkfifo(pipe)
    code, err = _run_cli(capsys, "synth", "--rows", "5", "--out", str(pipe), "--overwrite")
    _one_line(code, err, "synth", str(pipe), "not a regular file")
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)
    (tmp_path / "f").write_text("mine")
    code, err = _run_cli(capsys, "synth", "--rows", "5", "--out", str(tmp_path / "f" / "x.json"))
    _one_line(code, err, "synth", str(tmp_path / "f"), "is a file")
    code, _ = _run_cli(capsys, "synth", "--rows", "5", "--out", str(tmp_path / "x.GZ"))
    assert code == 0 and gzip.decompress((tmp_path / "x.GZ").read_bytes()).count(b"\n") == 5


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
    # staging names without the tool's word (older versions', or a user's backup: a review
    # found .prepared.old-host-20240101 deleted) are not litter, so the folder is kept
    for name in (".demo.log.tmp-12345.log", ".trn.json.gz.tmp-12346", ".p.old-host-20240101"):
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


@pytest.mark.parametrize("command", ["export", "synth", "prepare", "train", "demo"])
def test_no_output_goes_inside_a_folder_another_command_owns(
    command, catalogue, prepared, tuned_run, tiny_model_dir, tmp_path, capsys
):
    """A hostile user's trial: ``export RUN --out PREP/sub`` (or a run's ``final/``, or another
    export) was written, then ``prepare --overwrite``, the run's next save or ``export
    --overwrite`` refused that folder; ``export --out RUN_B/final`` was called an old export
    to remove by hand. eval refused such an ``--out`` already; now every command does."""
    from amazon_sft.answering.export_files import EXPORT_MARKER

    from .conftest import train_overrides

    data, run, export = tmp_path / "data", tmp_path / "run", tmp_path / "exported"
    shutil.copytree(prepared, data)
    shutil.copytree(tuned_run, run)
    export.mkdir()
    (export / EXPORT_MARKER).write_text("{}")
    for owned, inside in ((data, data / "sub"), (run, run / "final"), (export, export / "sub")):
        before = sorted(str(p) for p in owned.rglob("*"))
        argv = {
            "export": ["export", str(tuned_run), "--out", str(inside)],
            "synth": ["synth", "--rows", "5", "--out", str(inside / "trn.json")],
            "demo": ["demo", "--config", "tiny", "--out", str(inside)],
            "prepare": ["prepare", str(catalogue), "--out", str(inside), "--config", "tiny"],
            "train": ["train", "--config", "tiny",
                      *train_overrides(prepared, tiny_model_dir, inside, "train.max_steps=1")],
        }[command]  # fmt: skip
        code, err = _run_cli(capsys, *argv)
        _one_line(code, err, command, str(owned), "choose another")
        assert sorted(str(p) for p in owned.rglob("*")) == before
