"""bm25s with its index build vectorised.

``bm25s.BM25.build_index_from_ids`` is bm25s's documented override point ("override this
function if you want to build the index in a different way"). The stock one walks documents one
by one in Python (a Counter and a small numpy array per document: 3.7 s per 100k descriptions
here, most of the catalogue index's build time at 1.3M products). This one computes the same
matrix with whole-array numpy: the (token, document) pairs and their counts from one sort, the
document frequencies from a bincount, and bm25s's own idf and tf scorers on the arrays, a chunk
of documents at a time (``CHUNK_DOCS``): whole-catalogue int64 temporaries (the pair keys, their
sorted copy, the tokens and documents split back out: ~80 bytes a token) made the build of 1.3M
descriptions peak at ~3 GB; a chunk's distinct (token, document, count) triples are kept as
int32 (12 bytes a pair) and scattered into the final matrix (8 bytes a pair). Scores,
saving, loading and retrieval are bm25s's; ``tests/test_retrieval.py`` checks that both builds
give the same matrix.
"""

from __future__ import annotations

import itertools

import numpy as np
from bm25s import BM25
from bm25s.scoring import _build_idf_array, _select_idf_scorer, _select_tfc_scorer


class FastBM25(BM25):
    CHUNK_DOCS = 20_000
    """Documents whose (token, document) pairs are sorted at once: bounds the temporaries."""

    def build_index_from_ids(
        self, unique_token_ids, corpus_token_ids, show_progress=True, leave_progress=False
    ):
        if self.method in self.methods_requiring_nonoccurrence:  # BM25L / BM25+: not used here
            return super().build_index_from_ids(
                unique_token_ids, corpus_token_ids, show_progress, leave_progress
            )
        lens = np.fromiter(map(len, corpus_token_ids), dtype=np.int64, count=len(corpus_token_ids))
        flat = np.fromiter(
            itertools.chain.from_iterable(corpus_token_ids), dtype=np.int64, count=int(lens.sum())
        )
        return self._scores_from_flat(flat, lens, len(unique_token_ids))

    def index_flat(self, ids: np.ndarray, lens: np.ndarray, vocab: dict[str, int]) -> None:
        """``index`` of a corpus given as flat token ids and tokens per document
        (corpus_tokens.tokenize_flat): the same matrix and vocabulary, with no list per
        document ever made."""
        self.nonoccurrence_array = None
        self.scores = self._scores_from_flat(ids, lens, len(vocab))
        vocab = dict(vocab)
        if "" not in vocab:  # what bm25s's index() adds (its create_empty_token)
            vocab[""] = max(vocab.values(), default=-1) + 1
        self.vocab_dict = vocab
        self.unique_token_ids_set = set(vocab.values())

    def _scores_from_flat(self, flat: np.ndarray, lens: np.ndarray, n_vocab: int) -> dict:
        self.nonoccurrence_array = None
        n_docs = len(lens)
        ends = np.cumsum(lens)
        triples = [
            _pairs(flat, ends, start, min(start + self.CHUNK_DOCS, n_docs))
            for start in range(0, n_docs, self.CHUNK_DOCS)
        ]
        df = np.zeros(n_vocab, dtype=np.int64)
        for token, _, _ in triples:
            df += np.bincount(token, minlength=n_vocab)
        idf = _build_idf_array(
            doc_frequencies=dict(zip(range(n_vocab), df.tolist())),
            n_docs=n_docs,
            compute_idf_fn=_select_idf_scorer(self.idf_method),
            dtype=self.dtype,
        )
        tf_scorer, l_avg = _select_tfc_scorer(self.method), float(lens.mean()) if n_docs else 0.0
        indptr = np.concatenate([[0], np.cumsum(df)])
        data = np.empty(int(indptr[-1]), dtype=self.dtype)
        indices = np.empty(int(indptr[-1]), dtype=self.int_dtype)
        free = indptr[:-1].copy()  # each token's next slot: chunks come in document order
        while triples:
            token, doc, tf = triples.pop(0)
            counts = np.bincount(token, minlength=n_vocab)
            first = np.cumsum(counts) - counts  # where each token starts in the chunk's triples
            at = free[token] + np.arange(len(token)) - first[token]
            tfc = tf_scorer(
                tf_array=tf.astype(self.dtype),
                l_d=lens[doc].astype(self.dtype),
                l_avg=l_avg,
                k1=self.k1,
                b=self.b,
                delta=self.delta,
            )
            data[at] = (idf[token] * tfc).astype(self.dtype)
            indices[at] = doc.astype(self.int_dtype)
            free += counts
        return {"data": data, "indices": indices, "indptr": indptr, "num_docs": n_docs}


def _pairs(flat: np.ndarray, ends: np.ndarray, start: int, end: int):
    """(token, document, count) of each distinct pair of documents [start, end), sorted by
    token then document, as int32: one sort of the chunk's pair keys."""
    lo = int(ends[start - 1]) if start else 0
    tokens = flat[lo : int(ends[end - 1])].astype(np.int64)
    lens = np.diff(ends[start:end], prepend=lo)
    span = end - start
    docs = np.repeat(np.arange(span, dtype=np.int64), lens)
    pairs, tf = np.unique(tokens * span + docs, return_counts=True)
    token, doc = np.divmod(pairs, span)
    return token.astype(np.int32), (doc + start).astype(np.int32), tf.astype(np.int32)
