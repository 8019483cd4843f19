"""Does retrieval know when the asked product is not in the catalogue? And which
``--abstain-below`` ratio to answer with (answering/doubt.py)?

For every question of a question file, on the real path (``index.search`` on the question as
typed, the product and its twins removed for a question that takes one out, ``k`` records), the
ratio of the first record's score to the second's. Printed:

- ROC AUC of that ratio, questions about products in the catalogue against absent ones (0.5 a
  coin, 1.0 a perfect split; compare the tuned model's own, ``bench/answer_choice.py``);
- per ratio, the gate alone (``retrieval_doubtful``, as ``ask`` applies it): the share of
  questions about a product it abstains on (false abstention it adds), of absent products it
  abstains on, and right/wrong first record when it lets the question through;
- with ``--answers`` (an ungated ``eval --questions`` folder's ``answers.jsonl``): what the
  gate and that model's answers give together (a gated question abstains, any other keeps the
  model's greedy answer: the same as rerunning eval with ``--abstain-below``, as greedy
  decoding is deterministic);
- the ratio the rule picks: the largest of the grid whose gate alone abstains on at most
  ``--budget`` of the questions about a product (the false-abstention goal). Pick it on dev;
- whether a second signal would help: the share of the question's indexed words that the first
  record has (title or description opening), its ROC AUC, and the best rule "abstain when the
  ratio is under R, or the share under C while the ratio is under R2" fitted on this very file
  (in-sample: an upper bound of what the two signals can do at ``--budget``);
- what the gate costs a question, beside the search it reads.

    python bench/abstain_gate.py --data PREPARED --questions eval/questions/real_dev.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amazon_sft.answering.doubt import RULES, doubt_rule, retrieval_doubtful
from amazon_sft.answering.index import DESCRIPTION_CHARS, TOKEN_PATTERN, CatalogueIndex
from amazon_sft.answering.title_words import names_part
from amazon_sft.evaluation import question_file as QF
from amazon_sft.evaluation import question_products as QP
from bench.answer_choice import roc_auc  # the same AUC as the model's (ties half)

RATIOS = (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.75, 2.0, 2.5)


def first_to_second(scores: list[float]) -> float:
    """The ratio the gate compares (none retrieved: 0; one: no rival, infinite).

    >>> first_to_second([3.0, 2.0]), first_to_second([1.0]), first_to_second([])
    (1.5, inf, 0.0)
    """
    if not scores:
        return 0.0
    if len(scores) == 1 or scores[1] <= 0:
        return float("inf")
    return scores[0] / scores[1]


def word_share(words: list[str], title: str, content: str) -> float:
    """Share of the question's indexed words that the record has, in its title or its
    description's indexed opening (index.DESCRIPTION_CHARS).

    >>> word_share(["soft", "bear", "blue"], "Soft Bear", "A bear for babies.")
    0.667
    """
    if not words:
        return 1.0
    text = f"{title} {content[:DESCRIPTION_CHARS]}".casefold()
    have = set(re.findall(TOKEN_PATTERN, text))
    return round(sum(w in have for w in words) / len(words), 3)


def retrieve(
    data_dir: Path, questions_file: Path, k: int, meaning_weight: float = 0.0
) -> list[dict]:
    """Each question's ``k`` records as ``ask`` retrieves them (``meaning_weight``: its
    ``--meaning-weight``), with the asked product taken out where the file takes it out."""
    index = CatalogueIndex(data_dir, meaning_weight=meaning_weight)
    # products named by title too, as eval asks them (they were skipped without a word)
    questions = QP.resolve_titles(
        data_dir / "catalogue.jsonl", QF.read_questions(questions_file), questions_file
    )
    products, removals = QP.read_products(data_dir / "catalogue.jsonl", questions)
    questions, skipped = QP.keep_answerable(questions, products)
    if skipped:  # counted, as eval counts them (an outside review: dropped unsaid)
        lines = ", ".join(str(q.line) for q in skipped[:10])
        print(
            f"{questions_file}: {len(skipped)} questions skipped, their product not in "
            f"{data_dir / 'catalogue.jsonl'} (lines {lines})",
            file=sys.stderr,
        )
    rows = []
    for q in questions:
        searched = QP.WithoutRows(index, removals[q.removed]) if q.removed else index
        start = time.perf_counter()
        sources = searched.search(q.text, k)
        search_s = time.perf_counter() - start
        words = list(dict.fromkeys(index.words(q.text)))
        rows.append(
            {
                "line": q.line,
                "question": q.text,
                "kind": q.kind,
                "uid": q.uid,
                "absent": q.absent,
                "sources": sources,
                "top1": bool(sources) and not q.absent and sources[0].uid == q.uid,
                "share": word_share(words, sources[0].title, sources[0].content) if sources else 0,
                "search_s": search_s,
            }
        )
    return rows


def gate_table(rows: list[dict], answers: dict | None, budget: float) -> tuple[list[str], float]:
    present = [r for r in rows if not r["absent"]]
    absent = [r for r in rows if r["absent"]]
    head = (
        "| ratio | gate: false abstention | gate: absent abstention | gate: right / wrong first |"
    )
    lines = [
        head + (" with model: right / wrong / false abst. / absent abst. |" if answers else "")
    ]
    lines.append("|---" * (5 if answers else 4) + "|")
    chosen = RATIOS[0]
    for ratio in RATIOS:
        gated = {r["line"]: retrieval_doubtful(r["sources"], ratio, r["question"]) for r in rows}
        false = sum(gated[r["line"]] for r in present) / len(present)
        kept = sum(gated[r["line"]] for r in absent) / max(len(absent), 1)
        right = sum(r["top1"] and not gated[r["line"]] for r in present) / len(present)
        wrong = sum(not r["top1"] and not gated[r["line"]] for r in present) / len(present)
        line = f"| {ratio} | {false:.3f} | {kept:.3f} | {right:.3f} / {wrong:.3f} |"
        if answers:  # a gated question abstains; any other keeps the model's answer
            gave = {"right": False, "wrong": False, "abstained": True}
            o = {n: gave if gated[n] else answers[n] for n in gated}

            def share(key: str, group: list[dict], o: dict = o) -> float:
                return sum(o[r["line"]][key] for r in group) / max(len(group), 1)

            line += (
                f" {share('right', present):.3f} / {share('wrong', present):.3f} / "
                f"{share('abstained', present):.3f} / {share('abstained', absent):.3f} |"
            )
        lines.append(line)
        if false <= budget:
            chosen = ratio
    return lines, chosen


def best_two_signal_rule(rows: list[dict], ratio: list[float], budget: float) -> str:
    """The rule over ratio and word share that abstains on the most absent products while
    abstaining on at most ``budget`` of the others, fitted on these rows."""
    present = [i for i, r in enumerate(rows) if not r["absent"]]
    absent = [i for i, r in enumerate(rows) if r["absent"]]
    best = (-1.0, "")
    shares = [x / 20 for x in range(21)] + [1.01]
    for r1 in RATIOS:
        for c in shares:
            for r2 in (*RATIOS, 3.0, 5.0, 10.0, float("inf")):
                gated = [x < r1 or (rows[i]["share"] < c and x < r2) for i, x in enumerate(ratio)]
                false = sum(gated[i] for i in present) / len(present)
                caught = sum(gated[i] for i in absent) / max(len(absent), 1)
                if false <= budget and caught > best[0]:
                    best = (caught, f"R={r1}, C={c}, R2={r2}: false abstention {false:.3f}")
    return f"absent abstention {best[0]:.3f} ({best[1]})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the prepared folder (its index)")
    p.add_argument("--questions", type=Path, required=True, help="a question file (eval/questions)")
    p.add_argument("--k", type=int, default=3, help="records retrieved, as ask shows them")
    p.add_argument("--answers", type=Path, help="an ungated eval --questions answers.jsonl")
    p.add_argument("--model", default=None, help="its model name (default: tuned, else model)")
    p.add_argument("--budget", type=float, default=0.05, help="false abstention the gate may add")
    p.add_argument("--rules-at", type=float, help="ratio of the which-rule table (default: chosen)")
    args = p.parse_args()
    rows = retrieve(args.data, args.questions, args.k)
    answers = None
    if args.answers:
        lines = [json.loads(x) for x in args.answers.read_text().splitlines() if x.strip()]
        name = args.model or ("tuned" if "tuned" in lines[0]["outcomes"] else "model")
        answers = {x["line"]: x["outcomes"][name] for x in lines}
    ratio = [first_to_second([s.score for s in r["sources"]]) for r in rows]
    auc = roc_auc(
        [x for x, r in zip(ratio, rows) if not r["absent"]],
        [x for x, r in zip(ratio, rows) if r["absent"]],
    )
    present = sum(not r["absent"] for r in rows)
    print(f"{args.questions}: {present} questions about a product, {len(rows) - present} absent")
    print(f"ROC AUC of first/second retrieval score, present vs absent: {auc:.3f}")
    table, chosen = gate_table(rows, answers, args.budget)
    print("\n".join(table))
    print(f"largest ratio whose gate alone abstains on <= {args.budget} of present: {chosen}")
    print("\n".join(rule_table(rows, args.rules_at or chosen)))
    share_auc = roc_auc(
        [r["share"] for r in rows if not r["absent"]], [r["share"] for r in rows if r["absent"]]
    )
    print(f"ROC AUC of the question's word share in the first record: {share_auc:.3f}")
    print(
        f"best ratio + word-share rule, fitted here: {best_two_signal_rule(rows, ratio, args.budget)}"
    )
    print(gate_cost(rows, chosen))


def rule_table(rows: list[dict], ratio: float) -> list[str]:
    """At ``ratio``, the questions each rule of the gate abstains on, credited to the first that
    fires (``doubt.RULES`` order): absent products, and present ones whose first record is wrong
    (an abstention that saves a wrong answer) or right (a false abstention)."""
    counts = {rule: [0, 0, 0] for rule in (*RULES, "sure")}
    for r in rows:
        found = doubt_rule(r["sources"], ratio, r["question"])
        column = 0 if r["absent"] else (2 if r["top1"] else 1)
        counts[found[0] if found else "sure"][column] += 1
    head = [f"which rule abstains at {ratio}:",
            "| rule | absent | present, first record wrong | present, first record right |",
            "|---|---|---|---|"]  # fmt: skip
    return head + [f"| {rule} | {a} | {w} | {ok} |" for rule, (a, w, ok) in counts.items()]


def gate_cost(rows: list[dict], ratio: float) -> str:
    """Time of the gate (``retrieval_doubtful``, as ask applies it) per question, beside the time
    of the search it reads (both on this machine, one pass each). The gate's cache of questions
    put in English is emptied first: ``ask`` decides once per question, the tables above did not."""
    names_part.cache_clear()
    start = time.perf_counter()
    for r in rows:
        retrieval_doubtful(r["sources"], ratio, r["question"])
    gate = (time.perf_counter() - start) / len(rows)
    search = sum(r["search_s"] for r in rows) / len(rows)
    return f"gate {gate * 1e3:.3f} ms per question, search {search * 1e3:.2f} ms ({gate / search:.3f}x)"


if __name__ == "__main__":
    main()
