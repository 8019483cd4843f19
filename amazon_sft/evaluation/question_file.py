"""The question file of ``amazon-sft eval --questions FILE`` and the catalogue it asks about:
each question read and checked (one-line errors naming the line), each product's description
and split read from the prepared ``catalogue.jsonl``, and the index without a product a
question takes out (``WithoutRows``). Scoring the answers: ``end_to_end``.

The question file is JSON lines (``read_questions``)::

    {"question": "mogs kitens board book", "uid": "0001", "kind": "typo", "source": "real"}
    {"question": "do you sell a red kayak?", "uid": "absent", "kind": "absent"}
    {"question": "tell me about Mog's Kittens", "absent": "0001", "kind": "absent"}

``"uid": "absent"`` (or ``"absent": true``) asks about a product that does not exist;
``"absent": UID`` asks about a product that does exist, taken out of retrieval for that question
together with its twins (same normalised title or same description), so the right answer is
the abstention. ``source`` (``real``: the AmazonTitles rows; ``generated``: the generated
catalogue) only groups the report; a row without one is ``unlabelled``. Whether a product is held out or seen in training is read from the prepared
``catalogue.jsonl`` (a ``split`` field in the file is accepted and ignored, as are ``line`` and
``note``; any other key is refused, naming it).
"""

from __future__ import annotations

import gzip
import io
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from amazon_sft.answering.index import Source
from amazon_sft.answering.question_text import MAX_QUESTION_CHARS, normalise_question
from amazon_sft.data.catalogue_row import CatalogueRow, CorruptRow, catalogue_row
from amazon_sft.data.reading import derived_uid
from amazon_sft.data.split import normalise_title
from amazon_sft.errors import RequestError, UserError, reading
from amazon_sft.json_checks import first_key_twice, longest_integer
from amazon_sft.terminal import printable

SOURCES = ("real", "generated")
UNLABELLED = "unlabelled"
"""The source of a row that names none: a user's own catalogue is neither of ours."""
ABSENT = "absent"
CATALOGUE_SPLITS = {"heldout": "held-out", "train": "seen", "untaught": "untaught"}
"""The catalogue's ``split`` of a product -> its group in the report (``untaught``: kept in the
catalogue over ``data.max_train_products``, never taught; ``read_products`` also puts there a
training product that prepare taught neither way)."""


@dataclass(frozen=True)
class ShopperQuestion:
    text: str
    uid: str | None
    """The product asked about; None when the right answer is the abstention."""
    removed: str | None
    """An existing product taken out of retrieval for this question (``"absent": UID``)."""
    kind: str
    source: str
    line: int
    title: str | None = None
    """The title the file named the product by, in place of a uid (``resolve_titles``)."""

    @property
    def absent(self) -> bool:
        return self.uid is None


@dataclass(frozen=True)
class Product:
    uid: str
    content: str
    group: str
    """held-out, seen or untaught (``CATALOGUE_SPLITS``)."""


def check_question_file(path: Path) -> None:
    """One line for a folder or a missing file, before anything is read or locked."""
    if path.is_dir():
        raise UserError(f"--questions {path} is a folder: give a question file (JSON lines)")
    if not path.exists():  # a pipe (--questions <(...)) is no regular file, and is read once
        raise UserError(f"--questions {path}: no such file (JSON lines of question, uid, kind)")


MAX_LINE_BYTES = 1 << 20
"""A question line's most bytes: a question of ``MAX_QUESTION_CHARS`` and its fields fit many
times over. A longer line is refused when this much of it is read, never read whole (a link to
/dev/zero, a binary file: one endless line filled memory). Not ``data.reading.bounded_lines``:
it reads past a long line to skip it and go on, which never ends on /dev/zero."""
KEYS = frozenset({"question", "uid", "absent", "title", "kind", "source"})
"""The keys of a question line; another is refused, naming it (a mistyped ``"absnt"`` was
ignored, and the product it meant to take out was retrieved and scored)."""
IGNORED_KEYS = frozenset({"split", "line", "note"})
"""Read and ignored: the catalogue's split (``read_products`` reads it there), the line of the
real rows a question set was written from, and a writer's own note."""


