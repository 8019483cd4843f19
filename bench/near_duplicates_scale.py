"""What split version 3's near-duplicate keys cost at the full catalogue's size: time and memory
of ``NearDuplicateKeys`` (signatures and sampled shingles while reading, then ``labels``) over
``--rows`` descriptions made from the real ones.

    python bench/near_duplicates_scale.py [--rows 1300000] [--changed 0.2]

The real rows (../shared/data) are 1,000; the catalogue is 1.3M. Each made description is a
real cleaned one with a share ``--changed`` of its words replaced by words drawn from the real
descriptions' vocabulary (seeded), so the copies of one real description share some shingles
(as editions and templated blurbs do) and most are their own: what ``contained_pairs`` sorts
and counts is of the catalogue's kind. Generating the text is timed alone in a first pass and
taken out of the figure. Memory is the process's peak RSS over what it held before the keys
were built (ru_maxrss: a high-water mark, so the figure is an upper bound of what prepare adds).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amazon_sft.config import CleanConfig
from amazon_sft.data.cleaning import Cleaner
from amazon_sft.data.near_duplicates import NearDuplicateKeys
from amazon_sft.data.reading import ReadStats, read_records
from bench.common import SHARED_ROWS


def made_descriptions(real: list[list[str]], vocab: list[str], rows: int, changed: float):
    """``rows`` descriptions: real ones in turn, each with ``changed`` of its words replaced."""
    rng = np.random.default_rng(0)
    for i in range(rows):
        words = list(real[i % len(real)])
        swap = np.flatnonzero(rng.random(len(words)) < changed)
        for j, w in zip(swap, rng.integers(0, len(vocab), len(swap))):
            words[j] = vocab[w]
        yield " ".join(words)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_300_000)
    ap.add_argument("--changed", type=float, default=0.2)
    ap.add_argument("--real", type=Path, default=SHARED_ROWS)
    args = ap.parse_args()
    if not args.real.is_file():
        sys.exit(f"{args.real} is missing: the benchmark reads the real rows from ../shared/data")
    cleaner = Cleaner(CleanConfig())
    pairs = [cleaner(r.title, r.content) for r in read_records(args.real, ReadStats())]
    real = [content.split() for _, content in (p for p in pairs if p is not None)]
    vocab = sorted({w for words in real for w in words})

    start = time.perf_counter()
    for _ in made_descriptions(real, vocab, args.rows, args.changed):
        pass
    making_s = time.perf_counter() - start

    before_mb = peak_rss_mb()
    keys = NearDuplicateKeys()
    start = time.perf_counter()
    for text in made_descriptions(real, vocab, args.rows, args.changed):
        keys.add(text)
    keys.signatures()  # the last batch
    reading_s = time.perf_counter() - start - making_s
    read_mb = peak_rss_mb()
    start = time.perf_counter()
    labels = keys.labels()
    grouping_s = time.perf_counter() - start
    groups = len(np.unique(labels))
    print(
        f"{args.rows:,} descriptions made from {len(real)} real ones ({args.changed:.0%} of "
        f"words replaced), {groups:,} near-duplicate groups"
    )
    print(
        f"while reading: {reading_s:.1f} s ({reading_s / args.rows * 1e6:.1f} us a description; "
        f"making the text, {making_s:.1f} s, taken out), peak RSS +{read_mb - before_mb:.0f} MB"
    )
    print(
        f"grouping (labels: bands and containment): {grouping_s:.1f} s, peak RSS "
        f"+{peak_rss_mb() - before_mb:.0f} MB over the start"
    )


if __name__ == "__main__":
    main()
