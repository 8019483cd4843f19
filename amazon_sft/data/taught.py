"""What prepare taught of each training product: the ways the stable hashes pick for it
(``taught_ways``), and the products none of whose picked ways was kept after all
(``not_taught``: every prompt too long for a row, or a grounded product asked about only as an
abstention), which the probes and the end-to-end report leave out of "seen"."""

from __future__ import annotations

from amazon_sft.data.grounded import uid_share
from amazon_sft.data.split import ProbeSample

NOT_TAUGHT = "not_taught.txt"
"""A prepared folder's training products that ``taught_ways`` picks and prepare did not teach
after all, one uid a line (``not_taught``): eval's "seen products" leave them out."""


def taught_ways(uid: str, data) -> list[str]:
    """How prepare teaches a training product, by the stable hashes that pick it: closed-book
    (``data.closed_book_fraction``), grounded (``data.grounded_fraction``), both or neither."""
    closed = uid_share(uid, "closed:") < data.closed_book_fraction
    grounded = uid_share(uid, "grounded:") < data.grounded_fraction
    return [way for way, yes in (("closed_book", closed), ("grounded", grounded)) if yes]


def probe_rows(probe: ProbeSample, untaught: set[str], taught_grounded: set[str]) -> list[dict]:
    """The probe's rows less what was not taught after all: a product whose every closed-book
    prompt was too long for the rows (``prompt_too_long``) was not taught closed-book; one
    without a kept grounded example answered with its own record (every one too long, or only
    abstentions) was not taught grounded."""
    rows = []
    for row in probe.records():
        if "taught" in row:
            ways = row["taught"]
            if row["uid"] in untaught:
                ways = [w for w in ways if w != "closed_book"]
            if row["uid"] not in taught_grounded:
                ways = [w for w in ways if w != "grounded"]
            if not ways:
                continue
            row = {**row, "taught": ways}
        rows.append(row)
    return rows


def not_taught(data, closed_untaught: set[str], grounded_unanswered: set[str]) -> list[str]:
    """The uids ``taught_ways`` picks, none of whose picked ways was kept: each closed-book
    prompt too long (``closed_untaught``), no grounded example kept that answers with the
    product's own record (``grounded_unanswered``: only abstentions, or every one too long).
    An outside review: eval counted them as seen, 9% of them at the default fractions.

    >>> from types import SimpleNamespace
    >>> both = SimpleNamespace(closed_book_fraction=1.0, grounded_fraction=1.0)
    >>> not_taught(both, {"a", "b"}, {"b", "c"})  # a: taught grounded; c: closed-book
    ['b']
    >>> grounded_only = SimpleNamespace(closed_book_fraction=0.0, grounded_fraction=1.0)
    >>> not_taught(grounded_only, set(), {"c"})
    ['c']
    """
    dropped = []
    for uid in sorted(closed_untaught | grounded_unanswered):
        ways = taught_ways(uid, data)
        kept = [
            way
            for way in ways
            if uid not in (closed_untaught if way == "closed_book" else grounded_unanswered)
        ]
        if ways and not kept:
            dropped.append(uid)
    return dropped
