"""Near-duplicate descriptions, found with one streaming pass and one grouping step: the same
text up to punctuation, typographic quotes and dashes, or most of the same 8-word shingles
(MinHash with LSH banding, each candidate pair checked).

The real rows hold series twins whose descriptions differ only in ``'`` vs ``’`` and ``-`` vs
``–``, and editions whose descriptions differ in a sentence. An exact hash of the description
puts such twins on both sides of the held-out split. Here each description is normalised
(case; quotes, dashes and other punctuation spaced out: ``normalise_text``), cut into
overlapping ``SHINGLE_WORDS``-word shingles, and summarised by ``PERMUTATIONS`` 16-bit
min-hashes (``signatures``; b-bit MinHash: two texts agree on a min-hash with probability
``s + (1 - s) / 65536`` for shingle-set Jaccard similarity ``s``). ``duplicate_labels`` makes
``BANDS`` keys of ``ROWS_PER_BAND`` min-hashes each (two texts share one with probability
``1 - (1 - s**4)**8``: 0.40 at s = 0.5, 0.89 at 0.7, 0.98 at 0.8; 8 x 4 is datasketch's
``_optimal_param`` for a 0.5 threshold with 32 permutations), keeps a candidate pair only when
at least ``MATCH`` of its 32 min-hashes agree (estimated s >= 0.5: without the check, templated
descriptions that share a third of their shingles chain into one giant group), and labels the
connected components. Identical normalised texts agree on every min-hash.

Cost: 64 bytes a row (83 MB at 1.3M rows), a buffer of ``BATCH`` descriptions, and at grouping
one sort per band; containment (split version 3) adds ~11 sampled shingles a real description
at 12 bytes each (~175 MB at 1.3M rows); the grouping of 1.3M descriptions took 18 s and
~1.0 GB of peak memory (bench/near_duplicates_scale.py, docs/benchmarks.md). datasketch's ``MinHash`` took ~0.7 ms a description here (a Python loop over
hash values and numpy calls per description: 15 minutes at 1.3M rows on one core), so the
min-hashes are computed for a whole batch at once with numpy (splitmix64 then ``a x + b`` mod
2**64 as the permutations); bench/near_duplicates.py measures the merges and the cost.
"""

from __future__ import annotations

import hashlib
from array import array

import numpy as np

SHINGLE_WORDS = 8
PERMUTATIONS = 32
ROWS_PER_BAND = 4
"""Min-hashes a band: four 16-bit ones, read as one uint64 key (``duplicate_labels``)."""
BANDS = PERMUTATIONS // ROWS_PER_BAND
BUCKET_LOOKBACK = 8
"""Within a band's bucket, each row is checked against this many rows before it (row order):
against the one before only, an unlike row between two near-twins in every band they shared
kept them apart (an outside review built one). Crowded buckets of boilerplate stay cheap."""
MATCH = 16
"""Min-hashes of 32 a candidate pair must share to be joined (estimated Jaccard >= 0.5)."""
CONTAIN_SAMPLE = 8
"""One shingle in this many (by hash) is kept for containment: ~11 a real description, 12 bytes
each while reading (~175 MB at 1.3M rows; 11.0 and 171 MB measured on the 1,000 real rows). Every 8th caught 8 of the 9 held-out real
descriptions contained in a training one (every shingle: 9; every 16th: 7;
bench/near_duplicates.py)."""
CONTAIN_SHARE = 0.5
"""Share of the smaller text's sampled shingles the other must hold to join it: the leak
measure (a held-out description sharing >= 50% of its shingles with a training one)."""
CONTAIN_MIN_SHARED = 2
"""Sampled shingles two texts must share to join by containment: one shared 8-word run (a
quoted line) does not make two products one."""
CONTAIN_RARE = 8
"""A shingle more rows hold is boilerplate (a publisher's blurb, a seller's template) and joins
none of them: with 50, templated generated descriptions chained into groups of hundreds."""
BATCH = 1024
_TYPOGRAPHIC = str.maketrans(
    dict.fromkeys(
        "\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u2032\u2033"
        "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2026"
        "\u00ab\u00bb\u2039\u203a\u00a0\u00b7\u2022",
        " ",
    )
)
# bytes that belong to a word: ASCII letters and digits, and every byte of a non-ASCII
# character (accented letters; typographic punctuation is spaced out first)
_WORD_BYTE = np.zeros(256, dtype=bool)
for _r in (range(48, 58), range(65, 91), range(97, 123), range(128, 256)):
    _WORD_BYTE[list(_r)] = True
