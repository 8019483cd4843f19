"""The evaluation report: report.json for machines, report.md for people, report.png, answers.jsonl."""

from __future__ import annotations

import html
import os
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import orjson

from amazon_sft.atomic import remove_stale, staging_name, stops_held
from amazon_sft.data.shards import sha256_file
from amazon_sft.eval_ownership import EVAL_OUTPUTS, claim_eval_dir, record_eval_files
from amazon_sft.evaluation import metrics as M
from amazon_sft.evaluation.oracle_types import OracleModel, OracleReport, SplitScores
from amazon_sft.outputs import disk_full
from amazon_sft.terminal import printable

# metric -> (label, higher is better)
SHOWN = {
    "rougeL": ("ROUGE-L", True),
    "rouge1": ("ROUGE-1", True),
    "rouge2": ("ROUGE-2", True),
    "chrf": ("chrF", True),
    "bleu": ("BLEU", True),
    "perplexity": ("ref. perplexity", False),
    "eos_rate": ("EOS rate", True),
    "empty_rate": ("empty rate", False),
    "loop_rate": ("loop rate", False),
    "length_ratio": ("length ratio", None),
    # grounded splits only
    "citation_accuracy": ("citation accuracy", True),
    "wrong_record_cited": ("wrong record cited", False),
    "false_abstention": ("false abstention", False),
    "cites_nothing": ("cites nothing (nor abstains)", False),
    "abstention_accuracy": ("abstention accuracy", True),
}


INTERVALS_NOTE = (
    "Each figure has its 95% interval over the titles asked: Wilson's for a rate (citation "
    "accuracy, EOS rate, ...), the bootstrap's for a score (ROUGE, chrF, length ratio, "
    "perplexity); BLEU, a corpus statistic, has one only as a delta."
)
COMPARE_NOTE = (
    " The delta is tuned minus base, on the same titles: Newcombe's paired score interval for a "
    "rate, the paired bootstrap for a score."
)
ORACLE_NOTE = (
    "Grounded splits use *oracle context*: the canonical question with the exact title, the "
    "right record handed over (or, for absent, left out) among retrieved ones. What `ask` "
    "does with a shopper's own words is scored by `amazon-sft eval --questions FILE`."
)


def json_text(result: dict) -> str:
    """A report as strict JSON: an undefined figure (NaN: an interval too few resamples define)
    is ``null``, which jq and browsers read; ``json.dumps`` wrote ``NaN``, which they refuse.

    >>> print(json_text({"low": float("nan"), "value": 0.5}))
    {
      "low": null,
      "value": 0.5
    }
    """
    return orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()


def write_report(out_dir: Path, result: OracleReport, n_examples: int = 5) -> None:
    """The four report files into ``out_dir`` (``write_staged``)."""
    write_staged(
        out_dir,
        {
            "report.json": lambda path: path.write_text(json_text(result.to_json())),
            "answers.jsonl": lambda path: write_rows(path, [asdict(r) for r in result.rows]),
            "report.md": lambda path: path.write_text(render_markdown(result, n_examples)),
            "report.png": lambda path: plot(result, path),
        },
    )


def write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "wb") as fh:
        for row in rows:
            fh.write(orjson.dumps(row) + b"\n")


