"""Running a benchmark against another checkout of the code (``--base``): the script re-runs
itself in a child process whose ``amazon_sft`` is that checkout's, and reads back the one JSON
line it prints last. Imports nothing from amazon_sft, so the checkout is chosen before any import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def code_path(argv: list[str]) -> str:
    """The checkout whose amazon_sft is imported (``--code``), read before any import."""
    return argv[argv.index("--code") + 1] if "--code" in argv else str(REPO)


def emitted_by(script: str, code: str | Path, args: list[str]) -> object:
    """Run ``script --code CODE ARGS --emit`` with CODE's amazon_sft; its last stdout line, parsed."""
    cmd = [sys.executable, script, *args, "--code", str(code), "--emit"]
    env = {**os.environ, "PYTHONPATH": str(code)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise SystemExit(f"the checkout {code} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.splitlines()[-1])
