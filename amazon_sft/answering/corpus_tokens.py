"""The catalogue's texts as flat token-id arrays, tokenized the way ``bm25s.tokenize`` does it
(lower case, ``index._tokenize``'s pattern, stop words dropped) with the same vocabulary ids
(first occurrence order), without its per-token Python loop.

``bm25s.tokenize`` looks up every token in a dict and rebuilds its stop word set for every text
(2.6M texts at 1.3M products: most of the index build's time). Here each text is split by the
regex (one C call a text), a chunk's tokens are given ids at once by ``pandas.factorize``
(a C hash table), the chunk's new words are numbered in first-occurrence order (a Python loop
over the chunk's distinct words only), and stop words are dropped by a mask on the ids.
The result is one int32 array of every kept token and one array of token counts per text:
~4 bytes a token, where bm25s's lists of lists cost ~36 (a Python int pointer and list slot),
and its strings never coexist for more than a chunk. ``tests/test_retrieval.py`` checks that the
ids, the vocabulary and so the index are bm25s's own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

CHUNK_TEXTS = 50_000
"""Texts split at once: bounds the token strings held (a chunk of descriptions: ~4M)."""
BREAK = "qxdocbreakxq"
"""A word put between a chunk's texts, so that the chunk is lowered and split in one call each
(400k ``findall`` calls and their lists at 1.3M products otherwise); a chunk that has it is
split text by text."""


def _split_chunk(split, texts: list[str]) -> tuple[list[str], np.ndarray | None]:
    """The tokens of ``texts``, concatenated: with a ``BREAK`` between texts (then None), or,
    when a text has that word, split text by text (then each text's token count).

    >>> _split_chunk(re.compile(r"\\w+").findall, ["A b", "", "c"])
    (['a', 'b', 'qxdocbreakxq', 'qxdocbreakxq', 'c'], None)
    """
    joined = f" {BREAK} ".join(texts).lower()
    if joined.count(BREAK) == len(texts) - 1:
        return split(joined), None
    per_text = [split(t.lower()) for t in texts]
    return [w for one in per_text for w in one], np.array([len(t) for t in per_text], np.int64)


def tokenize_flat(
    texts: Iterable[str], pattern: str, stopwords: Iterable[str]
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(token ids of every text, concatenated; tokens per text; vocabulary word -> id), as
    ``bm25s.tokenize(texts, lower=True, token_pattern=pattern, stopwords=stopwords)``.

    >>> ids, lens, vocab = tokenize_flat(["The cat, the CAT", "", "a dog"], r"\\b\\w+\\b", ["the", "a"])
    >>> ids.tolist(), lens.tolist(), vocab
    ([0, 0, 1], [2, 0, 1], {'cat': 0, 'dog': 1})
    """
    split = re.compile(pattern).findall
    stop = list(set(stopwords))
    known = pd.Index([], dtype=object)  # the vocabulary so far, in id order
    id_parts, len_parts = [], []
    texts = list(texts) if not isinstance(texts, list) else texts
    for start in range(0, len(texts), CHUNK_TEXTS):
        chunk = texts[start : start + CHUNK_TEXTS]
        flat, lens = _split_chunk(split, chunk)
        codes, uniques = pd.factorize(pd.Series(flat, dtype=object), sort=False)
        del flat
        # chunk code -> vocabulary id (-1: a stop word or the break), the chunk's new words
        # numbered in first-occurrence order, as bm25s: hash look-ups in C, no loop a word
        local = known.get_indexer(uniques)
        new = (local < 0) & ~uniques.isin(stop)
        breaks = -1  # the break's chunk code (a word of its own when split text by text)
        if lens is None and len(chunk) > 1:
            breaks = int(np.flatnonzero(uniques == BREAK)[0])  # get_loc would hash them all
            new[breaks] = False
        local[new] = np.arange(len(known), len(known) + int(new.sum()))
        known = known.append(uniques[new])
        if breaks >= 0:
            local[breaks] = -1
        ids = local[codes]
        keep = ids >= 0
        # each token's text: the breaks before it, or the texts' counts
        docs = np.cumsum(codes == breaks) if lens is None else np.repeat(np.arange(len(lens)), lens)
        len_parts.append(np.bincount(docs[keep], minlength=len(chunk)))
        id_parts.append(ids[keep].astype(np.int32))
    vocab = dict(zip(known.tolist(), range(len(known))))
    if not id_parts:
        return np.zeros(0, np.int32), np.zeros(0, np.int64), vocab
    return np.concatenate(id_parts), np.concatenate(len_parts).astype(np.int64), vocab


def merge_vocabularies(parts: list[tuple[np.ndarray, list[str]]]) -> tuple[np.ndarray, dict]:
    """The token ids of consecutive parts of a corpus, each tokenized alone (its own ids, its
    words in first-occurrence order), as if tokenized whole: a part's words the earlier parts
    lacked are numbered after theirs, in the part's own order, so the vocabulary is still in
    first-occurrence order over the whole corpus (bm25s's ids).

    >>> ids, vocab = merge_vocabularies(
    ...     [(np.array([0, 1, 0]), ["cat", "dog"]), (np.array([0, 1]), ["emu", "cat"])])
    >>> ids.tolist(), vocab
    ([0, 1, 0, 2, 0], {'cat': 0, 'dog': 1, 'emu': 2})
    """
    known = pd.Index([], dtype=object)
    merged = []
    for ids, words in parts:
        uniques = pd.Index(words, dtype=object)
        local = known.get_indexer(uniques) if len(known) else np.full(len(uniques), -1)
        new = local < 0
        local[new] = np.arange(len(known), len(known) + int(new.sum()))
        known = known.append(uniques[new])
        merged.append(local[ids].astype(np.int32) if len(ids) else ids.astype(np.int32))
    ids = np.concatenate(merged) if merged else np.zeros(0, np.int32)
    return ids, dict(zip(known.tolist(), range(len(known))))
