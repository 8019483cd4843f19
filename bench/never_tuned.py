"""The headline end-to-end figures in one command: every real question never read or tuned on,
through ``ask``'s retrieval and gate (no model), paired against a ``--base`` checkout.

    python bench/never_tuned.py                       # prepares /tmp/pair/g40p once (~10 s)
    python bench/never_tuned.py --base /tmp/base      # a change against the code before it
    python bench/never_tuned.py --files               # which files are read, which are pooled

The README's and docs/results.md's "never tuned on" table is this command's output: the
question files in ``POOL`` (asked once each; a question any ``READ`` file holds word for word
is left out and counted) over the real rows prepared as ``PREPARE`` says (the "paired
abstentions" data of docs/results.md). ``READ`` holds the files rules were chosen on: a file
read for a change moves from ``POOL`` to ``READ`` in the same commit, and a test checks that
every real question file of eval/questions is in exactly one of them. Never read is not
never used: the pool's totals (this command's ``--base`` comparison) have decided whether a
change shipped, a selection on it, small for changes of about 0.01 (an outside review).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUESTIONS = "eval/questions"
READ = tuple(
    f"{QUESTIONS}/{name}.jsonl"
    for name in (
        "real_dev", "real_blind_dev", "real_blind2_dev", "real_blind3_dev", "real_blind5_dev",
        "real_blind6_dev", "real_blind7_dev", "real_blind8_dev", "real_blind9_dev", "real_test",
        "real_blind_test", "real_blind2_test", "real_blind11_dev", "real_blind13_dev",
    )
)  # fmt: skip
"""Question files read while a rule of retrieval or the gate was chosen."""
POOL = tuple(
    f"{QUESTIONS}/{name}.jsonl"
    for name in (
        "real_blind7_test", "real_blind3_test", "real_blind4_dev", "real_blind4_test",
        "real_blind5_test", "real_blind6_test", "real_blind8_test", "real_blind9_test",
        "real_blind10_dev", "real_blind10_test", "real_blind11_test", "real_blind12_dev",
        "real_blind12_test", "real_blind13_test", "real_blind14_dev", "real_blind14_test",
        "real_blind15_dev", "real_blind15_test",
    )
)  # fmt: skip
"""Question files never read: the headline figures."""
DATA = "/tmp/pair/g40p"
ROWS = "../shared/data/amazontitles_real_head_sample.jsonl"
PREPARE = (
    "--config", "smollm2-135m", "data.heldout_fraction=0.4", "data.closed_book_fraction=0.15",
    "data.grounded_fraction=1.0", "data.absent_fraction=0.3", "data.context_records=3",
    "data.context_record_tokens=96", "data.max_answer_tokens=128", "data.max_seq_len=1024",
    "data.question_mix.title=0.15", "data.question_mix.fragment=0.15",
    "data.question_mix.reorder=0.1", "data.question_mix.typo=0.15",
    "data.question_mix.portuguese=0.15", "data.question_mix.descriptive=0.15",
    "data.question_mix.attribute=0.15", "data.paired_absent=true",
)  # fmt: skip
"""The overrides of the real rows' prepared folder every gate figure since the eleventh
session was measured on (its index is what matters: retrieval reads only the catalogue)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DATA, help=f"the prepared real rows (default {DATA})")
    ap.add_argument("--base", default=str(REPO), help="the checkout to compare with")
    ap.add_argument("--files", action="store_true", help="print READ and POOL, run nothing")
    args = ap.parse_args()
    if args.files:
        print("READ", *READ, sep="\n  ")
        print("POOL", *POOL, sep="\n  ")
        return
    rows = REPO / ROWS
    if not rows.is_file():
        raise SystemExit(f"needs the real rows at {rows} (../shared/data beside the checkout)")
    if not (Path(args.data) / "manifest.json").is_file():
        prepare = [sys.executable, "-m", "amazon_sft.cli", "prepare", str(rows), "--out", args.data]
        subprocess.run([*prepare, *PREPARE, "--quiet"], check=True, cwd=REPO)
    gate = [sys.executable, str(REPO / "bench" / "gate_change.py"), "--data", args.data]
    gate += ["--base", args.base, "--questions", *POOL, "--read", *READ, "--by-kind"]
    raise SystemExit(subprocess.run(gate, cwd=REPO).returncode)


if __name__ == "__main__":
    main()
