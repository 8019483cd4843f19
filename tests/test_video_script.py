"""``scripts/record_video.py``: the README's video of the answer page, recorded from a run
(not a benchmark: it writes a user-facing file, so it stays in ``make test``)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def _run(*args):
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("ffmpeg")),
    reason="needs Debian's chromium and ffmpeg (apt-get install chromium ffmpeg)",
)
def test_video_script_records_the_page(prepared, tuned_run, tmp_path):
    out = tmp_path / "answers.mp4"
    log = _run(
        "scripts/record_video.py",
        *("--model", str(tuned_run), "--index", str(prepared), "--out", str(out)),
        *("--max-new-tokens", "8", "--max-seconds", "20", "--questions", "Tell me about a bear"),
    )
    assert "recorded: Tell me about a bear" in log and out.stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.mp4"]  # nothing beside it
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(out)],
        capture_output=True,
        text=True,
    )
    assert 1.0 < float(probe.stdout) <= 21.0


def test_video_script_never_replaces_a_file_without_overwrite(tmp_path):
    """A file-safety audit: ``ffmpeg -y`` wrote over any --out (its default, a committed file
    relative to the current folder), and its frame list replaced and deleted a file of the
    user's beside it. Refused before any model loads; --overwrite replaces it."""
    out = tmp_path / "answers.mp4"
    out.write_bytes(b"my video")
    (tmp_path / "answers.frames.txt").write_text("mine")
    proc = subprocess.run(
        [sys.executable, "scripts/record_video.py", "--model", "x", "--index", "y", "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--overwrite" in proc.stderr and str(out) in proc.stderr
    assert out.read_bytes() == b"my video"
    assert (tmp_path / "answers.frames.txt").read_text() == "mine"
