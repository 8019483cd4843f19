"""Benchmark: retrieval at the whole catalogue's size (issue 21): index build time and peak RSS,
``ask --sources-only`` query latency (p50/p99 of the sampled "Tell me about <title>"
questions; the free-form ones listed apart: their time is mostly the repair of unknown words), batched ``top_many`` throughput, and agreement with the
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


def _sample(work: Path, n: int, seed: int) -> list[str]:
    """``n`` titles drawn at random from the catalogue (the same for every code version)."""
    import orjson

    path = work / "queries.json"
    if not path.is_file():
        with open(work / "catalogue.jsonl", "rb") as fh:
            titles = [orjson.loads(line)["title"] for line in fh]
        path.write_text(json.dumps(random.Random(seed).sample(titles, n)))
    return json.loads(path.read_text())


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    """This process's CPU seconds (user + system): on a shared machine, what wall time would
    be without the others' load."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def measure_build(folder: Path) -> dict:
    from amazon_sft.answering.index_build import build_index

    t0, cpu = time.perf_counter(), _cpu_s()
    stats = build_index(folder)
    return {"build_s": round(time.perf_counter() - t0, 1), "build_peak_mb": round(_peak_mb()),
            "build_cpu_s": round(_cpu_s() - cpu, 1), "products": stats["products"]}  # fmt: skip


def measure_queries(folder: Path, titles: list[str], agree: int) -> dict:
    """``ask --sources-only`` latency, ``top_many`` throughput (prepare's call: k=11, train
    only) and, on ``agree`` questions, agreement with the exact dense scorer."""
    import numpy as np

    from amazon_sft.answering.ask import sources_only
    from amazon_sft.answering.index import CatalogueIndex

    t0 = time.perf_counter()
    index = CatalogueIndex(folder)
    out = {"load_s": round(time.perf_counter() - t0, 2)}
    questions = [f"Tell me about {t}" for t in titles] + FREE_FORM
    sources_only(questions[0], index, 3)  # the scorer's tables are read on the first query
    lat, hits, cpu = [], 0, _cpu_s()
    for q, title in zip(questions, titles + [None] * len(FREE_FORM)):
        t0 = time.perf_counter()
        found = sources_only(q, index, 3)
        lat.append(1000 * (time.perf_counter() - t0))
        hits += bool(found) and found[0]["title"] == title
    out["query_cpu_ms_mean"] = round(1000 * (_cpu_s() - cpu) / len(questions), 1)
    free = lat[len(titles) :]  # free-form: their unknown words are repaired (index.words)
    lat = sorted(lat[: len(titles)])
    out |= {"queries": len(lat), "p50_ms": round(statistics.median(lat), 1),
            "p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
            "free_form_ms": [round(x) for x in free], "top1_exact_title": hits}  # fmt: skip
    t0, cpu = time.perf_counter(), _cpu_s()
    many = []
    for start in range(0, len(questions), 64):
        many += index.top_many(questions[start : start + 64], 11, train_only=True)
    out["top_many_per_s"] = round(len(questions) / (time.perf_counter() - t0), 1)
    out["top_many_per_cpu_s"] = round(len(questions) / (_cpu_s() - cpu), 1)
    same_top1, overlap = 0, []
    for q, got in zip(questions[:agree], many[:agree]):
        dense = np.where(index.train, index.scores(index.words(q)), 0.0)
        order = np.lexsort((np.arange(len(dense)), -dense))[:11]
        want = [int(i) for i in order if dense[i] > 0]
        same_top1 += bool(want) and bool(got) and got[0][0] == want[0]
        overlap.append(len({i for i, _ in got} & set(want)) / max(1, len(want)))
    if agree:
        out["agree_top1"] = f"{same_top1}/{min(agree, len(questions))}"
        out["agree_k11_overlap"] = round(statistics.fmean(overlap), 3)
    out["peak_mb"] = round(_peak_mb())
    return out


def _child(args, code: Path, folder: Path, what: str) -> dict:
    cmd = [sys.executable, __file__, "--work", str(args.work), "--measure", what]
    cmd += ["--folder", str(folder), "--queries", str(args.queries), "--agree", str(args.agree)]
    env = {**os.environ, "PYTHONPATH": str(code)}
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=code)
    if proc.returncode != 0:
        sys.exit(f"{what} with {code} failed (exit {proc.returncode})")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(f"{code.name} {what}: {json.dumps(result)}", flush=True)
    return result


def _run_code(args, code: Path, name: str) -> dict:
    folder = Path(args.work) / name
    folder.mkdir(exist_ok=True)
    link = folder / "catalogue.jsonl"
    if not link.exists():
        link.symlink_to(Path(args.work).resolve() / "catalogue.jsonl")
    built = {} if args.no_build else _child(args, code, folder, "build")
    return built | _child(args, code, folder, "queries")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="folder of catalogue.jsonl and the index")
    ap.add_argument("--lines", type=int, default=2_248_619, help="shaped rows to generate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only-catalogue", action="store_true")
    ap.add_argument("--before", help="another checkout of the package, measured too")
    ap.add_argument("--queries", type=int, default=200, help="sampled title questions")
    ap.add_argument("--agree", type=int, default=100, help="questions checked against dense")
    ap.add_argument("--no-build", action="store_true", help="query the indexes already built")
    ap.add_argument("--measure", choices=("build", "queries"), help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work)
    if args.measure:
        titles = _sample(work, args.queries, args.seed)
        folder = Path(args.folder)
        got = measure_build(folder) if args.measure == "build" else None
        got = got or measure_queries(folder, titles, args.agree)
        print("RESULT " + json.dumps(got), flush=True)
        return
    sys.path.insert(0, str(HERE))
    from common import claim_work_dir

    claim_work_dir(work, inputs=("catalogue.jsonl",))
    if not (work / "catalogue.jsonl").is_file():
        t0 = time.perf_counter()
        kept = make_catalogue(work / "catalogue.jsonl", args.lines, args.seed)
        print(f"catalogue: {kept} products in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.only_catalogue:
        return
    _sample(work, args.queries, args.seed)
    after = _run_code(args, HERE.parent, "after")
    if not args.before:
        return
    before = _run_code(args, Path(args.before).resolve(), "before")
    print("\n| measure | before | after | before / after |\n|---|---|---|---|")
    faster = ("top_many_per_s", "top_many_per_cpu_s")  # more is better: after / before
    for key in ("build_s", "build_cpu_s", "build_peak_mb", "p50_ms", "p99_ms",
                "query_cpu_ms_mean", *faster, "peak_mb"):  # fmt: skip
        b, a = before.get(key), after.get(key)
        ratio = (a / b if key in faster else b / a) if a and b else float("nan")
        print(f"| {key} | {b} | {a} | {ratio:.2f}x{' (after / before)' * (key in faster)} |")
    for key in ("top1_exact_title", "agree_top1", "agree_k11_overlap", "load_avg_1m"):
        print(f"| {key} | {before.get(key)} | {after.get(key)} | |")


if __name__ == "__main__":
    main()
