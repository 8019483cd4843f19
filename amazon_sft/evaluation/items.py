"""What evaluation asks: one ``EvalItem`` per product and mode, built by the same code that
builds training examples (prompts.PromptFormat for closed-book, data.grounded for grounded).

Modes, each a split of its own in the report:

- ``heldout`` / ``seen``: closed-book, the canonical question (phrasing 0) and nothing else;
- ``heldout grounded`` / ``seen grounded``: the same question with ``context_records`` catalogue
  records, the right one among hard negatives retrieved from the whole catalogue (the index
  answering uses), placed as in training; the answer should quote it and cite its uid;
- ``heldout absent`` / ``seen absent``: the same, with the right record (and its editions and
  twins) left out: the answer should say the catalogue has no such product.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from amazon_sft.data.catalogue_row import CatalogueRow, CorruptRow, catalogue_row
from amazon_sft.data.grounded import GroundedBuilder
from amazon_sft.errors import UserError
from amazon_sft.prompts import ContextRecord, PromptFormat

MODES = ("closed", "grounded", "both")


@dataclass
class EvalItem:
    uid: str
    title: str
    prompt: str
    """The full prompt text."""
    reference: str
    """What the answer is scored against: the whole description, or the abstention."""
    target: str
    """The teacher-forced answer for reference perplexity (what training would teach)."""
    context: list[ContextRecord] = field(default_factory=list)
    """Grounded: the records the prompt shows."""
    absent: bool = False
    """Grounded: the right record was left out; the right answer is the abstention."""


def closed_items(rows: list[dict], fmt: PromptFormat) -> list[EvalItem]:
    return [
        EvalItem(r["uid"], r["title"], fmt.render(r["title"], 0), r["content"], r["content"])
        for r in rows
    ]


def grounded_items(rows: list[dict], builder: GroundedBuilder, absent: bool) -> list[EvalItem]:
    examples = builder.build(rows, phrasing=0, absent=absent, train_only=False)
    return [
        EvalItem(
            r["uid"],
            r["title"],
            e.prompt,
            e.answer if absent else r["content"],
            e.answer,
            e.records,
            absent,
        )
        for r, e in zip(rows, examples)
    ]


def taught(rows: list[CatalogueRow], way: str) -> list[CatalogueRow]:
    """The rows prepare taught ``way`` (``closed_book`` or ``grounded``): a seen-probe row names
    how its product was taught (``taught``); held-out rows, and the probes of prepares before
    that field, have none and are all kept.

    >>> [r["uid"] for r in taught([{"uid": "a", "taught": ["grounded"]}, {"uid": "b"}], "closed_book")]
    ['b']
    """
    return [r for r in rows if way in r.get("taught", (way,))]


SPLIT_FILES = {"heldout": "heldout", "seen": "seen_probe"}
"""Split name -> its file in the prepared folder (``NAME.jsonl``)."""
WAYS = {"closed": ("closed_book",), "grounded": ("grounded",), "both": ("closed_book", "grounded")}
"""The ways of teaching a product each ``--mode`` scores (``taught``)."""


def fewer_than_asked(splits: dict[str, list], n: int, mode: str) -> list[str]:
    """A note for each split and way ``mode`` scores that holds fewer titles than ``--n``
    asks, counted as ``build_items`` picks them: they were scored short, unsaid (an outside
    trial)."""
    return [
        f"eval: {have} {split} titles taught {way.replace('_', '-')} (prepare chose them, "
        f"{SPLIT_FILES[split]}.jsonl), fewer than --n {n}: all {have} are scored"
        for split, rows in splits.items()
        for way in WAYS[mode]
        if (have := len(taught(rows, way))) < n
    ]


def build_items(
    splits: dict[str, list[dict]],
    mode: str,
    fmt: PromptFormat,
    builder: GroundedBuilder | None,
    n: int,
) -> dict[str, list[EvalItem]]:
    """Report split name -> at most ``n`` items each, closed-book first; a seen split asks about
    products taught the way it scores, and is left out when none was (``closed_book_fraction``
    0: no seen closed-book split).

    >>> rows = [{"uid": "a", "title": "T", "content": "C", "taught": ["grounded"]}]
    >>> list(build_items({"seen": rows}, "closed", None, None, 5))
    Traceback (most recent call last):
    amazon_sft.errors.UserError: no product of seen was taught the way --mode closed scores: choose another --mode (or --splits heldout)
    """
    out: dict[str, list[EvalItem]] = {}
    if "closed_book" in WAYS[mode]:
        for split, rows in splits.items():
            if asked := taught(rows, "closed_book")[:n]:  # none: data.closed_book_fraction=0
                out[split] = closed_items(asked, fmt)
    if "grounded" in WAYS[mode]:
        for split, rows in splits.items():
            if asked := taught(rows, "grounded")[:n]:
                out[f"{split} grounded"] = grounded_items(asked, builder, absent=False)
                out[f"{split} absent"] = grounded_items(asked, builder, absent=True)
    if not out:
        raise UserError(
            f"no product of {', '.join(splits)} was taught the way --mode {mode} scores: "
            "choose another --mode (or --splits heldout)"
        )
    return out


def read_eval_rows(path: Path) -> list[CatalogueRow]:
    """The rows of an eval file, each checked (uid, title, content as strings); eval asks the
    first ``--n`` of those taught the way it scores (``items.build_items``)."""
    if not path.is_file():
        raise UserError(
            f"{path} not found: run amazon-sft prepare (it writes heldout.jsonl and seen_probe.jsonl)"
        )
    rows = []
    with open(path, "rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            try:
                rows.append(catalogue_row(line))
            except CorruptRow as err:
                raise UserError(
                    f"{path} line {line_no}: {err}; re-run amazon-sft prepare"
                ) from None
    if not rows:
        raise UserError(f"{path} is empty: prepare held out nothing (raise data.heldout_fraction)")
    return rows
