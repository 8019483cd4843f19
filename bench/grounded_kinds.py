"""Benchmark: per question kind (data/question_kinds.py), how often retrieval misses the right
record among the ``context_records`` it returns for the generated question, as prepare's grounded
examples ask it (training split, the question as typed). A miss is an example that teaches the
abstention; a kind missed often teaches little else.

python bench/grounded_kinds.py                      # the 1,000 real rows of ../shared/data
python bench/grounded_kinds.py --generated --rows 2000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_ROWS

from amazon_sft.answering.index import CatalogueIndex
from amazon_sft.config import load_run_config
from amazon_sft.data.question_kinds import KINDS, make_question
from amazon_sft.prepare import prepare


def misses(prepared: Path, k: int, show: int = 0) -> dict[str, Counter]:
    """Per kind: products asked (``n``), the right record first (``top1``) and not among the
    first ``k`` (``missed``); prints up to ``show`` misses a kind."""
    index = CatalogueIndex(prepared)
    rows = [orjson.loads(x) for x in (prepared / "catalogue.jsonl").read_bytes().splitlines()]
    products = [r for r in rows if r["split"] == "train"]
    out: dict[str, Counter] = {}
    for kind in KINDS[1:]:
        asked = [(p, q) for p in products if (q := make_question(kind, p)) is not None]
        found = index.top_many([q.text for _, q in asked], k, train_only=True)
        count: Counter = Counter(n=len(asked))
        shown = 0
        for (product, q), best in zip(asked, found):
            uids = [str(index.record(i)["uid"]) for i, _ in best]
            hit = str(product["uid"]) in uids
            count["top1"] += bool(uids) and uids[0] == str(product["uid"])
            count["missed"] += not hit
            if not hit and shown < show:
                shown += 1
                print(f"miss [{kind}] {q.text!r} (wanted {product['title']!r})")
        out[kind] = count
    return out


def table(result: dict[str, Counter], k: int) -> str:
    lines = [f"| kind | questions | miss rate (not in top {k}) | recall@1 |", "|---|---|---|---|"]
    for kind, c in result.items():
        n = max(c["n"], 1)
        lines.append(f"| {kind} | {c['n']} | {c['missed'] / n:.3f} | {c['top1'] / n:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED_ROWS), help="a trn.json(.gz) / JSONL file")
    ap.add_argument("--generated", action="store_true", help="the generated catalogue instead")
    ap.add_argument("--rows", type=int, default=2000, help="generated catalogue lines")
    ap.add_argument("--config", default="smollm2-135m", help="whose data.context_records is k")
    ap.add_argument("--show-misses", type=int, default=0, help="misses to print per kind")
    args = ap.parse_args()
    k = load_run_config(args.config).data.context_records
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(args.data)
        if args.generated:
            from amazon_sft.data.synthetic import write_catalogue

            source = Path(tmp) / "trn.json.gz"
            write_catalogue(source, args.rows, seed=3)
        elif not source.is_file():
            raise SystemExit(f"{source} is missing: give --data FILE or --generated")
        prepared = Path(tmp) / "data"  # the tiny tokenizer: retrieval does not depend on it
        prepare(source, prepared, load_run_config("tiny"), progress=False)
        print(f"{source.name}: k = {k} ({args.config}'s data.context_records)")
        print(table(misses(prepared, k, args.show_misses), k))


if __name__ == "__main__":
    main()