def write_staged(out_dir: Path, writers: dict) -> None:
    """Each file (name -> function writing it to a path) into a hidden sibling folder, then moved
    into ``out_dir``, claimed as eval's first: a full disk or a kill while writing leaves the
    previous report there as it was, and a report of the user's is never replaced. A kill while
    moving them in leaves a folder without report.json: a report.json is always a whole report."""
    # inside the folder: os.replace cannot cross filesystems, nor into a mount point from
    # beside it (``docker -v $PWD/eval:/eval``: the old report went, the new one did not come)
    inside = out_dir.resolve() / "report"
    staging = staging_name(inside)
    try:
        kept = "the previous report there (if any) is unchanged"
        with disk_full(out_dir, "eval could not write its report", kept):
            claim_eval_dir(out_dir)
            for where in (inside, out_dir.resolve()):  # beside: where older versions staged
                remove_stale(where)  # a killed eval's, never a live process's
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            for name, write in writers.items():
                write(staging / name)
        new = {name: sha256_file(staging / name) for name in writers}
        old = {n: sha256_file(out_dir / n) for n in EVAL_OUTPUTS if (out_dir / n).is_file()}
        record_eval_files(out_dir, {n: [*{old.get(n), new.get(n)} - {None}] for n in {*old, *new}})
        # The old report goes first, report.json (what scripts read) comes in last: a kill
        # between two moves leaves no report.json, never an old one beside new answers.
        with stops_held():  # a stop meanwhile comes once the report is whole
            for name in ["report.json", *EVAL_OUTPUTS]:  # the folder is eval's (claimed above)
                (out_dir / name).unlink(missing_ok=True)
            for name in sorted(writers, key=lambda name: name == "report.json"):
                os.replace(staging / name, out_dir / name)
            record_eval_files(out_dir, {name: [digest] for name, digest in new.items()})
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _with_interval(shown: SplitScores, key: str) -> str:
    """A model's figure and its own 95% interval (a figure without one: the figure)."""
    value, interval = shown.metrics[key], shown.intervals.get(key)
    if value is None or interval is None:
        return _fmt(value)
    return f"{_fmt(value)} {M.interval_text(*interval, 4)}"


def render_markdown(result: OracleReport, n_examples: int) -> str:
    models, comparing = list(result.models), result.comparison is not None
    decoding = ", ".join(f"{k} {v}" for k, v in result.decoding.items())
    lines = [
        f"# Evaluation: {' vs '.join(m.label for m in result.models.values())}",
        "",
        f"Data: `{result.data}`; decoding: {decoding}",
        "",
        INTERVALS_NOTE + (COMPARE_NOTE if comparing else ""),
        "",
    ]
    if any(s.endswith(("grounded", "absent")) for s in result.splits):
        lines += [ORACLE_NOTE, ""]
    for split, by_model in result.splits.items():
        oracle = ", oracle context" if split.endswith(("grounded", "absent")) else ", closed-book"
        lines += [f"## {split} titles{oracle} (n={result.first_model(split).n})", ""]
        if split.startswith("seen"):
            note = seen_note(split, result.seen_by_way, result.models, result.data_rows)
            lines += [note, ""]
        header = (
            "| metric | "
            + " | ".join(f"{m} (95% CI)" for m in models)
            + (" | delta (95% CI) |" if comparing else " |")
        )
        lines += [header, "|---" * (len(models) + 1 + comparing) + "|"]
        for key, (label, _) in SHOWN.items():
            if key not in result.first_model(split).metrics:
                continue  # a grounded metric on a closed-book split
            cells = [_with_interval(by_model[m], key) for m in models]
            row = f"| {label} | " + " | ".join(cells) + " |"
            if result.comparison is not None:
                c = result.comparison[split][key]
                row += f" {c.delta:+.4f} {M.interval_text(c.low, c.high, 4, True)} |"
            lines.append(row)
        lines.append("")
        examples = [r for r in result.rows if r.split == split][:n_examples]
        if examples:
            lines += [f"### {split}: examples", ""]
            for r in examples:
                lines += [
                    f"**{md_text(r.title)}** (uid {md_text(r.uid)})",
                    "",
                    f"- reference: {md_text(r.reference[:400])}",
                ]
                for m in models:
                    lines.append(f"- {md_text(m)}: {md_text(r.answers[m][:400])}")
                lines.append("")
    return "\n".join(lines) + "\n"


def seen_note(split: str, by_way: bool, models: dict[str, OracleModel], data_rows: int) -> str:
    """What a seen split's products are: taught the way the split scores, where prepare said;
    and, for a run that held rows back for its validation loss, that a product taught only in
    those rows was not trained on (prepare chose the probe before any row was held back)."""
    if not by_way:
        note = "Training products, however prepare taught them (its probe does not say)."
    else:
        way = "closed-book" if split == "seen" else "grounded"
        note = f"Training products prepare taught {way} (the seen probe's rows taught this way)."
    for model in models.values():
        if held := model.validation_rows:
            note += (
                f" {model.label} held back {held} of the {data_rows} prepared rows for its "
                "validation loss (train.validation_rows): a product taught only in those rows "
                "was not trained on, and counts here as seen."
            )
    return note


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#])")


