"""A short question that names a title, against a first record whose main title it does not name.

Shoppers ask for famous books the catalogue may lack by their title, perhaps with the author, in
lower case ("ross poldark winston graham", "harry poter and the philosophers stone"). Retrieval
then finds a record by what it shares with them besides its own title: the series in brackets
("The Loving Cup (The Poldark novels)"), a word of a subtitle (the Dark Is Rising box set ending
"... Over Sea, Under Stone"), one common word ("A Greedy Man in a Hungry World" for "the very
hungry caterpillar board book"), and, with nothing better, far enough ahead to look sure. A
record asked for by its title has its main title (before a subtitle, a series or an edition) in
the question, or most of the question's words in its title; these have neither, however far
ahead they are (``doubt.retrieval_doubtful``).

Read only where the question names a title: a short English question (``title_words.is_short``)
without the words that describe a need or a product instead ("about", "my", "I want": "jane
goodall's book about living with wild chimpanzees" finds "In the Shadow of Man" by its
description), and without the author after "by" (a title often leaves the author out; the question is
short with it: a description may say "by" too, "lured to an island by an unknown host").
"""

from __future__ import annotations

from amazon_sft.answering.title_words import (
    has_word,
    is_lookup_word,
    is_short,
    main_title_words,
    names_part,
    words_of,
)

DESCRIBING_WORDS = frozenset(
    {"about", "my", "i", "we", "our", "me", "want", "wants", "need", "needs", "looking"}
    | {"that", "which", "where"}
)
"""Words of a question that describes what the shopper wants, or the product by what it does
("toy safe for ages 4 and up that measures 898 centimetres"), rather than naming a title."""
MAIN_TITLE_SHARE = 0.25
"""At most this share of the main title's words in the question: one word of four is chance
("hungry"), two of four is the title asked in part or with a typo."""
TITLE_SHARE = 1 / 3
"""At most this share of the question's words in the whole title: the subtitle or the series
asked for ("over sea under stone susan cooper" has 2 of 4) is that record."""


def asks_another_title(question: str, title: str) -> bool:
    """True when a short English ``question`` that names a title names too little of the
    record's ``title`` to be about it: at most ``MAIN_TITLE_SHARE`` of its main title's words
    and at most ``TITLE_SHARE`` of the question's words in the whole title (plurals and typos
    count as the word, as ``title_words.has_word`` reads them).

    >>> asks_another_title("ross poldark winston graham", "The Loving Cup (The Poldark novels)")
    True
    >>> asks_another_title("poldark the loving cup", "The Loving Cup (The Poldark novels)")
    False
    >>> asks_another_title("Raising Boys by Steve Biddulph", "Raising Girls")
    False
    >>> asks_another_title("jane goodall's book about wild chimpanzees", "In the Shadow of Man")
    False
    >>> asks_another_title("tem Onde Vivem os Monstros?", "Collins Gem Latin Dictionary")
    False
    >>> asks_another_title("mystery where ten strangers are lured to an island by an unknown "
    ...                    "host and killed one by one", "And Then There Were None")
    False
    """
    part = names_part(question)
    if part is None:
        return False
    whole, words = words_of(question), words_of(part)  # a description may say "by" too
    if DESCRIBING_WORDS.intersection(whole) or not is_short(whole):
        return False
    asked = [w for w in dict.fromkeys(words) if is_lookup_word(w)]
    main = main_title_words(title)
    if not asked or not main:
        return False
    in_question, titled = set(words), set(words_of(title))
    main_asked = sum(has_word(w, in_question) for w in main)
    asked_titled = sum(has_word(w, titled) for w in asked)
    return main_asked <= MAIN_TITLE_SHARE * len(main) and asked_titled <= TITLE_SHARE * len(asked)
