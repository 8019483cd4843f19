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

    score x exp(GAMMA x cosine(question, record))

and re-sorts them. Multiplying keeps the score's unit, so the retrieval gate's ratio of the
first score to the second (answering/doubt.py) now carries both signals: a record that words
and meaning both put first stands further ahead, one that only a word put first less so. The
pair was chosen on the dev questions (bench/static_embedding_fusion.py): GAMMA 4 with
``--abstain-below 2.0`` on the real rows (docs/results.md); on the generated catalogue, whose
descriptions share one template, meaning does not tell products apart and it stays off.

Records are embedded when retrieved (title, then the description's opening as the index reads
it), so the index and its build are unchanged, and a question costs ``CANDIDATES + 1`` short
embeddings (a few milliseconds) on top of the search.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from amazon_sft.answering.index import DESCRIPTION_CHARS, Source
from amazon_sft.errors import UserError

CANDIDATES = 10
"""Word retrieval's first records re-scored: a need question's product is rarely further down
(chosen on the dev questions; 30 re-ranks the same)."""


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


def record_text(title: str, content: str) -> str:
    """What is embedded of a record: its title, then its description's indexed opening.

    >>> record_text("Mog's Kittens", "A board book. " * 100)[:30]
    "Mog's Kittens. A board book. A"
    """
    return f"{title}. {content[:DESCRIPTION_CHARS]}"


def fuse(sources: list[Source], cosines: np.ndarray, gamma: float) -> list[Source]:
    """The sources re-sorted by score x exp(gamma x cosine), with those scores (0: unchanged).

    >>> s = [Source("a", "A", "", 2.0), Source("b", "B", "", 1.8)]
    >>> [x.uid for x in fuse(s, np.array([0.1, 0.5]), 0.0)]
    ['a', 'b']
    >>> [(x.uid, x.score) for x in fuse(s, np.array([0.1, 0.5]), 1.0)]
    [('b', 2.968), ('a', 2.21)]
    """
    scored = [
        replace(
            s,
            score=round(s.score * math.exp(gamma * float(c)), 3),
            words_score=s.score,
            cosine=round(float(c), 3),
        )
        for s, c in zip(sources, cosines)
    ]
    return sorted(scored, key=lambda s: -s.score)  # stable: ties keep word retrieval's order


def by_meaning(question: str, sources: list[Source], gamma: float) -> list[Source]:
    """``fuse`` with the WordLlama cosines of the question and each record."""
    if gamma == 0 or not sources:
        return sources
    model = embedder()
    records = model.embed([record_text(s.title, s.content) for s in sources], norm=True)
    asked = model.embed([question], norm=True)[0]
    return fuse(sources, records @ asked, gamma)
