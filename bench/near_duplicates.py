"""Near-duplicate groups of the held-out split on the real rows: how many groups the new keys
merge, whether held-out descriptions still overlap a training one, and what the keys cost.

    python bench/near_duplicates.py [--rows ../shared/data/amazontitles_real_head_sample.jsonl]
        [--heldout-fraction 0.1]

Rows are read and cleaned as prepare does (reading.read_records, cleaning.Cleaner with the
default clean config). Four splits are compared: split version 1 (title hash + exact hash of
the cleaned description), the normalised description alone (punctuation, quotes, dashes), split
version 2 (title hash + near_duplicates' MinHash labels) and split version 3 (+ a description
contained in another: ``NearDuplicateKeys.labels``). "Leaks" is the issue's measure: a
held-out description that shares >= 50% of its 8-word shingles with one training description.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amazon_sft.config import CleanConfig
from amazon_sft.data.cleaning import Cleaner
from amazon_sft.data.near_duplicates import (
    SHINGLE_WORDS,
    NearDuplicateKeys,
    duplicate_labels,
    normalise_text,
    signatures,
)
from amazon_sft.data.reading import ReadStats, read_records
from amazon_sft.data.split import heldout_mask, split_groups, title_hash
from bench.common import SHARED_ROWS


def shingles(text: str) -> set[str]:
    words = normalise_text(text).split()
    n = SHINGLE_WORDS
    return {" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


def leaks(contents: list[str], held: np.ndarray) -> list[float]:
    """For each held-out description sharing >= 50% of its shingles with one training
    description, the Jaccard similarity of the two shingle sets (what MinHash estimates)."""
    train = [shingles(c) for c, h in zip(contents, held) if not h]
    out = []
    for c in (c for c, h in zip(contents, held) if h):
        mine = shingles(c)
        best = [len(mine & t) / len(mine | t) for t in train if len(mine & t) >= 0.5 * len(mine)]
        if best:
            out.append(max(best))
    return out


def timed(fn, *args, repeats: int = 3) -> tuple[object, float]:
    """(result, best wall seconds of ``repeats`` runs: the machine is shared)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return out, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=Path, default=SHARED_ROWS)
    ap.add_argument("--heldout-fraction", type=float, default=0.1)
    args = ap.parse_args()
    if not args.rows.is_file():
        sys.exit(f"{args.rows} is missing: the benchmark reads the real rows from ../shared/data")

    def read_clean() -> list:
        cleaner = Cleaner(CleanConfig())  # it remembers pairs seen: a fresh one each run
        return [cleaner(r.title, r.content) for r in read_records(args.rows, ReadStats())]

    pairs, read_clean_s = timed(read_clean)
    titles, contents = zip(*[p for p in pairs if p is not None])
    t = np.array([title_hash(x) for x in titles], dtype=np.uint64)
    exact, exact_s = timed(lambda: np.array([title_hash(c, key=c) for c in contents], np.uint64))
    normalised = np.array([title_hash(normalise_text(c)) for c in contents], dtype=np.uint64)
    sig, sig_s = timed(signatures, list(contents))
    near, group_s = timed(duplicate_labels, sig)

    def contained() -> np.ndarray:
        keys = NearDuplicateKeys()
        for c in contents:
            keys.add(c)
        return keys.labels()

    v3, v3_s = timed(contained)
    print(f"rows after cleaning: {len(titles)}")
    print(
        f"prepare's first stage, read + clean: {read_clean_s / len(pairs) * 1e6:.1f} us a line; "
        f"signatures add {sig_s / read_clean_s:.2f}x that time (serial, same thread)"
    )
    print(
        f"cost per description: exact hash {exact_s / len(contents) * 1e6:.1f} us, "
        f"signature {sig_s / len(contents) * 1e6:.1f} us ({sig_s / exact_s:.1f}x), grouping "
        f"{group_s / len(contents) * 1e6:.1f} us; {sig.nbytes // len(sig)} bytes a row kept "
        f"while reading vs {exact.itemsize}; version 3 (signatures, sampled shingles, "
        f"grouping) {v3_s / len(contents) * 1e6:.1f} us"
    )
    splits = {
        "v1 exact description": exact,
        "normalised description": normalised,
        "v2 near-duplicates": near,
        "v3 + contained": v3,
    }
    counts = {}
    for name, keys in splits.items():
        groups = split_groups(t, keys)
        held = heldout_mask(groups, args.heldout_fraction)
        counts[name] = len(np.unique(groups))
        leaked = leaks(list(contents), held)
        print(
            f"{name:>24}: {counts[name]} groups (largest {np.unique(groups, return_counts=True)[1].max()}), "
            f"{int(held.sum())} held-out rows, {len(leaked)} held-out descriptions leak (>= 50% "
            f"shingles shared; Jaccard {', '.join(f'{j:.2f}' for j in sorted(leaked))})"
        )
    first, last = counts["v1 exact description"], counts["v2 near-duplicates"]
    print(f"groups merged by split version 2: {first - last} ({first} -> {last})")
    print(
        f"groups merged by split version 3: {first - counts['v3 + contained']} ({first} -> {counts['v3 + contained']})"
    )


if __name__ == "__main__":
    main()
