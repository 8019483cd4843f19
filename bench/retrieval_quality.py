"""Benchmark: retrieval recall@1/@3 per question kind (title, partial, typo, Portuguese,
attribute, descriptive) on the generated catalogue, or on a prepared folder with a question file.

python bench/retrieval_quality.py                        # generated catalogue, 20 questions a kind
python bench/retrieval_quality.py --data PREPARED --questions tests/fixtures/real_questions.yaml
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amazon_sft.answering.index import CatalogueIndex
from amazon_sft.evaluation.questions import Question, make_questions, recall


def generated_prepared(tmp: Path, rows: int) -> Path:
    from amazon_sft.config import load_run_config
    from amazon_sft.data.synthetic import write_catalogue
    from amazon_sft.prepare import prepare

    write_catalogue(tmp / "trn.json.gz", rows, seed=3)
    prepare(tmp / "trn.json.gz", tmp / "data", load_run_config("tiny"), progress=False)
    return tmp / "data"


def catalogue_records(prepared: Path) -> list[dict]:
    return [orjson.loads(line) for line in (prepared / "catalogue.jsonl").read_bytes().splitlines()]


def load_questions(path: Path) -> list[Question]:
    """A YAML list of {kind, question, title}: hand-written questions about titles."""
    return [
        Question(q["kind"], q["question"], "", q["title"]) for q in yaml.safe_load(path.read_text())
    ]


def table(result: dict) -> str:
    lines = ["| kind | n | recall@1 | recall@3 |", "|---|---|---|---|"]
    for kind, r in result.items():
        lines.append(f"| {kind} | {r['n']} | {r['recall@1']:.2f} | {r['recall@3']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="a prepared folder (default: the generated catalogue)")
    ap.add_argument("--questions", help="a question YAML (default: generated questions)")
    ap.add_argument("--rows", type=int, default=2500, help="generated catalogue lines")
    ap.add_argument("--per-kind", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0, help="which generated questions")
    ap.add_argument("--show-misses", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(args.data) if args.data else generated_prepared(Path(tmp), args.rows)
        index = CatalogueIndex(prepared)
        if args.questions:
            questions = load_questions(Path(args.questions))
        else:
            questions = make_questions(catalogue_records(prepared), args.per_kind, args.seed)
        print(table(recall(index, questions)))
        if args.show_misses:
            for q in questions:
                top = index.search(q.text, 1)
                if not top or (top[0].uid != q.uid and top[0].title != q.title):
                    print(
                        f"miss [{q.kind}] {q.text!r} -> {top[0].title if top else None!r} "
                        f"(wanted {q.title!r})"
                    )


if __name__ == "__main__":
    main()
