"""Questions scored over their words' postings, common words pruned to their best products.

``CatalogueIndex.scores`` scores one question with dense arrays over the whole catalogue: about
eight full-length passes a word (1.3M floats each) whatever the word. A question's score is
non-zero only on the products in its words' postings (the BM25 matrices are CSC: one column of
(product, score) pairs a word, products in order), so here a question's candidates are the
products of its words' postings, and each candidate is scored exactly, with the dense path's
float32 operations in its order (per word, title then description), its score in each field
looked up in the word's posting (a binary search): the same bits as the dense path.

A word in more than ``COMMON_DF`` products of a field ("book", "set", "black": up to a third of
the catalogue) would make every product that has it a candidate; its posting is replaced, as a
source of candidates, by its ``COMMON_KEEP`` best-scoring products, listed at build time
(``save_common``). The candidates are then ranked by a cheap float64 estimate (the scores they
have in the lists they are in, times their estimated share of the question's words) and the
``SHORTLIST`` best are scored exactly (with every word's whole posting). A question without a
common word is exact; with one, a product that has none of the question's rare words and is not
among the common words' best can be missed (bench/retrieval_full.py measures how often the
top-1 differs from the dense scorer's on sampled questions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from amazon_sft.answering import index as _index

COMMON_DF = 5_000
"""Products of a field above which a word's posting is pruned to its best ones."""
COMMON_KEEP = 1_000
"""Best-scoring products of a common word kept as candidates (listed at build time)."""
SHORTLIST = 10_000
"""Candidates of a question with a common word scored exactly (the best by the estimate). At
1.33M products (docs/benchmarks.md), against the dense scorer on 100 title questions, k=11:
2,000 kept 98/100 top-1s and 0.703 of the lists, 4.7 ms CPU a question; 10,000: 100/100, 0.834,
~9 ms; 50,000: 100/100, 0.857, 14.6 ms."""


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


def postings_inside(indptr, indices, common_rows, products: int) -> bool:
    """Whether a field's posting lists stay inside the index: offsets that rise from 0 to the
    count of product rows listed, each row (and each common word's best row) a product's. Two
    passes over the rows at load (about 17 ms a pass over 100M rows here); a damaged file the
    sampled digests let through raised an IndexError traceback at the first question (a
    hostile user's trial).

    >>> postings_inside(np.array([0, 2, 3]), np.array([0, 4, 1]), np.zeros((0, 2)), 5)
    True
    >>> postings_inside(np.array([0, 2, 3]), np.array([0, 2147483647, 1]), np.zeros((0, 2)), 5)
    False
    """
    rows_fit = [np.asarray(a) for a in (indices, common_rows) if np.size(a)]
    return (
        len(indptr) > 0
        and int(indptr[0]) == 0
        and int(indptr[-1]) == len(indices)
        and bool(np.all(np.diff(indptr) >= 0))
        and all(int(a.min()) >= 0 and int(a.max()) < products for a in rows_fit)
    )


def save_common(field: Path, scores: dict, min_df: int | None = None, keep: int | None = None):
    """Beside a field's saved BM25 matrix: the words with more than ``min_df`` products and the
    ``keep`` best-scoring products of each (ties: the lower row), products in row order."""
    min_df = COMMON_DF if min_df is None else min_df
    keep = COMMON_KEEP if keep is None else keep
    indptr, indices, data = scores["indptr"], scores["indices"], scores["data"]
    tids = np.flatnonzero(np.diff(indptr) > min_df)
    rows = np.empty((len(tids), keep), dtype=np.int32)
    for j, tid in enumerate(tids.tolist()):
        start, end = int(indptr[tid]), int(indptr[tid + 1])
        part = np.asarray(data[start:end])
        best = np.lexsort((np.arange(len(part)), -part))[:keep]  # stable: lower row on ties
        rows[j] = np.sort(np.asarray(indices[start:end])[best])
    np.save(field / "common_tids.npy", tids.astype(np.int64))
    np.save(field / "common_rows.npy", rows)


