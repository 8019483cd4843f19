"""Check the hand-written evaluation questions and print their counts.

Run from the repository root::

    PYTHONPATH=$PWD python eval/questions/check.py

Checks every ``*_dev.jsonl`` / ``*_test.jsonl`` file here: the fields and kinds, that each real
question's ``title`` + ``line`` names that row of ``../shared/data`` (skipped, and said so, when the
data is absent), that each generated ``uid`` is a product with a description in the catalogue
``make demo`` generates, that no question is written twice, and that dev and test are the split
the README describes. Exits 1 with one line per problem.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REAL_ROWS = HERE.parents[1].parent / "shared" / "data" / "amazontitles_real_head_sample.jsonl"
KINDS = ("partial", "descriptive", "portuguese", "attribute", "need", "typo", "absent")
SOURCES = ("real", "generated")
FAMILIES = {
    "real": "real",
    "generated": "generated",
    "real_blind": "real",
    "real_blind2": "real",
    "real_blind3": "real",
    "real_blind4": "real",
    "real_blind5": "real",
    "real_blind6": "real",
    "real_blind7": "real",
    "real_blind8": "real",
    "real_blind9": "real",
    "real_blind10": "real",
    "real_blind11": "real",
    "real_blind12": "real",
    "real_blind13": "real",
    "real_blind14": "real",
    "real_blind15": "real",
}
"""File family (``{family}_dev.jsonl`` / ``{family}_test.jsonl``) -> the source of its rows.
``real_blind`` to ``real_blind15``: real-row questions written later, each set by someone blind
to the answering code, the gate's rules and the other sets (README); each family's dev/test
split is its own, so adding one moved no question."""
SPLITS = ("dev", "test")
DEV_SHARE = 0.4  # of each (source, kind): the rest is test, the reported part


@dataclass(frozen=True)
class Question:
    """One question as read from a file, with where it came from (for error messages)."""

    text: str
    kind: str
    source: str
    family: str
    split: str
    title: str | None
    line: int | None
    uid: str | None
    where: str


def split_key(text: str) -> str:
    """The order that decides dev vs test within a (source, kind): sha256 of the text.

    >>> split_key("abc")[:8]
    'ba7816bf'
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def expected_dev(texts: list[str]) -> set[str]:
    """The texts that belong in dev: the first 40% (rounded) in ``split_key`` order.

    >>> sorted(expected_dev(["a", "b", "c", "d", "e"])) == sorted(
    ...     sorted(["a", "b", "c", "d", "e"], key=split_key)[:2])
    True
    """
    ordered = sorted(texts, key=split_key)
    return set(ordered[: round(DEV_SHARE * len(ordered))])


def read_questions(problems: list[str]) -> list[Question]:
    """Every question of every file, with field problems appended to ``problems``."""
    out: list[Question] = []
    for family, source in FAMILIES.items():
        for split in SPLITS:
            path = HERE / f"{family}_{split}.jsonl"
            if not path.exists():
                problems.append(f"{path.name}: missing")
                continue
            for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                where = f"{path.name}:{n}"
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError as exc:
                    problems.append(f"{where}: not JSON ({exc})")
                    continue
                q = Question(
                    text=obj.get("question", ""),
                    kind=obj.get("kind", ""),
                    source=obj.get("source", ""),
                    family=family,
                    split=split,
                    title=obj.get("title"),
                    line=obj.get("line"),
                    uid=obj.get("uid"),
                    where=where,
                )
                problems.extend(field_problems(q, source))
                out.append(q)
    return out


def field_problems(q: Question, source: str) -> list[str]:
    """What is wrong with one question's fields (empty when nothing)."""
    bad: list[str] = []
    if not isinstance(q.text, str) or not q.text.strip():
        bad.append(f"{q.where}: empty 'question'")
    if q.kind not in KINDS:
        bad.append(f"{q.where}: 'kind' {q.kind!r} is not one of {', '.join(KINDS)}")
    if q.source != source:
        bad.append(f"{q.where}: 'source' {q.source!r} but the file is {source}")
    absent = q.kind == "absent"
    if absent and q.uid != "absent":
        bad.append(f'{q.where}: an absent question needs "uid": "absent"')
    if not absent and q.uid == "absent":
        bad.append(f'{q.where}: "uid": "absent" on a {q.kind} question')
    if source == "real":
        if absent and (q.title is not None or q.line is not None):
            bad.append(f"{q.where}: an absent real question has title/line null")
        if not absent and (not isinstance(q.title, str) or not isinstance(q.line, int)):
            bad.append(f"{q.where}: a real question needs a string 'title' and an int 'line'")
    elif not absent and not isinstance(q.uid, str):
        bad.append(f"{q.where}: a generated question needs a string 'uid'")
    return bad


