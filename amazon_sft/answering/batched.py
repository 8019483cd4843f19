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
        if not all(all_positive(r.scores["data"]) for r, _ in fields):
            raise ValueError("a BM25 score <= 0 in the index")  # BM25 (Lucene idf) is > 0

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
                if is_title:
                    in_title[rows] += 1  # every stored score is > 0 (checked on load)
                touched.append(rows)
            if len(postings) == 1:
                matched[postings[0][0]] += 1
            else:  # in both fields: counted once
                title_rows, description_rows = postings[0][0], postings[1][0]
                mark[title_rows] = 1
                matched[title_rows] += 1
                matched[description_rows] += 1 - mark[description_rows]
                mark[title_rows] = 0
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


def all_positive(data, chunk: int = 1 << 22) -> bool:
    """Whether every stored BM25 score is > 0 (a product in a word's posting has the word: the
    dense path's ``part > 0``); read in chunks, the data may be a memory map."""
    return all(np.all(np.asarray(data[i : i + chunk]) > 0) for i in range(0, len(data), chunk))
