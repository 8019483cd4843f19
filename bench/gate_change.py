"""A code change's paired effect on the retrieval gate: this checkout against a ``--base`` one.

Each question of the files goes through ``ask``'s retrieval (``--meaning-weight``) and gate
(``--abstain-below``) with each checkout's own code (the base run in a subprocess with its
``amazon_sft``), and is scored as ``ask --quote-when-sure`` cites: right first record, wrong
first record, false abstention (a product that is there), absent abstention, recall@1 and
recall@3 (the 3 records ``ask`` puts in the prompt). Prints both checkouts' figures with 95%
Wilson intervals and the paired change (Newcombe's interval for paired yes/no outcomes), so a rule of the
gate (answering/doubt.py) is measured on the very questions before and after it:

    git worktree add /tmp/base HEAD~1
    python bench/gate_change.py --data /tmp/pair/g40p --base /tmp/base --questions eval/questions/real_blind11_test.jsonl

``--data``: a prepared folder of the real rows (docs/results.md, "paired abstentions").
Each question is asked once, however many files hold it (the same text about the same
product, as ``eval --questions`` refuses a repeat), and ``--read FILES`` leaves out questions
those files hold word for word (the ones a rule was chosen on): the lines dropped are counted.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkout import REPO, code_path, emitted_by

sys.path.insert(0, code_path(sys.argv))  # the checkout's amazon_sft (and bench), not this one's

MEASURES = (
    "right first",
    "wrong first",
    "false abstention",
    "absent abstention",
    "recall@1",
    "recall@3",
)


def outcomes(data: Path, files: list[str], meaning: float, ratio: float) -> list[list]:
    """Per question, with this process's ``amazon_sft``: [kind, absent, right, wrong, abstained,
    asked first, asked among the 3] as ``ask`` retrieves and gates it."""
    from amazon_sft.answering.doubt import retrieval_doubtful
    from bench.abstain_gate import retrieve

    out = []
    for name in files:
        for row in retrieve(data, Path(name), 3, meaning_weight=meaning):
            doubtful = retrieval_doubtful(row["sources"], ratio, row["question"])
            first = bool(row["top1"])
            right = not doubtful and first
            among = not row["absent"] and row["uid"] in [s.uid for s in row["sources"]]
            out.append([row["kind"], row["absent"], right, not doubtful and not right, doubtful, first, among])  # fmt: skip
    return out


def distinct_questions(data: Path, files: list[str], read: list[str], into: Path) -> str:
    """Write into ``into`` the lines of ``files`` that no earlier line repeats and no ``read``
    file holds (a question is its text as ``ask`` reads it, and its product: by uid, absent, or
    the product it takes out), and say how many were dropped."""
    from amazon_sft.answering.question_text import normalise_question
    from amazon_sft.evaluation import question_file as QF
    from amazon_sft.evaluation import question_products as QP

    def keyed(name: str) -> list[tuple[tuple, str]]:
        # lines as read_questions counts them: "\n" only (U+2028 is text inside a question)
        raw = Path(name).read_bytes().removeprefix(b"\xef\xbb\xbf").split(b"\n")
        questions = QP.resolve_titles(data / "catalogue.jsonl", QF.read_questions(Path(name)), name)
        return [((normalise_question(q.text).casefold(), q.uid, q.removed), by_uid(raw[q.line - 1], q)) for q in questions]  # fmt: skip

    def by_uid(line: bytes, q) -> str:
        """The line naming its product by the uid resolved here: a base checkout that resolves
        titles otherwise (older ones skipped some) asks the very same questions."""
        row = json.loads(line)
        if q.uid is not None:
            row["uid"] = q.uid
        return json.dumps(row, ensure_ascii=False)

    was_read = {key for name in read for key, _ in keyed(name)}
    seen, kept, repeats, in_read = set(), [], 0, 0
    for name in files:
        for key, line in keyed(name):
            if key in seen:
                repeats += 1
            elif key in was_read:
                in_read += 1
            else:
                kept.append(line)
            seen.add(key)
    into.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    total = len(kept) + repeats + in_read
    return (
        f"{total} lines: {repeats} repeats another, {in_read} is in the --read files; "
        f"{len(kept)} asked"
    )


def asked_once(data: Path, files: list, read: list) -> Path:
    """``files``' questions in one new file, each once and none a ``read`` file holds
    (``distinct_questions``, whose count is printed): probes once counted a question twice, and
    fitted on questions their "never saw" figures held (an outside review)."""
    folder = Path(tempfile.mkdtemp(prefix="asked_once-"))
    atexit.register(shutil.rmtree, folder, True)  # read until the probe ends
    into = folder / "questions.jsonl"
    print(distinct_questions(data, [str(f) for f in files], [str(f) for f in read], into))
    return into


def table(rows: list[list]) -> np.ndarray:
    """0/1 per question and ``MEASURES`` (NaN where one does not apply: absent abstention is a
    share of absent questions, the rest of questions about a product; recall@3 from a checkout
    older than it).

    >>> table([["typo", False, True, False, False, True, True], ["absent", True, False, False, True, False, False]])
    array([[ 1.,  0.,  0., nan,  1.,  1.],
           [nan, nan, nan,  1., nan, nan]])
    """
    out = np.full((len(rows), len(MEASURES)), np.nan)
    for n, (_, absent, right, wrong, abstained, first, *among) in enumerate(rows):
        if absent:
            out[n, 3] = abstained
        else:
            out[n, [0, 1, 2, 4]] = (right, wrong, abstained, first)
            out[n, 5] = among[0] if among else np.nan
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the prepared folder (its index)")
    ap.add_argument("--questions", nargs="+", required=True, help="question files")
    ap.add_argument(
        "--read",
        nargs="*",
        default=[],
        help="question files read while a rule was chosen: their questions are left out",
    )
    ap.add_argument("--base", help="the checkout to compare with (required)")
    ap.add_argument(
        "--by-kind",
        action="store_true",
        help="also this checkout's right first and recall@1 by kind",
    )
    ap.add_argument("--meaning-weight", type=float, default=4.0)
    ap.add_argument("--abstain-below", type=float, default=2.0)
    ap.add_argument("--code", help=argparse.SUPPRESS)
    ap.add_argument("--emit", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    files = [str(Path(f).resolve()) for f in args.questions]
    if args.emit:
        print(json.dumps(outcomes(Path(args.data), files, args.meaning_weight, args.abstain_below)))
        return
    if not args.base:
        ap.error("--base is required: the checkout to compare with (git worktree add DIR REV)")
    from bench.static_embedding_fusion import change, share  # its tables' cells

    scratch = tempfile.mkdtemp(prefix="gate_change-")
    asked = Path(scratch) / "asked.jsonl"
    print(distinct_questions(Path(args.data), files, args.read, asked))
    files = [str(asked)]
    runs = {}
    for name, code in (("base", args.base), ("this checkout", REPO)):
        cli = ["--data", args.data, "--questions", *files]
        cli += ["--meaning-weight", str(args.meaning_weight), "--abstain-below", str(args.abstain_below)]  # fmt: skip
        try:
            runs[name] = emitted_by(__file__, code, cli)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    shutil.rmtree(scratch, ignore_errors=True)
    before, after = table(runs["base"]), table(runs["this checkout"])
    kinds = [r[0] for r in runs["base"]]
    if kinds != [r[0] for r in runs["this checkout"]]:
        raise SystemExit("the two checkouts read the question files differently")
    if not kinds:
        files = " ".join(args.questions)
        raise SystemExit(
            f"no question of {files} can be scored: none of its products is in {args.data}"
        )
    present = int(np.sum(~np.isnan(before[:, 0])))
    print(f"{present} questions about a product, {len(kinds) - present} absent")
    print("| measure | base | this checkout | paired change |")
    print("|---|---|---|---|")
    for m, name in enumerate(MEASURES):
        keep = ~np.isnan(after[:, m])
        if not keep.any():  # no absent question, or none about a product
            print(f"| {name} | - | - | no such question |")
            continue
        if np.isnan(before[:, m]).all():  # a base older than the measure
            print(f"| {name} | - | {share(after[:, m])} | - |")
            continue
        cells = (share(before[:, m]), share(after[:, m]), change(before[:, m], after[:, m]))
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.by_kind:
        print(by_kind(kinds, after))


def by_kind(kinds: list[str], after: np.ndarray) -> str:
    """This checkout's right first and recall@1 for each kind of question about a product.

    >>> print(by_kind(["need", "need", "absent"], table([["need", False, True, False, False, True, True], ["need", False, False, False, True, True, True], ["absent", True, False, False, True, False, False]])))
    | kind | questions | right first | recall@1 |
    |---|---|---|---|
    | need | 2 | 0.500 | 1.000 |
    """
    lines = ["| kind | questions | right first | recall@1 |", "|---|---|---|---|"]
    for kind in sorted(set(kinds) - {"absent"}):
        rows = after[[k == kind for k in kinds]]
        rows = rows[~np.isnan(rows[:, 0])]
        if len(rows):
            lines.append(
                f"| {kind} | {len(rows)} | {rows[:, 0].mean():.3f} | {rows[:, 4].mean():.3f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