def read_questions(path: Path) -> list[ShopperQuestion]:
    """Every question of a JSON-lines file, each checked (one-line errors naming the line)."""
    check_question_file(path)
    out = []
    with reading(path, "question file", "give a readable JSON-lines file"), open(path, "rb") as raw:
        fh = _decompressed(raw)
        line_no = 0
        while line := fh.readline(MAX_LINE_BYTES + 1):
            line_no += 1
            where = f"{path} line {line_no}"
            if line_no == 1:
                line = line.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark, as prepare reads
            if len(line) > MAX_LINE_BYTES:
                raise UserError(
                    f"{where} is over {MAX_LINE_BYTES:,} bytes: a question file holds one "
                    f"question a line ({MAX_QUESTION_CHARS} characters at most)"
                )
            if line.strip():
                out.append(_question(line, where, line_no))
    if not out:
        raise UserError(f"--questions {path} holds no question")
    _refuse_repeats(path, out)
    return out


def _decompressed(raw: io.BufferedReader) -> io.BufferedReader | gzip.GzipFile:
    """The file's text, gunzipped when its first bytes say gzip (as prepare reads trn.json.gz).
    Sniffed with ``peek``, not ``data.reading.open_lines``' seek: a question file may be a pipe.
    """
    return gzip.GzipFile(fileobj=raw) if raw.peek(2)[:2] == b"\x1f\x8b" else raw


def _refuse_repeats(path: Path | str, questions: list[ShopperQuestion], resolved=False) -> None:
    """A question asked twice about the same product counted twice, narrowing the intervals
    (a review: nothing said so). The text as ask reads it (``normalise_question``); the product
    by its uid once titles are ``resolved`` (named by uid on one line, by title on another)."""
    seen: dict[tuple, int] = {}
    for q in questions:
        key = (normalise_question(q.text).casefold(), q.uid, q.removed)
        key += () if resolved else (q.title,)
        if key in seen:
            raise UserError(
                f"{path} line {q.line} repeats line {seen[key]} (the same question about the "
                "same product would count twice): remove one"
            )
        seen[key] = q.line


def _json_line(line: bytes, where: str) -> dict:
    """A question line's JSON object, or one line saying what keeps it from being one: not
    UTF-8, a JSON array (a whole file of them), a key given twice (the last was asked,
    silently), an integer longer than Python reads; orjson refuses any integer past 64 bits,
    valid JSON that Python's reader takes (and the checks of each field then name)."""
    if line.lstrip()[:1] == b"[":
        raise UserError(
            f"{where}: a JSON array, not JSON lines: write one object a line (e.g. "
            "jq -c '.[]' FILE > questions.jsonl)"
        )
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{where}: not UTF-8 text; save the file as UTF-8") from None
        if (digits := longest_integer(text)) > (sys.get_int_max_str_digits() or digits):
            raise UserError(
                f"{where}: holds an integer of {digits} digits, more than Python reads: give "
                "a uid as text"
            ) from None
        try:
            row = json.loads(text)
        except (ValueError, RecursionError):
            raise UserError(f"{where}: not valid JSON; write one JSON object a line") from None
    if not isinstance(row, dict):
        raise UserError(f"{where}: not a JSON object; write {{'question': ..., 'uid': ...}}")
    if (twice := first_key_twice(line)) is not None:
        raise UserError(f"{where}: gives {twice!r} twice (the last would count): give it once")
    return row


