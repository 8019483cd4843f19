"""The prepare report: length histograms in constant memory, and its JSON and Markdown forms."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from amazon_sft.data.shards import quick_digest


class Histogram:
    """Counts values in power-of-two buckets (``[0]``, ``[1, 2)``, ``[2, 4)``, ...) plus min/max/mean.

    >>> h = Histogram(); [h.add(v) for v in (0, 1, 3, 3, 900)] and None
    >>> h.summary()["buckets"]
    {'0': 1, '1-1': 1, '2-3': 2, '512-1023': 1}
    """

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.n = self.total = 0
        self.min: int | None = None
        self.max = 0

    def add(self, value: int) -> None:
        self.counts[value.bit_length()] += 1
        self.n += 1
        self.total += value
        self.max = max(self.max, value)
        self.min = value if self.min is None else min(self.min, value)

    def add_many(self, values: list[int]) -> None:
        """``add`` for each value, by C-level builtins (prepare adds two per document).

        >>> a, b = Histogram(), Histogram(); [a.add(v) for v in (0, 5, 9)] and None
        >>> b.add_many([0, 5]); b.add_many([]); b.add_many([9]); a.summary() == b.summary()
        True
        """
        if not values:
            return
        self.counts.update(map(int.bit_length, values))
        self.n += len(values)
        self.total += sum(values)
        self.max = max(self.max, max(values))
        low = min(values)
        self.min = low if self.min is None else min(self.min, low)

    def summary(self) -> dict:
        buckets = {}
        for bits in sorted(self.counts):
            label = "0" if bits == 0 else f"{1 << (bits - 1)}-{(1 << bits) - 1}"
            buckets[label] = self.counts[bits]
        mean = self.total / self.n if self.n else 0.0
        return {
            "n": self.n,
            "min": self.min,
            "max": self.max,
            "mean": round(mean, 1),
            "buckets": buckets,
        }


def render_markdown(report: dict) -> str:
    """A report a person can read: counts, drops by reason, fill ratio, speed, histograms."""
    lines = [
        f"# Prepare report: {report['input']}",
        "",
        "| what | value |",
        "|---|---|",
    ]
    for key in (
        "lines_read",
        "records_parsed",
        "kept",
        "train_products",
        "train_docs",
        "heldout_docs",
        "over_max_train_products",
        "probe_docs",
        "answer_truncated",
        "uid_derived",
        "uid_coerced",
        "rows",
        "tokens",
        "answer_tokens",
        "fill_ratio",
        "rows_per_sec",
        "rows_per_sec_with_setup",
        "tokenizer_backend",
        "prompt_format",
        "prompt_encoding",
        "end_token",
        "pad_token",
    ):
        lines.append(f"| {key} | {report[key]} |")
    if report.get("grounded_docs"):
        for key in (
            "grounded_docs",
            "grounded_absent_docs",
            "grounded_retrieval_missed",
            "grounded_series_distractors",
            "grounded_series_shown",
            "grounded_paired",
        ):
            lines.append(f"| {key} | {report.get(key, 0)} |")
        kinds = ", ".join(f"{k} {n}" for k, n in report.get("grounded_kinds", {}).items())
        lines.append(f"| grounded question kinds | {kinds} |")
        if report.get("grounded_kinds_unmade"):  # data.question_mix not met: said, not hidden
            unmade = report["grounded_kinds_unmade"]
            lines.append(f"| drawn kinds no record could make (asked by title) | {unmade} |")
    lines += [
        "",
        "## Skipped (reason -> rows)",
        "",
        "| reason | rows | first lines |",
        "|---|---|---|",
    ]
    for reason, n in sorted(report["skipped"].items(), key=lambda kv: -kv[1]):
        first = ", ".join(map(str, report["first_bad_lines"].get(reason, [])))
        lines.append(f"| {reason} | {n} | {first} |")
    if report.get("documents_dropped"):
        lines += [
            "",
            "## Training documents dropped (reason -> documents)",
            "",
            "| reason | documents |",
            "|---|---|",
        ]
        for reason, n in sorted(report["documents_dropped"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {reason} | {n} |")
        grounded = sum(v for k, v in report["documents_dropped"].items() if "grounded" in k)
        if grounded:  # a cited answer is the longer: what is left leans to abstentions
            lines += [
                "",
                f"{grounded} grounded examples did not fit a row (`data.max_seq_len`; an "
                "abstention's twin goes with it): the longer ones, answers with their "
                "record, go first, so what was written (grounded_docs, grounded_absent_docs, "
                "grounded_paired and the kinds count it; the retrieval and series counts, "
                "what was built) leans to abstentions; raise data.max_seq_len to keep the mix "
                "asked.",
            ]
    lines += ["", "## Modified by cleaning (step -> rows)", "", "| step | rows |", "|---|---|"]
    for step, n in sorted(report["modified"].items()):
        lines.append(f"| {step} | {n} |")
    lines += ["", "## Lengths", ""]
    for name, hist in report["histograms"].items():
        lines.append(
            f"**{name}**: n={hist['n']} min={hist['min']} mean={hist['mean']} max={hist['max']}"
        )
        lines.append("")
        peak = max(hist["buckets"].values(), default=1)
        for label, n in hist["buckets"].items():
            lines.append(f"    {label:>13} {n:>9}  {'#' * max(1, round(40 * n / peak))}")
        lines.append("")
    lines.append(time_line(report["seconds"]))
    return "\n".join(lines) + "\n"


def time_line(seconds: dict) -> str:
    """The report's last line: setup (imports, the tokenizer) and the stages' total are apart, so
    a total under the setup does not read as the whole run's (it read "setup 9.11, total 0.51").

    >>> time_line({"setup": 9.1, "total": 0.5, "read_clean": 0.2, "pack": 0.1})
    'Time (s): 9.6 in all: setup 9.1 (imports, the tokenizer), then the stages 0.5 (read_clean 0.2, pack 0.1)'
    """
    stages = {k: v for k, v in seconds.items() if k not in ("setup", "total")}
    setup, total = seconds.get("setup", 0.0), seconds.get("total", 0.0)
    return (
        f"Time (s): {round(setup + total, 2)} in all: setup {setup} (imports, the tokenizer), "
        f"then the stages {total} (" + ", ".join(f"{k} {v}" for k, v in stages.items()) + ")"
    )


def kept_line(lines_read: int, kept: int, skipped: dict[str, int]) -> str:
    """What prepare's closing line says of the input: how many lines were kept and, when any
    were skipped, how many and why (``--quiet`` prints nothing else: a file mostly broken
    exited 0 saying only how many rows it wrote).

    >>> kept_line(300, 300, {})
    'kept 300 of 300 lines'
    >>> kept_line(300, 22, {"duplicate": 8, "malformed_json": 270})
    'kept 22 of 300 lines (278 skipped: malformed_json 270, duplicate 8; report.md lists the first line numbers)'
    """
    said = f"kept {kept} of {lines_read} lines"
    if not skipped:
        return said
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(skipped.items(), key=lambda x: -x[1]))
    total = sum(skipped.values())
    return f"{said} ({total} skipped: {reasons}; report.md lists the first line numbers)"


def dropped_line(dropped: dict[str, int]) -> str:
    """What prepare's closing line adds for training documents built and dropped (``--quiet``
    said "kept 66 of 66 lines" of a run that taught two products nothing: a hostile-input
    review); empty when none was.

    >>> dropped_line({}), dropped_line({"prompt_too_long": 6, "grounded_too_long": 1})
    ('', '; 7 training documents dropped (prompt_too_long 6, grounded_too_long 1; report.md)')
    """
    if not dropped:
        return ""
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(dropped.items(), key=lambda x: -x[1]))
    return f"; {sum(dropped.values())} training documents dropped ({reasons}; report.md)"


def write_report(report: dict, out_dir: Path) -> str:
    """Write report.json and report.md into ``out_dir``; return the Markdown."""
    markdown = render_markdown(report)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(markdown)
    return markdown


def build_report(input_path, data, streamed, doc_lens, n_rows, total, setup_s) -> dict:
    """prepare's counts, histograms and timings (``streamed``: ``data.streamed.Streamed``), the
    source of report.json / report.md and of the manifest's counts."""
    stats, counts, encoder = streamed.stats, streamed.counts, streamed.encoder
    n_tokens = int(doc_lens.sum())
    return {
        "input": str(input_path),
        # which catalogue, whatever path it was given by: launch/train_slurm.sbatch compares
        # them; as it was read (``read_records``: its stamp and digest at the read's end)
        "input_resolved": str(Path(input_path).resolve()),
        "input_bytes": stats.opened[0] if stats.opened else Path(input_path).stat().st_size,
        "input_digest": stats.digest or quick_digest(Path(input_path)),
        "lines_read": stats.lines,
        "records_parsed": stats.lines - sum(stats.skipped.values()),
        "kept": counts["taught"] + counts["heldout"] + counts["over_max_train_products"],
        "train_products": counts["taught"],
        "closed_book_products": counts["closed_book_products"],
        "grounded_docs": counts.get("grounded", 0),
        "grounded_absent_docs": counts.get("grounded_absent", 0),
        "grounded_short_context": counts.get("grounded_short_context", 0),
        # right record not in the first context_records retrieved for the question as typed:
        # those examples teach the abstention (data.question_mix, every kind but title)
        "grounded_retrieval_missed": counts.get("grounded_retrieval_missed", 0),
        # same-series products put in the place of the last records (data.series_distractors)
        "grounded_series_distractors": counts.get("grounded_series_distractors", 0),
        # examples that show a product of their series, put there or retrieved
        "grounded_series_shown": counts.get("grounded_series_shown", 0),
        # abstentions taught beside the same question with the product shown (data.paired_absent)
        "grounded_paired": counts.get("grounded_paired", 0),
        "grounded_kinds": {
            key.removeprefix("grounded_kind_"): n
            for key, n in counts.items()
            if key.startswith("grounded_kind_") and n
        },
        # drawn kinds (data.question_mix) that no record of their batch could make: title instead
        "grounded_kinds_unmade": counts.get("grounded_kinds_unmade", 0),
        "grounded_workers": counts.get("grounded_workers", 0),
        # closed-book: products x data.phrasings_per_doc; + grounded; less the dropped ones
        "train_docs": len(doc_lens),
        "heldout_docs": counts["heldout"],
        "over_max_train_products": counts["over_max_train_products"],
        "probe_docs": counts["seen_probe_rows"],  # as written: taught products only
        "answer_truncated": encoder.truncated,
        "answer_precut_before_encoding": encoder.precut,
        "uid_derived": stats.uid_derived,
        "uid_coerced": stats.uid_coerced,
        "special_token_text_removed": streamed.scrubbed,
        "rows": n_rows,
        "tokens": n_tokens,
        "answer_tokens": int(streamed.hist["answer_tokens"].total + len(doc_lens)),
        "fill_ratio": round(n_tokens / (n_rows * data.max_seq_len), 6),
        # catalogue rows skipped (reading, cleaning), apart from training documents dropped
        # (one per phrasing or grounded example): they count different things
        "skipped": dict(streamed.dropped),
        "documents_dropped": dict(encoder.dropped),
        "first_bad_lines": stats.first_lines,
        "modified": streamed.modified,
        "histograms": {k: h.summary() for k, h in streamed.hist.items()},
        "tokenizer_backend": encoder.backend,
        "end_token": encoder.end_token,
        "pad_token": encoder.pad_token,
        "prompt_encoding": encoder.encode_prompts.path,
        "prompt_format": "the tokenizer's chat template"
        if encoder.fmt.chat
        else "plain (the templates' plain prefix and suffix, after the BOS)",
        "rows_per_sec": round(stats.lines / total, 1),
        "rows_per_sec_with_setup": round(stats.lines / (total + setup_s), 1),
        "seconds": {
            "setup": round(setup_s, 2),
            "total": round(total, 2),
            **{k: round(v, 2) for k, v in streamed.seconds.items()},
        },
    }
