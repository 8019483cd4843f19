"""The question file of ``amazon-sft eval --questions FILE``: each question read and checked
(one-line errors naming the line). The catalogue it asks about (products, titles, the index
without a product taken out): ``question_products``. Scoring the answers: ``end_to_end``.

The question file is JSON lines (``read_questions``)::

    {"question": "mogs kitens board book", "uid": "0001", "kind": "typo", "source": "real"}
    {"question": "do you sell a red kayak?", "uid": "absent", "kind": "absent"}
    {"question": "tell me about Mog's Kittens", "absent": "0001", "kind": "absent"}

``"uid": "absent"`` (or ``"absent": true`` alone) asks about a product that does not exist;
``"absent": UID`` (or ``"absent": true`` beside its ``uid`` or ``title``) asks about a product
that does exist, taken out of retrieval for that question together with its twins (same normalised title or same description), so the right answer is
the abstention. ``source`` (``real``: the AmazonTitles rows; ``generated``: the generated
catalogue) only groups the report; a row without one is ``unlabelled``. ``"title"`` names a
real row that has no uid (prepare derives one); beside a uid it must be that product's title
(``question_products``: a slip was scored against the uid). Whether a product is held out or seen in training is read from the prepared
``catalogue.jsonl`` (a ``split`` field in the file is accepted and ignored, as are ``line`` and
``note``; any other key is refused, naming it).
"""

from __future__ import annotations

import gzip
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson

from amazon_sft.answering.question_text import MAX_QUESTION_CHARS, normalise_question
from amazon_sft.data.reading import BOM, derived_uid
from amazon_sft.errors import RequestError, UserError, reading
from amazon_sft.json_checks import first_key_twice, longest_integer
from amazon_sft.terminal import printable

SOURCES = ("real", "generated")
UNLABELLED = "unlabelled"
"""The source of a row that names none: a user's own catalogue is neither of ours."""
ABSENT = "absent"


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
    title_beside_uid: str | None = None
    """A title given beside a uid: it must name that product (``read_products`` refuses a
    line whose title is another product's: a slip was scored against the uid, silently)."""

    @property
    def absent(self) -> bool:
        return self.uid is None


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
                line = line.removeprefix(BOM)  # a byte-order mark, as prepare reads
            if len(line) > MAX_LINE_BYTES:
                raise UserError(
                    f"{where} is over {MAX_LINE_BYTES:,} bytes: a question file holds one "
                    f"question a line ({MAX_QUESTION_CHARS} characters at most)"
                )
            if line.strip():
                out.append(_question(line, where, line_no))
    if not out:
        raise UserError(f"--questions {path} holds no question")
    refuse_repeats(path, out)
    return out


def _decompressed(raw: io.BufferedReader) -> io.BufferedReader | gzip.GzipFile:
    """The file's text, gunzipped when its first bytes say gzip (as prepare reads trn.json.gz).
    Sniffed with ``peek``, not ``data.reading.open_lines``' seek: a question file may be a pipe.
    """
    return gzip.GzipFile(fileobj=raw) if raw.peek(2)[:2] == b"\x1f\x8b" else raw


def refuse_repeats(path: Path | str, questions: list[ShopperQuestion], resolved=False) -> None:
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
        except RecursionError:
            raise UserError(
                f"{where}: nested deeper than Python reads; write one flat JSON object a line"
            ) from None
        except ValueError:
            raise UserError(f"{where}: not valid JSON; write one JSON object a line") from None
        try:  # orjson refuses a lone surrogate escape that Python's reader takes
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as err:
            bad = f"\\u{ord(err.object[err.start]):04x}"
            raise UserError(
                f"{where}: holds {bad}, half of a character (an unpaired surrogate escape): "
                "write the character itself, or its pair of escapes"
            ) from None
    if not isinstance(row, dict):
        raise UserError(f'{where}: not a JSON object; write {{"question": ..., "uid": ...}}')
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
            f"{short(source)}"
        )
    uid, absent, title, named = row.get("uid"), row.get("absent", False), None, row.get("title")
    # a whole number is the uid prepare reads it as (the catalogue's "7"; past 64 bits its
    # reader refuses the row): it was refused without a word of why. Not 'absent''s: a 0/1
    # flag there (pandas' booleans) would take product "1" out (a review)
    uid = str(uid) if type(uid) is int and abs(uid) < 2**63 else uid
    if named is not None and not isinstance(named, str):
        raise UserError(f"{where}: 'title' must be the product's title text, got {short(named)}")
    if uid == ABSENT and named and not isinstance(absent, str):
        raise UserError(
            f"{where}: 'uid' {ABSENT!r} and 'title' {short(named)} disagree: an absent question "
            'names no product (give "absent": UID to take a catalogue product out)'
        )
    if uid is None and named and not isinstance(absent, str):
        title, named = named, None
        uid = derived_uid(title)  # a real row keyed by its title: prepare's derived uid
    if uid is not None and (not isinstance(uid, str) or not uid):
        raise UserError(f"{where}: 'uid' must be a product's uid or {ABSENT!r}, got {short(uid)}")
    if absent is not True and absent is not False and not (isinstance(absent, str) and absent):
        raise UserError(f"{where}: 'absent' must be true or the uid taken out, got {short(absent)}")
    if isinstance(absent, str) and uid not in (None, ABSENT, absent):
        raise UserError(
            f"{where}: 'uid' {short(uid)} and 'absent' {short(absent)} disagree; give one"
        )
    if uid is None and absent is False:
        raise UserError(
            f"{where}: needs 'uid' (the product asked about, or {ABSENT!r}), or the product's "
            "'title' (a real row without a uid)"
        )
    named = named or None  # beside a uid: checked against the catalogue's (read_products)
    if absent is False and uid != ABSENT:
        if kind == ABSENT:  # its "kind absent" row mixed a citation into abstentions, unsaid
            raise UserError(
                f"{where}: 'kind' is {ABSENT!r} but the line names a product to find: add "
                '"absent": true to take it out of retrieval, or give the kind of question it is'
            )
        return ShopperQuestion(text, uid, None, kind, source, line_no, title, named)
    removed = absent if isinstance(absent, str) else (uid if uid not in (None, ABSENT) else None)
    return ShopperQuestion(text, None, removed, kind, source, line_no, title, named)


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
        f"unknown key {short(key)}{meant}; a question line holds question, uid or absent or "
        "title, kind and source"
    )


def short(value, most: int = 60) -> str:
    """``repr(value)``, cut: an error line stays one line whatever a file holds."""
    shown = repr(value)
    return shown if len(shown) <= most else shown[:most] + f"... ({len(shown)} characters)"
