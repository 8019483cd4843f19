"""``make install`` compiles DeepSpeed's CPU ops into the folder the tests and training runs use,
so no timed run compiles them (scripts/build_deepspeed_ops.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def test_install_builds_deepspeed_cpu_ops_where_the_runs_look_for_them():
    # conftest.py has set TORCH_EXTENSIONS_DIR for this environment; the script must agree with it
    # when it runs without it (as `make install` runs it).
    env = {k: v for k, v in os.environ.items() if k != "TORCH_EXTENSIONS_DIR"}
    proc = subprocess.run(
        [sys.executable, "scripts/build_deepspeed_ops.py"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "did not build" not in proc.stdout, proc.stdout
    where = os.environ["TORCH_EXTENSIONS_DIR"]
    assert proc.stdout.count(f"ready in {where}") == 2, proc.stdout
    assert (Path(where) / "cpu_adam").is_dir()


def test_training_uses_the_ops_install_built_and_only_when_it_did(tmp_path, monkeypatch):
    """A user's ZeRO run on CPU compiled DeepSpeed's comm op again (4.5 min) into the shared
    cache: only the tests looked in the environment's folder."""
    from amazon_sft import deepspeed_config

    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    monkeypatch.setattr(deepspeed_config.sys, "prefix", str(tmp_path))
    deepspeed_config.use_prebuilt_ops()  # nothing built there: DeepSpeed's own default
    assert "TORCH_EXTENSIONS_DIR" not in os.environ
    (tmp_path / "torch_extensions").mkdir()
    deepspeed_config.use_prebuilt_ops()
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(tmp_path / "torch_extensions")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "/mine")
    deepspeed_config.use_prebuilt_ops()  # the user's own setting wins
    assert os.environ["TORCH_EXTENSIONS_DIR"] == "/mine"
