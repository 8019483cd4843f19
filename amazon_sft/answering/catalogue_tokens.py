"""``catalogue.jsonl`` read and tokenized for the index, in consecutive line ranges, one process
a range.

Reading, splitting and numbering the words of 1.3M titles and descriptions is most of the index
build (79% of it in a cProfile of 200k products: the regex split and pandas' hashing), and each
record's tokens depend on that record alone. So the catalogue is cut at line starts into one
range per worker; each worker parses and tokenizes its range (corpus_tokens.tokenize_flat) and
the ranges' vocabularies are merged in order (corpus_tokens.merge_vocabularies): the same ids,
vocabulary and so the same index files as one pass (``tests/test_retrieval.py``). Workers are
spawned, not forked: prepare's process holds the fast tokenizer's thread pool, and a fork of a
process with threads can deadlock. Below ``POOL_LINES`` lines one pass in this process is
faster than starting workers.
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amazon_sft.answering.corpus_tokens import merge_vocabularies, tokenize_flat
from amazon_sft.answering.query_words import composed
from amazon_sft.data.catalogue_row import catalogue_row
from amazon_sft.errors import UserError, first_line, reading

POOL_LINES = 100_000
"""Catalogue lines from which the build uses a worker per core: starting a spawned worker
(numpy, pandas) costs about a second, what one worker tokenizes of ~50k records."""
MAX_WORKERS = 8
"""Most workers started: each holds its range's strings while it splits them."""
BLOCK_BYTES = 1 << 26
"""Bytes scanned at once for line starts."""


@dataclass
class FieldTokens:
    """One field of every record, tokenized: bm25s's ids flattened (``FastBM25.index_flat``)."""

    ids: np.ndarray
    """int32 id of every kept token, record after record."""
    lens: np.ndarray
    """int64 kept tokens of each record."""
    vocab: dict[str, int]
    """Word -> id, in first-occurrence order (ids 0, 1, ...)."""


@dataclass
class CatalogueTokens:
    """What the index is built from: each record's place in the file, split and tokens."""

    offsets: np.ndarray
    """int64 byte offset of each record in ``catalogue.jsonl``."""
    train: np.ndarray
    """bool: the record is in the training split."""
    titles: FieldTokens
    descriptions: FieldTokens


MAX_CATALOGUE_LINE_BYTES = 2_000_000
"""The longest catalogue line prepare can write: it reads input lines of at most 1 MB
(``data.reading.read_records``), and a record's line adds its uid and split. A longer one was
edited in by hand; indexed, each question read it whole (6 GB and 34 s for a 200 MB record:
a hostile user's trial)."""


def line_starts(path: Path) -> np.ndarray:
    """Byte offset of each line of ``path`` (a last line without a newline counts), found by
    numpy in blocks rather than a Python loop over 1.3M lines."""
    found, size = [np.zeros(1, np.int64)], 0
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK_BYTES):
            found.append(np.flatnonzero(np.frombuffer(block, np.uint8) == 10) + size + 1)
            size += len(block)
    starts = np.concatenate(found)
    return starts[starts < size]


def index_workers(lines: int, requested: int | None = None) -> int:
    """Processes that tokenize a catalogue of ``lines`` lines: ``requested`` (at most one a
    line), or by default one per core (at most ``MAX_WORKERS``) from ``POOL_LINES`` lines.

    >>> index_workers(10), index_workers(50, requested=2), index_workers(1, requested=4)
    (1, 2, 1)
    """
    if requested is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        requested = min(cores or 1, MAX_WORKERS) if lines >= POOL_LINES else 1
    return max(1, min(requested, lines))


