"""Numbers in a question and a title: another year, volume or edition of a series is another
product, however far ahead retrieval puts it (read by the gate, answering/doubt.py).

"Tolkien Calendar 2015" had "Tolkien Calendar 2014: The Hobbit" 8.9 times ahead of the second
record on the real dev questions: a title that numbers a word the question numbers otherwise is
another year or volume (``names_other_numbers``); "house of cards ... the first one" against
"(The Accursed Kings, Book 3)" asks for the first of a series where the title numbers a later
one (``asks_first_of_a_later``).
"""

from __future__ import annotations

import re
from itertools import pairwise

from bm25s.stopwords import STOPWORDS_EN

from amazon_sft.data.series import ROMAN

WORD_OR_NUMBER = re.compile(r"[^\W\d_]+|\d+")
FIRST = re.compile(
    r"\b(?:first (?:one|book|novel|volume|part|title|instal+ment)"
    r"|(?:book|volume|vol|part) (?:one|1|i)\b)",
    re.IGNORECASE,
)
"""A question or title naming the first of a series."""
LATER = re.compile(
    r"\b(?:(?:book|volume|vol|part|no)\.? ?#?(?:[2-9]|[1-9]\d)|#(?:[2-9]|[1-9]\d)|"
    r"(?:ii|iii|iv|v|vi|vii|viii|ix|x)(?![\w'-]))\b",
    re.IGNORECASE,
)
"""A title numbering a later one of a series: "Book 3", "#12", "II" (not "V-Day", "X's")."""
YEAR = re.compile(r"(?:19|20)\d\d")
"""A year before the word it numbers ("2014 Collins Road Atlas"): read as that word's number. A
year and a volume number never tell two products apart ("second world war 1939 photos" and
*World War II in Photos*)."""
OPENS_A_YEAR = frozenset({"", "the", "a", "an", "my", "our", "your", "this", "that", "his", "her"})
"""What may come before a year that numbers the next word ("the 2014 Collins atlas"), not "in
2014 Christmas songs" or "since 2014"."""


def numbered_words(text: str) -> dict[str, set[str]]:
    """Each word directly followed by a number (punctuation between them aside) -> the numbers.
    Not a stop word ("the 90s" and "The 1993 Pulitzer" number no series), nor a decade ("90s",
    "1990s": a span of years, not one).

    >>> found = numbered_words("Tolkien Calendar 2014: The Hobbit, Book #3 and book 4")
    >>> {word: sorted(numbers) for word, numbers in found.items()}
    {'calendar': ['2014'], 'book': ['3', '4']}
    >>> numbered_words("Lumio T20"), numbered_words("416 illustrations")
    ({'t': {'20'}}, {})
    >>> numbered_words("Rebellion (Matthew Hawkwood, No. 5)")  # "no" is a stop word, not here
    {'no': {'5'}}
    >>> numbered_words("reports from the 90s Balkan war"), numbered_words("music of 1960s")
    ({}, {})
    >>> numbered_words("2014 Collins Road Atlas"), numbered_words("The Kitchen Diaries II")
    ({'collins': {'2014'}}, {'diaries': {'2'}})
    >>> numbered_words("published in 2014 by Collins"), numbered_words("a 1990s jukebox")
    ({}, {})
    >>> numbered_words("in 2014 Christmas songs")
    {}
    """
    tokens = numbers_read(text)
    out: dict[str, set[str]] = {}
    for (word, number), after in zip(pairwise(tokens), [*tokens[2:], ""]):
        if (word in STOPWORDS_EN and word != "no") or after == "s":  # "No. 5" numbers one
            continue
        if number.isdigit() and not word.isdigit():
            out.setdefault(word, set()).add(number)
    for before, year, word in zip(["", *tokens], tokens, tokens[1:]):
        opens = before in OPENS_A_YEAR and YEAR.fullmatch(year)
        if opens and word.isalpha() and word not in {*STOPWORDS_EN, "s"}:
            out.setdefault(word, set()).add(year)
    return out


def numbers_read(text: str) -> list[str]:
    """The text's words and numbers, lower-cased, a Roman numeral as its number (``ROMAN``).

    >>> numbers_read("The Kitchen Diaries II, Malcolm X")
    ['the', 'kitchen', 'diaries', '2', 'malcolm', 'x']
    """
    return [ROMAN.get(t, t) for t in WORD_OR_NUMBER.findall(text.casefold())]


def names_other_numbers(question: str, title: str) -> bool:
    """True when a word of the question is followed by a number, the same word in the title by
    another, and the title names none of the question's numbers: another year or volume of a
    series ("Calendar 2015" / "Calendar 2014", "Book 20" / "Book 7"). Numbers elsewhere (an
    age, a weight, "416 illustrations") and numbers spelt out ("the second book") are not read.

    >>> names_other_numbers("Tolkien Calendar 2015", "Tolkien Calendar 2014: The Hobbit")
    True
    >>> names_other_numbers("killer su doku book 1", "The Times Killer Su Doku Book 15")
    True
    >>> names_other_numbers("Tolkien Calendar 2014", "Tolkien Calendar 2014: The Hobbit")
    False
    >>> names_other_numbers("a soft toy for a 3 year old", "Bright Turtle Plush Toy #148")
    False
    >>> names_other_numbers("calendar 2015", "Calendar 2014 and 2015 (two years)")
    False
    >>> names_other_numbers("second world war 1939 photos", "World War II in Photos")
    False
    >>> names_other_numbers("kitchen diaries III", "The Kitchen Diaries II"), names_other_numbers(
    ...     "2015 Collins Road Atlas", "2014 Collins Road Atlas")
    (True, True)
    """
    asked, named = numbered_words(question), numbered_words(title)
    in_title = {t for t in numbers_read(title) if t.isdigit()}
    return any(
        _numbered_otherwise(numbers, named.get(word, set())) and not numbers & in_title
        for word, numbers in asked.items()
    )


def _numbered_otherwise(asked: set[str], named: set[str]) -> bool:
    """Both number the word alike (years, or volumes) and with no number in common.

    >>> _numbered_otherwise({"2015"}, {"2014"}), _numbered_otherwise({"1939"}, {"2"})
    (True, False)
    """
    return any(
        (ours := {n for n in asked if bool(YEAR.fullmatch(n)) is year})
        and (theirs := {n for n in named if bool(YEAR.fullmatch(n)) is year})
        and not ours & theirs
        for year in (True, False)
    )


def asks_first_of_a_later(question: str, title: str) -> bool:
    """True when the question asks for the first of a series ("the first one", "book one",
    "part 1") and the title numbers a later one ("II", "Book 3", "#4") and no first: "nigel
    slater kitchen diaries, the first one not II" against "The Kitchen Diaries II", "game of
    thrones book one" against "The Poisoned Crown (The Accursed Kings, Book 3)". Spelt-out and
    ordinal numbers, which ``names_other_numbers`` does not read.

    >>> [asks_first_of_a_later(question, title) for question, title in [
    ...     ("the kitchen diaries, the first one", "The Kitchen Diaries II"),
    ...     ("storm of swords part 1", "A Storm of Swords: Part 1 (Book 3)"),  # numbers the first
    ...     ("Barbara Erskine's first novel", "Lady of Hay"),  # numbers nothing
    ... ]]
    [True, False, False]
    """
    return bool(FIRST.search(question)) and bool(LATER.search(title)) and not FIRST.search(title)
