"""The catalogue side of ``amazon-sft eval --questions FILE``: the products a question file
names, read from the prepared ``catalogue.jsonl`` (description and split), titles resolved to
the catalogue's uids and checked against them, and the index without a product a question
takes out (``WithoutRows``). The file itself: ``question_file``; scoring: ``end_to_end``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from amazon_sft.answering.index import Source
from amazon_sft.config import CleanConfig
from amazon_sft.data.catalogue_row import CatalogueRow, CorruptRow, catalogue_row
from amazon_sft.data.cleaning import clean_text
from amazon_sft.data.split import normalise_title
from amazon_sft.errors import UserError, reading
from amazon_sft.evaluation.question_file import ShopperQuestion, refuse_repeats, short

CATALOGUE_SPLITS = {"heldout": "held-out", "train": "seen", "untaught": "untaught"}
"""The catalogue's ``split`` of a product -> its group in the report (``untaught``: kept in the
catalogue over ``data.max_train_products``, never taught; ``read_products`` also puts there a
training product that prepare taught neither way)."""


@dataclass(frozen=True)
class Product:
    uid: str
    content: str
    group: str
    """held-out, seen or untaught (``CATALOGUE_SPLITS``)."""


def refuse_absent_naming_a_product(
    catalogue: Path, questions: list[ShopperQuestion], path: Path | str = "--questions"
) -> None:
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
                f"{path} line {q.line}: absent, but {q.text!r} is the title of product "
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
    refuse_repeats(path, out, resolved=True)  # one product named by uid and by title
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


def read_products(
    catalogue: Path,
    questions: list[ShopperQuestion],
    taught: Callable[[str], bool] | None = None,
    path: Path | str = "--questions",
) -> tuple[dict[str, Product], dict[str, frozenset[int]]]:
    """(uid -> product for every uid the questions name, removed uid -> the catalogue rows to
    take out of retrieval: the product and its twins). Two streaming passes over
    ``catalogue.jsonl`` (the second only when a question removes a product), keeping only the
    products asked about: memory grows with the questions, not the catalogue. ``taught``: does
    prepare teach this training product at all (``prepare.taught_ways``); one it does not is
    ``untaught``, not seen. ``path``: the question file, named in a refusal."""
    named = {q.uid for q in questions if q.uid} | {q.removed for q in questions if q.removed}
    products: dict[str, Product] = {}
    rows: dict[str, int] = {}
    keys: dict[str, tuple[str, str, str]] = {}  # uid -> (normalised title, content, title)
    for i, rec in enumerate(catalogue_records(catalogue)):
        uid = str(rec["uid"])
        if uid in named and uid not in products:
            group = CATALOGUE_SPLITS.get(rec.get("split", "train"), "seen")
            if group == "seen" and taught is not None and not taught(uid):
                group = "untaught"  # both fractions under 1: neither closed-book nor grounded
            products[uid] = Product(uid, rec["content"], group)
            rows[uid] = i
            keys[uid] = (normalise_title(rec["title"]), rec["content"], rec["title"])
    _refuse_titles_beside_other_uids(path, catalogue, questions, keys)
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


def _refuse_titles_beside_other_uids(
    path: Path | str,
    catalogue: Path,
    questions: list[ShopperQuestion],
    keys: dict[str, tuple[str, str, str]],
) -> None:
    """A line whose ``title`` is not the title of its ``uid`` (or ``absent`` uid) in the
    catalogue, as the tool shows it or as the raw row wrote it (cleaned as prepare cleans a
    title: ``&quot;``, tags)."""
    for q in questions:
        uid = q.uid or q.removed
        if not q.title_beside_uid or uid not in keys:
            continue  # a uid the catalogue lacks is skipped and counted (keep_answerable)
        given = q.title_beside_uid
        cleaned = clean_text(given, CleanConfig(), Counter(), "title")
        if keys[uid][0] not in (normalise_title(given), normalise_title(cleaned)):
            field = "uid" if q.uid else "absent"
            raise UserError(
                f"{path} line {q.line}: {field!r} {short(uid)} is {short(keys[uid][2])} in "
                f"{catalogue}, but 'title' says {short(given)}: give the uid or the title of "
                "the product asked about, not both of two"
            )


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