def repeated_words(ids: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """(token id, text, count) of every token a text holds more than once, by token id then
    text (``ids`` concatenated, ``lens`` tokens a text).

    >>> repeated_words(np.array([3, 3, 5, 4, 4, 4]), np.array([3, 0, 3])).tolist()
    [[3, 0, 2], [4, 2, 3]]
    """
    if not len(ids):
        return np.zeros((0, 3), dtype=np.int64)
    text = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
    pairs, counts = np.unique(ids.astype(np.int64) * len(lens) + text, return_counts=True)
    pairs, counts = pairs[counts > 1], counts[counts > 1]
    return np.stack([pairs // len(lens), pairs % len(lens), counts], axis=1)


def uid_digest(uid: str) -> int:
    """A 64-bit digest of a uid, the same in every worker (``hash`` of a str is salted per
    process): repeated uids are found over the ranges' digests."""
    return int.from_bytes(hashlib.blake2b(uid.encode(), digest_size=8).digest(), "big")


def _read_range(
    catalogue: str, start: int, lines: int, first_line_no: int, pattern: str, stop: list[str]
) -> tuple[tuple, tuple, np.ndarray, np.ndarray]:
    """Parse ``lines`` records from byte ``start`` (line ``first_line_no``) and tokenize their
    titles and descriptions; ids with their words in id order, for merging; and each record's
    ``uid_digest``."""
    from amazon_sft.answering.index import DESCRIPTION_CHARS, REDO

    titles, descriptions, train = [], [], np.zeros(lines, dtype=bool)
    uids = np.zeros(lines, dtype=np.uint64)
    with reading(catalogue, "catalogue", REDO), open(catalogue, "rb") as fh:
        fh.seek(start)
        for i in range(lines):
            line = fh.readline()
            try:
                rec = catalogue_row(line)
                uids[i] = uid_digest(rec["uid"])
                titles.append(composed(rec["title"]))
                descriptions.append(composed(rec["content"][:DESCRIPTION_CHARS]))
                train[i] = rec.get("split", "train") == "train"
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                raise UserError(
                    f"catalogue {catalogue} line {first_line_no + i} is cut or corrupt "
                    f"({first_line(err)}): {REDO}"
                ) from None
    fields = []
    for texts in (titles, descriptions):
        ids, lens, vocab = tokenize_flat(texts, pattern, stop)
        texts.clear()  # the strings go back before the next field is split
        fields.append((ids, lens, list(vocab)))
    return fields[0], fields[1], train, uids


def read_catalogue(
    catalogue: Path, pattern: str, stopwords: list[str], workers: int | None = None
) -> CatalogueTokens:
    """Every record of ``catalogue`` tokenized as ``bm25s.tokenize(texts, lower=True,
    token_pattern=pattern, stopwords=stopwords)`` would, its titles and its descriptions'
    first ``DESCRIPTION_CHARS`` characters, in ``index_workers`` processes."""
    from amazon_sft.answering.index import REDO

    with reading(catalogue, "catalogue", REDO):
        offsets = line_starts(catalogue)
        sizes = np.diff(offsets, append=catalogue.stat().st_size)
    if len(sizes) and sizes.max() > MAX_CATALOGUE_LINE_BYTES:
        longest = int(np.argmax(sizes))
        raise UserError(
            f"{catalogue} line {longest + 1} is {int(sizes[longest]):,} bytes, longer than any "
            f"prepare writes ({MAX_CATALOGUE_LINE_BYTES:,}): the file was edited; {REDO}"
        )
    count = index_workers(len(offsets), workers)
    cuts = np.linspace(0, len(offsets), count + 1).astype(int)
    jobs = [
        (str(catalogue), int(offsets[a]), int(b - a), int(a) + 1, pattern, stopwords)
        for a, b in itertools.pairwise(cuts)
        if b > a
    ]
    if len(jobs) <= 1:
        parts = [_read_range(*job) for job in jobs]
    else:
        with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
            parts = pool.starmap(_read_range, jobs)
    fields = []
    for field in (0, 1):
        ids, vocab = merge_vocabularies([(part[field][0], part[field][2]) for part in parts])
        lens = [part[field][1] for part in parts]
        fields.append(
            FieldTokens(ids, np.concatenate(lens) if lens else np.zeros(0, np.int64), vocab)
        )
    train = np.concatenate([part[2] for part in parts]) if parts else np.zeros(0, bool)
    _refuse_repeated_uids(catalogue, [part[3] for part in parts])
    return CatalogueTokens(offsets, train, fields[0], fields[1])


def _refuse_repeated_uids(catalogue: Path, digests: list[np.ndarray]) -> None:
    """One uid a product: with two, a citation names both (prepare keeps a uid's first record)."""
    from amazon_sft.answering.index import REDO

    every = np.concatenate(digests) if digests else np.zeros(0, np.uint64)
    order = np.argsort(every, kind="stable")
    same = np.flatnonzero(every[order][1:] == every[order][:-1])
    if len(same):
        first, second = sorted((int(order[same[0]]) + 1, int(order[same[0] + 1]) + 1))
        raise UserError(
            f"catalogue {catalogue} lines {first} and {second} have the same uid: a citation "
            f"would name both products; give one a uid of its own, or {REDO}"
        )
