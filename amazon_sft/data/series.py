"""Which products belong to one series: the grounded examples' same-series distractors
(data/grounded.py), the products a shopper confuses most.

A series shows in a catalogue title two ways, and the real AmazonTitles rows use both:

- a series named in parentheses, with a number or a series word: "Dark Blood (Logan McRae,
  Book 6)" and "Dying Light (Logan McRae, Book 2)", "Perelandra (Cosmic Trilogy)";
- the same title with another number, year, volume or edition: "The Best American Poetry 1991"
  and "The Best American Poetry: 1992", "2013 Collins Britain Big Road Atlas" and 2014's, "Times
  Crossword Book 12 (Bk. 12)" and 13, "The Kitchen Diaries II" (and "The Kitchen Diaries").

The first form of this rule read only titles that differ by a "Book N" marker (the generated
catalogue's), so on the real rows no product had a series distractor (a review counted 0 in
``grounded_series_distractors``); this one joins 23 of the 1,000 real rows to a sibling that
can be one (54 to another title, 31 of them sharing its description: an edition, which is never
a distractor).
"""

from __future__ import annotations

import re

MARKER = re.compile(
    r"[,:;]?\s*\b(?:book|bk|vol|volume|part|no|number|episode|season)\.?\s*#?\s*(?:\d+|[ivx]+)\b"
    r"|#\s*\d+",
    re.IGNORECASE,
)
"""A volume's marker and its number: "Book 6", "Bk. 12", "Vol. 5", "#12", "Part II"."""
EDITION = re.compile(
    r"\b(?:(?:first|second|third|fourth|fifth|revised|new|\d+(?:st|nd|rd|th))\s+)?edition\b",
    re.IGNORECASE,
)
ROMAN = {"ii": "2", "iii": "3", "iv": "4", "vi": "6", "vii": "7", "viii": "8", "ix": "9"}
"""Roman numerals read as the number they write ("Kitchen Diaries II" is "Kitchen Diaries 2";
the retrieval gate reads them too, answering/series_numbers.py). Not "i", "v" or "x": a pronoun
or a letter ("Malcolm X")."""
NUMBER = re.compile(rf"\b\d+(?:st|nd|rd|th)?\b|\b(?:{'|'.join(ROMAN)})\b", re.IGNORECASE)
"""A number, an ordinal or a Roman numeral (``ROMAN``)."""
SERIES_WORD = re.compile(
    r"\b(?:series|novels?|trilogy|saga|chronicles|quartet|sequence|mysteries|collection)\b",
    re.IGNORECASE,
)
PARENTHESES = re.compile(r"\(([^()]*)\)")
MAIN_END = re.compile(r"\s*(?::|;| - )")
"""Where a title's main part ends and its subtitle begins."""
WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
NOT_A_NAME = frozenset({"the", "a", "an", "series"})


def _words(text: str) -> list[str]:
    return [w.casefold() for w in WORD.findall(text)]


def series_keys(title: str) -> frozenset[str]:
    """What joins a title to its series: the series named in parentheses, and the title without
    its numbers, years, markers and editions (two words at least); empty for a title that names
    no series and no number.

    >>> sorted(series_keys("Dark Blood (Logan McRae, Book 6)"))
    ['series:logan mcrae']
    >>> sorted(series_keys("The Best American Poetry: 1992"))
    ['title:the best american poetry']
    >>> sorted(series_keys("The Kitchen Diaries II: A Year"))
    ['title:the kitchen diaries', 'title:the kitchen diaries a year']
    >>> series_keys("Harbor Tales, Vol. 2") == series_keys("Harbor Tales (Book 5)")
    True
    >>> series_keys("Chess for Beginners, Third Edition"), series_keys("Harbor Tales")
    (frozenset({'title:chess for beginners'}), frozenset())
    """
    keys = set()
    rest = title
    for group in PARENTHESES.findall(title):
        if MARKER.search(group) or SERIES_WORD.search(group):
            name = [w for w in _words(MARKER.sub(" ", group)) if w not in NOT_A_NAME]
            if name:
                keys.add("series:" + " ".join(name))
                rest = rest.replace(f"({group})", " ")
    for part in dict.fromkeys((rest, _main(rest))):  # "The Kitchen Diaries II: A Year of ..."
        stem = NUMBER.sub(" ", EDITION.sub(" ", MARKER.sub(" ", part)))
        if stem != part and len(_words(stem)) >= 2:
            keys.add("title:" + " ".join(_words(stem)))
    return frozenset(keys)


def _main(title: str) -> str:
    """The title before its subtitle."""
    return MAIN_END.split(title, maxsplit=1)[0]


def sibling_keys(title: str) -> frozenset[str]:
    """``series_keys``, and the title's own words: a series' first volume often has no number
    ("The Kitchen Diaries" beside "The Kitchen Diaries II").

    >>> series_keys("The Kitchen Diaries II: Suppers") & sibling_keys("The Kitchen Diaries: A Year")
    frozenset({'title:the kitchen diaries'})
    """
    return series_keys(title) | {"title:" + " ".join(_words(t)) for t in (title, _main(title))}


def series_query(keys: frozenset[str]) -> str:
    """The words to retrieve a series' other products by.

    >>> series_query(series_keys("Dark Blood (Logan McRae, Book 6)"))
    'logan mcrae'
    """
    return " ".join(key.split(":", 1)[1] for key in sorted(keys))
