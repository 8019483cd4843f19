"""Held-out titles by a stable hash, and a stable probe sample of training titles.

Both depend only on the normalised title, never on file order or on how many rows came before, so
re-running prepare on a longer or reordered file keeps every title on the same side.
"""

from __future__ import annotations

import hashlib
import heapq
import re

_NON_WORD = re.compile(r"[\W_]+")
_HASH_RANGE = float(2**64)


def normalise_title(title: str) -> str:
    """Case, punctuation and spacing removed, so near-identical titles share a side.

    >>> normalise_title("  The Prophet (Paperback)! ")
    'the prophet paperback'
    """
    return _NON_WORD.sub(" ", title.casefold()).strip()


def title_hash(title: str, salt: str = "", key: str | None = None) -> int:
    """A 64-bit hash of the normalised title (blake2b: same value on every machine and run).
    Pass ``key=normalise_title(title)`` when it is already known."""
    key = normalise_title(title) if key is None else key
    return int.from_bytes(hashlib.blake2b((salt + key).encode(), digest_size=8).digest(), "big")


def is_heldout(title: str, heldout_fraction: float, key: str | None = None) -> bool:
    """True for about ``heldout_fraction`` of distinct titles, always the same ones.

    >>> is_heldout("Mog's Kittens", 0.0), is_heldout("Mog's Kittens", 0.999999)
    (False, True)
    """
    return title_hash(title, key=key) / _HASH_RANGE < heldout_fraction


class ProbeSample:
    """Keeps the ``size`` training titles with the smallest salted hash: a uniform sample that
    does not depend on row order, in O(size) memory. Repeated titles count once."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._heap: list[tuple[int, str, dict]] = []  # max-heap by negated hash
        self._titles: set[str] = set()

    def offer(self, title: str, record: dict, key: str | None = None) -> None:
        if self.size == 0:
            return
        key = normalise_title(title) if key is None else key
        if key in self._titles:
            return
        h = title_hash(title, salt="probe:", key=key)
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, (-h, key, record))
            self._titles.add(key)
        elif -self._heap[0][0] > h:
            _, old_key, _ = heapq.heapreplace(self._heap, (-h, key, record))
            self._titles.discard(old_key)
            self._titles.add(key)

    def records(self) -> list[dict]:
        """The sample, ordered by hash so the file is the same on every run."""
        return [rec for _, _, rec in sorted(self._heap, key=lambda item: -item[0])]
