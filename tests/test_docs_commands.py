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


def test_there_are_runnable_blocks():
    assert BLOCKS, "mark at least the README's quick try with <!-- runnable -->"


@pytest.mark.e2e
@pytest.mark.parametrize(("doc", "i", "code"), BLOCKS, ids=[f"{d.name}-{i}" for d, i, _ in BLOCKS])
def test_runnable_block(doc, i, code):
    venv_bin = str(
        Path(sys.executable).parent
    )  # amazon-sft and accelerate, as in an activated venv
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}"}
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, (
        f"{doc.name} block {i} failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-2500:]}"
    )
