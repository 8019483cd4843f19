"""Means and 95% bootstrap intervals of an eval folder's answers, per split (ROUGE-L without
citations, citation accuracy, false abstention, abstention accuracy).

    python bench/grounded_intervals.py /tmp/r/eval-tuned [model]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amazon_sft.evaluation import metrics as M
from amazon_sft.prompts import cited_uids, is_abstention, strip_citations


def interval(values) -> str:
    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(0)
    means = [v[rng.integers(0, len(v), len(v))].mean() for _ in range(2000)]
    lo, hi = np.percentile(means, [2.5, 97.5])
    return f"{v.mean():.3f} [{lo:.3f}, {hi:.3f}]"


def main() -> None:
    folder = Path(sys.argv[1])
    model = sys.argv[2] if len(sys.argv) > 2 else "model"
    rows = [json.loads(x) for x in (folder / "answers.jsonl").read_text().splitlines()]
    for split in dict.fromkeys(r["split"] for r in rows):
        asked = [r for r in rows if r["split"] == split]
        answers = [r["answers"][model] for r in asked]
        plain = [strip_citations(a) for a in answers]
        out = {
            "n": len(asked),
            "rougeL": interval(M.rouge_scores(plain, [r["reference"] for r in asked])["rougeL"]),
        }
        if split.endswith("grounded"):
            out["citation_accuracy"] = interval(
                [cited_uids(a) == [r["uid"]] for a, r in zip(answers, asked)]
            )
            out["false_abstention"] = interval([is_abstention(a) for a in answers])
        if split.endswith("absent"):
            out["abstention_accuracy"] = interval([is_abstention(a) for a in answers])
        print(split, out)


if __name__ == "__main__":
    main()