class BatchScorer:
    """Sparse scoring of an index's questions (``top``), its per-field tables held."""

    def __init__(self, index) -> None:
        self.index = index
        folder = index.catalogue.parent / _index.INDEX_DIR
        self.fields = []
        for name, r, weight in (
            ("title", index.titles, 1.0),
            ("description", index.descriptions, _index.DESCRIPTION_WEIGHT),
        ):
            tids = np.load(folder / name / "common_tids.npy")
            common = dict(zip(tids.tolist(), range(len(tids))))
            rows = np.load(folder / name / "common_rows.npy")  # small: a memmap row costs ~1 ms
            s = r.scores
            self.fields.append(
                (r.vocab_dict, s["indptr"], s["indices"], s["data"], weight, common, rows)
            )
            if not all_positive(s["data"]):
                raise ValueError("a BM25 score <= 0 in the index")  # BM25 (Lucene idf) is > 0
            if not postings_inside(s["indptr"], s["indices"], rows, s["num_docs"]):
                raise ValueError(f"the {name} postings point outside the index")

    def _postings(self, word: str) -> list:
        """Per field: (products, scores, weight, is_title, candidate rows or None if whole)."""
        out = []
        for number, (vocab, indptr, indices, data, weight, common, best) in enumerate(self.fields):
            tid = vocab.get(word)
            if tid is None or tid >= len(indptr) - 1:  # "" is in bm25s's vocabulary only
                continue
            start, end = int(indptr[tid]), int(indptr[tid + 1])
            rows, part = np.asarray(indices[start:end]), np.asarray(data[start:end])
            pruned = common.get(tid)
            out.append((rows, part, weight, number == 0, None if pruned is None else best[pruned]))
        return out

    def top(
        self, words: list[str], k: int, train_only: bool, shortlist: int | None = None
    ) -> list[tuple[int, float]]:
        """``CatalogueIndex.top`` of one question's words (``shortlist``: ``SHORTLIST``'s)."""
        postings = [p for p in (self._postings(w) for w in dict.fromkeys(words)) if p]
        if not postings:
            return []
        candidates = self._candidates(postings, train_only, shortlist or SHORTLIST)
        fused = np.zeros(len(candidates), dtype=np.float32)
        matched = np.zeros(len(candidates), dtype=np.float32)
        in_title = np.zeros(len(candidates), dtype=np.float32)
        for fields in postings:  # the dense path's operations, in its order
            present = None
            for rows, data, weight, is_title, _ in fields:
                part = _lookup(rows, data, candidates)
                fused += weight * part
                if is_title:
                    in_title += part > 0
                present = part > 0 if present is None else present | (part > 0)
            matched += present
        for rows, extra in self.index.repeats_asked(words):  # candidates are in row order
            at = np.searchsorted(candidates, rows).clip(max=len(candidates) - 1)
            hit = candidates[at] == rows
            in_title[at[hit]] += extra[hit]
        fused *= (matched / len(postings)) ** _index.COVERAGE_POWER
        share = np.minimum(in_title / self.index.title_words[candidates], 1.0)
        fused *= _index.TITLE_SHARE_FLOOR + (1 - _index.TITLE_SHARE_FLOOR) * share
        if train_only:
            fused = np.where(self.index.train[candidates], fused, np.float32(0))
        return rank_rows(candidates, fused, k)

    def _candidates(self, postings: list, train_only: bool, shortlist: int) -> np.ndarray:
        """The products to score exactly, in row order: every product of the words' postings,
        or, with a common word, the ``shortlist`` best by the estimate."""
        rows = [r if best is None else best for f in postings for r, _, _, _, best in f]
        if all(best is None for f in postings for *_, best in f):
            return np.unique(np.concatenate(rows))
        found, where = np.unique(np.concatenate(rows), return_inverse=True)
        if len(found) <= shortlist:
            return found
        estimate = np.zeros(len(found))
        has = np.zeros(len(found))
        at = 0
        for fields in postings:
            seen = np.zeros(len(found), dtype=bool)
            for r, data, weight, _, best in fields:
                pos = where[at : at + len(r if best is None else best)]
                at += len(pos)
                part = data if best is None else _lookup(r, data, best)
                estimate[pos] += weight * part.astype(np.float64)
                seen[pos] = True
            has += seen
        estimate *= (has / len(postings)) ** _index.COVERAGE_POWER
        if train_only:
            estimate *= self.index.train[found]
        best = np.argpartition(-estimate, shortlist - 1)[:shortlist]
        return np.sort(found[best])


def _lookup(rows: np.ndarray, data: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """The posting's score of each ``wanted`` product, 0 where it is not in the posting
    (``rows`` and ``wanted`` sorted ascending, ``wanted`` without repeats). The shorter of the
    two is searched in the longer: a question's candidates run to thousands, a rare word's
    posting to a few products, a common word's to hundreds of thousands.

    >>> _lookup(np.array([1, 4, 7]), np.array([.5, .25, 2], np.float32), np.array([0, 4, 7, 9]))
    array([0.  , 0.25, 2.  , 0.  ], dtype=float32)
    >>> _lookup(np.array([4]), np.array([.25], np.float32), np.array([0, 4, 7, 9]))
    array([0.  , 0.25, 0.  , 0.  ], dtype=float32)
    """
    out = np.zeros(len(wanted), dtype=data.dtype)
    if len(rows) < len(wanted):  # a rare word: place its few products among the candidates
        at = np.searchsorted(wanted, rows)  # O(posting x log candidates), not the reverse
        inside = at < len(wanted)
        hit = np.zeros(len(rows), dtype=bool)
        hit[inside] = wanted[at[inside]] == rows[inside]
        out[at[hit]] = data[hit]
        return out
    at = np.searchsorted(rows, wanted)
    inside = at < len(rows)
    hit = np.zeros(len(wanted), dtype=bool)
    hit[inside] = rows[at[inside]] == wanted[inside]
    out[hit] = data[at[hit]]
    return out


def all_positive(data, chunk: int = 1 << 22) -> bool:
    """Whether every stored BM25 score is > 0 (a product in a word's posting has the word: the
    dense path's ``part > 0``); read in chunks, the data may be a memory map."""
    return all(np.all(np.asarray(data[i : i + chunk]) > 0) for i in range(0, len(data), chunk))
