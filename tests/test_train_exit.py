"""A finished run exits 0: once training has saved and shut down, a library that aborts while
the interpreter tears down (gloo/DeepSpeed threads: SIGABRT after "Writing model shards" in CI)
cannot turn it into a failure, and exit handlers (trackers, logs) still run."""

import os
import subprocess
import sys

import pytest

from .conftest import REPO, train_overrides

STAND_IN = REPO / "tests" / "stand_ins" / "train_then_abort_at_teardown.py"


def _run(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ATEXIT_MARK": str(tmp_path / "atexit_ran")}
    cmd = [sys.executable, str(STAND_IN), "--config", "tiny", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


@pytest.mark.e2e
def test_a_finished_run_exits_0_though_a_library_aborts_at_teardown(
    prepared, tiny_model_dir, tmp_path
):
    run = tmp_path / "run"
    proc = _run(tmp_path, *train_overrides(prepared, tiny_model_dir, run, "train.max_steps=1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "final" / "run_summary.json").is_file()
    assert (tmp_path / "atexit_ran").read_text() == "ran\n"


@pytest.mark.e2e
def test_a_refused_run_keeps_its_exit_code_and_message(tiny_model_dir, tmp_path):
    proc = _run(tmp_path, *train_overrides(tmp_path / "nothing", tiny_model_dir, tmp_path / "r"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "amazon-sft train: error:" in proc.stderr
    assert (tmp_path / "atexit_ran").read_text() == "ran\n"
