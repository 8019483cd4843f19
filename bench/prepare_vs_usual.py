"""Benchmark: `amazon-sft prepare` against the usual datasets + TRL pipeline, same rows, same tokenizer.

The usual way: ``datasets.load_dataset("json")`` -> filter empties -> format map -> tokenizer map
(``num_proc=2``) -> TRL ``pack_dataset(strategy="bfd")``. Ours: ``prepare()`` with the same 32k
Mistral tokenizer and ``max_seq_len``, nothing held out (so both tokenize every row). Each job runs
in its own process, so wall time, CPU seconds and peak RSS are its own.

    python bench/prepare_vs_usual.py --rows 200000            # both, prints the ratio
    python bench/prepare_vs_usual.py --rows 100000 --ours-only # memory at another size
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_seconds, mistral_tokenizer_dir, real_like_file


def run_usual(file: Path, tok_dir: Path, seq_len: int, work: Path) -> dict:
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl import pack_dataset

    tok = AutoTokenizer.from_pretrained(tok_dir)
    eos = tok.eos_token
    ds = load_dataset("json", data_files=str(file), split="train", cache_dir=str(work / "hf-cache"))
    ds = ds.filter(lambda r: bool(r["content"] and r["content"].strip()))
    ds = ds.map(
        lambda r: {
            "text": f'### Question:\nWhat is the description of the product "{r["title"]}"?'
            f"\n\n### Answer:\n{r['content']}{eos}"
        },
        remove_columns=ds.column_names,
    )
    ds = ds.map(lambda b: tok(b["text"]), batched=True, num_proc=2, remove_columns=["text"])
    packed = pack_dataset(ds, seq_len, strategy="bfd")
    tokens = sum(len(x) for x in packed["input_ids"])
    return {"fill_ratio": round(tokens / (len(packed) * seq_len), 6), "rows_packed": len(packed)}


def run_ours(file: Path, tok_dir: Path, seq_len: int, work: Path, backend: str) -> dict:
    from amazon_sft.config import load_run_config
    from amazon_sft.prepare import prepare

    cfg = load_run_config(
        "mistral-7b-lora",
        [
            f"data.max_seq_len={seq_len}",
            "data.heldout_fraction=0.0",
            f"data.tokenizer_backend={backend}",
        ],
    )
    m = prepare(
        file,
        work / f"prepared-{backend}",
        cfg,
        tokenizer=str(tok_dir),
        overwrite=True,
        progress=False,
    )
    report = json.loads((work / f"prepared-{backend}" / "report.json").read_text())
    return {
        "fill_ratio": m.fill_ratio,
        "rows_packed": m.rows,
        "backend": report["tokenizer_backend"],
        "prompt_encoding": report["prompt_encoding"],
        "seconds": report["seconds"],
    }


def job(args) -> None:
    work = Path(args.work)
    t0, c0 = time.perf_counter(), cpu_seconds()
    if args.job == "usual":
        out = run_usual(Path(args.file), Path(args.tok), args.seq_len, work)
    else:
        out = run_ours(
            Path(args.file), Path(args.tok), args.seq_len, work, args.job.removeprefix("ours-")
        )
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    out["cpu_s"] = round(cpu_seconds() - c0, 2)
    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out["peak_rss_mb"] = round(max(rss_self, rss_kids) / 1024, 1)
    print("RESULT " + json.dumps(out))


def spawn(name: str, file: Path, tok: Path, seq_len: int, work: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--job",
        name,
        "--file",
        str(file),
        "--tok",
        str(tok),
        "--seq-len",
        str(seq_len),
        "--work",
        str(work),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000, help="input lines")
    ap.add_argument("--seq-len", type=int, default=2048, help="packed row length")
    ap.add_argument("--ours-only", action="store_true", help="skip the usual pipeline")
    for internal in ("--job", "--file", "--tok", "--work"):  # set by spawn() for a child job
        ap.add_argument(internal, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job:
        return job(args)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        file = real_like_file(work / "trn.json", args.rows)
        tok = mistral_tokenizer_dir(work)
        results = {}
        names = ["ours-auto", "ours-hf"] + ([] if args.ours_only else ["usual"])
        for name in names:
            results[name] = r = spawn(name, file, tok, args.seq_len, work)
            r["rows_per_s"] = round(args.rows / r["wall_s"], 1)
            print(f"{name:>10}: {json.dumps(r)}", flush=True)
    if "usual" in results:
        for name in ("ours-auto", "ours-hf"):
            ratio = results["usual"]["wall_s"] / results[name]["wall_s"]
            print(
                f"speed-up {name} vs usual: {ratio:.2f}x wall, "
                f"{results['usual']['cpu_s'] / results[name]['cpu_s']:.2f}x CPU-seconds"
            )


if __name__ == "__main__":
    main()