def _question(line: bytes, where: str, line_no: int) -> ShopperQuestion:
    row = _json_line(line, where)
    if unknown := sorted(set(row) - KEYS - IGNORED_KEYS):
        raise UserError(f"{where}: {_unknown_key(unknown[0])}")
    text, kind = row.get("question"), row.get("kind")
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"{where}: 'question' must be non-empty text")
    try:  # as ask reads it: one of zero-width spaces alone was refused only mid-run
        normalise_question(text)
    except RequestError:
        raise UserError(f"{where}: 'question' has no visible text; write the question") from None
    if (chars := len(" ".join(text.split()))) > MAX_QUESTION_CHARS:
        raise UserError(
            f"{where}: 'question' is {chars} characters; at most {MAX_QUESTION_CHARS} (what ask "
            "takes): shorten it"
        )
    # "Typo " and "typo" are one group; control characters are not printed into the report's
    # headings (a hostile user's trial: "x\u001b[2J")
    kind = " ".join(printable(kind).split()).lower() if isinstance(kind, str) else ""
    if not kind:
        raise UserError(f"{where}: 'kind' must be non-empty text (partial, typo, ...)")
    source = row.get("source", UNLABELLED)
    if source not in (*SOURCES, UNLABELLED):
        raise UserError(
            f"{where}: 'source' must be one of {SOURCES} (or left out: {UNLABELLED}), got "
            f"{_short(source)}"
        )
    uid, absent, title = row.get("uid"), row.get("absent", False), None
    if uid is None and isinstance(row.get("title"), str) and row["title"]:
        title = row["title"]
        uid = derived_uid(title)  # a real row keyed by its title: prepare's derived uid
    if uid is not None and (not isinstance(uid, str) or not uid):
        raise UserError(f"{where}: 'uid' must be a product's uid or {ABSENT!r}, got {_short(uid)}")
    if absent is not True and absent is not False and not (isinstance(absent, str) and absent):
        raise UserError(
            f"{where}: 'absent' must be true or the uid taken out, got {_short(absent)}"
        )
    if isinstance(absent, str) and uid not in (None, ABSENT, absent):
        raise UserError(
            f"{where}: 'uid' {_short(uid)} and 'absent' {_short(absent)} disagree; give one"
        )
    if uid is None and absent is False:
        raise UserError(
            f"{where}: needs 'uid' (the product asked about, or {ABSENT!r}), or the product's "
            "'title' (a real row without a uid)"
        )
    if absent is False and uid != ABSENT:
        return ShopperQuestion(text, uid, None, kind, source, line_no, title)
    removed = absent if isinstance(absent, str) else (uid if uid not in (None, ABSENT) else None)
    return ShopperQuestion(text, None, removed, kind, source, line_no, title)


def refuse_absent_naming_a_product(catalogue: Path, questions: list[ShopperQuestion]) -> None:
    """An absent question (``"uid": "absent"``, nothing taken out of retrieval) whose text is a
    catalogue product's whole title: that product is there, and an answer citing it was scored
    wrong (a review). One streaming pass, when any such question is asked."""
    invented = {normalise_title(q.text): q for q in questions if q.uid is None and not q.removed}
    if not invented:
        return
    for rec in catalogue_records(catalogue):
        q = invented.get(normalise_title(str(rec.get("title", ""))))
        if q is not None:
            raise UserError(
                f"question line {q.line}, absent: {q.text!r} is the title of product "
                f'{rec.get("uid")} in {catalogue}; give "absent": "{rec.get("uid")}" to take '
                "it out of retrieval, or ask about a product the catalogue lacks"
            )


def resolve_titles(
    catalogue: Path, questions: list[ShopperQuestion], path: Path | str = "--questions"
) -> list[ShopperQuestion]:
    """Questions naming their product by ``"title"`` whose derived uid (prepare's, from the raw
    title) the catalogue lacks, given the catalogue's uid for that title: the title as the tool
    shows it is cleaned (``&quot;`` read), and a catalogue with its own uids derives none (both
    were skipped as "not in this catalogue"). Matched as the split matches titles
    (``normalise_title``), the first row of that title. One streaming pass, when any question
    names a title."""
    titled = [q for q in questions if q.title]
    if not titled:
        return questions
    out = _by_catalogue_title(catalogue, questions, titled)
    _refuse_repeats(path, out, resolved=True)  # one product named by uid and by title
    return out


def _by_catalogue_title(catalogue: Path, questions: list, titled: list) -> list[ShopperQuestion]:
    derived = {q.uid or q.removed for q in titled}
    wanted = {normalise_title(q.title) for q in titled}
    present: set[str] = set()
    by_title: dict[str, str] = {}
    for rec in catalogue_records(catalogue):
        uid = str(rec["uid"])
        if uid in derived:
            present.add(uid)
        key = normalise_title(rec["title"])
        if key in wanted and key not in by_title:
            by_title[key] = uid
    out = []
    for q in questions:
        found = by_title.get(normalise_title(q.title)) if q.title else None
        if found and (q.uid or q.removed) not in present:
            q = replace(q, uid=found) if q.uid else replace(q, removed=found)
        out.append(q)
    return out


def _unknown_key(key: str) -> str:
    """Why a key is refused, and the key it likely meant.

    >>> _unknown_key("absnt")
    "unknown key 'absnt' (did you mean 'absent'?); a question line holds question, uid or absent or title, kind and source"
    """
    import difflib

    if key == "removed":  # eval's answers.jsonl names the product taken out so
        meant = " (eval's answers.jsonl writes the product taken out as 'removed': 'absent' here)"
    else:
        close = difflib.get_close_matches(key, sorted(KEYS | IGNORED_KEYS), n=1, cutoff=0.7)
        meant = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"unknown key {_short(key)}{meant}; a question line holds question, uid or absent or "
        "title, kind and source"
    )


