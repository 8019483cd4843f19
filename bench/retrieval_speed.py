"""Benchmark: catalogue index build time and query latency at catalogue scale (generated titles).

python bench/retrieval_speed.py --titles 1300000
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amazon_sft.answering.index import CatalogueIndex
from amazon_sft.answering.index_build import build_index
from amazon_sft.data.synthetic import _product


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--titles", type=int, default=1_300_000)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        titles = []
        with open(Path(tmp) / "catalogue.jsonl", "wb") as fh:
            for i in range(args.titles):
                title, content = _product(rng, i)
                titles.append(title)
                fh.write(
                    orjson.dumps(
                        {"uid": f"{i:010d}", "title": title, "content": content, "split": "train"}
                    )
                    + b"\n"
                )
        stats = build_index(tmp)
        t0 = time.perf_counter()
        index = CatalogueIndex(tmp)
        load_s = time.perf_counter() - t0
        picks = rng.sample(titles, args.queries)
        t0 = time.perf_counter()
        hits = sum(index.search(f"Tell me about {t}", 1)[0].title == t for t in picks)
        per_query_ms = 1000 * (time.perf_counter() - t0) / args.queries
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.titles} titles: index built in {stats['seconds']} s, loaded in {load_s:.2f} s, "
        f"query {per_query_ms:.1f} ms (top-1 exact title {hits}/{args.queries}), peak RSS {rss:.0f} MB"
    )


if __name__ == "__main__":
    main()
