"""``amazon-sft demo``: the whole story offline, through the same commands a user runs.

1. prepare the generated catalogue (or ``--data trn.json[.gz]``), holding out half the titles so
   the model is taught a small slice of the catalogue, a few dozen products, over several epochs,
   closed-book and grounded (the question with catalogue records, answered with a citation);
2. record the base model's answers to four questions (two taught products, two held-out ones),
   closed-book and grounded, before tuning;
3. LoRA fine-tune;
4. evaluate base and tuned on the same held-out and seen titles, in both modes (report, chart,
   examples);
5. answer the four questions again with the tuned model in both modes, with their sources.

Defaults take 43 minutes on 2 CPU cores (fp32, no AMX) with SmolLM2-135M; ``--config tiny`` runs the
same path in seconds (what CI does). Every step is a real ``amazon-sft`` command, printed first.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from amazon_sft.errors import UserError

QUESTIONS = (  # two taught products, then two held-out ones
    'What is the description of the product "{t}"?',
    "Me fale sobre {t}",
    "Tell me about {t}",
    "Qual é a descrição do produto {t}?",
)
MODES = ("closed", "grounded")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="amazon-sft demo", description=__doc__.splitlines()[0])
    p.add_argument(
        "--config", default="smollm2-135m", help="run config (tiny for a seconds-long check)"
    )
    p.add_argument(
        "--data", default=None, help="a real trn.json(.gz); default: the generated catalogue"
    )
    p.add_argument("--out", default="demo_out", help="everything goes here")
    p.add_argument("--rows", type=int, default=160, help="generated catalogue lines")
    p.add_argument("--heldout-fraction", type=float, default=0.5)
    p.add_argument("--steps", type=int, default=40, help="optimizer steps of the LoRA fine-tune")
    p.add_argument("--n", type=int, default=20, help="titles per split in the evaluation")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument(
        "--max-seq-len", type=int, default=None, help="packed row length (default: the config's)"
    )
    p.add_argument(
        "--grounded-fraction",
        type=float,
        default=0.5,
        help="share of taught products also taught grounded (with records, cited)",
    )
    p.add_argument(
        "overrides", nargs="*", help="extra dotted overrides for training (e.g. train.lr=5e-4)"
    )
    return p.parse_args(argv)


def run(step: str, args: list[str], log) -> str:
    """Run one amazon-sft command, echo it, keep its output in the log; stop on failure."""
    cmd = [sys.executable, "-m", "amazon_sft.cli", *args]
    print(f"\n== {step}\n$ amazon-sft {shlex.join(args)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log.write(f"$ amazon-sft {shlex.join(args)}\n{proc.stdout}\n{proc.stderr}\n")
    if proc.returncode:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UserError(f"demo step '{step}' failed: {tail} (full output in the demo log)")
    print(f"   done in {time.perf_counter() - start:.0f} s", flush=True)
    return proc.stdout


def ask_all(
    who: str, model: str, questions: list[str], prepared: Path, max_new_tokens: int, mode, log
) -> list[dict]:
    """One `amazon-sft ask --json` with every question (the model loads once) in one mode; the
    parsed answers, one JSON line per question."""
    out = run(
        f"{who} answers {len(questions)} questions, {mode}",
        [
            "ask",
            *questions,
            "--model",
            model,
            "--index",
            str(prepared),
            "--closed-book" if mode == "closed" else "--grounded",
            "--json",
            "--max-new-tokens",
            str(max_new_tokens),
        ],
        log,
    )
    return [json.loads(line) for line in out.strip().splitlines()[-len(questions) :]]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data, prepared, run_dir, report = (
        out / "trn.json.gz",
        out / "prepared",
        out / "run",
        out / "eval",
    )
    model_args = ["--config", args.config]
    with open(out / "demo.log", "w") as log:
        if args.data is None:
            run(
                "generate a catalogue", ["synth", "--rows", str(args.rows), "--out", str(data)], log
            )
        source = args.data or str(data)
        run(
            "prepare",
            [
                "prepare",
                source,
                "--out",
                str(prepared),
                *model_args,
                "--overwrite",
                "--quiet",
                f"data.heldout_fraction={args.heldout_fraction}",
                "data.probe_size=1000",
                f"data.grounded_fraction={args.grounded_fraction}",
                "data.absent_fraction=0.2",
                "data.context_record_tokens=64",
                *([f"data.max_seq_len={args.max_seq_len}"] if args.max_seq_len else []),
            ],
            log,
        )
        titles = [
            json.loads(x)["title"]
            for name in ("seen_probe", "heldout")
            for x in (prepared / f"{name}.jsonl").read_text().splitlines()[:2]
        ]
        questions = [q.format(t=t) for q, t in zip(QUESTIONS, titles)]
        base = f"config:{args.config}"
        before = {
            m: ask_all("base model", base, questions, prepared, args.max_new_tokens, m, log)
            for m in MODES
        }
        run(
            "LoRA fine-tune",
            [
                "train",
                *model_args,
                f"data.path={prepared}",
                f"out_dir={run_dir}",
                "overwrite=true",  # a second make demo starts the run over
                "lora.enabled=true",
                f"train.max_steps={args.steps}",
                "train.global_batch_size=2",
                "train.micro_batch_size=1",
                "train.lr=1e-3",
                "train.warmup_steps=4",
                "checkpoint.every_steps=1000000",
                "train.trackers=[]",
                *([f"data.max_seq_len={args.max_seq_len}"] if args.max_seq_len else []),
                *args.overrides,
            ],
            log,
        )
        run(
            "evaluate before and after",
            [
                "eval",
                "--data",
                str(prepared),
                "--compare",
                base,
                str(run_dir),
                "--out",
                str(report),
                "--n",
                str(args.n),
                "--max-new-tokens",
                str(args.max_new_tokens),
            ],
            log,
        )
        after = {
            m: ask_all(
                "tuned model", str(run_dir), questions, prepared, args.max_new_tokens, m, log
            )
            for m in MODES
        }
    summary = {
        "questions": [
            {
                "question": q,
                "taught": i < 2,
                **{f"before_{m}": before[m][i]["answer"] for m in MODES},
                **{f"after_{m}": after[m][i]["answer"] for m in MODES},
                "cited": after["grounded"][i]["cited"],
                "sources": after["grounded"][i]["sources"],
            }
            for i, q in enumerate(questions)
        ]
    }
    (out / "answers.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    print_summary(summary, report)
    return 0


def print_summary(summary: dict, report: Path) -> None:
    metrics = json.loads((report / "report.json").read_text())
    print("\n== Summary")
    for split, by_model in metrics["splits"].items():
        b, t = by_model["base"]["metrics"], by_model["tuned"]["metrics"]
        extra = "".join(
            f"   {key.replace('_', ' ')} {b[key]:.2f} -> {t[key]:.2f}"
            for key in ("citation_accuracy", "abstention_accuracy")
            if key in b
        )
        print(
            f"{split:>16}: ROUGE-L {b['rougeL']:.3f} -> {t['rougeL']:.3f}   EOS {b['eos_rate']:.2f} "
            f"-> {t['eos_rate']:.2f}   loops {b['loop_rate']:.2f} -> {t['loop_rate']:.2f}{extra}"
        )
    for item in summary["questions"]:
        by_uid = {s["uid"]: s for s in item["sources"]}
        cited = ", ".join(f"[{u}] {by_uid[u]['title']}" for u in item["cited"] if u in by_uid)
        print(
            f"\nQ ({'taught' if item['taught'] else 'held out'}): {item['question']}\n"
            f"   before, closed-book: {item['before_closed'][:140]}\n"
            f"   after, closed-book:  {item['after_closed'][:140]}\n"
            f"   after, grounded:     {item['after_grounded'][:140]}\n"
            f"   cites: {cited or 'nothing'}"
        )
    print(
        f"\nReport: {report / 'report.md'} (chart: {report / 'report.png'}); answers: {report.parent / 'answers.json'}"
    )
