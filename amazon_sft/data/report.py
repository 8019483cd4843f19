"""The prepare report: length histograms in constant memory, and its JSON and Markdown forms."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path


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
        "rows",
        "tokens",
        "answer_tokens",
        "fill_ratio",
        "rows_per_sec",
        "rows_per_sec_with_setup",
        "tokenizer_backend",
        "prompt_encoding",
    ):
        lines.append(f"| {key} | {report[key]} |")
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
    secs = report["seconds"]
    lines.append("Time (s): " + ", ".join(f"{k} {v}" for k, v in secs.items()))
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir: Path) -> str:
    """Write report.json and report.md into ``out_dir``; return the Markdown."""
    markdown = render_markdown(report)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(markdown)
    return markdown
