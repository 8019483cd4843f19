"""A question that names the first record's main title and not the second's: sure at any lead.

The gate abstains when the first record is not ``--abstain-below`` times ahead of the second
(answering/doubt.py): a product that is there stands out from the rest. Not so in a series that
shares most of its title words: "france beautiful cookbook" had *France: The Beautiful Cookbook*
only 1.59 times ahead of *California, The Beautiful Cookbook*, "mog in the drak judith kerr"
*Mog in the Dark* 1.19 times ahead of *Mog's Kittens*, "Where does the author of Italy, The
Beautiful Cookbook run her cooking school?" *Italy, The Beautiful Cookbook: Authentic Recipes
from the Regions of Italy* 1.05 times ahead of *Tuscany: The Beautiful Cookbook* (whose
description names "Italy the Beautiful"): the shared words score alike, the one word that
tells them apart is one of several. These were most of the false abstentions on titles asked
by name (real dev questions). The question has every word of the first record's main title
(before a subtitle or a series, ``title_words.MAIN_PART``; plurals and typos count, as
``title_words.has_word`` reads them) and the second's title lacks one of them: the shopper
named this product, not its sibling, and the ratio does not apply. The gate's other rules
still do (another year, a swapped name, a name the record lacks...).

A main title of one word is named by chance by a long question ("stainless steel french press
coffee maker 1 litre" has the word of *Coffee: Delectable Seasons*; "I'd like to firm up my
sagging cheeks and look younger" that of *Look Who It Is!*), so one word counts only in a
short question (``title_words.is_short``: at most six words to look up). Chosen on the read
real questions (dev parts and the three read test parts): 18 false abstentions of 575 present
questions fewer, no absent product of 246 let through, no wrong record quoted
(docs/results.md).
"""

from __future__ import annotations

from amazon_sft.answering.query_words import english_query
from amazon_sft.answering.title_words import (
    has_word,
    is_lookup_word,
    is_short,
    main_title_words,
    words_of,
)
from amazon_sft.data.series import ROMAN

ROMAN_OF = {digit: roman for roman, digit in ROMAN.items()}
"""A volume's number as its title may write it ("kitchen diaries 2" names "Kitchen Diaries II")."""


def names_first_title_only(question: str, first_title: str, second_title: str) -> bool:
    """True when the question (put in English: ``query_words.english_query``) has every word of
    ``first_title``'s main title, allowing plurals and typos, ``second_title`` lacks one of
    them, and the question does not name the second's main title too, where that has a word
    of its own (then it names both: "Flashman" is named by "flashman on the march"); a
    one-word main title counts in a short question only.

    >>> names_first_title_only("france beautiful cookbook", "France: The Beautiful Cookbook",
    ...                        "California, The Beautiful Cookbook")
    True
    >>> names_first_title_only("mog in the drak judith kerr", "Mog in the Dark", "Mog's Kittens")
    True
    >>> names_first_title_only("spain the beautiful cookbook", "France: The Beautiful Cookbook",
    ...                        "California, The Beautiful Cookbook")
    False
    >>> names_first_title_only("the hobbit calendar", "The Hobbit: Movie Guide", "Hobbit Calendar")
    False
    >>> names_first_title_only("mog and the dark kittens", "Mog in the Dark", "Mog's Kittens")
    False
    >>> names_first_title_only("flashman on the mrach", "Flashman on the March",
    ...                        "The Flashman: from the Flashman Papers")
    True
    >>> names_first_title_only("stainless steel french press coffee maker 1 litre",
    ...                        "Coffee: Delectable Seasons", "French Cooking")
    False
    >>> names_first_title_only("kitchen diaries 2", "The Kitchen Diaries II", "The Kitchen Diaries")
    True
    >>> names_first_title_only("How many recipes are in the Risotto cookbook?",
    ...                        "Risotto: More than 100 Recipes", "Provence: The Beautiful Cookbook")
    True
    """
    main = main_title_words(first_title)
    asked = words_of(english_query(question))
    if not main or (len(main) == 1 and not is_short(asked)):
        return False
    in_question = {w for w in asked if is_lookup_word(w)} | {
        ROMAN_OF[w] for w in asked if w in ROMAN_OF
    }
    if not all(has_word(w, in_question) for w in main):
        return False
    in_second = set(words_of(second_title))
    if all(has_word(w, in_second) for w in main):
        return False
    second_main = main_title_words(second_title)
    own = [w for w in second_main if not has_word(w, set(main))]
    return not (own and all(has_word(w, in_question) for w in second_main))
