"""Every command block marked `<!-- runnable -->` in the README and docs runs as written."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
BLOCK = re.compile(r"<!-- runnable -->\s*```bash\n(.*?)```", re.S)
BLOCKS = [(doc, i, code) for doc in DOCS for i, code in enumerate(BLOCK.findall(doc.read_text()))]
SCRATCH = "/tmp/amazon-sft-try"
"""The folder the README's quick try writes to; each test run points it at its own tmp_path, so
two suites on one machine neither share it nor refuse each other at its output locks."""


def in_own_folder(code: str, folder: Path) -> str:
    """The block as written, with the README's scratch folder moved to ``folder``.

    >>> in_own_folder("ls /tmp/amazon-sft-try/data", Path("/x"))
    'ls /x/data'
    """
    return code.replace(SCRATCH, str(folder))


def test_there_are_runnable_blocks():
    assert BLOCKS, "mark at least the README's quick try with <!-- runnable -->"
    for doc, i, code in BLOCKS:  # else the test's run would write where a user's run does
        elsewhere = set(re.findall(r"/tmp/[^/\s]+", code)) - {SCRATCH}
        assert not elsewhere, f"{doc.name} block {i} writes to {elsewhere}: use {SCRATCH}"


@pytest.mark.e2e
@pytest.mark.parametrize(("doc", "i", "code"), BLOCKS, ids=[f"{d.name}-{i}" for d, i, _ in BLOCKS])
def test_runnable_block(doc, i, code, tmp_path):
    venv_bin = str(
        Path(sys.executable).parent
    )  # amazon-sft and accelerate, as in an activated venv
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}"}
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", in_own_folder(code, tmp_path / "try")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, (
        f"{doc.name} block {i} failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-2500:]}"
    )