_BYTE_POWERS = np.array([pow(0x100000001B3, j, 2**64) for j in range(64)], dtype=np.uint64)
_POWERS = np.array(
    [pow(0x9E3779B97F4A7C15, j + 1, 2**64) for j in range(SHINGLE_WORDS)], dtype=np.uint64
)


def _seeded(name: bytes, n: int) -> np.ndarray:
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(name + b"%d" % j, digest_size=8).digest(), "big") | 1
            for j in range(n)
        ],
        dtype=np.uint64,
    )


_A, _B = _seeded(b"minhash-a", PERMUTATIONS), _seeded(b"minhash-b", PERMUTATIONS)


def normalise_text(text: str) -> str:
    """Case removed, typographic quotes, dashes and other punctuation spaced out, spacing one
    space: what ``signatures`` hashes, word by word.

    >>> normalise_text("Mog’s best–selling  tale") == normalise_text("MOG'S best-selling tale!")
    True
    >>> normalise_text("Café: “Ünïcode” — ok")
    'café ünïcode ok'
    """
    data = np.frombuffer(text.casefold().translate(_TYPOGRAPHIC).encode(), dtype=np.uint8)
    spaced = np.where(_WORD_BYTE[data], data, np.uint8(32)).tobytes().decode()
    return " ".join(spaced.split())


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of 64-bit values that spreads every input bit."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _words(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(hash of every word of every text, the text it is in): one pass over the batch's bytes,
    so no Python loop runs per word."""
    joined = "\n".join(texts).casefold().translate(_TYPOGRAPHIC).encode()
    data = np.frombuffer(joined, dtype=np.uint8)
    inword = _WORD_BYTE[data]
    edges = np.diff(np.concatenate([[False], inword, [False]]).astype(np.int8))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if not len(starts):
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    at = np.flatnonzero(inword)
    pos = at - np.repeat(starts, ends - starts)  # byte position inside its word
    terms = data[at].astype(np.uint64) * _BYTE_POWERS[np.minimum(pos, 63)]
    words = _mix(np.add.reduceat(terms, np.searchsorted(at, starts)))
    breaks = np.flatnonzero(data == 10)  # the newlines joining the texts
    return words, np.searchsorted(breaks, starts)


def _shingles(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hash of every ``SHINGLE_WORDS``-word shingle of every text, the text it is in, each
    text's word count); a text shorter than a shingle is one shingle of all its words."""
    texts = [t.replace("\n", " ") for t in texts]
    words, owner = _words(texts)
    counts = np.bincount(owner, minlength=len(texts))
    n = SHINGLE_WORDS
    shingles, shingle_owner = np.zeros(0, np.uint64), np.zeros(0, np.int64)
    if len(words) >= n:
        m = len(words) - n + 1
        rolled = words[:m] * _POWERS[0]
        for j in range(1, n):  # shingle i: sum of word i + j times the j-th power, mod 2**64
            rolled += words[j : j + m] * _POWERS[j]
        inside = owner[:m] == owner[n - 1 :]  # no window across two texts
        shingles, shingle_owner = rolled[inside], owner[:m][inside]
    short = np.flatnonzero((counts > 0) & (counts < n))  # one shingle: all its words
    if len(short):
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        take = np.isin(owner, short)
        place = np.arange(len(owner))[take] - first[owner[take]]
        sums = np.add.reduceat(words[take] * _POWERS[place], np.searchsorted(owner[take], short))
        order = np.argsort(np.concatenate([shingle_owner, short]), kind="stable")
        shingles = np.concatenate([shingles, sums])[order]
        shingle_owner = np.concatenate([shingle_owner, short])[order]
    return _mix(shingles), shingle_owner, counts


def signatures(texts: list[str]) -> np.ndarray:
    """(len(texts), PERMUTATIONS) uint16 min-hashes of each text's set of ``SHINGLE_WORDS``-word
    shingles (one shingle when shorter); a text with no word gets a digest of its own bytes.
    A text's signature does not depend on the others of the batch.

    >>> a = "Book two of the series: the king’s dead – a new war begins in the north."
    >>> b = "Book two of the series: the king's dead - a new war begins in the north!"
    >>> sig = signatures([a, b, "A stainless steel kettle that boils a litre in two minutes."])
    >>> int((sig[0] == sig[1]).sum()), int((sig[0] == sig[2]).sum())
    (32, 0)
    """
    return _signatures(texts, *_shingles(texts))