def _short(value, most: int = 60) -> str:
    """``repr(value)``, cut: an error line stays one line whatever a file holds."""
    shown = repr(value)
    return shown if len(shown) <= most else shown[:most] + f"... ({len(shown)} characters)"


def read_products(
    catalogue: Path, questions: list[ShopperQuestion], taught: Callable[[str], bool] | None = None
) -> tuple[dict[str, Product], dict[str, frozenset[int]]]:
    """(uid -> product for every uid the questions name, removed uid -> the catalogue rows to
    take out of retrieval: the product and its twins). Two streaming passes over
    ``catalogue.jsonl`` (the second only when a question removes a product), keeping only the
    products asked about: memory grows with the questions, not the catalogue. ``taught``: does
    prepare teach this training product at all (``prepare.taught_ways``); one it does not is
    ``untaught``, not seen."""
    named = {q.uid for q in questions if q.uid} | {q.removed for q in questions if q.removed}
    products: dict[str, Product] = {}
    rows: dict[str, int] = {}
    keys: dict[str, tuple[str, str]] = {}
    for i, rec in enumerate(catalogue_records(catalogue)):
        uid = str(rec["uid"])
        if uid in named and uid not in products:
            group = CATALOGUE_SPLITS.get(rec.get("split", "train"), "seen")
            if group == "seen" and taught is not None and not taught(uid):
                group = "untaught"  # both fractions under 1: neither closed-book nor grounded
            products[uid] = Product(uid, rec["content"], group)
            rows[uid] = i
            keys[uid] = (normalise_title(rec["title"]), rec["content"])
    removed = {q.removed for q in questions if q.removed and q.removed in products}
    twins: dict[str, set[int]] = {uid: {rows[uid]} for uid in removed}
    if removed:
        # a key to every removed uid that has it: editions of one title asked about in two
        # questions each take out all of them
        by_title: dict[str, list[str]] = {}
        by_text: dict[str, list[str]] = {}
        for uid in removed:
            by_title.setdefault(keys[uid][0], []).append(uid)
            by_text.setdefault(keys[uid][1], []).append(uid)
        for i, rec in enumerate(catalogue_records(catalogue)):
            title, text = normalise_title(rec["title"]), rec["content"]
            for uid in (*by_title.get(title, ()), *by_text.get(text, ())):
                twins[uid].add(i)
    return products, {uid: frozenset(r) for uid, r in twins.items()}


def catalogue_records(catalogue: Path) -> Iterator[CatalogueRow]:
    """The records of a prepared ``catalogue.jsonl``, in order; a cut or corrupt line is a
    ``UserError`` naming the file and line."""
    redo = "re-run amazon-sft prepare (it writes catalogue.jsonl)"
    with reading(catalogue, "catalogue", redo), open(catalogue, "rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            try:
                row = catalogue_row(line)
            except CorruptRow as err:
                raise UserError(
                    f"{catalogue} line {line_no} is cut or corrupt ({err}): {redo}"
                ) from None
            yield row


def keep_answerable(
    questions: list[ShopperQuestion], products: dict[str, Product]
) -> tuple[list[ShopperQuestion], list[ShopperQuestion]]:
    """(questions this catalogue can score, questions naming a product it lacks: another
    catalogue's, or a row cleaning dropped; skipped and counted, never asked)."""
    kept, skipped = [], []
    for q in questions:
        missing = (q.uid and q.uid not in products) or (q.removed and q.removed not in products)
        (skipped if missing else kept).append(q)
    return kept, skipped


class WithoutRows:
    """The catalogue index with some rows taken out: what ``search`` returns when the product a
    question names is not in the catalogue. Only ``search`` is answered (what ``Answerer`` calls);
    anything else is refused rather than passed through to the whole index."""

    def __init__(self, index, rows: frozenset[int]) -> None:
        self.index, self.rows = index, rows

    def search(self, question: str, k: int = 3) -> list[Source]:
        """``index.search`` without the removed rows (the next best fill their places)."""
        wanted = self.index.candidates(k)  # as many as the whole index's search reads
        hits = [
            (i, s)
            for i, s in self.index.top(question, wanted + len(self.rows))
            if i not in self.rows
        ]
        return self.index.ranked(question, hits[:wanted], k)
