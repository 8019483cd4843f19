"""Benchmark: the bytes of one LoRA checkpoint, this checkout against ``--base`` (another
checkout, e.g. one from before adapter-only checkpoints), per engine (one process, ZeRO-2 and
ZeRO-3 on 2 CPU ranks over gloo). Each run trains one optimizer step and checkpoints it; the
checkpoint folder's size (and the run's wall time, start-up included) is printed with the ratio.

    git worktree add /tmp/base HEAD~1
    amazon-sft prepare ../shared/data/amazontitles_real_head_sample.jsonl --out /tmp/ck/data \\
        --config smollm2-135m
    python bench/checkpoint_size.py --data /tmp/ck/data --config smollm2-135m --base /tmp/base \\
        --engines single,zero2,zero3
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENGINES = {
    "single": None,
    "zero2": "launch/accelerate/zero2.yaml",
    "zero3": "launch/accelerate/zero3.yaml",
}
ONE_STEP = [
    "train.max_steps=1",
    "checkpoint.every_steps=1",
    "checkpoint.keep_last=1",
    "train.global_batch_size=2",
    "train.micro_batch_size=1",
    "train.trackers=[]",
    "lora.enabled=true",
]


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def one_checkpoint(code: Path, engine: str, args, out: Path) -> tuple[int, float]:
    """(bytes of the step-1 checkpoint, wall seconds) of one LoRA step with ``code``'s train.py."""
    train = [str(code / "amazon_sft" / "train.py"), "--config", args.config]
    overrides = [f"data.path={args.data}", f"out_dir={out}", *ONE_STEP, *args.overrides]
    if ENGINES[engine] is None:
        cmd = [sys.executable, *train, *overrides]
    else:
        accelerate = str(Path(sys.executable).with_name("accelerate"))
        launch = ["launch", "--config_file", str(code / ENGINES[engine]), "--num_processes", "2"]
        cmd = [accelerate, *launch, "--main_process_port", str(29700 + os.getpid() % 200)]
        cmd += [*train, *overrides]
    env = {**os.environ, "PYTHONPATH": str(code)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=code, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{code} ({engine}) failed: {proc.stderr[-3000:]}")
    (checkpoint,) = (out / "checkpoints").glob("step-*")
    return folder_bytes(checkpoint), seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a prepared folder")
    p.add_argument("--config", default="smollm2-135m", help="the run config (its model)")
    p.add_argument("--base", type=Path, help="another checkout to compare with")
    p.add_argument("--engines", default="single", help=f"comma-separated of {', '.join(ENGINES)}")
    p.add_argument("overrides", nargs="*", help="more dotted overrides for both runs")
    args = p.parse_args()
    engines = args.engines.split(",")
    if unknown := [e for e in engines if e not in ENGINES]:
        p.error(f"--engines: unknown {unknown}; pick from {', '.join(ENGINES)}")
    checkouts = {"this checkout": REPO, **({"base": args.base} if args.base else {})}
    print(f"one LoRA checkpoint of --config {args.config} (1 step), bytes and run wall time")
    print("| engine | " + " | ".join(checkouts) + (" | base / this |" if args.base else " |"))
    print("|---" * (len(checkouts) + 1 + bool(args.base)) + "|")
    for engine in engines:
        cells, sizes = [], []
        for code in checkouts.values():
            out = Path(tempfile.mkdtemp(prefix="ckpt-size-"))
            try:
                size, seconds = one_checkpoint(Path(code).resolve(), engine, args, out / "run")
            finally:
                shutil.rmtree(out, ignore_errors=True)
            sizes.append(size)
            cells.append(f"{size / 1e6:.1f} MB ({seconds:.0f} s)")
        ratio = f" {sizes[1] / sizes[0]:.1f}x |" if args.base else ""
        print(f"| {engine} | " + " | ".join(cells) + " |" + ratio, flush=True)


if __name__ == "__main__":
    main()
