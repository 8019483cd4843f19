"""Benchmark: ``eval --questions`` answering in batches against one question at a time.

The same model, questions and gate; ``--batch-size 1`` is ``ask``'s own path. Prints the seconds
of each, their ratio, and how many answers (text, citations, abstention, quote) are the same.

    python bench/end_to_end_batched.py --model demo_out/run --data demo_out/prepared \
        --questions demo_out/heldout_questions.jsonl --abstain-below 1.4 --quote-when-sure
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amazon_sft.answering.index import CatalogueIndex
from amazon_sft.evaluation import end_to_end as E
from amazon_sft.evaluation import question_file as QF
from amazon_sft.evaluation import question_products as QP
from amazon_sft.evaluation.end_to_end_run import _answerer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="config:NAME or a training run's folder")
    ap.add_argument("--data", required=True, type=Path, help="the prepared folder (its index)")
    ap.add_argument("--questions", required=True, type=Path)
    ap.add_argument("--abstain-below", type=float, default=0.0)
    ap.add_argument("--quote-when-sure", action="store_true")
    ap.add_argument("--max-new-tokens", type=int, default=80)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--limit", type=int, default=0, help="the first N questions only")
    args = ap.parse_args()
    questions = QF.read_questions(args.questions)[: args.limit or None]
    catalogue = args.data / "catalogue.jsonl"
    questions = QP.resolve_titles(catalogue, questions, args.questions)  # as eval asks them
    products, removals = QP.read_products(catalogue, questions)
    questions, skipped = QP.keep_answerable(questions, products)
    if skipped:  # counted, as eval counts them (an outside review: dropped unsaid)
        print(f"{len(skipped)} questions skipped: their product is not in {catalogue}")
    index = CatalogueIndex(args.data)
    answerer, label = _answerer(args.model, [], index, args.abstain_below, args.quote_when_sure)
    runs = {}
    for batch in (1, args.batch_size):
        start = time.perf_counter()
        answers, _ = E.ask_all(
            answerer, questions, products, removals, 3, args.max_new_tokens, "", batch
        )
        runs[batch] = (time.perf_counter() - start, [dataclasses.asdict(a) for a in answers])
    (one_s, one), (many_s, many) = runs[1], runs[args.batch_size]
    same = sum(a == b for a, b in zip(one, many))
    generated = sum(not a["doubtful"] for a in one)
    print(f"{label}: {len(questions)} questions ({generated} generated), max "
          f"{args.max_new_tokens} new tokens")  # fmt: skip
    print(f"one at a time: {one_s:.1f} s; batches of {args.batch_size}: {many_s:.1f} s; "
          f"ratio {one_s / many_s:.2f}x; the same answer for {same} of {len(one)}")  # fmt: skip


if __name__ == "__main__":
    main()