def md_text(text: str) -> str:
    """Product or model text as inert Markdown: HTML characters as entities (a renderer passes
    raw HTML through), Markdown punctuation backslash-escaped, one line.

    >>> md_text("<svg/onload=alert(1)> *bold* [x](y) a|b")
    '&lt;svg/onload=alert(1)&gt; \\\\*bold\\\\* \\\\[x\\\\](y) a\\\\|b'
    """
    text = html.escape(" ".join(printable(str(text)).split()), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", text)


def _split_label(result: OracleReport, split: str) -> str:
    """A split's tick label: its name over its count of items."""
    return split.replace(" ", "\n") + f"\nn={result.first_model(split).n}"


def plot_caption(splits: list[str]) -> str:
    """The protocol of every split a figure shows (it named the oracle splits only, and a
    closed-book report none: an outside trial).

    >>> plot_caption(["heldout", "seen"])
    'heldout / seen: closed-book (the title asked, no record shown)'
    """
    said = []
    if any(not s.endswith(("grounded", "absent")) for s in splits):
        said.append("heldout / seen: closed-book (the title asked, no record shown)")
    if any(s.endswith(("grounded", "absent")) for s in splits):
        said.append(
            "grounded / absent: oracle context (the exact title asked, the right record shown "
            "or left out), not shoppers' questions through retrieval"
        )
    return "\n".join(said)


def delta_title(label: str, changes: list) -> str:
    """A delta panel's title: its interval named only where the report has one (a perplexity
    or BLEU over under 10 titles has none: a bar was titled "95% CI" all the same).

    >>> from types import SimpleNamespace as C
    >>> delta_title("BLEU", [C(low=None, high=None)]), delta_title("ROUGE-L", [C(low=0.1, high=0.2)])
    ('BLEU: tuned - base (no interval)', 'ROUGE-L: tuned - base, 95% CI')
    """
    defined = [M.has_interval(c.low, c.high) for c in changes]
    if all(defined):
        return f"{label}: tuned - base, 95% CI"
    return (
        f"{label}: tuned - base ({'no interval' if not any(defined) else '95% CI where defined'})"
    )


def plot(result: OracleReport, path: Path) -> None:
    """One panel per metric with a bar per model and split; when comparing, a second panel per
    metric with the delta (tuned - base) and its bootstrap interval around it, so no interval is
    drawn on a bar it does not belong to (a rate's bar never gets a whisker below 0 or above 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models, splits = list(result.models), list(result.splits)
    keys = [k for k in SHOWN if any(k in result.first_model(s).metrics for s in splits)]
    cols = (len(keys) + 1) // 2
    rows = 2 if result.comparison is None else 4
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows))
    value_axes, delta_axes = list(axes[:2].flat), list(axes[2:].flat) if rows == 4 else []
    width = 0.8 / len(models)
    for ax, key in zip(value_axes, keys):
        for j, model in enumerate(models):
            values = [result.splits[s][model].metrics.get(key) for s in splits]
            at = [i + j * width for i, v in enumerate(values) if v is not None]
            bars = ax.bar(at, [v for v in values if v is not None], width, label=model)
            ax.bar_label(bars, fmt="%.2f", fontsize=6)  # a bar of 0 is a number, not nothing
        ax.set_title(SHOWN[key][0], fontsize=9)
        ax.set_xticks(
            [i + width * (len(models) - 1) / 2 for i in range(len(splits))],
            [_split_label(result, s) for s in splits],
            fontsize=7,
        )
    for ax, key in zip(delta_axes, keys):
        at = [i for i, s in enumerate(splits) if key in result.comparison[s]]
        cmp = [result.comparison[splits[i]][key] for i in at]
        deltas = [c.delta for c in cmp]
        errors = [[c.delta - c.low for c in cmp], [c.high - c.delta for c in cmp]]
        errors = np.nan_to_num(np.array(errors))  # no interval: no bar, not matplotlib's warning
        ax.bar(at, deltas, 0.5, yerr=errors, capsize=3, color="tab:gray")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(delta_title(SHOWN[key][0], cmp), fontsize=8)
        ax.set_xticks(range(len(splits)), [s.replace(" ", "\n") for s in splits], fontsize=7)
    for ax in value_axes[len(keys) :] + delta_axes[len(keys) :]:
        ax.axis("off")
    value_axes[0].legend(fontsize=7)
    fig.suptitle(plot_caption(splits), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
