"""The one GPU check command runs on CPU at tiny shapes (``--cpu-smoke``), so it is ready before
a GPU is: it prints one table, and what could not run here is listed as skipped with why. (Its
benchmark step is ``bench/gpu_train.py``, smoke-tested in test_bench_scripts.py; its demo step
is ``amazon-sft demo``, tested in test_demo.py: both are left out here to keep this cheap.)"""

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .processes import alive, descendants

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def test_gpu_check_cpu_smoke_prints_one_table_and_says_what_it_skipped(tmp_path):
    cmd = [sys.executable, "scripts/gpu_check.py", "--cpu-smoke", "--out", str(tmp_path)]
    cmd += ["--skip", "benchmark,demo"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    skipped = subprocess.run(  # each step can be left out, the logits too
        [*cmd[:-3], str(tmp_path / "all_skipped"), "--skip", "benchmark,demo,logits,tests"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert skipped.returncode == 0 and "logits sdpa_per_document | skipped" in skipped.stdout
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| check | status | seconds | figures / reason |" in proc.stdout
    checks = {c["name"]: c for c in json.loads((tmp_path / "gpu_check.json").read_text())}
    assert checks["gpu tests"]["status"] == ("ok" if torch.cuda.is_available() else "skipped")
    assert checks["logits sdpa_per_document"]["status"] == "ok"
    assert checks["benchmark"]["status"] == "skipped"
    assert "deselected" in (tmp_path / "gpu_tests.txt").read_text()  # pytest's own words kept
    if not torch.cuda.is_available():
        assert checks["logits varlen_attn"]["status"] == "skipped"
        assert "needs CUDA" in checks["logits varlen_attn"]["detail"]


def test_gpu_check_refuses_a_machine_without_a_gpu_unless_asked_for_a_smoke_run():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run(
        [sys.executable, "scripts/gpu_check.py"], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 2 and "--cpu-smoke" in proc.stdout


def test_gpu_check_never_deletes_or_overwrites_what_it_did_not_write(tmp_path, monkeypatch):
    """A file-safety audit: ``--out ~/x`` deleted ``~/x/demo`` (a user's folder) and truncated
    ``benchmark.txt``; a relative ``--out`` deleted ``./demo`` and wrote the demo into the repo."""
    sys.path.insert(0, str(REPO / "scripts"))
    import gpu_check

    user = tmp_path / "x"
    (user / "demo").mkdir(parents=True)
    (user / "demo" / "thesis.tex").write_text("precious")
    (user / "benchmark.txt").write_text("mine")
    monkeypatch.setattr(gpu_check.subprocess, "run", _no_subprocess)
    code = gpu_check.main(["--cpu-smoke", "--out", str(user), "--skip", "tests,logits"])
    assert code == 2
    assert (user / "demo" / "thesis.tex").read_text() == "precious"
    assert (user / "benchmark.txt").read_text() == "mine"
    assert sorted(p.name for p in user.iterdir()) == ["benchmark.txt", "demo"]

    earlier = tmp_path / "gpu_check_out"  # an earlier check's, from before the marker
    earlier.mkdir()
    (earlier / "gpu_check.json").write_text('[{"name": "gpu tests", "status": "ok"}]')
    (earlier / "benchmark.txt").write_text("old")
    assert gpu_check.main(["--cpu-smoke", "--out", str(earlier), "--skip", ALL]) == 0
    assert (earlier / gpu_check.MARKER).is_file()

    ours = tmp_path / "ours"  # a relative --out is this folder's, not the repo's
    monkeypatch.chdir(tmp_path)
    args = gpu_check.parse_args(["--cpu-smoke", "--out", "ours"])
    assert args.out == ours


ALL = "tests,logits,benchmark,demo"


def _no_subprocess(*args, **kwargs):
    raise AssertionError(f"nothing may run before --out is checked: {args}")


def test_the_logits_check_runs_a_full_fine_tunes_forward_through_the_kernel_contract(
    stand_ins, monkeypatch
):
    """An outside audit: the GPU check's packed-vs-alone logits cast the whole model to bf16,
    so the full fine-tune's forward (fp32 weights under bf16 autocast, where RoPE handed the
    kernel fp32 q/k beside a bf16 v) was never checked on a GPU. Its autocast check runs here
    on the kernel's stand-in, which refuses what the CUDA kernel refuses."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    from gpu_train_variants import logits_check

    diff = logits_check("varlen", "cpu", autocast=True)
    assert stand_ins and {c["dtype"] for c in stand_ins} == {torch.bfloat16}
    assert diff <= 5e-2  # the GPU check's bf16 tolerance


def test_a_misspelt_step_to_skip_is_refused_before_anything_runs(tmp_path):
    """``--skip test,bench`` ran every step (a new user's trial; pytest first, minutes on a GPU)."""
    cmd = [sys.executable, "scripts/gpu_check.py", "--cpu-smoke", "--out", str(tmp_path / "o")]
    proc = subprocess.run(
        [*cmd, "--skip", "test,bench,demo"], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert proc.returncode == 2 and "test, bench" in proc.stderr, proc.stdout + proc.stderr
    assert "tests,logits,benchmark,demo" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("how", ["SIGKILL", "SIGHUP"])
def test_a_stopped_check_leaves_no_benchmark_running(tmp_path, how):
    """A review: the check ran the benchmark in a session of its own, so a closed terminal
    (SIGHUP to the group) or a kill left it running, writing on. Its processes now die with
    the check, however it dies."""
    import signal
    import time

    cmd = [sys.executable, "scripts/gpu_check.py", "--cpu-smoke", "--out", str(tmp_path / "o")]
    check = subprocess.Popen(
        [*cmd, "--skip", "tests,logits,demo"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group, as a terminal's job is
    )
    below: list[int] = []
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and len(below) < 2:  # the benchmark and a variant
            time.sleep(0.3)
            below = descendants(check.pid)
        assert len(below) >= 2, "the benchmark never started its variant"
        if how == "SIGKILL":
            check.send_signal(signal.SIGKILL)
        else:
            os.killpg(check.pid, signal.SIGHUP)  # the terminal closed: its whole group
        check.wait(timeout=60)
        time.sleep(2)
        assert [pid for pid in below if alive(pid)] == []
    finally:
        for pid in [check.pid, *below]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
