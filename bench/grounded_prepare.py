"""Benchmark: prepare's grounded stage, its retrieval one query at a time (dense scores over the
whole catalogue, as before) against batched (each question over its words' postings only), in
one process, and batched in worker processes (data.grounded_workers); checks that the shards are
byte-identical in every run and prints the speed-ups it measured.

python bench/grounded_prepare.py --products 200000 --grounded-fraction 0.05 --workers 2
python bench/grounded_prepare.py --products 200000 --shape real   # trn.json's shape and words
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from amazon_sft.answering.index import CatalogueIndex
from amazon_sft.config import load_run_config
from amazon_sft.data.synthetic import write_catalogue
from amazon_sft.prepare import prepare

SHARD_FILES = ("input_ids.npy", "loss_mask.npy", "doc_lens.npy")


def _one_at_a_time(self, questions, k, train_only=False, shortlist=None):
    """The path before batching: one ``top`` a question."""
    return [self.top(q, k, train_only, shortlist) for q in questions]


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


def _retrieval_s(report: dict) -> float:
    """The grounded stage's time less its index build (the same serial work in every run)."""
    return report["seconds"]["grounded"] - report["seconds"]["grounded_index"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--products", type=int, default=200_000, help="input lines")
    ap.add_argument("--grounded-fraction", type=float, default=0.05)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--config", default="tiny", help="its tokenizer is the one prepare uses")
    ap.add_argument(
        "--shape",
        choices=("synthetic", "real"),
        default="synthetic",
        help="synthetic: data/synthetic.py (few words: long postings, the worst case for "
        "batching); real: bench/shaped_catalogue.py (trn.json's lengths, Zipf words)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "trn.json.gz"
        if args.shape == "real":
            from shaped_catalogue import write_shaped_catalogue

            write_shaped_catalogue(source, args.products, seed=0)
        else:
            write_catalogue(source, args.products, seed=0)
        runs = {}
        batched_top_many = CatalogueIndex.top_many
        for name, workers in (("single", 1), ("batched", 1), ("workers", args.workers)):
            CatalogueIndex.top_many = _one_at_a_time if name == "single" else batched_top_many
            out = Path(tmp) / name
            report = _prepare(source, out, args.grounded_fraction, workers, args.config)
            runs[name] = (out, report)
        CatalogueIndex.top_many = batched_top_many
        first = runs["single"][0]
        same = all(
            (first / "shard-00000" / f).read_bytes() == (out / "shard-00000" / f).read_bytes()
            for out, _ in runs.values()
            for f in SHARD_FILES
        )
    serial = runs["single"][1]
    docs = serial["grounded_docs"]
    t_single, t_batched, t_workers = (_retrieval_s(r) for _, r in runs.values())
    print(
        f"{args.products} lines ({args.shape}), {docs} grounded examples (index built in "
        f"{serial['seconds']['grounded_index']:.1f} s). Retrieval, 1 process: one query at a "
        f"time {t_single:.1f} s ({1000 * t_single / max(docs, 1):.2f} ms/example), batched "
        f"{t_batched:.1f} s ({1000 * t_batched / max(docs, 1):.2f} ms/example): speed-up "
        f"{t_single / t_batched:.2f}x. Batched in {args.workers} workers: {t_workers:.1f} s "
        f"(worker start included): {t_batched / t_workers:.2f}x over 1 process, "
        f"{t_single / t_workers:.2f}x in all, on {os.cpu_count()} cores; shards identical in "
        f"all three runs: {same}"
    )
    if not same:
        sys.exit("the shards differ between runs")


if __name__ == "__main__":
    main()
