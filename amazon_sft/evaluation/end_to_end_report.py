"""The report of ``amazon-sft eval --questions``: report.json, answers.jsonl and report.md, each
figure with its denominator and interval, the protocol named in the header."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from amazon_sft.evaluation import end_to_end as E
from amazon_sft.evaluation import metrics as M
from amazon_sft.evaluation.end_to_end_types import EndToEndReport, Figure, OwnRight
from amazon_sft.evaluation.report import json_text, md_text, write_rows, write_staged

TITLE = "End to end: free-form questions through ask's Answerer (real retrieval, k records)"


def own_right(rows: list[dict], models: list[str]) -> dict[str, OwnRight]:
    """Per model, the right citations its own answers made (not written by ``--quote-when-sure``)
    and the questions about a product they are out of."""
    present = [r for r in rows if not r["outcomes"][models[0]]["absent"]]
    return {
        m: OwnRight(
            right=sum(r["outcomes"][m]["right"] and not r["quoted"][m] for r in present),
            of=len(present),
        )
        for m in models
    }


def write_report(out_dir: Path, result: EndToEndReport, rows: list[dict]) -> None:
    """report.json, answers.jsonl and report.md, written aside and moved in (``write_staged``)."""
    write_staged(
        out_dir,
        {
            "report.json": lambda path: path.write_text(json_text(result.to_json())),
            "answers.jsonl": lambda path: write_rows(path, rows),
            "report.md": lambda path: path.write_text(render_markdown(result, rows)),
        },
    )


def _cell(m: Figure | None) -> str:
    if m is None:
        return "-"
    return f"{m.value:.3f} {M.interval_text(m.low, m.high)} (of {m.of})"


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


def summary_table(result: EndToEndReport, models: list[str]) -> list[str]:
    """One line per group, the headline rates of each model (values only; intervals below)."""
    heads = [f"{E.METRICS[k][0]} ({m})" for k in HEADLINE for m in models]
    lines = [
        "## Summary",
        "",
        "| group | questions (about a product) | " + " | ".join(heads) + " |",
    ]
    lines.append("|---" * (len(heads) + 2) + "|")
    for group, row in result.groups[models[0]].items():
        cells = []
        for key in HEADLINE:
            for m in models:
                got = result.groups[m][group].figures.get(key)
                cells.append("-" if got is None else f"{got.value:.3f}")
        right = row.figures.get("right_record_cited")
        about = "-" if right is None else right.of  # the rates' base
        lines.append(f"| {md_text(group)} | {row.n} ({about}) | " + " | ".join(cells) + " |")
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


def _filtered(result: EndToEndReport) -> str:
    """The source filter a report was made with, and the questions it left out."""
    if not result.question_source:
        return ""
    return f"; only source {result.question_source}: {result.other_source or 0} others left out"


def _said(catalogue: str) -> str:
    return f", {md_text(catalogue)}" if catalogue else ""


def _skipped(result: EndToEndReport) -> str:
    """The questions left unasked because their product is not in the catalogue, if any."""
    n = len(result.skipped_lines)
    return f"; {n} skipped: their product is not in this catalogue" if n else ""


def _gated(model: str, rows: list[dict]) -> str:
    """How many questions the gate abstained on for ``model``, by the rule that fired: an
    outside audit found the title rules' abstentions credited to the score ratio (an
    answers.jsonl from before rules were recorded gives the count alone).

    >>> _gated("m", [{"doubtful": {"m": True}, "doubt_rule": {"m": "ratio"}}, {"doubtful": {"m": False}}])
    'm 1 of 2 questions (score ratio 1)'
    """
    rules = Counter(r.get("doubt_rule", {}).get(model) for r in rows if r["doubtful"][model])
    said = f"{model} {sum(rules.values())} of {len(rows)} questions"
    if rules and None not in rules:
        said += " (" + ", ".join(f"{RULE_WORDS[k]} {n}" for k, n in rules.most_common()) + ")"
    return said


RULE_WORDS = {
    "nothing": "nothing retrieved",
    "numbers": "another number",
    "later": "a later one of the series",
    "ratio": "score ratio",
    "swap": "a title word swapped",
    "mentions": "the description names it as another book",
    "other title": "another title asked",
    "lacks": "a name the record lacks",
    "none of": "no question word in the title",
}
"""Each rule of ``answering.doubt.RULES`` in words, for the report's gate line."""


