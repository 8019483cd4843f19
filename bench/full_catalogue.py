"""Benchmark: the whole catalogue, measured. A generated catalogue with the real trn.json.gz's
shape (bench/shaped_catalogue.py), then prepare with grounded examples, the index build, 200
``ask --sources-only`` queries and a grounded eval with the tiny model: wall time, peak RSS and
disk used per stage.

python bench/full_catalogue.py --lines 2248619 --work /tmp/full   # the real file's line count
python bench/full_catalogue.py --lines 2000                       # a smoke run: seconds

Each stage runs in its own process, so each peak RSS is that stage's (``ru_maxrss`` of the
process, and of its largest child: prepare's grounded workers). ``--profile STAGE`` runs that
stage under cProfile (in-process work only: with workers, the parent's share) and prints where
its time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGES = ("generate", "prepare", "index", "query", "eval")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _disk_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def _sample_titles(catalogue: Path, n: int) -> list[str]:
    """``n`` titles spread evenly over the catalogue (two streaming passes, nothing held)."""
    import orjson

    with open(catalogue, "rb") as fh:
        total = sum(1 for _ in fh)
    step = max(1, total // n)
    with open(catalogue, "rb") as fh:
        return [orjson.loads(line)["title"] for i, line in enumerate(fh) if i % step == 0][:n]


def _status_kb(pid: str | int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _memory_log(every_s: float) -> None:
    """Logs this process's peak and current RSS and its children's RSS every ``every_s``, so a
    run stopped before its end still says how much memory it had reached."""
    import threading

    def loop() -> None:
        while True:
            time.sleep(every_s)
            kids = []
            for task in Path("/proc/self/task").iterdir():
                try:  # a thread may end between the listing and the read
                    kids += (task / "children").read_text().split()
                except OSError:
                    continue
            kids_mb = [_status_kb(k, "VmRSS") // 1024 for k in kids]
            _log(
                f"memory: peak {_status_kb('self', 'VmHWM') // 1024} MB, now "
                f"{_status_kb('self', 'VmRSS') // 1024} MB; children now {kids_mb} MB"
            )

    threading.Thread(target=loop, daemon=True).start()


def stage_generate(args, work: Path) -> dict:
    from shaped_catalogue import write_shaped_catalogue

    shape = write_shaped_catalogue(work / "trn.json.gz", args.lines, seed=args.seed)
    return {**vars(shape), "disk_mb": round(_disk_mb(work / "trn.json.gz"), 1)}


def stage_prepare(args, work: Path) -> dict:
    from amazon_sft.config import load_run_config
    from amazon_sft.prepare import prepare

    overrides = [
        f"data.grounded_fraction={args.grounded_fraction}",
        f"data.grounded_workers={args.workers}",
        # the default config's rows: at config tiny's 256 tokens a grounded example (3 records
        # and a cited answer) does not fit, and prepare refuses (it used to drop them all)
        "data.max_seq_len=1024",
    ]
    out = work / "prepared"
    progress = args.lines >= 100_000  # its bars (stderr) time each pass of a long run
    prepare(work / "trn.json.gz", out, load_run_config(args.config, overrides), overwrite=True,
            progress=progress)  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    keep = ("lines_read", "kept", "train_docs", "grounded_docs", "grounded_workers", "rows")
    return {
        **{k: report[k] for k in (*keep, "seconds")},
        "grounded_too_long": report["documents_dropped"].get(
            "grounded_too_long", 0
        ),  # built, not written
        "disk_mb": round(_disk_mb(out), 1),
        "index_disk_mb": round(_disk_mb(out / "index"), 1),
    }


def stage_index(args, work: Path) -> dict:
    from amazon_sft.answering.index_build import build_index

    stats = build_index(work / "prepared")
    return {"products": stats["products"], "build_s": stats["seconds"]}


def stage_query(args, work: Path) -> dict:
    from amazon_sft.answering.ask import sources_only
    from amazon_sft.answering.index import CatalogueIndex

    prepared = work / "prepared"
    titles = _sample_titles(prepared / "catalogue.jsonl", args.queries)
    t0 = time.perf_counter()
    index = CatalogueIndex(prepared)
    load_s = time.perf_counter() - t0
    lat, hits = [], 0
    for title in titles:
        t0 = time.perf_counter()
        sources = sources_only(f"Tell me about {title}", index, 3)
        lat.append(1000 * (time.perf_counter() - t0))
        hits += bool(sources) and sources[0]["title"] == title
    lat.sort()
    return {
        "products": len(index),
        "load_s": round(load_s, 2),
        "queries": len(lat),
        "p50_ms": round(statistics.median(lat), 1),
        "p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
        "mean_ms": round(statistics.fmean(lat), 1),
        "top1_exact_title": hits,
    }


def stage_eval(args, work: Path) -> dict:
    from amazon_sft.evaluation.main import main as eval_main

    out = work / "eval"
    argv = ["--data", str(work / "prepared"), "--model", f"config:{args.config}"]
    argv += ["--n", str(args.eval_questions), "--splits", "heldout", "--mode", "grounded"]
    argv += ["--max-new-tokens", "32", "--out", str(out)]
    eval_main(argv)
    report = json.loads((out / "report.json").read_text())
    return {f"questions ({split})": v["model"]["n"] for split, v in report["splits"].items()}


def run_stage(args) -> None:
    """In the child: one stage, then one JSON line with its measures."""
    work = Path(args.work)
    func = globals()[f"stage_{args.stage}"]
    t0 = time.perf_counter()
    if args.lines >= 100_000:
        _memory_log(60)
    if args.profile == args.stage:
        prof = cProfile.Profile()
        result = prof.runcall(func, args, work)
        prof.dump_stats(str(work / f"{args.stage}.prof"))
        stats = pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative")
        stats.print_stats(30)
        stats.sort_stats("tottime").print_stats(20)
    else:
        result = func(args, work)
    wall = time.perf_counter() - t0
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    measures = {
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(own),
        "child_peak_rss_mb": round(child),
    }
    print("RESULT " + json.dumps({"stage": args.stage, **measures, **result}), flush=True)


def _child(args, stage: str) -> dict:
    cmd = [sys.executable, __file__, "--stage", stage, "--work", str(args.work)]
    for name in ("lines", "seed", "grounded_fraction", "workers", "queries", "eval_questions"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    cmd += ["--config", args.config] + (["--profile", args.profile] if args.profile else [])
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    sys.stdout.write("".join(x for x in proc.stdout.splitlines(True) if not x.startswith("RESULT")))
    if proc.returncode != 0:
        sys.exit(f"stage {stage} failed (exit {proc.returncode})")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=2_248_619, help="the real file: 2,248,619")
    ap.add_argument("--work", help="working folder (default: a temporary one, removed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grounded-fraction", type=float, default=0.3)
    ap.add_argument("--workers", type=int, default=0, help="data.grounded_workers (0: auto)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--eval-questions", type=int, default=50)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma list, in order")
    ap.add_argument("--profile", choices=STAGES, help="run this stage under cProfile")
    ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        return run_stage(args)
    tmp = None
    if args.work is None:
        tmp = tempfile.mkdtemp(prefix="full_catalogue_")
        args.work = tmp
    from common import claim_work_dir

    claim_work_dir(Path(args.work))
    results = []
    try:
        for stage in args.stages.split(","):
            _log(f"stage {stage} ({args.lines} lines)")
            results.append(_child(args, stage))
            _log(json.dumps(results[-1]))
            (Path(args.work) / "results.json").write_text(json.dumps(results, indent=1))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n| {args.lines:,} lines | wall s | peak RSS MB (largest child) | other |")
    print("|---|---|---|---|")
    for r in results:
        other = {k: v for k, v in r.items() if k not in ("stage", "wall_s", "peak_rss_mb",
                                                         "child_peak_rss_mb")}  # fmt: skip
        print(f"| {r['stage']} | {r['wall_s']} | {r['peak_rss_mb']} ({r['child_peak_rss_mb']}) "
              f"| {json.dumps(other)} |")  # fmt: skip


if __name__ == "__main__":
    main()
