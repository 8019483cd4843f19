"""``prepare``'s stages, this checkout against another (``--base``), wall and CPU seconds each.

A catalogue with the real ``trn.json``'s shape (bench/shaped_catalogue.py; or ``--input``) is
prepared by both checkouts in turn (interleaved, ``--repeats`` times, each run in its own process
with that checkout first on ``sys.path``). Per stage (read_clean, split_tokenize, grounded, pack,
write) the wall seconds come from the report and the CPU seconds (all threads of the process,
``time.process_time``) from wrapping the stage functions: on a shared, loaded machine CPU time is
the steadier figure. The two prepared folders must be byte-identical: every file except the
report (it holds the timings) and the manifest's ``integrity`` line (a hash over the report)::

    git archive main | tar -x -C /tmp/base   # the checkout to compare with
    nice python bench/prepare_stages.py --lines 100000 --base /tmp/base --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STAGES = ("read_clean", "split_tokenize", "grounded", "pack", "write", "total")
# stage function of amazon_sft.prepare -> the name its time is reported under
WRAPPED = {
    "_read_clean": "read_clean",
    "_split_encode": "split_tokenize",
    "_add_grounded": "grounded",  # checkouts before amazon_sft/data/grounded_stage.py
    "add_grounded": "grounded",  # prepare's name for it since
    "_pack_and_write": "pack_write",
}
SKIPPED_FILES = {"report.json", "report.md"}

# Runs in the child, with the checkout under test first on sys.path.
CHILD = """
import json, sys, time
import amazon_sft.prepare as P
from amazon_sft.config import load_run_config
cpu = {}
def wrap(name, label):
    inner = getattr(P, name, None)
    if inner is None:
        return
    def timed(*a, **k):
        t0 = time.process_time()
        try:
            return inner(*a, **k)
        finally:
            cpu[label] = cpu.get(label, 0.0) + time.process_time() - t0
    setattr(P, name, timed)
for name, label in json.loads(sys.argv[4]).items():
    wrap(name, label)
cfg = load_run_config(sys.argv[3], json.loads(sys.argv[5]))
t0 = time.process_time()
P.prepare(sys.argv[1], sys.argv[2], cfg, overwrite=True, progress=False)
cpu["total"] = time.process_time() - t0
print("RESULT " + json.dumps(cpu))
"""


def run_once(checkout: Path, input_path: Path, out: Path, config: str, overrides: list[str]):
    """Prepare with ``checkout``'s code in a fresh process: (wall seconds, CPU seconds) per stage."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    args = [str(input_path), str(out), config, json.dumps(WRAPPED), json.dumps(overrides)]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.exit(f"prepare with {checkout} failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    cpu = json.loads(line[len("RESULT ") :])
    wall = json.loads((out / "report.json").read_text())["seconds"]
    if "pack_write" in cpu:  # one function does both: CPU is reported for the pair
        cpu["pack"], cpu["write"] = cpu.pop("pack_write"), None
    return wall, cpu


def differing_files(a: Path, b: Path) -> list[str]:
    """Files whose bytes differ between two prepared folders (the report excepted), or that one
    of them lacks; the manifest is compared without its ``integrity`` and ``file_digests``."""
    names = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    names |= {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    bad = []
    for name in sorted(names):
        if name.name in SKIPPED_FILES:
            continue
        pa, pb = a / name, b / name
        if not (pa.is_file() and pb.is_file()):
            bad.append(f"{name} (only in one)")
        elif name.name == "manifest.json":
            ma, mb = (json.loads(p.read_text()) for p in (pa, pb))
            # file_digests: of files compared here byte by byte, and of the report, whose
            # timings differ; a manifest from an older checkout has none
            for m in (ma, mb):
                m.pop("integrity", None), m.pop("file_digests", None)
            if ma != mb:
                bad.append(str(name))
        elif pa.read_bytes() != pb.read_bytes():
            bad.append(str(name))
    return bad


def _median(values: list) -> float | None:
    kept = [v for v in values if v is not None]
    return round(statistics.median(kept), 2) if kept else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=100_000, help="generated catalogue size")
    ap.add_argument("--input", help="a trn.json(.gz) to use instead of a generated one")
    ap.add_argument("--base", help="another checkout to compare with (e.g. from git archive)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--grounded-fraction", type=float, default=0.0)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", help="working folder (default: a temporary one)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        help="a config override for both (repeatable), e.g. data.shard_rows=64 when the two "
        "checkouts' shipped configs differ",
    )
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from common import claim_work_dir

    work = claim_work_dir(Path(args.work or tempfile.mkdtemp(prefix="prepare_stages_")))
    input_path = Path(args.input) if args.input else work / f"trn{args.lines}.json.gz"
    if not input_path.exists():
        sys.path.insert(0, str(HERE))
        from shaped_catalogue import write_shaped_catalogue

        write_shaped_catalogue(input_path, args.lines, seed=args.seed)
    overrides = [f"data.grounded_fraction={args.grounded_fraction}", *args.set]
    checkouts = {"current": REPO}
    if args.base:
        checkouts["base"] = Path(args.base).resolve()
    runs = {name: [] for name in checkouts}
    for i in range(args.repeats):
        for name, checkout in checkouts.items():  # interleaved: load changes hit both alike
            wall, cpu = run_once(checkout, input_path, work / name, args.config, overrides)
            runs[name].append((wall, cpu))
            print(json.dumps({"run": i, "checkout": name, "wall_s": wall, "cpu_s": cpu}))
    print(f"\n| stage ({input_path.name}, median of {args.repeats}) | " + " | ".join(
        f"{n} wall s | {n} CPU s" for n in checkouts) + (" | wall ratio | CPU ratio |" if args.base else " |"))  # fmt: skip
    print("|---" * (1 + 2 * len(checkouts) + (2 if args.base else 0)) + "|")
    for stage in STAGES:
        cells, med = [], {}
        for name in checkouts:
            med[name] = tuple(_median([r[k].get(stage) for r in runs[name]]) for k in (0, 1))
            cells += [str(med[name][0]), str(med[name][1])]
        if args.base:
            for k in (0, 1):
                b, c = med["base"][k], med["current"][k]
                cells.append(f"{b / c:.2f}x" if b and c else "-")
        print(f"| {stage} | " + " | ".join(cells) + " |")
    print("CPU: `pack` is pack and write together; `total` includes setup (tokenizer load)")
    if args.base:
        bad = differing_files(work / "current", work / "base")
        print("prepared folders byte-identical (report excepted): " + ("yes" if not bad else "NO"))
        if bad:
            sys.exit(f"outputs differ: {bad[:10]}")


if __name__ == "__main__":
    main()
