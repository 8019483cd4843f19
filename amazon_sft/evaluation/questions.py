"""Free-form questions about catalogue products, and retrieval recall over them.

Users do not ask "What is the description of the product "<exact title>"?". They quote part of
a title, mistype it, ask in Portuguese, ask about an attribute, or describe the product without
any title word. ``make_questions`` writes questions of each kind for products of a catalogue,
each checked to point at exactly one product (a partial title or a handful of description words
that several products share would make a question no index can answer); ``recall`` scores an
index on them, per kind. A hand-written set for the real rows lives in
``tests/fixtures/real_questions.yaml``.

This is the retrieval benchmark's own generator (``bench/retrieval_quality.py``, which
``answering/index.py``'s weights were measured with, and ``tests/test_retrieval.py``), older than
``data/question_kinds.py``, which training, eval's held-out questions and the demo use. Their
kinds share names, not rules: this ``typo`` mistypes a *partial* title once ("balsamic vineagr
description"), question_kinds' the whole title twice ("what is balsamic vinehar cookobok");
``partial`` here is ``fragment`` there. A figure names which one it was measured on.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass

KINDS = ("title", "partial", "typo", "portuguese", "attribute", "descriptive")
_WORD = re.compile(r"\w+")
_COMMON_WORDS = (
    "a an and the of for in on with to by at from is it its this that these every each new "
    "your you are be or as all made"
)
_COMMON = set(_COMMON_WORDS.split())
_FORMS = {
    "title": ["Tell me about {t}.", "What is {t}?", "Can you describe {t}?"],
    "partial": ["Tell me about the {t}", "{t}?", "do you have {t}", "info on {t} please"],
    "typo": ["Tell me about {t}", "what is {t}", "{t} description"],
    "portuguese": [
        "Me fale sobre {t}.",
        "Qual é a descrição de {t}?",
        "O que é {t}?",
        "Quais são as características de {t}?",
    ],
    "attribute": [
        "Is the {t} {a}?",
        "Does {t} come with {a}?",
        "{t}: what about {a}?",
        "O {t} tem {a}?",
    ],
    "descriptive": [
        "I'm looking for the product that mentions {a}.",
        "Which item talks about {a}?",
        "the one with {a}",
        "Procuro o produto que fala de {a}.",
    ],
}


@dataclass(frozen=True)
class Question:
    kind: str
    text: str
    uid: str
    title: str


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.casefold()) if w not in _COMMON]


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 2)
    if rng.random() < 0.5:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]  # two letters swapped
    return word[:i] + word[i + 1 :]  # a letter dropped


def _join(words: list[str], pt: bool = False) -> str:
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + (" e " if pt else " and ") + words[-1]


class _Uniqueness:
    """Which products contain every word of a set (in their title, or title + description)."""

    def __init__(self, records: list[dict]) -> None:
        self.title_words = [set(_words(r["title"])) for r in records]
        self.all_words = [t | set(_words(r["content"])) for t, r in zip(self.title_words, records)]
        self.postings: dict[str, set[int]] = defaultdict(set)
        for i, words in enumerate(self.all_words):
            for w in words:
                self.postings[w].add(i)

    def only(self, i: int, words: list[str], in_title: bool) -> bool:
        sets = [self.postings.get(w, set()) for w in words]
        hits = set.intersection(*sets) if sets else set()
        pool = self.title_words if in_title else self.all_words
        return {j for j in hits if set(words) <= pool[j]} == {i}


def make_questions(records: list[dict], per_kind: int, seed: int = 0) -> list[Question]:
    """Up to ``per_kind`` questions of each kind, each about one product that no other product
    matches as well (see module doc). Same records and seed, same questions."""
    rng = random.Random(seed)
    unique = _Uniqueness(records)
    order = list(range(len(records)))
    rng.shuffle(order)
    out: list[Question] = []
    for kind in KINDS:
        made = 0
        for i in order:
            if made == per_kind:
                break
            text = _question(kind, records[i], i, unique, rng)
            if text is not None:
                out.append(Question(kind, text, str(records[i]["uid"]), records[i]["title"]))
                made += 1
    return out


def _question(kind: str, rec: dict, i: int, unique: _Uniqueness, rng: random.Random):
    title_words = _words(rec["title"])
    form = rng.choice(_FORMS[kind])
    if kind in ("title", "portuguese"):
        return form.format(t=rec["title"]) if unique.only(i, title_words, True) else None
    if kind in ("partial", "typo", "attribute"):
        if len(title_words) < 3:
            return None
        keep = sorted(rng.sample(range(len(title_words)), len(title_words) - 1))
        part = [title_words[j] for j in keep]
        if not unique.only(i, part, True):
            return None
        if kind == "typo":
            long = [j for j, w in enumerate(part) if len(w) >= 5 and not w.isdigit()]
            if not long:
                return None
            j = rng.choice(long)
            part[j] = _typo(part[j], rng)
        if kind == "attribute":
            extra = [w for w in _words(rec["content"]) if w not in title_words and len(w) > 3]
            if not extra:
                return None
            return form.format(t=" ".join(part), a=rng.choice(extra))
        return form.format(t=" ".join(part))
    # descriptive: a few description words that are not in the title and name this product only
    pool = sorted({w for w in _words(rec["content"]) if w not in title_words and len(w) > 2})
    for size in (2, 3, 4):
        if len(pool) < size:
            return None
        words = rng.sample(pool, size)
        if unique.only(i, words, False):
            return form.format(a=_join(words, pt=form.startswith("Procuro")))
    return None


def _is_asked(found, question: Question) -> bool:
    return found.uid == question.uid if question.uid else found.title == question.title


def recall(index, questions: list[Question], ks: tuple[int, ...] = (1, 3)) -> dict:
    """Per kind and overall: {"n", "recall@k"...}. A hit is the asked product's uid among the
    first k (its title only for a question without a uid: another product of the same title is
    not the one asked about)."""
    hits: dict[str, dict[int, int]] = defaultdict(lambda: dict.fromkeys(ks, 0))
    counts: dict[str, int] = defaultdict(int)
    for q in questions:
        found = index.search(q.text, max(ks))
        for kind in (q.kind, "all"):
            counts[kind] += 1
            for k in ks:
                hits[kind][k] += any(_is_asked(s, q) for s in found[:k])
    return {
        kind: {"n": counts[kind], **{f"recall@{k}": hits[kind][k] / counts[kind] for k in ks}}
        for kind in [*KINDS, "all"]
        if counts[kind]
    }
