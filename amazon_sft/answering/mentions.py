"""A first record whose description names, as another product, the title the question asks for.

Book descriptions praise the author's other books ("From the author of Raising Boys", "Last seen
in Flashman and the Tiger", "The absorbing sequel to the author's Kaffir Boy", "the author of such
classics as A Short Walk in the Hindu Kush"). Asked about that other book, which the catalogue
does not have, retrieval puts this record far ahead of the rest (its description has the asked
title's words, its title some of them), so its lead says "sure" about the wrong product: 32 times
ahead for "Raising Boys by Steve Biddulph" against "Steve Biddulph's Raising Girls". When the
description names, as a phrase, a title the question asks for and the record's own title is
another, the record is a sibling, however far ahead (``retrieval_doubtful``).

Three shapes, read in a short English question only (``title_words.is_short``: a long one, a
description or a need, quotes the description's phrases by design), without the author after
"by" (descriptions name the author beside the title):

- a sibling: words the question shares with the title, then, within ``SIBLING_GAP`` words, one
  the title lacks where the title goes on otherwise ("Raising Boys" / "Raising Girls");
- the opening: the question asks the first words of the title's main part (two or more, before
  a colon or a bracket) and none of the rest, and the description names those words followed by
  something else ("Kaffir Boy" / "Kaffir Boy in America");
- elsewhere: the title has none of the question's words, and the description has
  ``MENTION_WORDS`` or more of them in a row ("A Short Walk in the Hindu Kush" / "Round Ireland
  in Low Gear").
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

from amazon_sft.answering.title_words import (
    MAIN_PART,
    has_word,
    is_lookup_word,
    is_short,
    names_part,
    words_of,
)

SIBLING_GAP = 3
"""At most this many words from the last title word the question shares to the one it asks in
the title's stead ("flashman and the tiger": 3)."""
MENTION_WORDS = 3
"""Words to look up that a title sharing none of the question's words must find in a row in its
description: two ("Jane Goodall" in a question about her book, which the description names) is
an author, not a title."""


def description_names_asked_title(question: str, title: str, content: str) -> str | None:
    """The phrase of the ``question`` by which the record's description (``content``) names
    another title than the record's own, or None. See the module's three shapes.

    >>> girls = "From the author of Raising Boys, a book on raising girls."
    >>> description_names_asked_title("raising boys steve biddulph", "Raising Girls", girls)
    'raising boys'
    >>> description_names_asked_title("raising girls steve biddulph", "Raising Girls", girls)
    >>> march = "Last seen in<i>Flashman and the Tiger</i>, Flashman rides again."
    >>> description_names_asked_title("Flashman and the Tiger", "Flashman on the March", march)
    'flashman and the tiger'
    >>> description_names_asked_title("flashman on the march", "Flashman on the March", march)
    >>> sequel = "The sequel to Kaffir Boy: his life in America."
    >>> description_names_asked_title("kaffir boy mark mathabane", "Kaffir Boy in America", sequel)
    'kaffir boy'
    >>> description_names_asked_title("kaffir boy in america", "Kaffir Boy in America", sequel)
    >>> newby = "The author of A Short Walk in the Hindu Kush cycles round Ireland."
    >>> description_names_asked_title("a short walk in the hindu kush", "Round Ireland", newby)
    'short walk in the hindu kush'
    >>> description_names_asked_title("Tell me about Raising Boys, please!", "Raising Girls", girls)
    'raising boys'
    >>> description_names_asked_title("vocês têm o Raising Boys?", "Raising Girls", girls)
    """
    part = names_part(question)
    if part is None:
        return None
    asked = words_of(part)
    if not is_short(asked):
        return None
    described = " ".join(words_of(content))
    titled = words_of(title)
    for phrase in _sibling_phrases(asked, titled):
        if _names(described, phrase):
            return phrase
    opening = _opening(asked, words_of(MAIN_PART.split(title)[0]))
    if opening and _names(described, *opening):
        return opening[0]
    if not any(has_word(w, set(titled)) for w in asked if is_lookup_word(w)):
        for phrase in _runs(asked):
            if _names(described, phrase):
                return phrase
    return None


def _sibling_phrases(asked: list[str], titled: list[str]) -> list[str]:
    """Question phrases from a title word it shares to the first word to look up it has in the
    title's stead (``SIBLING_GAP``), the title having that word nowhere."""
    phrases, shared = [], []  # shared: positions of title words the question has, so far
    matcher = SequenceMatcher(None, asked, titled, autojunk=False)
    for op, i1, i2, _, _ in matcher.get_opcodes():
        if op == "equal":
            shared += [i for i in range(i1, i2) if is_lookup_word(asked[i])]
            continue
        if op != "replace" or not shared:
            continue
        word_at = next((i for i in range(i1, i2) if is_lookup_word(asked[i])), None)
        if word_at is None or word_at - shared[-1] > SIBLING_GAP:
            continue
        if not has_word(asked[word_at], set(titled)):
            phrases.append(" ".join(asked[shared[-1] : word_at + 1]))
    return phrases


def _opening(asked: list[str], main: list[str]) -> tuple[str, str] | None:
    """(the main title's opening words the question asks, the main title's next word) when the
    question has two or more of its first words to look up, in order, and none of the rest."""
    looked_up = [i for i, w in enumerate(main) if is_lookup_word(w)]
    question = set(asked)
    asked_n = next((n for n, i in enumerate(looked_up) if not has_word(main[i], question)), None)
    if asked_n is None or asked_n < 2:
        return None
    if any(has_word(main[i], question) for i in looked_up[asked_n:]):
        return None
    end = looked_up[asked_n - 1] + 1
    phrase = " ".join(main[looked_up[0] : end])
    return (phrase, main[end]) if f" {phrase} " in f" {' '.join(asked)} " else None


def _runs(asked: list[str]) -> list[str]:
    """The question's runs of words with ``MENTION_WORDS`` or more to look up, longest first."""
    runs = [
        asked[i:j]
        for i in range(len(asked))
        for j in range(i + 1, len(asked) + 1)
        if is_lookup_word(asked[i]) and is_lookup_word(asked[j - 1])
    ]
    runs = [r for r in runs if sum(map(is_lookup_word, r)) >= MENTION_WORDS]
    return [" ".join(r) for r in sorted(runs, key=len, reverse=True)]


def _names(described: str, phrase: str, not_before: str | None = None) -> bool:
    """Whether the description has the phrase (not followed by ``not_before``). No word boundary
    before it: HTML glues a mention to the word before ("in<i>Flashman and the Tiger")."""
    for found in re.finditer(rf"{re.escape(phrase)}\b", described):
        if not_before is None or described[found.end() :].split()[:1] != [not_before]:
            return True
    return False
