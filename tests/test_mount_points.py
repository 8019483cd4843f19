"""An output folder that is a mount point (``docker -v $PWD/out:/out``, a bind mount, a team
share mounted there) or a folder of the user's with its own group and mode (an outside review,
2026-12-05). Outputs are written aside and renamed into place, and no rename crosses a mount:
eval's report went missing (the old one deleted, the new one not moved in: EXDEV), prepare
worked for minutes before a traceback (EBUSY), and a team folder prepare replaced lost its
setgid group and became world-readable. The bind mounts need root; without it they skip."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from .test_hostile import _assert_one_line as _one_line
from .test_hostile import _run_cli

pytestmark = pytest.mark.hostile


@pytest.fixture
def bind_mount(tmp_path):
    """``mount(source)``: ``source`` bind-mounted on a new folder, unmounted after the test.
    A bind mount within one filesystem is the case ``os.path.ismount`` misses (same device)."""
    mounted = []

    def mount(source: Path) -> Path:
        target = tmp_path / f"mnt{len(mounted)}"
        target.mkdir()
        done = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot bind-mount here: {done.stderr.decode().strip()[:80]}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", str(target)], check=False) or None
        if os.path.ismount(target):  # still busy: detach it, never leave it behind
            subprocess.run(["umount", "-l", str(target)], check=False)


def test_is_mount_point_sees_a_bind_mount_within_one_filesystem(tmp_path, bind_mount):
    from amazon_sft.atomic import is_mount_point

    (tmp_path / "with space").mkdir()
    target = bind_mount(tmp_path / "with space")
    assert not os.path.ismount(target)  # why ismount alone is not enough
    assert is_mount_point(target) and is_mount_point(Path(f"{target}/"))
    assert not is_mount_point(tmp_path) and not is_mount_point(tmp_path / "with space")


def test_prepare_into_a_mount_point_is_one_line_before_any_work(
    catalogue, tmp_path, bind_mount, monkeypatch, capsys
):
    import amazon_sft.prepare

    def no_work(*args, **kwargs):
        raise AssertionError("the tokenizer was loaded: refused after the work began")

    monkeypatch.setattr(amazon_sft.prepare, "load_tokenizer", no_work)
    share = tmp_path / "share"
    share.mkdir()  # empty: a mount point made for the output
    target = bind_mount(share)
    code, err = _run_cli(
        capsys, "prepare", str(catalogue), "--out", str(target), "--config", "tiny"
    )
    _one_line(code, err, "prepare", str(target), "mount point", f"{target}/NAME")
    assert not list(share.iterdir()) and not list(tmp_path.glob(".mnt0*"))


def test_an_eval_report_into_a_mount_point_replaces_the_last_one_whole(
    prepared, tmp_path, bind_mount, capsys
):
    """``eval --out MOUNT --overwrite`` deleted the last report, then failed to move the new
    one in (EXDEV) with a traceback: neither report was left."""
    out = tmp_path / "eval"
    args = ["eval", "--data", str(prepared), "--model", "config:tiny", "--n", "1"]
    args += ["--max-new-tokens", "2"]
    code, err = _run_cli(capsys, *args, "--out", str(out))
    assert code == 0, err[-2000:]
    target = bind_mount(out)
    code, err = _run_cli(capsys, *args, "--n", "2", "--out", str(target), "--overwrite")
    assert code == 0, err[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert {"report.md", "answers.jsonl"} <= {p.name for p in out.iterdir()}
    assert len((out / "answers.jsonl").read_text().splitlines()) > 0 and report
    assert not [p for p in out.iterdir() if "tmp-" in p.name]  # no staging left inside


def test_eval_stages_its_report_on_the_folders_own_filesystem(tmp_path, monkeypatch):
    """Without root: a rename from outside ``--out`` into it fails, as it does onto a mount."""
    import errno

    from amazon_sft.eval_ownership import EVAL_MARKER
    from amazon_sft.evaluation import report

    out = tmp_path / "eval"
    out.mkdir()
    for name in ("report.json", "report.md"):
        (out / name).write_text("old")
    old = hashlib.sha256(b"old").hexdigest()  # an earlier eval's, as its marker records them
    (out / EVAL_MARKER).write_text(
        json.dumps({"files": {"report.json": [old], "report.md": [old]}})
    )
    real_replace = report.os.replace

    def across_a_mount(src, dst):
        if Path(dst).parent == out and out not in Path(src).parents:  # from outside --out
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(src, dst)

    monkeypatch.setattr(report.os, "replace", across_a_mount)
    writers = {name: (lambda path: path.write_text("new")) for name in ("report.json", "report.md")}
    report.write_staged(out, writers)
    left = {p.name: p.read_text() for p in out.iterdir() if p.name != EVAL_MARKER}
    assert left == {name: "new" for name in writers}


def test_prepare_into_an_empty_team_folder_keeps_its_mode(catalogue, tmp_path, capsys):
    """The folder made for the output (setgid, group-only) was replaced by a new one: its
    group and setgid gone, world-readable. It keeps them, as export's did."""
    out = tmp_path / "team"
    out.mkdir()
    os.chmod(out, 0o2770)
    args = ("prepare", str(catalogue), "--out", str(out), "--config", "tiny", "--quiet")
    code, err = _run_cli(capsys, *args)
    assert code == 0, err[-2000:]
    assert stat.S_IMODE(out.stat().st_mode) == 0o2770
    assert (out / "manifest.json").is_file()


@pytest.mark.parametrize("command", ["prepare", "eval"])
def test_an_output_name_too_long_for_the_hidden_files_beside_it_says_so(
    command, catalogue, prepared, tmp_path, capsys
):
    """A 250-character ``--out`` is a valid name, but the lock and staging beside it
    (``.NAME.lock``, ``.NAME.tmp-MACHINE-PID``) are not: the error said "cannot write to
    PARENT (File name too long)", blaming the folder above (an outside review)."""
    out = tmp_path / ("e" * 250)
    if command == "prepare":
        args = ["prepare", str(catalogue), "--out", str(out), "--config", "tiny", "--quiet"]
    else:
        args = ["eval", "--data", str(prepared), "--model", "config:tiny", "--out", str(out)]
    code, err = _run_cli(capsys, *args)
    _one_line(code, err, command, "too long", "shorter")
    assert not out.exists()
