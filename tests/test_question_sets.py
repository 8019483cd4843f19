"""The shipped question sets (eval/questions) pass their own checker: fields, kinds, dev/test
disjoint, every generated uid in the demo's catalogue, every real title + line in ../shared/data
(that part is skipped, and said so, when the rows are absent)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_question_sets_pass_their_checker():
    proc = subprocess.run(
        [sys.executable, "eval/questions/check.py"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("OK")
    total = next(line for line in proc.stdout.splitlines() if line.startswith("total"))
    assert int(total.split()[-1]) >= 400
