"""``amazon-sft demo``: the whole story offline, through the same commands a user runs.

1. generate a catalogue whose descriptions are about their titles (``synth --version 2``; or
   ``--data trn.json[.gz]``) and prepare it, holding out half the titles, teaching the rest
   grounded with every kind of question (``data.question_mix``: typos, Portuguese, descriptive,
   attribute, title fragments), records retrieved for the question as typed;
2. write a question file about the held-out products (a few per kind, and products not in the
   catalogue: evaluation/heldout_questions.py) and ask the base model four free-form questions
   (a typo, Portuguese, descriptive, a product not in the catalogue) with ``ask``;
3. LoRA fine-tune;
4. ``eval --questions`` end to end, base and tuned compared (right record cited, abstention,
   retrieval recall; held-out products); ``--oracle-eval`` adds the oracle-context eval;
5. ask the four questions again with the tuned model, with their sources.

Every answer goes through retrieval's gate as a user would run it (``--abstain-below 1.4
--quote-when-sure``: abstain when retrieval is not sure; when it is, the answer must cite its
first record, else that record is quoted); the summary says which answers are the model's own.

Defaults are sized for <= 25 minutes on 2 CPU cores (fp32, no AMX) with SmolLM2-135M: the previous
demo (40 steps, oracle eval of 20 titles x 5 splits) took 43; this one drops the oracle eval and the
closed-book asks: 23 min 13 s on an idle 2-core machine (docs/results.md); ``--config tiny`` runs
the same path in seconds (what CI does). Every step is a real ``amazon-sft`` command, printed
first.
"""

from __future__ import annotations

import json
from pathlib import Path

from amazon_sft.demo_files import (
    DEMO_FILES,
    check_demo_files,
    demo_log,
    staged_demo_file,
)
from amazon_sft.demo_steps import run
from amazon_sft.errors import OneLineParser
from amazon_sft.evaluation.end_to_end_types import EndToEndReport, read_end_to_end_report

MIX = {  # data.question_mix of the demo: every kind a shopper types, the title ones less
    "title": 0.15,
    "fragment": 0.15,
    "reorder": 0.1,
    "typo": 0.15,
    "portuguese": 0.15,
    "descriptive": 0.15,
    "attribute": 0.15,
}


def parse_args(argv):
    p = OneLineParser(prog="amazon-sft demo", description=__doc__.splitlines()[0])
    p.add_argument(
        "--config", default="smollm2-135m", help="run config (tiny for a seconds-long check)"
    )
    p.add_argument(
        "--data", default=None, help="a real trn.json(.gz); default: the generated catalogue"
    )
    p.add_argument("--out", default="demo_out", help="everything goes here")
    p.add_argument("--rows", type=int, default=240, help="generated catalogue lines")
    p.add_argument("--heldout-fraction", type=float, default=0.5)
    p.add_argument("--steps", type=int, default=40, help="optimizer steps of the LoRA fine-tune")
    p.add_argument(
        "--per-kind", type=int, default=4, help="held-out questions per kind in the evaluation"
    )
    p.add_argument(
        "--oracle-eval",
        action="store_true",
        help="also run the oracle-context eval (right record handed over; slow)",
    )
    p.add_argument("--n", type=int, default=20, help="titles per split in the oracle eval")
    p.add_argument(
        "--max-new-tokens", type=int, default=80, help="an answer: 64-token record + citation"
    )
    p.add_argument(
        "--max-seq-len",
        type=int,
        default=DEMO_SEQ_LEN,
        help=f"packed row length (default {DEMO_SEQ_LEN}: a grounded example with its records fits)",
    )
    p.add_argument(
        "--abstain-below",
        type=float,
        default=1.4,
        metavar="RATIO",
        help="retrieval's gate for every answer (ask, eval): abstain when the first record is not "
        "RATIO times ahead of the second (default 1.4, the words-only gate's for the generated "
        "catalogue, whose descriptions share one template; 0: no gate, and so no "
        "--quote-when-sure either)",
    )
    p.add_argument(
        "--no-quote",
        action="store_true",
        help="answer without --quote-when-sure: above the gate the model's answer is kept even "
        "when it does not cite the first record",
    )
    p.add_argument(
        "--grounded-fraction",
        type=float,
        default=1.0,
        help="share of taught products taught grounded (with records, cited)",
    )
    p.add_argument(
        "overrides", nargs="*", help="extra dotted overrides for training (e.g. train.lr=5e-4)"
    )
    return p.parse_args(argv)


DEMO_SEQ_LEN = 1024
"""Row length of the demo's examples, whatever the config's: a grounded example (question, three
records of ``data.context_record_tokens=64``, the answer) needs several hundred tokens, so
``tiny``'s 256 held none of them and ``demo --config tiny`` failed at prepare."""


