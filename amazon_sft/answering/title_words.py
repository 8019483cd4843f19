"""The words of a question that can name a product, read the same way by every rule of the
retrieval gate (answering/doubt.py, answering/mentions.py): as the index splits words, without
the words that open a question or a request, without the author after "by", and matched to a
record's words allowing a plural or a typo as the index's repair does."""

from __future__ import annotations

import re
from functools import lru_cache

from bm25s.stopwords import STOPWORDS_EN
from rapidfuzz.distance import OSA
from rapidfuzz.process import extractOne

from amazon_sft.answering.index import QUESTION_WORDS, TOKEN_PATTERN
from amazon_sft.answering.query_words import (
    PORTUGUESE_MARKERS,
    PORTUGUESE_STOP,
    english_query,
    is_portuguese,
)
from amazon_sft.answering.repair import MIN_LETTERS, max_edits

WORD = re.compile(TOKEN_PATTERN)  # as the index splits words
REQUEST_WORDS = (  # noqa: SIM905
    "who where what which how when why whose my me you does did do has have had were can could "
    "would should shall may might must summarize summarise explain recommend describe tell show "
    "give find list compare suggest according please get buy need want looking"
).split()
NOT_NAMES = frozenset({*STOPWORDS_EN, *QUESTION_WORDS, *REQUEST_WORDS})
"""Capitalized words that name nothing: stop words, and the words that open a question or a
request ("Does ...?", "Summarize ...", "My ..."; a Portuguese opener: ``names_part``)."""
SHORT_QUESTION_WORDS = 6
"""A question of at most this many words to look up (stop and question words aside) names a
title, perhaps with its author; a longer one describes a product or a need, in words a title
need not have. Chosen on the dev questions: 4 to 6 catch the same absent products; from 8 the
rules that read it fire on the asked product's own record."""
MAIN_PART = re.compile(r"\s*(?::|\(|\[|;|\. | - )")
"""Where a title's main part ends: a subtitle, a series or an edition follows."""
AUTHOR = re.compile(r"\bby\b[^,;:?!()]*", re.IGNORECASE)
""""by" and the name after it: a catalogue description often leaves out the author."""


def words_of(text: str) -> list[str]:
    """The text's words as the index splits them, lower-cased.

    >>> words_of("Last seen in<i>Flashman and the Tiger</i>")
    ['last', 'seen', 'in', 'i', 'flashman', 'and', 'the', 'tiger', 'i']
    """
    return [w.casefold() for w in WORD.findall(text)]


@lru_cache(maxsize=256)  # every rule of one gate decision reads it: put it in English once
def names_part(question: str) -> str | None:
    """The question in English without the author after "by", where names can be told apart;
    None for a Portuguese question (its title words come translated) or one all in capitals.

    >>> names_part("Raising Boys by Steve Biddulph"), names_part("tem Raising Boys do Biddulph?")
    ('Raising Boys', None)
    """
    if is_portuguese(question) or not any(c.islower() for c in question):
        return None
    return AUTHOR.sub(" ", english_query(without_portuguese_opener(question))).strip()


def without_portuguese_opener(question: str) -> str:
    """The question without the Portuguese words it opens with ("Quero comprar", "Vocês têm",
    "Quem escreveu"), when its first word is one only Portuguese has: a Portuguese question
    about an English title can read as English (the title's words outnumber its own), and its
    capitalised opener was read as a name the record lacks (41 of 300 real products refused for
    "Quero comprar {t}", a review). Only the opener: "Como", "Era" or "Entre" inside an English
    title stay names.

    >>> without_portuguese_opener("Quero comprar The Prophet"), without_portuguese_opener("Vocês têm Mog?")
    ('comprar The Prophet', 'Mog?')
    >>> without_portuguese_opener("Era of Wonders"), without_portuguese_opener("A Guide to Lake Como")
    ('Era of Wonders', 'A Guide to Lake Como')
    """
    words = question.split()
    folded = [w.strip(".,;:!?¿¡\"'").casefold() for w in words]
    if not folded or folded[0] not in PORTUGUESE_MARKERS:
        return question
    n = next(
        (i for i, w in enumerate(folded) if w not in PORTUGUESE_STOP | PORTUGUESE_MARKERS),
        len(words),
    )
    return " ".join(words[n:])


def is_short(words: list[str]) -> bool:
    """Whether lower-cased ``words`` are few enough to name a title (``SHORT_QUESTION_WORDS``).

    >>> is_short(words_of("the highly sensitive person by elaine aron"))
    True
    >>> is_short(words_of("a picture book for a toddler who loves trains, buses and tractors"))
    False
    """
    return sum(map(is_lookup_word, words)) <= SHORT_QUESTION_WORDS


def is_lookup_word(word: str) -> bool:
    """A lower-cased word that can name a product: not one letter, a number or ``NOT_NAMES``.

    >>> [w for w in words_of("Who illustrated the 2 Towers, a book?") if is_lookup_word(w)]
    ['illustrated', 'towers', 'book']
    """
    return len(word) > 1 and not word.isdigit() and word not in NOT_NAMES


def has_word(word: str, words: set[str]) -> bool:
    """The word, its plural or singular, or (longer than ``MIN_LETTERS``) a typo of it.

    >>> has_word("boy", {"boys"}), has_word("kestrl", {"kestrel"}), has_word("boys", {"girls"})
    (True, True, False)
    """
    if word in words or f"{word}s" in words or (word.endswith("s") and word[:-1] in words):
        return True
    if len(word) <= MIN_LETTERS:
        return False
    edits = max_edits(word)
    return extractOne(word, words, scorer=OSA.distance, score_cutoff=edits) is not None


def main_title_words(title: str) -> list[str]:
    """The words to look up of the title's main part (the whole title when it starts with a
    separator).

    >>> main_title_words("Italy, The Beautiful Cookbook: Authentic Recipes from the Regions")
    ['italy', 'beautiful', 'cookbook']
    >>> main_title_words("Fix-it Duck (Duck in the Truck)")
    ['fix', 'duck']
    """
    main = MAIN_PART.split(title, maxsplit=1)[0] or title
    return [w for w in dict.fromkeys(words_of(main)) if is_lookup_word(w)]
