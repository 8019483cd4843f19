"""Oracle context: means and 95% bootstrap intervals of an eval folder's answers, per split
(ROUGE-L without citations, citation accuracy, false abstention, abstention accuracy); with
``--base``, the paired deltas against another eval folder over the same titles (the same
bootstrap draws for both).

    python bench/grounded_intervals.py /tmp/r/eval-tuned [model] [--base /tmp/r/eval-base]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amazon_sft.evaluation import metrics as M


def interval(values, rate: bool = False) -> str:
    """A mean with its 95% interval: Wilson's for a rate of yes/no outcomes (the bootstrap gives
    0 of n the point [0, 0]), the bootstrap's for scores and paired differences."""
    if rate:
        mean, lo, hi = M.share_interval(values)
    else:
        mean, lo, hi = M.bootstrap_interval(values, n_resamples=2000, seed=0)
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


def paired(before, after) -> str:
    """tuned - base on the same titles, with its 95% interval: Newcombe's for yes/no outcomes
    (the bootstrap of the differences put 1 change in 134 at [0.000, 0.022]: an outside
    review), the paired bootstrap for scores (``metrics.paired_change``)."""
    delta, lo, hi = M.paired_change(before, after)
    return f"{delta:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def per_example(asked: list[dict], model: str, split: str) -> dict[str, list]:
    """The per-example values whose means the report shows, by metric: eval's own verdicts
    (each row's ``scores``), never scored again here by another rule (this script once counted
    an answer quoting another record as a right citation, which eval does not)."""
    if not all("scores" in r for r in asked):
        sys.exit(
            f"split {split!r}: its answers.jsonl rows carry no per-answer scores (an eval from "
            "before they were written): run amazon-sft eval again"
        )
    scores = [r["scores"][model] for r in asked]
    return {k: [s[k] for s in scores] for k in scores[0]} if scores else {}


def _rows(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "answers.jsonl").read_text().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("model", nargs="?", default="model")
    ap.add_argument("--base", type=Path, help="an eval folder of the base model, same titles")
    args = ap.parse_args()
    rows = _rows(args.folder)
    base = _rows(args.base) if args.base else []
    for split in dict.fromkeys(r["split"] for r in rows):
        asked = [r for r in rows if r["split"] == split]
        values = per_example(asked, args.model, split)
        print(
            split,
            {"n": len(asked), **{k: interval(v, rate=k != "rougeL") for k, v in values.items()}},
        )
        by_uid = {r["uid"]: r for r in base if r["split"] == split}
        if not by_uid:
            continue
        if set(by_uid) != {r["uid"] for r in asked}:
            sys.exit(f"{args.base} asked other titles than {args.folder} in split {split!r}")
        base_model = next(iter(by_uid.values()))["answers"]
        base_values = per_example([by_uid[r["uid"]] for r in asked], next(iter(base_model)), split)
        # an older base eval wrote fewer outcomes a row (no EOS, loop, cites nothing): the
        # deltas are of those both hold, and the others are named (a review: a KeyError)
        both = [k for k in values if k in base_values]
        deltas = {k: paired(base_values[k], values[k]) for k in both}
        print(f"{split} tuned - base (paired)", deltas)
        if missing := sorted(set(values) - set(both)):
            print(f"{split}: no paired delta for {', '.join(missing)} (not in {args.base})")


if __name__ == "__main__":
    main()
