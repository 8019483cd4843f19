"""Benchmark: prepare's ``data.grounded_shortlist`` at a catalogue's size: CPU a grounded title
question and agreement with the first shortlist given (``ask``'s 10,000), on the training
products prepare would ground.

python bench/grounded_shortlist.py --prepared /tmp/full/prepared          # 1.3M products
python bench/grounded_shortlist.py --prepared DIR --shortlists 10000,2000 --questions 500

The questions are built as prepare builds them (config tiny's title phrasings), from training
products taken after ``--skip`` catalogue lines; each is ranked as prepare ranks it (k = 11,
training split only). Prints, per shortlist, CPU ms a question, how often the first product is
the first shortlist's, and the mean overlap of the 11-product lists with the first shortlist's.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

from amazon_sft.answering.index import CatalogueIndex
from amazon_sft.config import load_run_config
from amazon_sft.data.grounded import GroundedBuilder
from amazon_sft.data.grounded_stage import batched
from amazon_sft.prompts import build_prompt_format
from amazon_sft.tokenizer import load_tokenizer


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", required=True, help="a prepared folder (catalogue + index)")
    ap.add_argument("--questions", type=int, default=500)
    ap.add_argument("--skip", type=int, default=0, help="catalogue lines skipped first")
    ap.add_argument("--shortlists", default="10000,5000,2000")
    args = ap.parse_args()
    cfg = load_run_config("tiny", ["data.grounded_fraction=0.3"])
    tok = load_tokenizer(cfg.model, None)
    builder = GroundedBuilder(
        CatalogueIndex(args.prepared, mmap=True), build_prompt_format(tok, cfg.data), tok, cfg.data
    )
    products = []
    with open(Path(args.prepared) / "catalogue.jsonl", "rb") as fh:
        for line in itertools.islice(fh, args.skip, None):
            rec = orjson.loads(line)
            if rec["split"] == "train" and builder.wanted(str(rec["uid"])):
                products.append(rec)
            if len(products) == args.questions:
                break
    # as prepare asks them: in its batches of 256 (the shares of question kinds are a batch's)
    questions = [q[1] for b in batched(products, 256) for q in builder._questions(b, None)]
    index = builder.index
    index.top_many(questions[:20], 11, train_only=True)  # the index's pages read once
    first = None
    print("| shortlist | CPU ms a question | first product as the first row's | k=11 overlap |")
    print("|---|---|---|---|")
    for shortlist in map(int, args.shortlists.split(",")):
        start = _cpu()
        lists = index.top_many(questions, 11, True, shortlist)
        spent = (_cpu() - start) / len(questions) * 1e3
        first = first or lists
        same = sum(a[:1] == b[:1] for a, b in zip(lists, first)) / len(questions)
        overlap = sum(
            len({i for i, _ in a} & {i for i, _ in b}) / max(1, len(b))
            for a, b in zip(lists, first)
        ) / len(questions)
        print(f"| {shortlist} | {spent:.2f} | {same:.3f} | {overlap:.3f} |", flush=True)


if __name__ == "__main__":
    main()
