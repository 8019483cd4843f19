"""The catalogue index: BM25 (bm25s) over titles and over descriptions, fused, saved beside the
prepared shards.

A question names a product by its title ("Tell me about Mog's Kittens"), by part of it, with a
typo, in Portuguese, or by what the product is ("the board book by Judith Kerr about a cat and
her kittens"). Two BM25 indexes answer these: one over titles, one over the opening of each
description. Their scores are added with the description weighted by ``DESCRIPTION_WEIGHT``;
both are BM25 sums of idf-weighted word matches, so they share a unit, and a question that
matches many description words outweighs one stray title word. Question words are put
into the catalogue's words first (answering/query_words.py: question phrases dropped, Portuguese
put in English) and a word neither index knows is repaired to a near indexed word that agrees
with the question's other words (answering/repair.py), which is what rescues typos.

Records are not held in memory: the index keeps the byte offset of each record in
``catalogue.jsonl`` and reads the few it returns. This module loads and searches the index;
answering/index_build.py builds it.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import orjson

from amazon_sft.answering.index_checks import (
    REDO,
    check_catalogue,
    check_index,
    is_current,
    whole_sha,
)
from amazon_sft.data.catalogue_row import CatalogueRow
from amazon_sft.data.cleaning import INVISIBLE
from amazon_sft.data.reading import BOM
from amazon_sft.errors import UserError, reading

INDEX_DIR = "index"
FORMAT = 5  # 1: titles only; 2: + descriptions; 3: + title lengths; 4: + common words' best;
# 5: + a title's repeated words (title_repeats.npy), text in composed Unicode (NFC)
DESCRIPTION_CHARS = 500
"""Characters of each description indexed: its opening says what the product is; the rest is
detail that costs build time and memory (1.3M descriptions) for little recall."""
DESCRIPTION_WEIGHT = 0.6
"""Weight of the description score against the title score (measured with
bench/retrieval_quality.py, on evaluation/questions.py's generated questions)."""
TITLE_SHARE_FLOOR = 0.5
"""A product's score is scaled by ``floor + (1 - floor) x`` the share of its title's words that
the question has: of two products that both have every word asked, the one whose title *is*
the question ("Kestrel Q10 Keyboard, Navy") beats one whose title differs and whose description
happens to name the missing word. The floor keeps descriptive questions (no title word at all)
ranked by their description match."""
COVERAGE_POWER = 2.0
"""How strongly a product missing some of the question's words is pushed down (measured with
bench/retrieval_quality.py, on evaluation/questions.py's generated questions)."""
# Words of the question, not of the product: dropped from queries (English stop words are
# dropped by bm25s itself).
QUESTION_WORDS = (  # noqa: SIM905
    "what is are the description of product products tell me about can you describe main features "
    "give information qual quais é são a o os as de do da dos das descrição produto me fale sobre "
    "descreva principais características informações um uma que com para em no na por sobre "
    "livro"
).split()


@dataclass
class Source:
    """A retrieved record and its retrieval score (the gate compares the first two)."""

    uid: str
    title: str
    content: str
    score: float
    words_score: float | None = None
    """With ``--meaning-weight``: the word score before meaning re-scored it (else None)."""
    cosine: float | None = None
    """With ``--meaning-weight``: the question's and the record's cosine (answering/meaning.py)."""

    def shown(self) -> dict:
        """Its fields as ``ask --json``, the API and eval show them: what is not set left out.

        >>> Source("u", "T", "c", 2.0).shown()
        {'uid': 'u', 'title': 'T', 'content': 'c', 'score': 2.0}
        """
        return {k: v for k, v in asdict(self).items() if v is not None}


TOKEN_PATTERN = r"(?u)\b\w+\b"


def _stopwords() -> list[str]:
    import bm25s

    return sorted(set(QUESTION_WORDS) | set(bm25s.stopwords.STOPWORDS_EN))


def _tokenize(texts: list[str], return_ids: bool = True):
    import bm25s

    # single characters count: "Set of 2" and "Set of 5" are different products
    return bm25s.tokenize(
        texts,
        stopwords=_stopwords(),
        token_pattern=TOKEN_PATTERN,
        show_progress=False,
        return_ids=return_ids,
    )


def usable(folder: Path) -> bool:
    """Whether ``folder`` holds an index this version reads (built, and of ``FORMAT``)."""
    return (folder / "offsets.npy").is_file() and is_current(folder, FORMAT)


class CatalogueIndex:
    def __init__(
        self, prepared_dir: str | Path, mmap: bool = False, meaning_weight: float = 0.0
    ) -> None:
        """``mmap``: map the BM25 matrices instead of reading them, so that processes that
        load the same index share its pages (prepare's grounded workers). ``meaning_weight``:
        ``search`` re-scores word retrieval's first records by meaning too (answering/meaning.py;
        0: words only)."""
        import bm25s

        self.meaning_weight = meaning_weight
        root = Path(prepared_dir)
        if not root.is_dir():
            raise UserError(f"--index {root} is not a folder: give the prepared folder")
        folder = root / INDEX_DIR
        if not usable(folder):
            from amazon_sft.answering.index_build import build_when_free, refuse_unbuildable

            refuse_unbuildable(root)
            build_when_free(root)  # missing, or written by an older version
        check_catalogue(folder, root / "catalogue.jsonl")
        with reading(folder, "index", f"rebuild it: amazon-sft index {root}"):
            check_index(folder, root / "catalogue.jsonl")
            load = {"show_progress": False, "mmap": mmap}
            self.titles = bm25s.BM25.load(str(folder / "title"), **load)
            self.descriptions = bm25s.BM25.load(str(folder / "description"), **load)
            # read whole where mmap is not asked for (8 bytes a product): a mapped file cut in
            # place (``cp`` over it) killed serve at its next question with SIGBUS
            self.offsets = np.load(folder / "offsets.npy", mmap_mode="r" if mmap else None)
            self.train = np.load(folder / "train.npy")
            self.title_words = np.load(folder / "title_words.npy").astype(np.float32)
            self.title_repeats = np.load(folder / "title_repeats.npy")  # by token id
            counts = {
                len(self.offsets),
                len(self.train),
                len(self.title_words),
                self.titles.scores["num_docs"],
                self.descriptions.scores["num_docs"],
            }
            if len(counts) != 1:
                raise ValueError("the index files disagree on the product count")
        self.catalogue = root / "catalogue.jsonl"
        # opened and read now, with the checks: a folder replaced later (prepare --overwrite
        # while serve runs) would be read with these offsets and posting lists
        with reading(self.catalogue, "catalogue", REDO):
            self._fd: int | None = os.open(self.catalogue, os.O_RDONLY)
            self._stamp = self._opened_stamp()
            self._size = self._stamp[0]
            self._whole_sha = whole_sha(folder)
        with reading(folder, "index", f"rebuild it: amazon-sft index {root}"):
            from amazon_sft.answering.batched import BatchScorer

            self._scorer = BatchScorer(self)
        # loaded with the index, so that no question waits on it; after the files are opened,
        # which its seconds of loading kept apart
        if meaning_weight:
            from amazon_sft.answering.meaning import embedder

            embedder()

    def __len__(self) -> int:
        return len(self.offsets)

    def record(self, i: int) -> CatalogueRow:
        """Record ``i``, read with one ``pread`` of its exact span from a descriptor kept open
        (prepare reads several records per grounded example: no open/seek/readline each time).
        Not checked again: the build checked every line (``catalogue_row``), and a catalogue
        changed since is refused when the index loads."""
        with reading(self.catalogue, "catalogue", REDO):
            start = int(self.offsets[i])
            end = int(self.offsets[i + 1]) if i + 1 < len(self.offsets) else self._size
            rec = orjson.loads(os.pread(self._fd, end - start, start).removeprefix(BOM))
            return {"uid": str(rec["uid"]), "title": rec["title"], "content": rec["content"]}

    def _content_sha(self) -> str:
        digest, at = hashlib.sha256(), 0
        while chunk := os.pread(self._fd, 1 << 22, at):
            digest.update(chunk)
            at += len(chunk)
        return digest.hexdigest()

    def _opened_stamp(self) -> tuple[int, int]:
        opened = os.fstat(self._fd)
        return opened.st_size, opened.st_mtime_ns

    def check_unchanged(self) -> None:
        """Refuse to answer from a catalogue written in place since it was loaded (its records
        would no longer be the ones indexed: a served answer cited a uid never indexed). One
        ``fstat`` of the open file; when its size or time moved, its bytes are hashed once (a
        ``touch`` of the same bytes is not a change, as at loading). A catalogue replaced by a
        rename is not this file."""
        now = self._opened_stamp()
        if now == self._stamp:
            return
        if now[0] == self._stamp[0] and self._content_sha() == self._whole_sha:
            self._stamp = now  # the same bytes: not hashed again until it moves again
            return
        raise UserError(
            f"{self.catalogue} changed since the index was loaded (written in place): "
            f"restart, after amazon-sft index {self.catalogue.parent} if you edited it"
        )

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def words(self, question: str) -> list[str]:
        """The question's indexed words, unknown ones repaired to the nearest known word."""
        return self.words_many([question])[0]

    def words_many(self, questions: list[str]) -> list[list[str]]:
        """``words`` of each question, tokenized in one call (answering/repair.py)."""
        from amazon_sft.answering.repair import words_many

        return words_many(self, questions)

    def scores(self, words: list[str]) -> np.ndarray:
        """Fused score of every product: (title + weighted description BM25), times the share
        of the question's words the product has in either field, squared (the product that has
        every word the user gave beats one whose short title repeats one of them), times
        ``TITLE_SHARE_FLOOR + (1 - floor) x`` the share of its title's words the question has."""
        n = len(self.offsets)
        fused = np.zeros(n, dtype=np.float32)
        matched = np.zeros(n, dtype=np.float32)
        in_title = np.zeros(n, dtype=np.float32)
        known = 0
        for word in dict.fromkeys(words):
            present = None
            for retriever, weight in ((self.titles, 1.0), (self.descriptions, DESCRIPTION_WEIGHT)):
                ids = retriever.get_tokens_ids([word])
                if ids:
                    part = retriever.get_scores_from_ids(ids)
                    fused += weight * part
                    if retriever is self.titles:
                        in_title += part > 0
                    present = part > 0 if present is None else present | (part > 0)
            if present is not None:
                known += 1
                matched += present
        for rows, extra in self.repeats_asked(words):
            in_title[rows] += extra
        if known:
            fused *= (matched / known) ** COVERAGE_POWER
            share = np.minimum(in_title / self.title_words, 1.0)
            fused *= TITLE_SHARE_FLOOR + (1 - TITLE_SHARE_FLOOR) * share
        return fused

    def repeats_asked(self, words: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(rows, extra title words matched) for each word the question repeats, over the
        titles that repeat it: "Heart to Heart" asked as typed has both its title words, not
        one of two (it lost to "The Heart of the Family"); a word asked once counts once."""
        out = []
        for word, asked in Counter(words).items():
            tid = self.titles.vocab_dict.get(word) if asked > 1 else None
            if tid is None:
                continue
            lo, hi = np.searchsorted(self.title_repeats[:, 0], [tid, tid + 1])
            held = self.title_repeats[lo:hi]
            out.append((held[:, 1], (np.minimum(held[:, 2], asked) - 1).astype(np.float32)))
        return out

    def top(
        self, question: str, k: int, train_only: bool = False, shortlist: int | None = None
    ) -> list[tuple[int, float]]:
        """(row, score) of the ``k`` best products with a positive score, best first (ties: the
        lower row first, so a longer list starts with a shorter one); ``train_only`` keeps
        products of the training split (prepare's hard negatives); ``shortlist``: candidates of
        a question with a common word scored exactly (answering/batched.py's ``SHORTLIST``)."""
        if k <= 0:
            return []
        return self._batch_scorer().top(self.words(question), k, train_only, shortlist)

    def _batch_scorer(self):
        return self._scorer

    def top_many(
        self,
        questions: list[str],
        k: int,
        train_only: bool = False,
        shortlist: int | None = None,
    ) -> list[list[tuple[int, float]]]:
        """``top`` of each question (the same rows and scores, bit for bit), tokenized together
        and each scored over its words' postings only, not over the whole catalogue
        (answering/batched.py): what prepare's grounded examples use."""
        if k <= 0:
            return [[] for _ in questions]
        scorer = self._batch_scorer()
        return [scorer.top(w, k, train_only, shortlist) for w in self.words_many(questions)]

    def search(self, question: str, k: int = 3) -> list[Source]:
        """The ``k`` products that best match the question, best first."""
        return self.ranked(question, self.top(question, self.candidates(k)), k)

    def candidates(self, k: int) -> int:
        """Word retrieval's records ``ranked`` reads for ``k`` sources: more when it re-scores
        them by meaning (answering/meaning.py's ``CANDIDATES``)."""
        if not self.meaning_weight:
            return k
        from amazon_sft.answering.meaning import CANDIDATES

        return max(k, CANDIDATES)

    def ranked(self, question: str, hits: list[tuple[int, float]], k: int) -> list[Source]:
        """The first ``k`` of word retrieval's ``hits`` (row, score) as sources, re-scored by
        meaning when ``meaning_weight`` is set."""
        self.check_unchanged()
        out = []
        for i, score in hits:
            rec = self.record(i)
            # a folder prepared before cleaning dropped soft hyphens and zero-width spaces: its
            # records are read without them, as the question is (the gate splits words there)
            title, content = (INVISIBLE.sub("", rec[f]) for f in ("title", "content"))
            out.append(Source(rec["uid"], title, content, round(score, 3)))
        if self.meaning_weight:
            from amazon_sft.answering.meaning import by_meaning

            return by_meaning(question, out, self.meaning_weight, k)
        return out[:k]
