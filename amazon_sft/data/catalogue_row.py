"""A record of a prepared catalogue: the one definition of its fields and the one place its
lines are parsed and checked.

prepare writes ``catalogue.jsonl`` (every kept product, with its split) and the eval files
beside it (``heldout.jsonl``, ``seen_probe.jsonl``: the same fields and a few more). Its
grounded stage, the index build and its checks, eval and the demo's questions read them back;
each used to parse and check a line its own way (the index took an integer uid that eval refused,
one checked only that the keys were there), so the same line got different verdicts.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

import orjson

from amazon_sft.data.reading import BOM, UID_MAX_CHARS, citable


class CatalogueRow(TypedDict):
    uid: str
    """The product's id as answers cite it (``[source: uid]``); prepare writes it as text."""
    title: str
    """The cleaned title."""
    content: str
    """The cleaned description: what a grounded answer quotes."""
    split: NotRequired[str]
    """``train``, ``heldout`` or ``untaught`` (over ``data.max_train_products``): in
    ``catalogue.jsonl``; the eval files hold one split each and leave it out."""
    taught: NotRequired[list[str]]
    """``seen_probe.jsonl`` only: how prepare taught the product (``closed_book``,
    ``grounded``), so eval scores each way on the products taught so."""


TEXT_FIELDS = ("uid", "title", "content")


class CorruptRow(ValueError):
    """A line that is not a catalogue row; its message says what is wrong, for the caller to
    put after the file and line it names."""


def catalogue_row(line: bytes) -> CatalogueRow:
    """The row of one line of a prepared catalogue file, checked: a JSON object whose uid,
    title and content are text (an integer uid read as text, as prepare reads one), whose uid
    answers can cite, and whose split, if any, is text (other fields kept as they are).

    >>> catalogue_row(b'{"uid": "B1", "title": "T", "content": "C", "split": "train"}')["split"]
    'train'
    >>> def why(line):
    ...     try:
    ...         catalogue_row(line)
    ...     except CorruptRow as err:
    ...         return str(err)
    >>> why(b'{"uid": "B1", "title": "T", "con'), why(b'[1]')
    ('not JSON (a cut line?)', 'not a JSON object')
    >>> why(b'{"uid": [7], "title": "T", "content": "C"}'), why(b'{"uid": "B1", "title": "T"}')
    ('its uid is not text', 'its content is missing')
    >>> why(b'{"uid": "", "title": "T", "content": "C"}')
    "its uid '' cannot be cited: 1 to 100 printable characters, no spaces or brackets"
    >>> catalogue_row(b'{"uid": 7, "title": "T", "content": "C"}')["uid"]
    '7'
    """
    try:  # a BOM before the first line (Windows editors write one), as prepare reads it
        row = orjson.loads(line.removeprefix(BOM))
    except orjson.JSONDecodeError:
        raise CorruptRow("not JSON (a cut line?)") from None
    if not isinstance(row, dict):
        raise CorruptRow("not a JSON object")
    if type(row.get("uid")) is int:  # a number is a uid as text, as prepare reads one
        row["uid"] = str(row["uid"])
    for key in TEXT_FIELDS:
        if not isinstance(row.get(key), str):
            raise CorruptRow(f"its {key} is {'not text' if key in row else 'missing'}")
    if not isinstance(row.get("split", ""), str):
        raise CorruptRow("its split is not text")
    if not (uid := row["uid"]) or not citable(uid):  # prepare refuses the same (``citable``)
        raise CorruptRow(
            f"its uid {uid[:60]!r} cannot be cited: 1 to {UID_MAX_CHARS} printable "
            "characters, no spaces or brackets"
        )
    return row