def gate_args(args) -> list[str]:
    """Retrieval's gate, as a user would answer with it (answering/gate.py): words only (the
    generated catalogue's descriptions share one template, so meaning cannot tell its products
    apart: docs/grounded.md), sure at ``--abstain-below``; 0: none.

    >>> from types import SimpleNamespace as N
    >>> gate_args(N(abstain_below=1.4, no_quote=False))
    ['--gate', 'words', '--abstain-below', '1.4']
    >>> gate_args(N(abstain_below=0.0, no_quote=False))
    ['--gate', 'off']
    """
    if not args.abstain_below:
        return ["--gate", "off"]
    return [
        "--gate",
        "words",
        "--abstain-below",
        str(args.abstain_below),
        *(["--no-quote-when-sure"] if args.no_quote else []),
    ]


def ask_all(who: str, model: str, questions: list[str], prepared: Path, args, log) -> list[dict]:
    """One `amazon-sft ask --grounded --json` with every question (the model loads once); the
    parsed answers, one JSON line per question."""
    out = run(
        f"{who} answers {len(questions)} questions",
        [
            "ask",
            *questions,
            "--model",
            model,
            "--index",
            str(prepared),
            "--grounded",
            "--json",
            "--max-new-tokens",
            str(args.max_new_tokens),
            *gate_args(args),
        ],
        log,
    )
    return [json.loads(line) for line in out.strip().splitlines()[-len(questions) :]]


def prepare_args(args, source: str, prepared: Path) -> list[str]:
    mix = [f"data.question_mix.{kind}={share}" for kind, share in MIX.items()]
    return [
        "prepare",
        source,
        "--out",
        str(prepared),
        "--config",
        args.config,
        "--overwrite",
        "--quiet",
        f"data.heldout_fraction={args.heldout_fraction}",
        "data.probe_size=1000",
        f"data.grounded_fraction={args.grounded_fraction}",
        f"data.closed_book_fraction={0.0 if args.grounded_fraction > 0 else 1.0}",
        "data.absent_fraction=0.2",
        "data.context_record_tokens=64",
        *mix,
        f"data.max_seq_len={args.max_seq_len}",
    ]


def train_args(args, prepared: Path, run_dir: Path) -> list[str]:
    return [
        "train",
        "--config",
        args.config,
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
        f"data.max_seq_len={args.max_seq_len}",
        *args.overrides,
    ]


def eval_args(args, prepared: Path, base: str, run_dir: Path, out: Path, extra) -> list[str]:
    return [
        "eval",
        "--data",
        str(prepared),
        "--compare",
        base,
        str(run_dir),
        "--out",
        str(out),
        "--overwrite",  # the demo folder's own report, made again by each make demo
        "--max-new-tokens",
        str(args.max_new_tokens),
        *extra,
    ]


def main(argv: list[str] | None = None) -> int:
    from amazon_sft.answering.option_checks import check_abstain_below
    from amazon_sft.data.reading import check_input
    from amazon_sft.demo_checks import check_demo_args
    from amazon_sft.output_lock import OutputLock
    from amazon_sft.output_places import refuse_inside_another_output
    from amazon_sft.outputs import landing
    from amazon_sft.ownership import claim_demo_dir

    args = parse_args(argv)
    check_abstain_below(args.abstain_below)  # ask would refuse it only minutes in
    if args.data is not None:
        check_input(Path(args.data))  # before --out is made
    out = landing(args.out)
    refuse_inside_another_output(out, "--out")  # before its lock file and log are written
    check_demo_args(args, train_args(args, out / "prepared", out / "run")[3:])
    with OutputLock(out, "amazon-sft demo"):  # one demo a folder: a second is named the first
        claim_demo_dir(out)  # never over files of the user's
        return _demo(args, out)


def _demo(args, out: Path) -> int:
    """Every step of the demo into its claimed folder ``out``."""
    prepared, report, oracle = out / "prepared", out / "eval", out / "eval-oracle"
    writes = [n for n in DEMO_FILES if not (args.data and n == "trn.json.gz")]
    check_demo_files(out, prepared, [report, oracle], writes)  # before the first step
    settings = " ".join(f"{k}={v}" for k, v in sorted(vars(args).items()))
    log = demo_log(out, f"# amazon-sft demo: {settings}\n")
    if (out / "run" / "final").is_dir():  # said: a stop midway left ask no model to name
        again = (
            f"demo: {out} holds an earlier demo: every step runs again; its tuned model is set "
            f"aside in {out / 'run' / 'previous'}/<time>/ when training starts (never deleted)"
        )
        print(again, flush=True)
        log.write(f"# {again}\n")
    before, after, questions = _steps(args, out, log)
    summary = {
        "questions": [
            {
                "question": q,
                "before": before[i]["answer"],
                "after": after[i]["answer"],
                "before_how": answered_how(before[i]),
                "after_how": answered_how(after[i]),
                "cited": after[i]["cited"],
                "sources": after[i]["sources"],
            }
            for i, q in enumerate(questions)
        ]
    }
    with staged_demo_file(out, "answers.json") as staging:
        staging.write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    print_summary(summary, report)
    return 0


