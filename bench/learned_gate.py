"""A probe: a logistic gate fitted on dev questions, against ``ask``'s ratio gate.

``ask --abstain-below 2.0 --meaning-weight 4`` abstains when the first record's fused score is
under 2x the second's or a rule of answering/doubt.py fires. Eight numbers of the same first
three records (``FEATURES``: ratios and cosines, not scores, whose scale grows with the
catalogue) may tell a product that is there from one that is not better than
the ratio alone: this fits a logistic regression on them over the ``--dev`` questions (label:
the first record is the asked product), then gates each ``--test`` question as

    no rule of doubt.py fires, the ratio is at least ``--floor-ratio``, and p >= ``--threshold``

and prints, per test collection, both gates' outcomes (right / wrong first record, false
abstention, absent-product abstention; 95% bootstrap intervals) and the paired change. Not
shipped: a probe of whether a learned gate is worth building.

    python bench/learned_gate.py --data /tmp/pair/g40p --dev eval/questions/real_dev.jsonl ... \\
        --test eval/questions/real_blind8_dev.jsonl eval/questions/real_blind8_test.jsonl

Protocol: end to end, gate alone (with ``--quote-when-sure`` the gate decides every citation);
the fit sees only ``--dev``; say which test files were read before.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amazon_sft.answering.doubt import doubt_rule, retrieval_doubtful
from amazon_sft.answering.query_words import is_portuguese
from bench.abstain_gate import retrieve
from bench.gate_change import asked_once
from bench.static_embedding_fusion import OUTCOMES, change, outcome_table, share

GATE_K = 3
FEATURES = (
    "log fused ratio (first / second)",
    "log word-score ratio",
    "cosine of the first",
    "cosine lead over the next two",
    "a rule of doubt.py fires",
    "fewer than two records",
    "Portuguese question",
    "words in the question",
)


def features(question: str, sources: list) -> list[float]:
    """``FEATURES`` of a question and its first records (fused, as ``ask`` ranks them).

    >>> from amazon_sft.answering.index import Source
    >>> s = [Source("a", "The Cat", "", 4.0, 2.0, 0.5), Source("b", "Cat Tales", "", 2.0, 1.0, 0.25)]
    >>> [round(x, 3) for x in features("the cat", s)]
    [0.693, 0.693, 0.5, 0.25, 0.0, 0.0, 0.0, 2.0]
    """
    if not sources:
        return [0, 0, 0, 0, 1, 1, is_portuguese(question), len(question.split())]
    first, rest = sources[0], sources[1:GATE_K]
    second = rest[0].score if rest else 1e-3
    words = [(s.words_score or s.score) + 1e-3 for s in (first, *rest[:1])] + [1e-3]
    cosine = first.cosine or 0.0
    lead = cosine - max([s.cosine or 0.0 for s in rest] or [0.0])
    rule = doubt_rule(sources[:GATE_K], 1.0, question) is not None  # 1.0: the ratio never fires
    return [
        math.log(first.score / max(second, 1e-3)),
        math.log(words[0] / words[1]),
        cosine,
        lead,
        float(rule),
        float(len(sources) < 2),
        float(is_portuguese(question)),
        float(len(question.split())),
    ]


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 3000) -> np.ndarray:
    """Logistic regression weights (last: the bias) by gradient descent from zero: the same
    data give the same weights."""
    x = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-x @ w))
        w -= x.T @ (p - y) / len(y) + l2 * np.r_[w[:-1], 0] / len(y)
    return w


def table(rows: list[dict], args, scale, w) -> tuple[np.ndarray, np.ndarray]:
    """Per question, 0/1 per ``OUTCOMES`` for the ratio gate and the learned one."""
    ratio_doubts, learned_doubts = [], []
    for r in rows:
        f = np.array(features(r["question"], r["sources"]))
        p = 1 / (1 + np.exp(-((f - scale[0]) / scale[1] @ w[:-1] + w[-1])))
        ratio_doubts.append(retrieval_doubtful(r["sources"][:GATE_K], args.ratio, r["question"]))
        learned_doubts.append(f[4] > 0 or math.exp(f[0]) < args.floor_ratio or p < args.threshold)
    sources = [r["sources"] for r in rows]
    return outcome_table(rows, sources, ratio_doubts), outcome_table(rows, sources, learned_doubts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="the prepared folder (its index)")
    p.add_argument("--dev", type=Path, nargs="+", required=True, help="question files to fit on")
    p.add_argument("--test", type=Path, nargs="+", action="append", required=True,
                   help="question files measured together (repeat for another collection)")  # fmt: skip
    p.add_argument("--meaning-weight", type=float, default=4.0)
    p.add_argument("--ratio", type=float, default=2.0, help="the ratio gate compared with")
    p.add_argument("--floor-ratio", type=float, default=1.4, help="the learned gate's least ratio")
    p.add_argument("--threshold", type=float, default=0.5)
    args = p.parse_args()

    def rows_of(files, read):  # each question once, none of ``read``'s
        return retrieve(args.data, asked_once(args.data, files, read), GATE_K, args.meaning_weight)

    dev = rows_of(args.dev, [])
    x = np.array([features(r["question"], r["sources"]) for r in dev])
    y = np.array([not r["absent"] and bool(r["sources"]) and r["sources"][0].uid == r["uid"]
                  for r in dev], dtype=float)  # fmt: skip
    scale = (x.mean(0), x.std(0) + 1e-9)
    w = fit((x - scale[0]) / scale[1], y)
    print(f"fitted on {len(dev)} dev questions; standardised weights:")
    for name, weight in zip((*FEATURES, "bias"), w):
        print(f"  {name}: {weight:+.2f}")
    for files in [args.dev, *args.test]:
        rows = dev if files is args.dev else rows_of(files, args.dev)
        before, after = table(rows, args, scale, w)
        print(
            f"\n{' '.join(f.name for f in files)} ({'dev: fitted on' if files is args.dev else 'test'})"
        )
        print("| gate | " + " | ".join(OUTCOMES) + " |\n" + "|---" * 5 + "|")
        print(
            f"| ratio {args.ratio:g} | " + " | ".join(share(before[:, j]) for j in range(4)) + " |"
        )
        print("| learned | " + " | ".join(share(after[:, j]) for j in range(4)) + " |")
        print(
            "| change | " + " | ".join(change(before[:, j], after[:, j]) for j in range(4)) + " |"
        )


if __name__ == "__main__":
    main()
