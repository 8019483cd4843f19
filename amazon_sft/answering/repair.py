"""A question's indexed words: scaffolding dropped and Portuguese put in English
(``query_words``), then each word the index does not know repaired to an indexed word that
agrees with the rest of the question.

A misspelt word ("tuscny", "brian" for "brain", "quen") matches nothing. Its nearest indexed
words within one or two edits are candidates (rapidfuzz: a well-kept C++ library, the edit
distance with a swap of two letters as one edit, OSA); several are often equally near ("quen":
queen, quest, quean; "lynks": lynx, links). The one kept is the one that shares products with the
question's other words (the title it belongs to has them too); ties go to the nearest, then to a
title word, then to the commoner word; a word the question already has is no repair. A three-letter word has so many neighbours one edit away that a repair sharing no
product with the rest of the question is more likely wrong than right: it is left as typed (it
then matches nothing). A longer word keeps its nearest repair even when nothing agrees with it
("krabbat book": "krabat" is the only candidate and the one word that finds the product).
"""

from __future__ import annotations

from itertools import chain

import numpy as np

from amazon_sft.answering.query_words import composed, english_query

MIN_LETTERS = 3
"""Shorter words are not repaired (one edit turns them into any other short word)."""
MAX_CANDIDATES = 24
"""Nearest candidates checked against the other words (each check reads one posting list)."""
MAX_REPAIRED_WORDS = 8
"""Unknown words repaired in one question, the first ones; the rest are kept as typed. Each
repair scans the indexed words of nearby lengths: a 2,000-character question of made-up words
held ``serve`` for ~20 s at the full catalogue's vocabulary (an outside review's estimate of
it: 1.5M words). Real questions have at most 7 (the 1,607 of eval/questions)."""


def max_edits(word: str) -> int:
    """Edits allowed to repair a word: one, two from eight letters.

    >>> [max_edits(w) for w in ("quen", "kittens", "hapiness")]  # 4, 7 and 8 letters
    [1, 1, 2]
    """
    return 1 if len(word) < 8 else 2


class Repairer:
    """Repairs of an index's unknown words; holds the vocabulary by word length."""

    def __init__(self, index) -> None:
        self.index = index
        self.vocabs = (index.titles.vocab_dict, index.descriptions.vocab_dict)
        self._by_length: dict[int, list[str]] | None = None

    def known(self, word: str) -> bool:
        return any(word in vocab for vocab in self.vocabs)

    def products(self, word: str) -> np.ndarray:
        """Rows of the products whose title or description has the word (a product in both
        appears twice: ``counts[rows] += 1`` still adds one, ``max`` is unchanged)."""
        parts = []
        for retriever in (self.index.titles, self.index.descriptions):
            tid = retriever.vocab_dict.get(word)
            if tid is not None:
                indptr, indices = retriever.scores["indptr"], retriever.scores["indices"]
                parts.append(np.asarray(indices[int(indptr[tid]) : int(indptr[tid + 1])]))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def candidates(self, word: str) -> list[tuple[str, float]]:
        """(indexed word, edits) within ``max_edits``, nearest first."""
        from rapidfuzz import process
        from rapidfuzz.distance import OSA

        if self._by_length is None:  # built on the first unknown word: most queries have none
            self._by_length = {}
            # a word of both fields is listed twice: cheaper than de-duplicating a million
            # words on the first typo, and ``found`` below keeps it once
            for known in chain(*self.vocabs):
                self._by_length.setdefault(len(known), []).append(known)
        edits = max_edits(word)
        found: dict[str, float] = {}
        for n in range(len(word) - edits, len(word) + edits + 1):
            for known, distance, _ in process.extract(
                word,
                self._by_length.get(n, ()),
                scorer=OSA.distance,
                score_cutoff=edits,
                limit=MAX_CANDIDATES,
            ):
                found[known] = distance
        return sorted(found.items(), key=lambda kv: (kv[1], kv[0]))[:MAX_CANDIDATES]

    def repair_all(self, words: list[str]) -> list[str]:
        """The words, each unknown one replaced by its repair (or kept when none is trusted)."""
        todo = [
            i
            for i, w in enumerate(words)
            if len(w) >= MIN_LETTERS and not w.isdigit() and not self.known(w)
        ][:MAX_REPAIRED_WORDS]
        if not todo:
            return words
        agree = self._agreement([w for w in words if self.known(w)])
        out = list(words)
        for i in todo:
            out[i] = self.repair(words[i], agree, set(words))
        return out

    def _agreement(self, others: list[str]) -> np.ndarray:
        """Per product, how many distinct known words of the question it has."""
        counts = np.zeros(len(self.index), dtype=np.int16)
        for word in dict.fromkeys(others):
            counts[self.products(word)] += 1
        return counts

    def repair(
        self, word: str, agree: np.ndarray, asked: frozenset[str] | set[str] = frozenset()
    ) -> str:
        """The candidate whose products share the most of the question's other words (then the
        nearest, then one that is a title word, then the commoner); a three-letter word that
        agrees with none of the other words is kept. A word already ``asked`` is no repair
        (it agrees with itself, and adds nothing: "rad road" is not "road road")."""
        best, best_key = word, None
        titles = self.index.titles.vocab_dict
        for known, distance in self.candidates(word):
            if known in asked:
                continue
            rows = self.products(known)
            shared = int(agree[rows].max()) if len(rows) else 0
            key = (shared, -distance, known in titles, len(rows))
            if best_key is None or key > best_key:
                best, best_key = known, key
        others = bool(agree.any())  # a lone word has nothing to agree with: nearest it is
        if best_key is None or (others and best_key[0] == 0 and len(word) <= MIN_LETTERS):
            return word
        return best


def words_many(index, questions: list[str]) -> list[list[str]]:
    """Each question's indexed words: ``english_query``, tokenized like the index, repaired."""
    from amazon_sft.answering.index import _tokenize

    repairer = getattr(index, "_repairer", None)
    if repairer is None:
        repairer = index._repairer = Repairer(index)
    queries = [english_query(composed(q), known=repairer.known) for q in questions]
    tokens = [_capped(list(one)) for one in _tokenize(queries, return_ids=False)]
    return [repairer.repair_all(one) for one in tokens]


MAX_LOOKUP_WORDS = 64
"""Distinct words looked up a question: each costs a pass over its postings (400 took 1.45 s
at 1.3M products). The 1,792 questions of eval/questions have at most 33."""


def _capped(words: list[str]) -> list[str]:
    """The first ``MAX_LOOKUP_WORDS`` distinct words of a question that has more; the words
    as they are (repeats and all) below that."""
    if len(set(words)) <= MAX_LOOKUP_WORDS:
        return words
    return list(dict.fromkeys(words))[:MAX_LOOKUP_WORDS]
