"""How one phrasing around the exact title fares through retrieval and the gate.

For each phrasing (``{t}`` is the title) and each of the first ``--products`` products of a
prepared folder: is the asked product retrieval's first record, does the gate let it through,
and is it refused by a rule that reads the question's names (the capitalised opener of a
Portuguese question was one: "Quero comprar {t}"). No model: the gate alone, as ``ask`` runs it.

    python bench/phrasing_gate.py --data /tmp/pair/g40p "Quero comprar {t}" "Tell me about {t}"

``--data``: a prepared folder of the real rows (docs/results.md, "paired abstentions"), or of
the demo's generated catalogue with ``--meaning-weight 0 --abstain-below 1.4`` (``--gate words``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amazon_sft.answering.doubt import doubt_rule
from amazon_sft.answering.gate import DEFAULT_GATE, GATES
from amazon_sft.answering.index import CatalogueIndex
from amazon_sft.answering.question_text import normalise_question

NAME_RULES = ("lacks", "none of", "other title", "swap")
"""``doubt_rule``'s names of the rules that read the question's capitalised words."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("phrasings", nargs="+", help='questions around "{t}", the product\'s title')
    p.add_argument("--data", required=True, type=Path, help="a prepared folder")
    p.add_argument("--products", type=int, default=300, help="the first N of catalogue.jsonl")
    gate = GATES[DEFAULT_GATE]
    p.add_argument("--meaning-weight", type=float, default=gate.meaning_weight)
    p.add_argument("--abstain-below", type=float, default=gate.abstain_below)
    args = p.parse_args(argv)
    index = CatalogueIndex(args.data, meaning_weight=args.meaning_weight)
    with open(args.data / "catalogue.jsonl", encoding="utf-8") as fh:
        products = [json.loads(line) for _, line in zip(range(args.products), fh)]
    print(f"{len(products)} products of {args.data}; gate at {args.abstain_below}")
    print("| phrasing | first record right | gate passes | refused by a name rule |")
    print("|---|---|---|---|")
    for phrasing in args.phrasings:
        first = passed = named = 0
        for product in products:
            question = normalise_question(phrasing.format(t=product["title"]))
            found = index.search(question, 3)
            if not found or found[0].uid != product["uid"]:
                continue
            first += 1
            rule = doubt_rule(found, args.abstain_below, question)
            passed += rule is None
            named += bool(rule and rule[0] in NAME_RULES)
        print(f"| {phrasing} | {first} | {passed} | {named} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
