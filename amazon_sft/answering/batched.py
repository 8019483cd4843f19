"""Many questions scored at once, touching only the products that share a word with each one.

``CatalogueIndex.scores`` scores one question with dense arrays over the whole catalogue: about
eight full-length passes a word (1.3M floats each) whatever the word. A question's score is
non-zero only on the products in its words' postings (the BM25 matrices are CSC: one column of
(product, score) pairs a word), so here each question is the product of its row of the batch's
query-term matrix with the index, computed over those postings only: a scratch array the size
of the catalogue is added into at the posting positions and reset there afterwards, and the
fused score, coverage and title share are computed on the touched products alone.

The result is bit-for-bit the dense path's: every float32 operation is the same one, applied in
the same order (per word, title then description), to the same values; a product outside every
posting scores 0 on both paths. ``tests/test_retrieval.py`` checks the records are the same.
"""

from __future__ import annotations

import numpy as np

from amazon_sft.answering import index as _index


def rank_rows(rows: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` best (row, score) with a positive score: best first, ties by the lower row
    (the same order whatever order the candidates come in).

    >>> rank_rows(np.array([5, 2, 9]), np.array([1.0, 3.0, 1.0], np.float32), 2)
    [(2, 3.0), (5, 1.0)]
    """
    keep = scores > 0
    rows, scores = rows[keep], scores[keep]
    if len(rows) > k:  # only the ones that can be among the k best (ties at the k-th kept)
        kth = -np.partition(-scores, k - 1)[k - 1]
        keep = scores >= kth
        rows, scores = rows[keep], scores[keep]
    order = np.lexsort((rows, -scores))[:k]
    return [(int(rows[i]), float(scores[i])) for i in order]


class BatchScorer:
    """Sparse scoring of an index's questions; holds the scratch arrays between questions."""

    def __init__(self, index) -> None:
        self.index = index
        n = len(index)
        self.fused = np.zeros(n, dtype=np.float32)
        self.matched = np.zeros(n, dtype=np.float32)
        self.in_title = np.zeros(n, dtype=np.float32)
        self.mark = np.zeros(n, dtype=np.uint8)
        self.first = np.zeros(n, dtype=np.int64)
        fields = ((index.titles, 1.0), (index.descriptions, _index.DESCRIPTION_WEIGHT))
        self.fields = [
            (r.vocab_dict, r.scores["indptr"], r.scores["indices"], r.scores["data"], w)
            for r, w in fields
        ]

    def _postings(self, word: str):
        """(products, scores, weight, is_title) of the word in each field that knows it."""
        out = []
        for number, (vocab, indptr, indices, data, weight) in enumerate(self.fields):
            tid = vocab.get(word)
            if tid is None:
                continue
            start, end = int(indptr[tid]), int(indptr[tid + 1])
            out.append(
                (np.asarray(indices[start:end]), np.asarray(data[start:end]), weight, number == 0)
            )
        return out

    def top(self, words: list[str], k: int, train_only: bool) -> list[tuple[int, float]]:
        """``CatalogueIndex.top`` of one question's words, over its postings only."""
        fused, matched, in_title, mark = self.fused, self.matched, self.in_title, self.mark
        touched, known = [], 0
        for word in dict.fromkeys(words):
            postings = self._postings(word)
            if not postings:
                continue
            known += 1
            for rows, part, weight, is_title in postings:
                fused[rows] += weight * part  # the dense path's `fused += weight * part`
                positive = rows[part > 0]
                if is_title:
                    in_title[positive] += 1
                mark[positive] = 1
                touched.append(rows)
            for rows, part, *_ in postings:  # each product once per word, in either field
                positive = rows[part > 0]
                matched[positive] += mark[positive]
                mark[positive] = 0
        if not touched:
            return []
        rows = np.concatenate(touched)
        self.first[rows] = np.arange(len(rows))  # one position per product: no sort needed
        rows = rows[self.first[rows] == np.arange(len(rows))]
        scores = fused[rows]
        scores *= (matched[rows] / np.float32(known)) ** _index.COVERAGE_POWER
        share = np.minimum(in_title[rows] / self.index.title_words[rows], 1.0)
        scores *= _index.TITLE_SHARE_FLOOR + (1 - _index.TITLE_SHARE_FLOOR) * share
        fused[rows] = matched[rows] = in_title[rows] = 0  # clean for the next question
        if train_only:
            scores = np.where(self.index.train[rows], scores, np.float32(0))
        return rank_rows(rows, scores, k)
