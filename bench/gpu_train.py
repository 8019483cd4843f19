"""Benchmark (GPU): tokens/s, MFU and peak memory of the real train step, per attention path.

A model of ``--size`` (random weights): ``1b`` a Llama-3.2-1B shape with a 32k vocabulary (the
default), ``135m`` SmolLM2-135M's shape (the default config's model; its 49k vocabulary untied,
so 163M weights), ``tiny`` for CPU smoke runs. Full fine-tune (``+lora``: LoRA), bf16 autocast over
fp32 master weights, packed rows of ``--seq-len`` tokens made by ``amazon-sft prepare`` from the
real rows of ../shared/data (replicated; the generated catalogue when absent). Each variant runs
``amazon_sft.trainer.Trainer.train_step`` itself (loss normalisation, one host sync per step,
optimizer), after ``--warmup`` untimed steps, **in its own process**: a crash, an OOM or a
timeout is recorded with its reason and the next variant runs on a clean device.

  varlen        train.attention=varlen_attn       (torch >= 2.10, CUDA; no wheel)
  flash         train.attention=flash_attention_2 (only when flash-attn imports)
  docsdpa       train.attention=sdpa_per_document (one SDPA call per document)
  sdpa-mask     train.attention=sdpa              (transformers' SDPA, block-diagonal mask)
  varlen-nockpt the first path again without gradient checkpointing (peak memory)
  trl           TRL SFTTrainer, packing_strategy="bfd" + padding_free, same documents (when trl
                imports); tokens/s from TRL's own token count over its timed steps

A variant may carry knobs, ``varlen+fused+m8`` (``bench/gpu_train_knobs.py``): ``fused`` AdamW,
``m<N>`` rows per step, ``chunk<N>`` loss chunk tokens, ``compile`` (train.compile), ``lora``
(lora.enabled), ``prof`` (a profile), to find what holds MFU back.

Each timed variant then checks packed-vs-alone logits of its attention path on the device. MFU
uses amazon_sft.metrics (PaLM convention, formula in the log); the peak is looked up from the
card's name or given with --peak-tflops. Output: one JSON line per variant (``status``: ok,
failed or skipped, with ``reason``), then a Markdown table and the ratios.

    python bench/gpu_train.py                    # on a GPU: 1B shape, 2048 tokens, 20 steps
    python bench/gpu_train.py --quick            # the same variants, fewer steps (< 5 min, H100)
    python bench/gpu_train.py --size tiny --steps 1 --warmup 1 --seq-len 256 --rows 600  # CPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_ROWS, real_like_file
from gpu_train_knobs import split_knobs
from gpu_train_variants import PATHS, SIZES, available, build_cfg, run_variant

from amazon_sft.child_process import die_with_parent
from amazon_sft.data.synthetic import write_catalogue
from amazon_sft.metrics import MFU_FORMULA
from amazon_sft.prepare import prepare

ALL_VARIANTS = "varlen,flash,docsdpa,sdpa-mask,varlen-nockpt,trl"
VARIANTS = (*PATHS, *(f"{p}-nockpt" for p in PATHS), "trl")
"""Every variant: an attention path (PATHS), without gradient checkpointing, or TRL."""
QUICK = {"steps": 5, "warmup": 2, "rows": 3000, "variant_timeout": 240}
COLUMNS = ("variant", "status", "attention", "tokens_per_sec", "mfu", "peak_mem_gib")
COLUMNS += ("host_collate_share", "logits_max_diff", "logits_max_diff_autocast", "reason")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", choices=list(SIZES), default="1b", help="the model's shape (above)")
    ap.add_argument("--steps", type=int, default=20, help="timed optimizer steps per variant")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile, caches)")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--micro", type=int, default=4, help="packed rows per step")
    ap.add_argument("--rows", type=int, default=20000, help="input lines to prepare")
    ap.add_argument("--peak-tflops", type=float, default=0.0)
    ap.add_argument("--variants", default=ALL_VARIANTS, help="comma-separated, with +knobs (above)")
    ap.add_argument("--variant-timeout", type=int, default=900, help="seconds per variant")
    ap.add_argument("--quick", action="store_true", help=f"shorter runs: {QUICK}")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # run one variant (child process)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    try:  # a misspelt variant or knob is refused before anything runs
        for name in args.variants.split(","):
            base = split_knobs(name)[0]
            if base not in VARIANTS:
                raise ValueError(
                    f"unknown variant {base!r} in {name!r}; one of {', '.join(VARIANTS)}"
                )
    except ValueError as err:
        print(f"gpu_train: {err}", file=sys.stderr)
        return 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    card = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"# card: {card}; torch {torch.__version__}; MFU = {MFU_FORMULA}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, note = prepare_data(args, Path(tmp))
        if note:
            print(f"# {note}", flush=True)
        for name in args.variants.split(","):
            why = available(name, device)
            row = (
                {"variant": name, "status": "skipped", "reason": why}
                if why
                else run_in_child(name, args, data_dir, Path(tmp))
            )
            rows.append({"card": card, "size": args.size, **row})
            print(json.dumps(rows[-1]), flush=True)
    print(markdown_table(rows))
    for line in ratios(rows, device):
        print(line)
    return 0


def prepare_data(args, tmp: Path) -> tuple[Path, str | None]:
    source, note = tmp / "trn.json", None
    if SHARED_ROWS.is_file():
        real_like_file(source, args.rows)
    else:
        write_catalogue(source, args.rows, seed=0)
        note = f"real rows ({SHARED_ROWS}) missing: generated catalogue used"
    prepare(source, tmp / "data", build_cfg(args, "sdpa", True), progress=False)
    return tmp / "data", note


def run_in_child(name: str, args, data_dir: Path, tmp: Path) -> dict:
    """One variant in a fresh process; whatever happens there comes back as a row."""
    result = tmp / f"{name}.json"
    cmd = [sys.executable, __file__, *child_args(args), "--worker", name]
    cmd += ["--data", str(data_dir), "--result", str(result)]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=args.variant_timeout,
            preexec_fn=die_with_parent,  # a benchmark killed outright leaves no variant running
        )
    except subprocess.TimeoutExpired:
        return {"variant": name, "status": "failed", "reason": f"timeout {args.variant_timeout} s"}
    if proc.returncode == 0 and result.is_file():
        return {"status": "ok", **json.loads(result.read_text())}
    lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
    why = lines[-1] if lines else f"exit code {proc.returncode}"
    return {"variant": name, "status": "failed", "reason": why[-300:]}


def child_args(args) -> list[str]:
    out = ["--size", args.size, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    out += ["--seq-len", str(args.seq_len), "--micro", str(args.micro)]
    return [*out, "--peak-tflops", str(args.peak_tflops)]


def worker(args) -> int:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        row = run_variant(args.worker, args, args.data, device)
    except Exception:
        traceback.print_exc()  # the parent reports the last line
        return 1
    args.result.write_text(json.dumps(row))
    return 0


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table, one column per field of ``COLUMNS``.

    >>> print(markdown_table([{"variant": "a", "status": "ok", "mfu": 0.5}]))
    | variant | status | attention | tokens_per_sec | mfu | peak_mem_gib | host_collate_share | logits_max_diff | logits_max_diff_autocast | reason |
    |---|---|---|---|---|---|---|---|---|---|
    | a | ok |  |  | 0.5 |  |  |  |  |  |
    """
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = ("" if row.get(c) is None else str(row[c]).replace("|", "/") for c in COLUMNS)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(rows: list[dict], device: str) -> list[str]:
    """The issue's comparisons, where both sides ran."""
    by = {r["variant"]: r for r in rows if r["status"] == "ok"}
    out = []
    if device == "cuda" and {"varlen", "varlen-nockpt"} <= by.keys():
        on, off = by["varlen"]["peak_mem_gib"], by["varlen-nockpt"]["peak_mem_gib"]
        out.append(f"peak memory with/without checkpointing: {on} / {off} GiB ({on / off:.2f}x)")
    # TRL runs with gradient checkpointing: the variants without it are not its match
    # (and a knob, bench/gpu_train_knobs.py, changes what is compared: only plain variants)
    ours = [r for r in by.values() if r["variant"] in PATHS]
    if ours and "trl" in by:
        best, trl = max(ours, key=lambda r: r["tokens_per_sec"]), by["trl"]
        ratio = best["tokens_per_sec"] / trl["tokens_per_sec"]
        out.append(
            f"ours ({best['variant']}) / TRL SFTTrainer ({trl.get('attention')}) tokens/s, "
            f"both with gradient checkpointing: {ratio:.2f}x"
        )
    failed = [r["variant"] for r in rows if r["status"] != "ok"]
    if failed:
        out.append(f"not measured: {', '.join(failed)} (see status and reason above)")
    return out


if __name__ == "__main__":
    sys.exit(main())