def real_row_problems(questions: list[Question]) -> list[str]:
    """Each real title + line names that row of ../shared/data, and the row has a description."""
    rows = [json.loads(raw) for raw in REAL_ROWS.read_text(encoding="utf-8").splitlines()]
    bad = []
    for q in questions:
        if q.source != "real" or q.kind == "absent" or not isinstance(q.line, int):
            continue
        if not 0 <= q.line < len(rows) or rows[q.line]["title"] != q.title:
            bad.append(f"{q.where}: line {q.line} of {REAL_ROWS.name} is not titled {q.title!r}")
        elif not rows[q.line]["content"].strip():
            bad.append(f"{q.where}: line {q.line} has no description to answer with")
    return bad


def demo_catalogue() -> dict[str, tuple[str, str]]:
    """uid -> (title, description) of the catalogue ``make demo`` generates (default size, seed)."""
    from amazon_sft.data.synthetic import generate_rows
    from amazon_sft.demo import parse_args

    catalogue: dict[str, tuple[str, str]] = {}
    for raw in generate_rows(parse_args([]).rows)[0]:
        try:
            row = json.loads(raw)
        except ValueError:
            continue  # the generator writes a few malformed lines on purpose
        if isinstance(row, dict) and isinstance(row.get("uid"), str):
            catalogue[row["uid"]] = (str(row.get("title", "")), str(row.get("content", "")))
    return catalogue


def generated_uid_problems(questions: list[Question]) -> list[str]:
    """Each generated uid is in the demo's catalogue with a description of its own."""
    catalogue = demo_catalogue()
    bad = []
    for q in questions:
        if q.source == "generated" and q.kind != "absent":
            row = catalogue.get(str(q.uid))
            if row is None:
                bad.append(f"{q.where}: uid {q.uid} is not in the demo's generated catalogue")
            elif len(row[1].strip()) < 20 or row[1] == row[0]:
                bad.append(f"{q.where}: uid {q.uid} has no description to answer with")
    return bad


def set_problems(questions: list[Question]) -> list[str]:
    """No question twice in a family (case-insensitive; two writers blind to each other may
    write the same one), and dev/test are the documented split."""
    bad = []
    seen: dict[tuple[str, str], str] = {}
    for q in questions:
        key = (q.family, q.text.strip().lower())
        if key in seen:
            bad.append(f"{q.where}: same question as {seen[key]}")
        seen.setdefault(key, q.where)
    groups: dict[tuple[str, str], list[Question]] = defaultdict(list)
    for q in questions:
        groups[(q.family, q.kind)].append(q)
    for (family, _kind), qs in sorted(groups.items()):
        dev = expected_dev([q.text for q in qs])
        for q in qs:
            if (q.split == "dev") != (q.text in dev):
                bad.append(f"{q.where}: belongs in {family}_{'dev' if q.text in dev else 'test'}")
    return bad


def print_counts(questions: list[Question]) -> None:
    """A table: kind by file family/split, with totals."""
    cols = [(f, p) for f in FAMILIES for p in SPLITS]
    count = Counter((q.kind, q.family, q.split) for q in questions)
    print(f"{'kind':<12}" + "".join(f"{s + '_' + p:>17}" for s, p in cols) + f"{'total':>8}")
    for kind in KINDS:
        cells = [count[(kind, s, p)] for s, p in cols]
        print(f"{kind:<12}" + "".join(f"{c:>17}" for c in cells) + f"{sum(cells):>8}")
    totals = [sum(count[(k, s, p)] for k in KINDS) for s, p in cols]
    print(f"{'total':<12}" + "".join(f"{c:>17}" for c in totals) + f"{sum(totals):>8}")


def main() -> int:
    problems: list[str] = []
    questions = read_questions(problems)
    if REAL_ROWS.exists():
        problems += real_row_problems(questions)
    else:
        print(f"skipped the real-row check: {REAL_ROWS} is absent")
    problems += generated_uid_problems(questions)
    problems += set_problems(questions)
    print_counts(questions)
    for p in problems:
        print(p, file=sys.stderr)
    print("OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
