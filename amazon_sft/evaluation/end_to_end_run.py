"""The end-to-end mode of ``amazon-sft eval`` (``--questions FILE``): its flags, its run over one
or two models, and its report (report.json, report.md, answers.jsonl). What is asked and how an
answer is scored: ``end_to_end``."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

from amazon_sft.answering import gate as G
from amazon_sft.answering.option_checks import check_counts
from amazon_sft.errors import UserError
from amazon_sft.evaluation import end_to_end as E
from amazon_sft.evaluation import metrics as M
from amazon_sft.evaluation import question_file as QF
from amazon_sft.evaluation.report import json_text, md_text, write_rows, write_staged

TITLE = "End to end: free-form questions through ask's Answerer (real retrieval, k records)"


def add_arguments(p) -> None:
    p.add_argument(
        "--questions",
        type=Path,
        default=None,
        help="end-to-end mode: JSON lines of free-form questions (question, uid or 'absent', "
        "kind, source), each answered as `amazon-sft ask` answers it and scored; the oracle-"
        "context splits are not run",
    )
    p.add_argument(
        "--question-source",
        choices=(*QF.SOURCES, QF.UNLABELLED),
        default=None,
        help="ask only the questions of this source (real rows, the generated catalogue, or "
        "rows that name none)",
    )
    p.add_argument(
        "--k", type=int, default=None, help="records retrieved (default: what training showed)"
    )
    G.add_gate_flags(p)


def refuse_answering_flags(args) -> None:
    """The answering flags are read in end-to-end mode only: refuse them anywhere else."""
    given = [
        f"{flag} {value}"
        for flag, value in (("--k", args.k), ("--question-source", args.question_source))
        if value is not None
    ] + G.given(args)
    if given:
        raise UserError(f"{given[0]} is an answering setting: use it with --questions FILE")


def run(args, data_dir: Path, accelerator) -> int:
    """Ask every question of ``args.questions`` with each model, score, write the report."""
    from accelerate.utils import set_seed

    if accelerator.num_processes > 1:
        raise UserError("--questions runs in one process: launch eval without several processes")
    if args.backend != "hf":
        raise UserError("--questions answers through transformers, as ask does: drop --backend")
    check_counts(args.k)
    gate = G.resolve_gate(args)  # ask's default unless given: eval scores the path users take
    questions, products, removals, skipped = _questions(args, data_dir)
    say_skipped(skipped, args.questions, data_dir)
    groups = E.question_groups(questions, products)
    specs = dict(zip(("base", "tuned"), args.compare)) if args.compare else {"model": args.model}
    from amazon_sft.answering.index import CatalogueIndex

    index = CatalogueIndex(
        data_dir, meaning_weight=gate.meaning_weight
    )  # opened once for every model
    result: dict = {
        "mode": "end to end",
        "data": str(data_dir),
        "questions": str(args.questions),
        "asked": len(questions),
        "question_source": args.question_source,  # a filtered report says so (a review)
        "skipped": skipped,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        **asdict(gate),  # abstain_below, quote_when_sure, meaning_weight
        "seed": args.seed,
        "models": {},
        "groups": {},
    }
    answers, outcomes = {}, {}
    # compared models see the same records; one model alone answers as ask answers it
    taught = _taught(data_dir) if args.compare else None
    for name, spec in specs.items():
        set_seed(args.seed)
        answerer, label = _answerer(
            spec, args.overrides, index, gate.abstain_below, gate.quote_when_sure, taught
        )
        k = args.k or answerer.data.context_records
        tokens = answerer.data.context_record_tokens
        result["models"][name] = {"label": label, "spec": spec, "k": k, "record_tokens": tokens}
        answers[name], outcomes[name] = E.ask_all(
            answerer, questions, products, removals, k, args.max_new_tokens, name, args.batch_size,
            source=str(args.questions),
        )  # fmt: skip
        result["groups"][name] = E.summarise(outcomes[name], groups, args.seed)
        del answerer
    if args.compare:
        result["comparison"] = E.compare(outcomes["base"], outcomes["tuned"], groups, args.seed)
    rows = [_row(i, q, answers, outcomes) for i, q in enumerate(questions)]
    if gate.quote_when_sure:
        result["own_right"] = own_right(rows, list(specs))
    write_report(Path(args.out), result, rows)
    print(f"report: {Path(args.out) / 'report.md'} (also report.json, answers.jsonl)")
    return 0


def say_skipped(skipped: dict, questions: str | Path, data_dir: Path) -> None:
    """One stderr line naming the questions skipped because their product is not in the
    catalogue (a mistyped uid, or questions about another catalogue)."""
    lines = skipped["not_in_catalogue"]
    if lines:
        shown = ", ".join(map(str, lines[:10])) + (" ..." if len(lines) > 10 else "")
        print(
            f"eval: {len(lines)} questions of {questions} skipped: their product is not in "
            f"{data_dir}/catalogue.jsonl (lines {shown})",
            file=sys.stderr,
        )


def own_right(rows: list[dict], models: list[str]) -> dict:
    """Per model, the right citations its own answers made (not written by ``--quote-when-sure``)
    and the questions about a product they are out of."""
    present = [r for r in rows if not r["outcomes"][models[0]]["absent"]]
    return {
        m: {
            "right": sum(r["outcomes"][m]["right"] and not r["quoted"][m] for r in present),
            "of": len(present),
        }
        for m in models
    }


def _questions(args, data_dir: Path):
    questions = QF.read_questions(args.questions)
    every = questions
    if args.question_source:
        questions = [q for q in every if q.source == args.question_source]
        if not questions:
            raise UserError(
                f"--question-source {args.question_source}: none of the {len(every)} questions "
                f"of {args.questions} is from it (they are from: "
                f"{', '.join(sorted({q.source for q in every}))})"
            )
    questions = QF.resolve_titles(data_dir / "catalogue.jsonl", questions)
    products, removals = QF.read_products(
        data_dir / "catalogue.jsonl", questions, taught=_taught_at_all(data_dir)
    )
    kept, skipped = QF.keep_answerable(questions, products)
    about = [q for q in questions if q.uid or q.removed]  # the rest ask about no product
    if not kept or (about and not any(q.uid or q.removed for q in kept)):
        raise UserError(
            f"--questions {args.questions}: none of its products is in {data_dir}/catalogue.jsonl "
            "(questions about another catalogue? pick them with --question-source)"
        )
    QF.refuse_absent_naming_a_product(data_dir / "catalogue.jsonl", kept)
    left_out = {"other_source": len(every) - len(questions)} if args.question_source else {}
    return kept, products, removals, {"not_in_catalogue": [q.line for q in skipped], **left_out}


def _taught_at_all(data_dir: Path):
    """uid -> whether prepare taught that training product one way or the other (the same
    stable hashes, ``prepare.taught_ways``, on the folder's recorded fractions)."""
    from amazon_sft.config import DataConfig
    from amazon_sft.data.manifest import read_manifest
    from amazon_sft.prepare import taught_ways

    data = read_manifest(data_dir).data
    shares = SimpleNamespace(
        **{
            key: data.get(key, getattr(DataConfig(), key))
            for key in ("closed_book_fraction", "grounded_fraction")
        }
    )
    return lambda uid: bool(taught_ways(uid, shares))


def _taught(data_dir: Path) -> dict:
    """How many records a prompt shows and how far each is cut, as prepare taught them: under
    ``--compare`` every model sees the same prompts (a base model's own config cut records to 160 tokens
    against the tuned run's 96, and the report read the difference as the model's), as the
    oracle-context mode does."""
    from amazon_sft.data.manifest import read_manifest
    from amazon_sft.evaluation.main import GROUNDED_KEYS

    data = read_manifest(data_dir).data
    return {key: data[key] for key in GROUNDED_KEYS if key in data}


def _answerer(
    spec: str, overrides: list[str], index, abstain_below: float, quote: bool, taught=None
):
    """``ask``'s Answerer for one model, on the index opened once, records as prepare taught."""
    from dataclasses import replace

    from amazon_sft.answering.ask import Answerer
    from amazon_sft.evaluation.loading import load_for_eval, pick_device
    from amazon_sft.prompts import build_prompt_format

    model, tok, cfg, label = load_for_eval(spec, overrides, pick_device())
    fmt = build_prompt_format(tok, cfg.data)
    data = replace(cfg.data, **(taught or {}))
    for key, value in (taught or {}).items():
        if getattr(cfg.data, key) != value:
            print(
                f"eval: {label}: data.{key}={value} as the prepared folder taught (its config "
                f"says {getattr(cfg.data, key)}): the models compared see the same records",
                file=sys.stderr,
            )
    return Answerer(model, tok, fmt, index, data, abstain_below, quote), label


def _row(i: int, q: QF.ShopperQuestion, answers: dict, outcomes: dict) -> dict:
    return {
        "line": q.line,
        "question": q.text,
        "kind": q.kind,
        "source": q.source,
        "uid": q.uid or QF.ABSENT,
        "removed": q.removed,
        "retrieved": {m: [s["uid"] for s in answers[m][i].sources] for m in answers},
        "answers": {m: answers[m][i].answer for m in answers},
        # abstained because retrieval was not sure (--abstain-below), not generated
        "doubtful": {m: answers[m][i].doubtful for m in answers},
        "doubt": {m: answers[m][i].doubt for m in answers},  # why, in the gate's words
        # retrieval was sure, the answer did not cite its first record: that record quoted
        # (--quote-when-sure)
        "quoted": {m: answers[m][i].quoted for m in answers},
        "outcomes": {m: _plain(outcomes[m][i]) for m in outcomes},
    }


def _plain(outcome: E.Outcome) -> dict:
    raw = vars(outcome).copy()
    raw["rouge_l"] = None if raw["rouge_l"] != raw["rouge_l"] else raw["rouge_l"]  # NaN: JSON null
    return raw


def write_report(out_dir: Path, result: dict, rows: list[dict]) -> None:
    """report.json, answers.jsonl and report.md, written aside and moved in (``write_staged``)."""
    write_staged(
        out_dir,
        {
            "report.json": lambda path: path.write_text(json_text(result)),
            "answers.jsonl": lambda path: write_rows(path, rows),
            "report.md": lambda path: path.write_text(render_markdown(result, rows)),
        },
    )


def _cell(m: dict | None) -> str:
    if m is None:
        return "-"
    return f"{m['value']:.3f} {M.interval_text(m['low'], m['high'])} (of {m['of']})"


HEADLINE = (
    "right_record_cited",
    "right_own_answer",  # behind the gate's quote, the one row that can tell two models apart
    "wrong_record_cited",
    "false_abstention",
    "abstention_recall",
    "abstention_precision",
    "recall_at_1",
    "recall_at_k",
)


def summary_table(result: dict, models: list[str]) -> list[str]:
    """One line per group, the headline rates of each model (values only; intervals below)."""
    heads = [f"{E.METRICS[k][0]} ({m})" for k in HEADLINE for m in models]
    lines = [
        "## Summary",
        "",
        "| group | questions (about a product) | " + " | ".join(heads) + " |",
    ]
    lines.append("|---" * (len(heads) + 2) + "|")
    for group, row in result["groups"][models[0]].items():
        cells = []
        for key in HEADLINE:
            for m in models:
                got = result["groups"][m][group].get(key)
                cells.append("-" if got is None else f"{got['value']:.3f}")
        about = (row.get("right_record_cited") or {}).get("of", "-")  # the rates' base
        lines.append(f"| {md_text(group)} | {row['n']} ({about}) | " + " | ".join(cells) + " |")
    note = (
        "Right, wrong, false abstention and recall are out of the questions about a product "
        "(in brackets), abstention recall out of those about absent products; the tables "
        "below give each count and interval."
    )
    return [*lines, "", note, ""]


def _batching(batch_size: int) -> str:
    if batch_size <= 1:
        return "one question at a time as `ask` answers"
    return (
        f"generated in batches of {batch_size} (left-padded: a near tie can go another way "
        "than in `ask`; `--batch-size 1` answers one at a time, exactly as `ask`)"
    )


def _filtered(result: dict) -> str:
    """The source filter a report was made with, and the questions it left out."""
    source = result.get("question_source")
    if not source:
        return ""
    return f"; only source {source}: {result['skipped'].get('other_source', 0)} others left out"


def render_markdown(result: dict, rows: list[dict], n_examples: int = 5) -> str:
    models = list(result["models"])
    lines = [
        f"# {TITLE}",
        "",
        f"Data: `{result['data']}`; questions: `{result['questions']}` ({result['asked']} asked, "
        f"{len(result['skipped']['not_in_catalogue'])} skipped: their product is not in this "
        f"catalogue{_filtered(result)}); greedy, "
        f"max {result['max_new_tokens']} new tokens, {_batching(result.get('batch_size', 1))}; "
        "95% Wilson intervals for rates, bootstrap over questions for ROUGE-L; differences "
        "between models: Newcombe's paired interval for a rate over the same questions, the "
        "paired bootstrap otherwise.",
        "",
    ]
    if result.get("meaning_weight"):
        from amazon_sft.answering.meaning import CANDIDATES, WORD_SCORE_FLOOR

        lines += [
            f"Retrieval re-scored its first {CANDIDATES} records by meaning too: (score + "
            f"{WORD_SCORE_FLOOR:g}) x exp({result['meaning_weight']:g} x cosine) "
            "(`--meaning-weight`, answering/meaning.py).",
            "",
        ]
    if result.get("abstain_below"):
        doubtful = {m: sum(r["doubtful"][m] for r in rows) for m in models}
        lines += [
            f"Abstains without generating when the first record's retrieval score is under "
            f"{result['abstain_below']} times the second's (`--abstain-below`): "
            + ", ".join(f"{m} {n} of {len(rows)} questions" for m, n in doubtful.items())
            + ".",
            "",
        ]
    if result.get("quote_when_sure"):
        quoted = {m: sum(r["quoted"][m] for r in rows) for m in models}
        own = result.get("own_right") or own_right(rows, models)
        lines += [
            "Above it, an answer that did not cite the first record alone, or whose text was "
            "not that record's (it declined, or cited or quoted another record or none), was "
            "replaced by that record's description, cited (`--quote-when-sure`): "
            + ", ".join(f"{m} {n} of {len(rows)} questions" for m, n in quoted.items())
            + ". So behind the gate the citation is retrieval's, and the tables below can read "
            "the same for two models; **the right record cited by the model's own answer (not "
            "replaced): "
            + ", ".join(f"{m} {n['right']} of {n['of']}" for m, n in own.items())
            + " questions about a product** (the row \"right record cited by the model's own "
            "answer\" below, with its interval; to compare the models' own answers in every "
            "row, evaluate with `--no-quote-when-sure`, or `--gate off` for the models alone).",
            "",
        ]
    for m in models:
        info = result["models"][m]
        lines.append(f"- {m}: {md_text(info['label'])}, k = {info['k']} records")
    lines.append("")
    lines += summary_table(result, models)
    for group in result["groups"][models[0]]:
        lines += [f"## {group} (n={result['groups'][models[0]][group]['n']})", ""]
        cmp = "comparison" in result
        lines.append(
            "| metric | " + " | ".join(models) + (" | tuned - base (95% CI) |" if cmp else " |")
        )
        lines.append("|---" * (len(models) + 1 + cmp) + "|")
        for key, (label, _) in E.METRICS.items():
            cells = [result["groups"][m][group].get(key) for m in models]
            if all(c is None for c in cells):
                continue
            line = f"| {label} | " + " | ".join(_cell(c) for c in cells) + " |"
            if cmp:
                d = result["comparison"][group].get(key)
                line += (
                    f" {d['delta']:+.3f} {M.interval_text(d['low'], d['high'], signed=True)} |"
                    if d
                    else " - |"
                )
            lines.append(line)
        lines.append("")
    lines += ["## Examples", ""]
    for r in rows[:n_examples]:
        lines.append(
            f"**{md_text(r['question'])}** ({md_text(r['kind'])}; expected {md_text(r['uid'])})"
        )
        lines.append("")
        for m in models:
            lines.append(f"- {md_text(m)}: {md_text(r['answers'][m][:400])}")
        lines.append("")
    return "\n".join(lines) + "\n"