def protocol_line(result: EndToEndReport) -> str:
    """The protocol in one line, in every report: with ``--gate off`` the gate's lines below
    vanished and the same headings carried another protocol unsaid (an outside trial)."""
    said = [
        f"meaning re-scores retrieval (`--meaning-weight {result.meaning_weight:g}`)"
        if result.meaning_weight
        else "retrieval by words alone (no meaning re-score)",
        f"the gate abstains under a score ratio of {result.abstain_below:g} (`--abstain-below`) "
        "or on a first record whose title is not the one asked"
        if result.abstain_below
        else "no retrieval gate: the model answers every question (it abstains only in what "
        "it writes)",
        "a sure answer that misses the first record is replaced by it (`--quote-when-sure`)"
        if result.quote_when_sure
        else "answers scored as the model wrote them",
    ]
    return (
        "Protocol: end to end, each question through real retrieval and the model; "
        + "; ".join(said)
        + "."
    )


def render_markdown(result: EndToEndReport, rows: list[dict], n_examples: int = 5) -> str:
    models = list(result.models)
    lines = [
        f"# {TITLE}",
        "",
        f"Data: `{result.data}`{_said(result.catalogue)}.",
        "",
        f"Questions: `{result.questions}` ({result.asked} asked{_skipped(result)}"
        f"{_filtered(result)}); greedy, "
        f"max {result.max_new_tokens} new tokens, {_batching(result.batch_size)}; "
        "95% Wilson intervals for rates, bootstrap over questions for ROUGE-L; differences "
        "between models: Newcombe's paired interval for a rate over the same questions, the "
        "paired bootstrap otherwise.",
        "",
        protocol_line(result),
        "",
    ]
    if result.meaning_weight:
        from amazon_sft.answering.meaning import CANDIDATES, WORD_SCORE_FLOOR

        lines += [
            f"Retrieval re-scored its first {CANDIDATES} records by meaning too: (score + "
            f"{WORD_SCORE_FLOOR:g}) x exp({result.meaning_weight:g} x cosine) "
            "(`--meaning-weight`, answering/meaning.py).",
            "",
        ]
    if result.abstain_below:
        lines += [
            "Abstains without generating when retrieval is not sure of its first record "
            f"(answering/doubt.py): its score is under {result.abstain_below} times the "
            "second's (`--abstain-below`), or its title is not the one asked (another number, "
            "a swapped or missing name, ...): " + ", ".join(_gated(m, rows) for m in models) + ".",
            "",
        ]
    if result.quote_when_sure:
        quoted = {m: sum(r["quoted"][m] for r in rows) for m in models}
        own = result.own_right or own_right(rows, models)
        lines += [
            "Above it, an answer that did not cite the first record alone, or whose text was "
            "not that record's (it declined, or cited or quoted another record or none), was "
            "replaced by that record's description, cited (`--quote-when-sure`): "
            + ", ".join(f"{m} {n} of {len(rows)} questions" for m, n in quoted.items())
            + ". So behind the gate the citation is retrieval's, and the tables below can read "
            "the same for two models; **the right record cited by the model's own answer (not "
            "replaced): "
            + ", ".join(f"{m} {n.right} of {n.of}" for m, n in own.items())
            + " questions about a product** (the row \"right record cited by the model's own "
            "answer\" below, with its interval; to compare the models' own answers in every "
            "row, evaluate with `--no-quote-when-sure`, or `--gate off` for the models alone).",
            "",
        ]
    for m in models:
        info = result.models[m]
        held = (
            f"; its run held back {info.validation_rows} prepared rows for its validation loss "
            "(train.validation_rows): a product taught only in them was not trained on, and "
            "counts as seen"
            if info.validation_rows
            else ""
        )
        lines.append(f"- {m}: {md_text(info.label)}, k = {info.k} records{held}")
    lines.append("")
    lines += summary_table(result, models)
    for group, first in result.groups[models[0]].items():
        lines += [f"## {group} (n={first.n})", ""]
        cmp = result.comparison is not None
        lines.append(
            "| metric | " + " | ".join(models) + (" | tuned - base (95% CI) |" if cmp else " |")
        )
        lines.append("|---" * (len(models) + 1 + cmp) + "|")
        for key, (label, _) in E.METRICS.items():
            cells = [result.groups[m][group].figures.get(key) for m in models]
            if all(c is None for c in cells):
                continue
            line = f"| {label} | " + " | ".join(_cell(c) for c in cells) + " |"
            if result.comparison is not None:
                d = result.comparison[group].get(key)
                line += (
                    f" {d.delta:+.3f} {M.interval_text(d.low, d.high, signed=True)} |"
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
