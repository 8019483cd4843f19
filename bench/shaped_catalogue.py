"""A generated catalogue with the real ``trn.json``'s shape, written as a stream.

The real file (docs/dataset.md): 2,248,619 JSON lines, about 39% with an empty ``content``;
non-empty rows have titles of median 54 characters (p95 125, max 1,999) and descriptions of
median 398 (p95 1,728, max 197,622). Here titles and descriptions are lognormal with those
medians and 95th percentiles (clipped at those maxima), made of words drawn from a Zipf
distribution over a large made-up vocabulary (a few hundred thousand words), so products are
told apart by their words as real ones are, and a query's words have the spread of document
frequencies real ones have (a few very common words, a long tail of rare ones), which is what
retrieval cost depends on. A description repeats some of its title's words (real ones name the
product). A few rows are exact repeats and a few are editions (another title, the same
description), as in the real file.

Rows are made in chunks of ``CHUNK_ROWS`` with numpy and written at once: memory does not grow
with the line count. Same seed, same bytes.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

REAL_LINES = 2_248_619
EMPTY_SHARE = 0.39
TITLE_CHARS = (54, 125, 1_999)  # median, p95, max (non-empty rows, docs/dataset.md)
CONTENT_CHARS = (398, 1_728, 197_622)
VOCAB_WORDS = 400_000
ZIPF_EXPONENT = 1.07
REPEAT_SHARE = 0.02  # an exact repeat of a recent row
EDITION_SHARE = 0.05  # a recent row's description under another title
CHUNK_ROWS = 20_000
# "series" is listed twice (twice as frequent): kept, so that a seed writes the same bytes as
# for the figures in docs/benchmarks.md
_COMMON = [
    "the",
    "of",
    "and",
    "a",
    "for",
    "with",
    "to",
    "in",
    "by",
    "on",
    "from",
    "your",
    "new",
    "set",
    "pack",
    "book",
    "edition",
    "guide",
    "black",
    "white",
    "large",
    "small",
    "mini",
    "kit",
    "series",
    "vol",
    "2",
    "3",
    "1",
    "series",
    "collection",
    "classic",
    "complete",
]
_SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]


@dataclass
class Shape:
    lines: int
    empty: int
    repeats: int
    editions: int


def _lognormal(rng: np.random.Generator, n: int, median: int, p95: int, cap: int) -> np.ndarray:
    """``n`` lengths, lognormal with the given median and 95th percentile, in [3, cap]."""
    sigma = math.log(p95 / median) / 1.6449
    raw = rng.lognormal(math.log(median), sigma, n)
    return np.clip(raw, 3, cap).astype(np.int64)


def vocabulary(size: int = VOCAB_WORDS) -> np.ndarray:
    """Made-up words, most frequent first: a few common English ones, then 2-4 syllable words
    named by their rank (distinct by construction).

    >>> made_up = vocabulary(5000)[len(_COMMON):]
    >>> list(vocabulary(40)[:3]), len(set(made_up)) == len(made_up)
    (['the', 'of', 'and'], True)
    """
    words = list(_COMMON)
    base = len(_SYLLABLES)
    rank = 0
    while len(words) < size:
        n, parts = rank + base, []
        while n:
            n, digit = divmod(n, base)
            parts.append(_SYLLABLES[digit])
        words.append("".join(parts).capitalize() if rank % 3 == 0 else "".join(parts))
        rank += 1
    return np.array(words[:size], dtype=object)


class _Words:
    """Zipf-distributed word draws over ``vocabulary()``."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng, self.vocab = rng, vocabulary()
        weights = 1.0 / np.arange(1, len(self.vocab) + 1) ** ZIPF_EXPONENT
        self.cdf = np.cumsum(weights / weights.sum())

    def text(self, chars: int, start: list[str] | None = None) -> str:
        """Words up to ``chars`` characters, cut at a word boundary (drawn generously: a word
        with its space is 3-12 characters)."""
        ids = np.searchsorted(self.cdf, self.rng.random(chars // 3 + 2))
        words = (start or []) + self.vocab[np.minimum(ids, len(self.vocab) - 1)].tolist()
        text = " ".join(words)
        if len(text) <= chars:
            return text
        space = text.rfind(" ", 0, chars + 1)
        return text[: space if space > 0 else chars]


def _rows(n_lines: int, seed: int, shape: Shape) -> Iterator[bytes]:
    rng = np.random.default_rng(seed)
    words = _Words(rng)
    recent: list[tuple[str, str, str]] = []
    for start in range(0, n_lines, CHUNK_ROWS):
        n = min(CHUNK_ROWS, n_lines - start)
        title_len = _lognormal(rng, n, *TITLE_CHARS)
        content_len = _lognormal(rng, n, *CONTENT_CHARS)
        roll = rng.random(n)
        for i in range(n):
            index = start + i
            if roll[i] < REPEAT_SHARE and recent:
                uid, title, content = recent[int(rng.integers(len(recent)))]
                shape.repeats += 1
            else:
                uid = f"{index:010d}"
                title = words.text(int(title_len[i]))
                if roll[i] < REPEAT_SHARE + EMPTY_SHARE:
                    content = ""
                    shape.empty += 1
                elif roll[i] < REPEAT_SHARE + EMPTY_SHARE + EDITION_SHARE and recent:
                    content = recent[int(rng.integers(len(recent)))][2]
                    shape.editions += 1
                else:
                    named = title.split()[: int(rng.integers(1, 4))]
                    content = words.text(int(content_len[i]), named)
                if content:
                    recent.append((uid, title, content))
                    if len(recent) > 1000:
                        recent.pop(0)
            shape.lines += 1
            yield orjson.dumps(
                {
                    "uid": uid,
                    "title": title,
                    "content": content,
                    "target_ind": [index % 97],
                    "target_rel": [1.0],
                }
            )


def write_shaped_catalogue(path: str | Path, n_lines: int = REAL_LINES, seed: int = 0) -> Shape:
    """Write ``n_lines`` rows to ``path`` (``.gz``: gzip level 1), streaming; returns what was
    written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = Shape(0, 0, 0, 0)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb", **({"compresslevel": 1} if path.suffix == ".gz" else {})) as fh:
        buf: list[bytes] = []
        for line in _rows(n_lines, seed, shape):
            buf.append(line)
            if len(buf) == CHUNK_ROWS:
                fh.write(b"\n".join(buf) + b"\n")
                buf.clear()
        if buf:
            fh.write(b"\n".join(buf) + b"\n")
    return shape
