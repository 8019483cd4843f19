"""The held-out split, on titles *and* descriptions, and stable probe samples of titles.

Products that share a title (editions, colours) or a description (17% of the real rows share one
word for word with another title; others differ only in punctuation, typographic quotes and
dashes, or in a sentence: ``near_duplicates``) are one group, and a group is held out or taught whole
(``split_groups``): a held-out product never has a twin in training, by title or by description.
A group is held out when a hash of its smallest title hash falls under ``heldout_fraction``, so the
split depends only on the texts, never on file order or on how many rows came before: re-running
prepare on a longer or reordered file keeps every product on the same side unless a new row joins
two groups.
"""

from __future__ import annotations

import hashlib
import heapq
import re

import numpy as np

SPLIT_VERSION = 4
"""1: groups by title and exact description; 2: descriptions normalised (punctuation, quotes,
dashes) and near-duplicates grouped (``near_duplicates``); 3: a description most of whose rarer
shingles another holds joins it too (``near_duplicates.contained_pairs``); 4: rows of one
signature are joined first (``near_duplicates.first_of_same``: two rows of one description with
more than ``BUCKET_LOOKBACK`` rows between them in every band's bucket stayed apart). Recorded in
the manifest: held-out figures on data split by an older version may count twins as held out."""
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


def split_groups(title_hashes: np.ndarray, text_hashes: np.ndarray) -> np.ndarray:
    """For each row, the smallest title hash of its group: the rows linked through shared title
    hashes or shared description keys (connected components, by min-label propagation; groups
    are small, so it takes a few vectorised passes).

    >>> t = np.array([5, 5, 9, 7], dtype=np.uint64)  # rows 0 and 1 share a title
    >>> d = np.array([1, 2, 2, 3], dtype=np.uint64)  # rows 1 and 2 share a description
    >>> split_groups(t, d).tolist()
    [5, 5, 5, 7]
    """
    if len(title_hashes) == 0:
        return title_hashes.copy()
    _, t_ids = np.unique(title_hashes, return_inverse=True)
    _, d_ids = np.unique(text_hashes, return_inverse=True)
    t_ids, d_ids = t_ids.ravel(), d_ids.ravel()
    label = title_hashes.copy()
    while True:
        by_title = np.full(t_ids.max() + 1, np.iinfo(np.uint64).max, dtype=np.uint64)
        np.minimum.at(by_title, t_ids, label)
        by_text = np.full(d_ids.max() + 1, np.iinfo(np.uint64).max, dtype=np.uint64)
        np.minimum.at(by_text, d_ids, by_title[t_ids])
        new = np.minimum(by_title[t_ids], by_text[d_ids])
        if np.array_equal(new, label):
            return label
        label = new


def heldout_mask(group_hashes: np.ndarray, heldout_fraction: float) -> np.ndarray:
    """True for the rows of about ``heldout_fraction`` of groups (see ``split_groups``), big or
    small: the group's label (its smallest title hash, which would favour big groups) is mixed
    again (splitmix64's finaliser) before it is compared.

    >>> labels = np.arange(1, 100_001, dtype=np.uint64) * np.uint64(2**40)
    >>> round(float(heldout_mask(labels, 0.3).mean()), 2)
    0.3
    """
    z = group_hashes + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return z.astype(np.float64) / _HASH_RANGE < heldout_fraction


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
