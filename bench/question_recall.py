"""Benchmark: retrieval recall@1 / recall@k per kind, with 95% bootstrap intervals, of a question
file in eval/questions' format, each question sent as typed through ``index.search`` with
``--meaning-weight`` (default: ask's default gate's, so what ``ask --sources-only`` does); with ``--base``, the same for another checkout and the paired
difference.

python bench/question_recall.py eval/questions/real_dev.jsonl
python bench/question_recall.py eval/questions/real_dev.jsonl --base /tmp/recall/base --show-misses

The catalogue comes from the file's source: the real rows of ../shared/data (``source: real``) or
the demo's generated catalogue (``source: generated``), prepared once with the tiny config; each
checkout builds its own index over that same catalogue.jsonl. Questions about absent products
are left out (no right record to find), as are questions about a product the catalogue lacks
(counted and printed, as ``amazon-sft eval`` skips them). Protocol: end to end (real retrieval on the question
text), k records; say whether the file was tuned on.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkout import REPO, code_path, emitted_by

sys.path.insert(0, code_path(sys.argv))


def prepared_catalogue(source: str, out: Path) -> Path:
    """A prepared folder (catalogue.jsonl) of the real rows or of the demo's catalogue."""
    from amazon_sft.config import load_run_config
    from amazon_sft.prepare import prepare

    if source == "real":
        rows = REPO.parent / "shared" / "data" / "amazontitles_real_head_sample.jsonl"
        if not rows.is_file():
            raise SystemExit(f"{rows} is missing: real-row questions need ../shared/data")
    else:
        from amazon_sft.data.synthetic import write_catalogue

        rows = out / "trn.json.gz"
        write_catalogue(rows, 160, seed=0)  # amazon-sft demo's default catalogue
    prepare(rows, out / "data", load_run_config("tiny"), progress=False)
    return out / "data"


def ranks(questions_file: Path, catalogue: Path, k: int, meaning_weight: float) -> dict:
    """{"rows": per question with a product in the catalogue: kind, text, and the rank
    (0-based, or -1) of its product among the ``k`` records ``search`` returns, "skipped":
    questions whose product the catalogue lacks}; the index built by this checkout's code."""
    from amazon_sft.answering.index import CatalogueIndex
    from amazon_sft.answering.question_text import normalise_question

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(catalogue, Path(tmp) / "catalogue.jsonl")
        # words only as a checkout from before meaning builds it (a --base may be one)
        index = (
            CatalogueIndex(tmp, meaning_weight=meaning_weight)
            if meaning_weight
            else CatalogueIndex(tmp)
        )
        titles = {}
        for i in range(len(index)):
            rec = index.record(i)
            titles[rec["uid"]] = rec["title"]
        out, skipped = [], 0
        for q in _questions(questions_file):
            if q["uid"] not in titles:  # another catalogue's product: no record to find
                skipped += 1
                continue
            found = [s.uid for s in index.search(normalise_question(q["question"]), k)]
            rank = found.index(q["uid"]) if q["uid"] in found else -1
            out.append({"kind": q["kind"], "question": q["question"], "rank": rank, "top": found})
        for row in out:
            row["top"] = [titles[u] for u in row["top"]]
    return {"rows": out, "skipped": skipped}


def _questions(path: Path) -> list[dict]:
    """Questions with a product, uid resolved the way ``amazon-sft eval`` resolves it."""
    from amazon_sft.evaluation.question_file import read_questions

    return [
        {"question": q.text, "kind": q.kind, "uid": q.uid}
        for q in read_questions(path)
        if not q.absent
    ]


def _asked(rows: list[dict]) -> list[tuple]:
    """The questions ``rows`` scored, in order (an outside review: the paired deltas matched
    a base's rows by position only)."""
    return [(r.get("question"), r.get("kind")) for r in rows]


