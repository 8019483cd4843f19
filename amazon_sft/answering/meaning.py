"""Retrieval by meaning as well as by words: word retrieval's first records re-scored by how
close their text is, in a static embedding, to the question (``--meaning-weight GAMMA``).

Word retrieval (answering/index.py) finds a product named by its title, in part, with typos or
in Portuguese; a shopper who describes a need in other words ("my son gets overwhelmed by
noise and crowds") shares few words with the product's record, and a record that shares one
rare word can come first. WordLlama (PyPI ``wordllama``, MIT) is a token embedding table
distilled from a Llama-2 tokenizer's embeddings for sentence similarity: its weights (16 MB,
256 dimensions) ship in its wheel, so it runs offline; it embeds a text by averaging its tokens'
vectors, about 0.2 ms a record on one CPU core. Alone it ranks worse than word retrieval
(recall@1 0.69-0.76 against 0.85-0.94 on the real question sets) but it reads needs better; so
it re-scores word retrieval's ``CANDIDATES`` first records rather than retrieving:

    (score + WORD_SCORE_FLOOR) x exp(GAMMA x cosine(question, record))

and re-sorts them. Multiplying keeps the score's unit, so the retrieval gate's ratio of the
first score to the second (answering/doubt.py) now carries both signals: a record that words
and meaning both put first stands further ahead, one that only a word put first less so; the
floor lets meaning decide among records that words found about equally little. The setting
was chosen on the dev questions (bench/static_embedding_fusion.py): GAMMA 4 with
``--abstain-below 2.0`` on the real rows (docs/results.md); on the generated catalogue, whose
descriptions share one template, meaning does not tell products apart and it stays off.

Records are embedded when retrieved (title, then the description's first ``MEANING_CHARS``
characters, twice what the word index reads), so the index and its build are unchanged; a
question embeds itself, ``FIRST_EMBEDDED`` records and those of the rest that could still reach
the first ``k`` (``by_meaning``): a few milliseconds on top of the search (docs/benchmarks.md).
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from amazon_sft.answering.index import Source
from amazon_sft.errors import UserError

CANDIDATES = 50
"""Word retrieval's first records that meaning may re-order: a need question's product can
stand 20th to 50th by words (found by one common word) and first by meaning (chosen on the dev
questions, with ``WORD_SCORE_FLOOR``; 100 re-ranks the same)."""
FIRST_EMBEDDED = 10
"""Records embedded before the rest are pruned (``by_meaning``): those that cannot reach the
first ``k`` whatever their cosine are never embedded."""
MEANING_CHARS = 1_000
"""Characters of a description that meaning reads. A need is often answered by one sentence
late in a description ("the closing chapters are about ... a water birth at home"), past the
500 the word index reads (``index.DESCRIPTION_CHARS``: more words there would let long
descriptions win on common words). On the read dev questions recall@1 rose 0.941 -> 0.956
(needs 0.768 -> 0.804) at 1,000, the same from 750 to 3,000 (docs/results.md); 1,000 holds the
whole of 90% of the real rows' descriptions."""
WORD_SCORE_FLOOR = 0.2
"""Added to the word score before meaning multiplies it. A question whose words the product
barely has (a need in other words: "my head hurts every month around my period" against "The
Hormone Headache") scores it near 0, where no cosine could lift it; with the floor, records
that words found about equally little are ordered by meaning, while a title asked by its words
(scores of 1 to several hundred) keeps its lead. In the word score's unit (answering/index.py's
fused BM25): need questions' first records score 0.05 to 0.4 there, titles asked by name 2 and
up. Chosen on the dev questions (docs/results.md)."""


@lru_cache(maxsize=1)
def embedder():
    """WordLlama from the weights and tokenizer its wheel ships, never the hub: version 0.4
    looks for its tokenizer under ``tokenizer/`` while the wheel has ``tokenizers/``, so the
    package folder is passed as its cache, where it finds both, with downloads off."""
    try:
        import wordllama
    except ImportError:
        raise UserError(
            "--meaning-weight needs the wordllama package: pip install 'wordllama>=0.4'"
        ) from None
    return wordllama.WordLlama.load(
        cache_dir=Path(wordllama.__file__).parent, disable_download=True
    )


def record_text(title: str, content: str, chars: int = MEANING_CHARS) -> str:
    """What is embedded of a record: its title, then its description's first ``chars``.

    >>> record_text("Mog's Kittens", "A board book. " * 100)[:30]
    "Mog's Kittens. A board book. A"
    >>> len(record_text("Mog", "x" * 5_000)) == len("Mog. ") + MEANING_CHARS
    True
    """
    return f"{title}. {content[:chars]}"


def fuse(
    sources: list[Source], cosines: np.ndarray, gamma: float, floor: float = WORD_SCORE_FLOOR
) -> list[Source]:
    """The sources re-sorted by (score + floor) x exp(gamma x cosine), with those scores.

    >>> s = [Source("a", "A", "", 2.0), Source("b", "B", "", 1.8)]
    >>> [x.uid for x in fuse(s, np.array([0.1, 0.5]), 0.0, floor=0.0)]
    ['a', 'b']
    >>> [(x.uid, x.score) for x in fuse(s, np.array([0.1, 0.5]), 1.0, floor=0.0)]
    [('b', 2.968), ('a', 2.21)]

    A record words barely found (0.01) and meaning puts first passes one that words found a
    little better (0.03), with the floor only:

    >>> weak = [Source("walks", "W", "", 0.03), Source("headache", "H", "", 0.01)]
    >>> [x.uid for x in fuse(weak, np.array([0.25, 0.33]), 4.0, floor=0.0)]
    ['walks', 'headache']
    >>> [x.uid for x in fuse(weak, np.array([0.25, 0.33]), 4.0)]
    ['headache', 'walks']
    """
    scored = [
        replace(
            s,
            score=round((s.score + floor) * math.exp(gamma * float(c)), 3),
            words_score=s.score,
            cosine=round(float(c), 3),
        )
        for s, c in zip(sources, cosines)
    ]
    return sorted(scored, key=lambda s: -s.score)  # stable: ties keep word retrieval's order


def by_meaning(question: str, sources: list[Source], gamma: float, keep: int) -> list[Source]:
    """The first ``keep`` of ``fuse`` with the WordLlama cosines of the question and each record
    (``sources``: word retrieval's, best first).

    The first ``FIRST_EMBEDDED`` are embedded; a later record is embedded only if, with a
    cosine of 1 (the most a cosine can be), it would pass the ``keep``-th fused score so far:
    the first ``keep`` are exactly those of embedding them all, at a fraction of the cost when
    the first records lead by words (a title asked by name).
    """
    if gamma == 0 or not sources:
        return sources[:keep]
    model = embedder()
    asked = model.embed([question], norm=True)[0]

    def cosines(part: list[Source]) -> np.ndarray:
        return model.embed([record_text(s.title, s.content) for s in part], norm=True) @ asked

    first = sources[: max(keep, FIRST_EMBEDDED)]
    near = cosines(first)
    fused = fuse(first, near, gamma)
    rest = sources[len(first) :]
    if len(fused) >= keep:
        bar = fused[keep - 1].score - 0.001  # scores are rounded to 3 decimals
        ceiling = math.exp(gamma)  # word scores fall down the list, and so do these bounds
        rest = [s for s in rest if (s.score + WORD_SCORE_FLOOR) * ceiling >= bar]
    if not rest:
        return fused[:keep]
    return fuse(first + rest, np.concatenate([near, cosines(rest)]), gamma)[:keep]