def _signatures(texts, shingles, shingle_owner, counts) -> np.ndarray:
    out = np.zeros((len(texts), PERMUTATIONS), dtype=np.uint16)
    if len(shingles):
        hashes = _A[:, None] * shingles[None, :] + _B[:, None]  # (PERMUTATIONS, shingles)
        has = np.flatnonzero(counts > 0)
        mins = np.minimum.reduceat(hashes, np.searchsorted(shingle_owner, has), axis=1).T
        out[has] = (mins >> np.uint64(48)).astype(np.uint16)  # the top 16 bits (b-bit MinHash)
    for i in np.flatnonzero(counts == 0):  # no word at all: only the very same text is a twin
        digest = hashlib.blake2b(texts[i].encode(), digest_size=2 * PERMUTATIONS).digest()
        out[i] = np.frombuffer(digest, dtype=np.uint16)
    return out


def sampled_shingles(shingles: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (shingle, owner) pairs kept for containment: one shingle in ``CONTAIN_SAMPLE``, by
    its hash (so two texts keep the same shared shingles), each once a text."""
    keep = shingles % np.uint64(CONTAIN_SAMPLE) == 0
    pairs = np.unique(np.stack([owner[keep].astype(np.uint64), shingles[keep]], axis=1), axis=0)
    return pairs[:, 1], pairs[:, 0].astype(np.int64)


def contained_pairs(shingles: np.ndarray, owner: np.ndarray, rows: int):
    """(a, b) row pairs where the text with fewer sampled shingles has at least
    ``CONTAIN_SHARE`` of them (and ``CONTAIN_MIN_SHARED``) in the other, counting only shingles
    held by at most ``CONTAIN_RARE`` rows (boilerplate that many descriptions carry joins none).

    >>> sh = np.array([8, 16, 24, 8, 16, 32, 40, 48, 56, 8, 16], dtype=np.uint64)
    >>> rows = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2])  # row 1 holds 2 of row 0's 3
    >>> [p.tolist() for p in contained_pairs(sh, rows, 3)]  # rows 0, 1, 2 share 8 and 16
    [[0, 0, 1], [1, 2, 2]]

    One shared shingle joins nothing, even when it is all a short text holds:

    >>> one = contained_pairs(np.array([8, 8, 16, 24, 32], np.uint64), np.array([0, 1, 1, 1, 1]), 2)
    >>> [p.tolist() for p in one]
    [[], []]
    """
    sizes = np.bincount(owner, minlength=rows)
    order = np.lexsort((owner, shingles))
    sh, who = shingles[order], owner[order]
    starts = np.flatnonzero(np.concatenate([[True], sh[1:] != sh[:-1]]))
    run = np.diff(np.concatenate([starts, [len(sh)]]))
    rare = np.repeat(run <= CONTAIN_RARE, run)
    keys = []
    for lag in range(1, CONTAIN_RARE):
        same = (sh[lag:] == sh[:-lag]) & rare[lag:]
        if not same.any():
            break
        keys.append(who[:-lag][same].astype(np.uint64) * np.uint64(rows) + who[lag:][same])
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pair, shared = np.unique(np.concatenate(keys), return_counts=True)
    a, b = (pair // np.uint64(rows)).astype(np.int64), (pair % np.uint64(rows)).astype(np.int64)
    smaller = np.minimum(sizes[a], sizes[b])
    keep = (shared >= CONTAIN_MIN_SHARED) & (shared >= CONTAIN_SHARE * smaller)
    return a[keep], b[keep]


def first_of_same(keys: np.ndarray) -> np.ndarray:
    """For each row of ``keys`` (n, BANDS) uint64, the first row with the same keys: one lexsort
    of the columns and one column compared at a time (``np.unique(axis=0)`` sorted 64-byte rows:
    2.8x the time and 3.8x the memory at 1.3M rows, a review).

    >>> first_of_same(np.array([[1, 2], [3, 4], [1, 2], [3, 4], [5, 6]], dtype=np.uint64)).tolist()
    [0, 1, 0, 1, 4]
    """
    n = len(keys)
    order = np.lexsort(keys.T[::-1])  # stable: rows of the same keys in row order
    new = np.zeros(n, dtype=bool)
    new[:1] = True
    for column in keys.T:
        new[1:] |= column[order[1:]] != column[order[:-1]]
    group = np.cumsum(new) - 1
    twin = np.empty(n, dtype=np.int64)
    twin[order] = order[np.flatnonzero(new)][group]
    return twin


def duplicate_labels(signatures: np.ndarray, joined=None) -> np.ndarray:
    """For each row, the first row of its near-duplicate group (uint64): rows joined when they
    share a band of ``ROWS_PER_BAND`` min-hashes and at least ``MATCH`` min-hashes in all
    (within a band's bucket, each row is checked against the ``BUCKET_LOOKBACK`` rows before
    it in row order), or when ``joined`` (a pair of row arrays: ``contained_pairs``) pairs them.

    >>> sig = np.zeros((4, PERMUTATIONS), dtype=np.uint16)
    >>> sig[1] = sig[0]; sig[1, 20:] = 7  # 20 of 32 agree: joined
    >>> sig[2] = 1; sig[2, :4] = 0  # shares band 0 with row 0, nothing else: not joined
    >>> sig[3] = 9
    >>> duplicate_labels(sig).tolist()
    [0, 0, 2, 3]
    """
    n = len(signatures)
    keys = np.ascontiguousarray(signatures).view(np.uint64)  # (n, BANDS): 4 x 16 bits a band
    # rows of one signature (identical texts agree on every min-hash) joined once, to the
    # first; their pairs in the bands dropped: a description shared by many rows kept up to
    # BANDS x BUCKET_LOOKBACK pairs a row (1.75 GB at 400k rows of repeated blurbs, a review)
    twin = first_of_same(keys)
    apart = np.flatnonzero(twin != np.arange(n))
    pairs = [(apart, twin[apart])]
    for band in keys.T:
        order = np.lexsort((np.arange(n), band))
        for lag in range(1, BUCKET_LOOKBACK + 1):
            same = band[order[lag:]] == band[order[:-lag]]
            if not same.any():
                break  # no bucket holds lag + 1 rows
            a, b = order[:-lag][same], order[lag:][same]
            agree = (signatures[a] == signatures[b]).sum(axis=1) >= MATCH
            agree &= twin[a] != twin[b]
            pairs.append((a[agree], b[agree]))
    if joined is not None:
        pairs.append(joined)
    a = np.concatenate([p[0] for p in pairs] + [np.zeros(0, np.int64)])
    b = np.concatenate([p[1] for p in pairs] + [np.zeros(0, np.int64)])
    label = np.arange(n, dtype=np.int64)
    while True:  # min-label propagation over the joined pairs
        low = np.minimum(label[a], label[b])
        new = label.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        new = new[new]  # jump to the label's own label: fewer passes on long chains
        if np.array_equal(new, label):
            return label.astype(np.uint64)
        label = new


class NearDuplicateKeys:
    """Collects ``signatures`` of descriptions as they stream past, a batch at a time, and
    their ``sampled_shingles`` for ``contained_pairs``."""

    def __init__(self) -> None:
        self._signatures = array("H")
        self._sampled = array("Q")
        self._sampled_rows = array("I")  # the row of each sampled shingle
        self._rows = 0
        self._pending: list[str] = []

    def add(self, description: str) -> None:
        self._pending.append(description)
        if len(self._pending) == BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            shingles, owner, counts = _shingles(self._pending)
            sig = _signatures(self._pending, shingles, owner, counts)
            self._signatures.frombytes(sig.tobytes())
            sampled, rows = sampled_shingles(shingles, owner)
            self._sampled.frombytes(sampled.tobytes())
            self._sampled_rows.frombytes((rows + self._rows).astype(np.uint32).tobytes())
            self._rows += len(self._pending)
            self._pending = []

    def signatures(self) -> np.ndarray:
        """(descriptions added, PERMUTATIONS) uint16."""
        self._flush()
        return np.frombuffer(self._signatures, dtype=np.uint16).reshape(-1, PERMUTATIONS)

    def labels(self) -> np.ndarray:
        """``duplicate_labels`` of every description added, alike or contained in another: one
        key a row for ``split_groups``."""
        sig = self.signatures()
        sampled = np.frombuffer(self._sampled, dtype=np.uint64)
        rows = np.frombuffer(self._sampled_rows, dtype=np.uint32).astype(np.int64)
        return duplicate_labels(sig, contained_pairs(sampled, rows, len(sig)))
