"""What prepare's row cleaning and near-duplicate grouping cost, this checkout against another.

    python bench/cleaning_cost.py --base /tmp/base      # a checkout of the commit to compare

Cleaning: ``clean_text`` on both fields of the 1,000 real rows of ../shared/data, repeated
``--repeat`` times (microseconds a row). Grouping: ``duplicate_labels`` on ``--rows`` random
signatures of which 2% are one description (a crowded bucket, as boilerplate makes), seconds.
Each module is loaded from its checkout's file, so both run in this process and interpreter.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amazon_sft.config import CleanConfig

HERE = Path(__file__).resolve().parents[1]
SHARED_ROWS = HERE.parent / "shared" / "data" / "amazontitles_real_head_sample.jsonl"


def _module(checkout: Path, relative: str, name: str):
    spec = importlib.util.spec_from_file_location(name, checkout / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(checkout: Path, rows: list[dict], repeat: int, signatures: np.ndarray) -> dict:
    cleaning = _module(checkout, "amazon_sft/data/cleaning.py", f"cleaning_{id(checkout)}")
    grouping = _module(checkout, "amazon_sft/data/near_duplicates.py", f"nd_{id(checkout)}")
    cfg, counts = CleanConfig(), Counter()
    start = time.perf_counter()
    for _ in range(repeat):
        for row in rows:
            cleaning.clean_text(row["title"], cfg, counts, "title")
            cleaning.clean_text(row["content"], cfg, counts, "content")
    per_row_us = (time.perf_counter() - start) / (repeat * len(rows)) * 1e6
    start = time.perf_counter()
    grouping.duplicate_labels(signatures)
    return {"clean_us_a_row": per_row_us, "group_s": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, help="another checkout, measured the same way")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--rows", type=int, default=1_300_000)
    args = ap.parse_args()
    if not SHARED_ROWS.is_file():
        raise SystemExit(f"{SHARED_ROWS} is missing: this benchmark reads the real rows")
    rows = [json.loads(line) for line in SHARED_ROWS.read_text().splitlines() if line.strip()]
    sig = np.random.default_rng(0).integers(0, 65535, size=(args.rows, 32), dtype=np.uint16)
    sig[::50] = sig[0]
    now = measure(HERE, rows, args.repeat, sig)
    print(f"this checkout: cleaning {now['clean_us_a_row']:.1f} us a row, grouping "
          f"{args.rows:,} rows {now['group_s']:.1f} s")  # fmt: skip
    if args.base:
        before = measure(args.base, rows, args.repeat, sig)
        print(f"{args.base}: cleaning {before['clean_us_a_row']:.1f} us a row, grouping "
              f"{before['group_s']:.1f} s")  # fmt: skip
        print(f"ratio now / base: cleaning {now['clean_us_a_row'] / before['clean_us_a_row']:.2f}x, "
              f"grouping {now['group_s'] / before['group_s']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
