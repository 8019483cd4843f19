"""Benchmark: prepare's grounded stage (one retrieval per grounded product) in one process and in
worker processes (data.grounded_workers), on a generated catalogue; checks that the shards are the
same and prints the speed-up it measured.

python bench/grounded_prepare.py --products 200000 --grounded-fraction 0.05 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amazon_sft.config import load_run_config
from amazon_sft.data.synthetic import write_catalogue
from amazon_sft.prepare import prepare

SHARD_FILES = ("input_ids.npy", "loss_mask.npy", "doc_lens.npy")


def _prepare(source: Path, out: Path, fraction: float, workers: int, config: str) -> dict:
    overrides = [
        f"data.grounded_fraction={fraction}",
        f"data.grounded_workers={workers}",
        "data.closed_book_fraction=0.1",
        "data.max_seq_len=1024",
        "data.context_record_tokens=64",
    ]
    prepare(source, out, load_run_config(config, overrides), progress=False)
    return json.loads((out / "report.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--products", type=int, default=200_000)
    ap.add_argument("--grounded-fraction", type=float, default=0.05)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--config", default="tiny", help="its tokenizer is the one prepare uses")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "trn.json.gz"
        write_catalogue(source, args.products, seed=0)
        runs = {}
        for workers in (1, args.workers):
            out = Path(tmp) / f"w{workers}"
            runs[workers] = (
                out,
                _prepare(source, out, args.grounded_fraction, workers, args.config),
            )
        (one, serial), (many, parallel) = runs[1], runs[args.workers]
        same = all(
            (one / "shard-00000" / f).read_bytes() == (many / "shard-00000" / f).read_bytes()
            for f in SHARD_FILES
        )
    docs = serial["grounded_docs"]
    # the stage's time less its index build (the same serial work in both runs)
    t1, tn = (r["seconds"]["grounded"] - r["seconds"]["grounded_index"] for r in (serial, parallel))
    print(
        f"{args.products} products, {docs} grounded examples (index built in "
        f"{serial['seconds']['grounded_index']:.1f} s): retrieval {t1:.1f} s in 1 process "
        f"({1000 * t1 / max(docs, 1):.1f} ms/example), {tn:.1f} s in {args.workers} workers "
        f"(worker start included): speed-up {t1 / tn:.2f}x on {os.cpu_count()} cores; "
        f"shards identical: {same}"
    )
    if not same:
        sys.exit("the shards differ between worker counts")


if __name__ == "__main__":
    main()