def _steps(args, out: Path, log) -> tuple[list[dict], list[dict], list[str]]:
    """The demo's steps in order: (answers before tuning, after, the questions asked)."""
    from amazon_sft.evaluation.heldout_questions import (
        demo_questions,
        heldout_questions,
        write_questions,
    )
    from amazon_sft.synth_ownership import record_path

    data, prepared, run_dir = out / "trn.json.gz", out / "prepared", out / "run"
    report, oracle = out / "eval", out / "eval-oracle"
    if args.data is None:
        with staged_demo_file(out, data.name) as staging:
            synth = ["synth", "--rows", str(args.rows), "--version", "2", "--out", str(staging)]
            run("generate a catalogue", synth, log)
            record_path(staging).unlink(missing_ok=True)  # the demo's own record proves it
    run("prepare", prepare_args(args, args.data or str(data), prepared), log)
    rows = heldout_questions(prepared, args.per_kind, "real" if args.data else "generated")
    with staged_demo_file(out, "heldout_questions.jsonl") as staging:
        write_questions(rows, staging)
    question_file = out / "heldout_questions.jsonl"
    print(f"\n== {len(rows)} held-out questions: {question_file}", flush=True)
    questions = demo_questions(rows)
    base = f"config:{args.config}"
    before = ask_all("base model", base, questions, prepared, args, log)
    run("LoRA fine-tune", train_args(args, prepared, run_dir), log)
    e2e = ["--questions", str(question_file), *gate_args(args)]
    run("evaluate end to end, before and after", eval_args(args, prepared, base, run_dir,
        report, e2e), log)  # fmt: skip
    if args.oracle_eval:
        extra = ["--n", str(args.n)]
        run("evaluate with oracle context", eval_args(args, prepared, base, run_dir, oracle,
            extra), log)  # fmt: skip
    after = ask_all("tuned model", str(run_dir), questions, prepared, args, log)
    return before, after, questions


def answered_how(answer: dict) -> str:
    """Who wrote the answer: the model, or retrieval's gate (answering/doubt.py, answering/sure.py)."""
    if answer.get("doubtful"):
        why = answer.get("doubt")
        return f"abstained: retrieval not sure ({why})" if why else "abstained: retrieval not sure"
    if answer.get("quoted"):
        return "the first record's answer: retrieval sure, the model's did not give it"
    return "the model's own"


HEADLINE = ("right_record_cited", "wrong_record_cited", "abstention_recall", "recall_at_k")


def headline(report: EndToEndReport) -> list[str]:
    """One line per group of an end-to-end eval report: each HEADLINE figure, base -> tuned
    (the demo's summary and the GPU check's last row).

    Each figure names its own denominator: the group's questions include absent products, so
    a rate over the questions about a product is not "of n" (a review: "0.83 on its 31
    questions" was 20 of 24).

    >>> from amazon_sft.evaluation.end_to_end_types import Figure, GroupFigures
    >>> cell = lambda v: GroupFigures(3, {"right_record_cited": Figure(v, 0.0, 1.0, of=2)})
    >>> report = EndToEndReport("d", "q", 3, [], None, None, 64, 1, 2.0, True, 4.0, 0, {},
    ...                         {"base": {"all": cell(0.5)}, "tuned": {"all": cell(1.0)}})
    >>> headline(report)
    ['all (n=3): right record cited 0.50 -> 1.00 (of 2)']
    """
    base, tuned = report.groups["base"], report.groups["tuned"]
    lines = []
    for group, row in base.items():
        cells = [
            f"{key.replace('_', ' ')} {row.figures[key].value:.2f} -> "
            f"{tuned[group].figures[key].value:.2f} (of {row.figures[key].of})"
            for key in HEADLINE
            if key in row.figures and key in tuned[group].figures
        ]
        lines.append(f"{group} (n={row.n}): " + "   ".join(cells))
    return lines


def print_summary(summary: dict, report: Path) -> None:
    metrics = read_end_to_end_report(report / "report.json")
    print("\n== Summary (end to end: the question through retrieval and the model, as ask does)")
    for line in headline(metrics):
        group, rest = line.split(" (n=", 1)
        print(f"{group:>24} (n={rest}")
    own = metrics.own_right  # with --quote-when-sure (evaluation/end_to_end_run.py)
    if own:
        print(
            f"{'':>24} right record cited by the model's own answer (not quoted): "
            f"{own['base'].right} -> {own['tuned'].right} of {own['base'].of} questions "
            "about a product"
        )
    for item in summary["questions"]:
        by_uid = {s["uid"]: s for s in item["sources"]}
        cited = ", ".join(f"[{u}] {by_uid[u]['title']}" for u in item["cited"] if u in by_uid)
        print(
            f"\nQ: {item['question']}\n"
            f"   before ({item['before_how']}): {item['before'][:140]}\n"
            f"   after  ({item['after_how']}): {item['after'][:140]}\n"
            f"   cites: {cited or 'nothing'}"
        )
    print(f"\nReport: {report / 'report.md'}; answers: {report.parent / 'answers.json'}")
