"""The end-to-end mode of ``amazon-sft eval`` (``--questions FILE``): its flags and its run over one
or two models. What is asked and how an answer is scored: ``end_to_end``; the report it writes
(report.json, report.md, answers.jsonl): ``end_to_end_report``."""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

from amazon_sft.answering import gate as G
from amazon_sft.answering.option_checks import check_counts
from amazon_sft.errors import UserError
from amazon_sft.evaluation import end_to_end as E
from amazon_sft.evaluation import question_file as QF
from amazon_sft.evaluation import question_products as QP
from amazon_sft.evaluation.end_to_end_report import own_right, write_report
from amazon_sft.evaluation.end_to_end_types import EndToEndReport, ModelRun
from amazon_sft.evaluation.loading import compared_overrides, held_back_rows


def add_arguments(p) -> None:
    p.add_argument(
        "--questions",
        type=Path,
        default=None,
        help="end-to-end mode: JSON lines of free-form questions (question, uid or 'absent', "
        "kind, source), each answered grounded through the Answerer `amazon-sft ask` uses (as "
        "ask answers a model trained grounded; a closed-book model is asked grounded too) and "
        "scored; the oracle-context splits are not run",
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
    catalogue = catalogue_said(data_dir, questions)  # before the models answer, not after
    groups = E.question_groups(questions, products)
    specs = dict(zip(("base", "tuned"), args.compare)) if args.compare else {"model": args.model}
    from amazon_sft.answering.index import CatalogueIndex

    index = CatalogueIndex(
        data_dir, meaning_weight=gate.meaning_weight
    )  # opened once for every model
    answers, outcomes, models, figures = {}, {}, {}, {}
    # compared models see the same records; one model alone answers as ask answers it
    taught = _taught(data_dir) if args.compare else None
    overrides = compared_overrides(specs, args.overrides)  # and the same prompts
    for name, spec in specs.items():
        set_seed(args.seed)
        answerer, label = _answerer(
            spec, overrides[name], index, gate.abstain_below, gate.quote_when_sure, taught
        )
        k = args.k or answerer.data.context_records
        record_tokens = answerer.data.context_record_tokens
        models[name] = ModelRun(label, spec, k, record_tokens, held_back_rows(spec))
        answers[name], outcomes[name] = E.ask_all(
            answerer, questions, products, removals, k, args.max_new_tokens, name, args.batch_size,
            source=str(args.questions),
        )  # fmt: skip
        figures[name] = E.summarise(outcomes[name], groups, args.seed)
        del answerer
    rows = [_row(i, q, answers, outcomes, products) for i, q in enumerate(questions)]
    report = EndToEndReport(
        data=str(data_dir),
        questions=str(args.questions),
        asked=len(questions),
        skipped_lines=skipped["not_in_catalogue"],
        other_source=skipped.get("other_source"),
        question_source=args.question_source,  # a filtered report says so (a review)
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        **asdict(gate),  # abstain_below, quote_when_sure, meaning_weight
        seed=args.seed,
        models=models,
        groups=figures,
        comparison=E.compare(outcomes["base"], outcomes["tuned"], groups, args.seed)
        if args.compare
        else None,
        own_right=own_right(rows, list(specs)) if gate.quote_when_sure else None,
        catalogue=catalogue,
    )
    write_report(Path(args.out), report, rows)
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
    questions = QP.resolve_titles(data_dir / "catalogue.jsonl", questions, args.questions)
    products, removals = QP.read_products(
        data_dir / "catalogue.jsonl", questions, _taught_at_all(data_dir), args.questions
    )
    kept, skipped = QP.keep_answerable(questions, products)
    about = [q for q in questions if q.uid or q.removed]  # the rest ask about no product
    if not kept or (about and not any(q.uid or q.removed for q in kept)):
        raise UserError(
            f"--questions {args.questions}: none of its products is in {data_dir}/catalogue.jsonl "
            "(questions about another catalogue? pick them with --question-source)"
        )
    QP.refuse_absent_naming_a_product(data_dir / "catalogue.jsonl", kept, args.questions)
    left_out = {"other_source": len(every) - len(questions)} if args.question_source else {}
    return kept, products, removals, {"not_in_catalogue": [q.line for q in skipped], **left_out}


ABOUT = {
    "generated": "a generated catalogue (amazon-sft synth), not the AmazonTitles rows",
    "real": "the AmazonTitles rows",
}
"""What a question file's ``source`` says its questions are about."""


def catalogue_said(data_dir: Path, questions: list) -> str:
    """The catalogue in words, for a reader who did not run prepare: the file it was prepared
    from and its products (prepare's report.json; left out where that is missing or edited), and
    what the questions say they are about (a new user took the demo's generated catalogue's
    figures for the real rows': its report said only ``Data: demo_out/prepared``).

    >>> catalogue_said(Path("/nowhere"), [])
    ''
    >>> import tempfile
    >>> edited = Path(tempfile.mkdtemp())
    >>> _ = (edited / "report.json").write_text('{"input": "x", "kept": 1e999, "train_products": 1}')
    >>> catalogue_said(edited, [])  # edited by hand: left out, never a traceback after the run
    ''
    """
    try:
        raw = (data_dir / "report.json").read_bytes()
        if not _as_prepare_wrote(data_dir, "report.json", raw):
            raise ValueError("edited since prepare wrote it")
        made = json.loads(raw)
        said = [f"prepared from {made['input']}: {int(made['kept'])} products"]
        said[0] += f", {int(made['train_products'])} of them taught"
    except (OSError, ValueError, KeyError, TypeError, OverflowError):  # 1e999 reads as inf
        said = []
    sources = Counter(q.source for q in questions)
    about = [f"{ABOUT[s]} ({n} questions)" for s, n in sorted(sources.items()) if s in ABOUT]
    if about:
        said.append("the questions are about " + " and ".join(about))
    if unlabelled := sources.get(QF.UNLABELLED):  # counted too (an outside audit)
        said.append(f"{unlabelled} questions name no source")
    return "; ".join(said)


def _as_prepare_wrote(data_dir: Path, name: str, raw: bytes) -> bool:
    """Whether ``raw``, the bytes of ``data_dir/name``, are what prepare wrote (its manifest's
    digest; a manifest without one, from before digests, is taken at its word). A hostile user's
    trial: a hand-edited ``report.json`` put "prepared from /the/real/trn.json.gz: 1300000
    products" into the report of a generated catalogue's figures."""
    from amazon_sft.data.manifest import read_manifest

    try:
        recorded = read_manifest(data_dir).file_digests.get(name, "")
    except UserError:  # no manifest that reads: nothing vouches for the file
        return False
    return not recorded.startswith("sha256:") or recorded[7:] == hashlib.sha256(raw).hexdigest()


def _taught_at_all(data_dir: Path):
    """uid -> whether prepare taught that training product one way or the other: the stable
    hashes it picks them by (``taught_ways``, on the folder's recorded fractions), less those
    it did not teach after all (``not_taught.txt``: a folder prepared before it lacks the file,
    and its every picked product counts as taught)."""
    from amazon_sft.config import DataConfig
    from amazon_sft.data.manifest import read_manifest
    from amazon_sft.data.taught import NOT_TAUGHT, taught_ways

    manifest = read_manifest(data_dir)
    data = manifest.data
    shares = SimpleNamespace(
        **{
            key: data.get(key, getattr(DataConfig(), key))
            for key in ("closed_book_fraction", "grounded_fraction")
        }
    )
    dropped: set[str] = set()
    if NOT_TAUGHT in manifest.files.values():
        try:
            raw = (data_dir / NOT_TAUGHT).read_bytes()
        except OSError as err:
            raise UserError(f"{data_dir / NOT_TAUGHT}: {err.strerror}: prepare again") from None
        if not _as_prepare_wrote(data_dir, NOT_TAUGHT, raw):
            raise UserError(
                f"{data_dir / NOT_TAUGHT} changed since prepare wrote it: prepare again"
            )
        dropped = set(raw.decode().split())
    return lambda uid: bool(taught_ways(uid, shares)) and uid not in dropped


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


def _row(i: int, q: QF.ShopperQuestion, answers: dict, outcomes: dict, products: dict) -> dict:
    return {
        "line": q.line,
        "question": q.text,
        "kind": q.kind,
        "source": q.source,
        "uid": q.uid or QF.ABSENT,
        "removed": q.removed,
        # the report's product group (held-out, seen, ...): an audit recounts its rows from here
        "product": E.product_group(q, products),
        "retrieved": {m: [s.uid for s in answers[m][i].sources] for m in answers},
        "answers": {m: answers[m][i].answer for m in answers},
        # abstained because retrieval was not sure (--abstain-below), not generated
        "doubtful": {m: answers[m][i].doubtful for m in answers},
        "doubt": {m: answers[m][i].doubt for m in answers},  # why, in the gate's words
        "doubt_rule": {m: answers[m][i].doubt_rule for m in answers},  # doubt.RULES
        # retrieval was sure, the answer did not cite its first record: that record quoted
        # (--quote-when-sure)
        "quoted": {m: answers[m][i].quoted for m in answers},
        "outcomes": {m: _plain(outcomes[m][i]) for m in outcomes},
    }


def _plain(outcome: E.Outcome) -> dict:
    raw = vars(outcome).copy()
    raw["rouge_l"] = None if raw["rouge_l"] != raw["rouge_l"] else raw["rouge_l"]  # NaN: JSON null
    return raw
