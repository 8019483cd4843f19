"""Write eval/questions/demo_heldout.jsonl: the held-out questions of `make demo`'s default
catalogue (what the demo writes into its own folder; tests/test_demo.py checks the two agree).

PYTHONPATH=$PWD python scripts/demo_questions.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amazon_sft.config import load_run_config
from amazon_sft.data.synthetic import write_catalogue
from amazon_sft.demo import parse_args
from amazon_sft.evaluation.heldout_questions import heldout_questions, write_questions
from amazon_sft.prepare import prepare

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "eval" / "questions" / "demo_heldout.jsonl"


def demo_default_questions(tmp: Path) -> list[dict]:
    """The demo's defaults: its generated catalogue (version 2), its held-out share; the tiny
    tokenizer (the split and the catalogue do not depend on it)."""
    args = parse_args([])
    write_catalogue(tmp / "trn.json.gz", args.rows, seed=0, version=2)
    cfg = load_run_config("tiny", [f"data.heldout_fraction={args.heldout_fraction}"])
    prepare(tmp / "trn.json.gz", tmp / "prepared", cfg, progress=False)
    return heldout_questions(tmp / "prepared", args.per_kind)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        rows = demo_default_questions(Path(tmp))
    print(f"wrote {len(rows)} questions to {write_questions(rows, COMMITTED)}")