def summary(rows: list[dict], k: int, base: list[dict] | None) -> str:
    """A markdown table: kind, n, recall@1 and recall@k with intervals (and deltas vs base)."""
    from amazon_sft.evaluation.metrics import interval_text, paired_change, share_interval

    kinds = ["all", *sorted({r["kind"] for r in rows})]
    head = f"| kind | n | recall@1 | recall@{k} |"
    if base:
        head += f" base recall@1 | base recall@{k} | delta recall@1 |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for kind in kinds:
        pick = [i for i, r in enumerate(rows) if kind == "all" or r["kind"] == kind]
        at1 = np.array([rows[i]["rank"] == 0 for i in pick], dtype=float)
        atk = np.array([rows[i]["rank"] >= 0 for i in pick], dtype=float)
        cells = [kind, str(len(pick))]
        for values in (at1, atk):
            v, lo, hi = share_interval(values)
            cells.append(f"{v:.3f} [{lo:.3f}, {hi:.3f}]")
        if base:
            b1 = np.array([base[i]["rank"] == 0 for i in pick], dtype=float)
            bk = np.array([base[i]["rank"] >= 0 for i in pick], dtype=float)
            d, lo, hi = paired_change(b1, at1)  # Newcombe's: yes/no outcomes
            shown = f"{d:+.3f} {interval_text(lo, hi, signed=True)}"
            cells += [f"{b1.mean():.3f}", f"{bk.mean():.3f}", shown]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _base_ranks(base: Path, questions: Path, catalogue: Path, k: int, meaning: float) -> dict:
    """``ranks`` computed by the base checkout's code, in a process of its own."""
    args = [str(questions), "--k", str(k), "--catalogue", str(catalogue)]
    return emitted_by(__file__, base, [*args, "--meaning-weight", str(meaning)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("questions", help="a question file (eval/questions/*.jsonl)")
    ap.add_argument("--k", type=int, default=3, help="records returned (ask's grounded k)")
    ap.add_argument(
        "--meaning-weight",
        type=float,
        default=None,
        help="meaning's weight in the ranking (default: ask's default gate's; 0: words only)",
    )
    ap.add_argument("--base", help="another checkout (e.g. git archive main) to compare with")
    ap.add_argument("--show-misses", action="store_true", help="print the top-1 misses")
    ap.add_argument("--code", help="the checkout whose code is measured (default: this one)")
    ap.add_argument("--catalogue", help="a catalogue.jsonl (default: prepared from the source)")
    ap.add_argument("--emit", action="store_true", help="print the ranks as JSON (for --base)")
    args = ap.parse_args()
    questions = Path(args.questions)
    if args.meaning_weight is None:
        from amazon_sft.answering.gate import DEFAULT_GATE, GATES

        args.meaning_weight = GATES[DEFAULT_GATE].meaning_weight
    with tempfile.TemporaryDirectory() as tmp:
        catalogue = Path(args.catalogue) if args.catalogue else None
        if catalogue is None:
            sources = {json.loads(x).get("source", "generated") for x in _lines(questions)}
            if len(sources) != 1:
                raise SystemExit(f"{questions} mixes sources {sorted(sources)}: give one source")
            catalogue = prepared_catalogue(sources.pop(), Path(tmp)) / "catalogue.jsonl"
        found = ranks(questions, catalogue, args.k, args.meaning_weight)
        if args.emit:
            print(json.dumps(found))
            return
        base = None
        if args.base:
            base = _base_ranks(Path(args.base), questions, catalogue, args.k, args.meaning_weight)
            base = base["rows"]
    rows = found["rows"]
    if base is not None and _asked(base) != _asked(rows):  # paired by position below
        raise SystemExit(
            f"{args.base} asked other questions than this checkout ({len(base)} against "
            f"{len(rows)}: it skipped or resolved some otherwise): paired changes would compare "
            "different questions"
        )
    print(
        f"{questions}: {len(rows)} questions with a product, k={args.k}, meaning weight "
        f"{args.meaning_weight:g}; {found['skipped']} skipped (their product is not in the catalogue)"
    )
    print(summary(rows, args.k, base))
    if args.show_misses:
        for i, r in enumerate(rows):
            if r["rank"] != 0:
                was = f" (base rank {base[i]['rank']})" if base else ""
                print(
                    f"miss [{r['kind']}] rank {r['rank']}{was} {r['question']!r} -> {r['top'][:1]}"
                )


def _lines(path: Path) -> list[str]:
    return [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


if __name__ == "__main__":
    main()
