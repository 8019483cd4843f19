"""Benchmark: retrieval at the whole catalogue's size (issue 21): index build time and peak RSS,
``ask --sources-only`` query latency, batched ``top_many`` throughput, and agreement with the
exact (dense) scorer, on a generated catalogue with the real file's shape.

python bench/retrieval_full.py --work /tmp/speed/full                     # ~1.33M products
python bench/retrieval_full.py --work /tmp/speed/full --before /tmp/speed/base   # + ratios
python bench/retrieval_full.py --lines 3000 --queries 20 --work /tmp/x    # a smoke run

``--work/catalogue.jsonl`` (the index's input, as prepare writes it: the kept products, those
with a description, exact repeats dropped) is generated once with bench/shaped_catalogue.py's
generator (``--lines`` of the real file's shape: 2,248,619 give ~1.33M products) and reused.
``--before`` names another checkout of the package (e.g. ``git archive main`` extracted): the
same measures are taken with its code, each in its own process, and the ratios printed.
Each measure runs in a child process, so its peak RSS is its own (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FREE_FORM = [
    "a board book about a cat and her kittens",
    "black leather wallet for men",
    "complete guide to the classic series",
    "small white kit for travel",
    "new edition of the collection vol 2",
]


def make_catalogue(path: Path, lines: int, seed: int) -> int:
    """The kept products of ``lines`` shaped rows, in catalogue.jsonl's format; returns them."""
    import orjson

    sys.path.insert(0, str(HERE))
    from shaped_catalogue import Shape, _rows

    seen, kept = set(), 0
    tmp = path.with_suffix(".partial")
    with open(tmp, "wb") as fh:
        for line in _rows(lines, seed, Shape(0, 0, 0, 0)):
            row = orjson.loads(line)
            if not row["content"] or row["uid"] in seen:
                continue
            seen.add(row["uid"])
            # prepare's split is a hash share; 5% held out is its shape
            held = hashlib.blake2b(row["uid"].encode(), digest_size=2).digest()[0] < 13
            split = "heldout" if held else "train"
            fh.write(orjson.dumps({**row, "split": split}) + b"\n")
            kept += 1
    os.replace(tmp, path)
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="folder of catalogue.jsonl and the index")
    ap.add_argument("--lines", type=int, default=2_248_619, help="shaped rows to generate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only-catalogue", action="store_true")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "catalogue.jsonl").is_file():
        t0 = time.perf_counter()
        kept = make_catalogue(work / "catalogue.jsonl", args.lines, args.seed)
        print(f"catalogue: {kept} products in {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
