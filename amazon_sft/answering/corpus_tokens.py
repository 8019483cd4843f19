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
    stop = set(stopwords)
    vocab: dict[str, int] = {}
    id_parts, len_parts = [], []
    texts = list(texts) if not isinstance(texts, list) else texts
    for start in range(0, len(texts), CHUNK_TEXTS):
        tokens = [split(t.lower()) for t in texts[start : start + CHUNK_TEXTS]]
        lens = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        flat = [w for one in tokens for w in one]
        del tokens
        codes, uniques = pd.factorize(pd.Series(flat, dtype=object), sort=False)
        del flat
        local = np.empty(len(uniques), dtype=np.int64)  # chunk code -> vocabulary id, -1: stop
        for i, word in enumerate(uniques.tolist()):  # first-occurrence order, as bm25s
            if word in stop:
                local[i] = -1
            else:
                local[i] = vocab.setdefault(word, len(vocab))
        ids = local[codes]
        keep = ids >= 0
        docs = np.repeat(np.arange(len(lens)), lens)
        len_parts.append(np.bincount(docs[keep], minlength=len(lens)))
        id_parts.append(ids[keep].astype(np.int32))
    if not id_parts:
        return np.zeros(0, np.int32), np.zeros(0, np.int64), vocab
    return np.concatenate(id_parts), np.concatenate(len_parts).astype(np.int64), vocab
