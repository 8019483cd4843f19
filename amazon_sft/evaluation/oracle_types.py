"""The oracle-context report (``amazon-sft eval`` without ``--questions``), typed once.

eval builds it (``evaluation/main.py``), and ``evaluation/report.py`` writes it (report.json,
answers.jsonl) and renders it (report.md, report.png): each reads these fields, not dict keys
of its own. ``to_json`` keeps the layout report.json has always had, so scripts reading it
(``bench/full_catalogue.py``, ``bench/grounded_intervals.py``'s answers.jsonl) are unchanged. The
end-to-end report is ``end_to_end_types.EndToEndReport``; a change between two models is the
same ``Change`` in both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from amazon_sft.evaluation.end_to_end_types import Change


@dataclass(frozen=True)
class OracleModel:
    """How one model was named and what it held back."""

    label: str
    spec: str = ""
    """The model as given on the command line (``config:NAME`` or a run folder)."""
    validation_rows: int = 0
    """Prepared rows its run held back for the validation loss (never trained on)."""


@dataclass(frozen=True)
class SplitScores:
    """One model's figures on one split (``heldout``, ``seen grounded``, ...)."""

    n: int
    """Titles asked."""
    metrics: dict[str, float]
    """Metric name (``report.SHOWN``) -> its mean; grounded metrics only on grounded splits."""
    intervals: dict[str, list[float]] = field(default_factory=dict)
    """Metric name -> its own 95% interval, [low, high] (``oracle_scores.figure_intervals``)."""


@dataclass(frozen=True)
class AnswerRow:
    """One title asked, each model's answer, and its outcomes: a line of answers.jsonl."""

    split: str
    uid: str
    title: str
    reference: str
    """The description a closed-book or grounded answer is scored against."""
    context: list[str]
    """The uids of the records in the prompt (none closed-book)."""
    answers: dict[str, str]
    """Model name -> its answer as generated (citations kept)."""
    scores: dict[str, dict[str, float]]
    """Model name -> ``oracle_scores.ROW_SCORES`` of its answer, as the report's means count."""


@dataclass
class OracleReport:
    """What report.json (less ``rows``, which go to answers.jsonl) holds."""

    data: str
    mode: str
    """``closed``, ``grounded`` or ``both``."""
    decoding: dict[str, object]
    models: dict[str, OracleModel] = field(default_factory=dict)
    splits: dict[str, dict[str, SplitScores]] = field(default_factory=dict)
    """Split -> model name -> its figures; every split has every model."""
    seen_by_way: bool = False
    """Whether the seen probe says how each product was taught (prepares before it did not)."""
    data_rows: int = 0
    """Prepared rows (a run's held-back rows are a share of them)."""
    rows: list[AnswerRow] = field(default_factory=list)
    comparison: dict[str, dict[str, Change]] | None = None
    """Split -> metric -> tuned minus base (``--compare`` only)."""

    def to_json(self) -> dict:
        """The report.json layout (``rows`` left out: answers.jsonl holds them)."""
        out = {
            "data": self.data,
            "mode": self.mode,
            "decoding": self.decoding,
            "models": {name: asdict(m) for name, m in self.models.items()},
            "splits": {
                split: {name: asdict(s) for name, s in by_model.items()}
                for split, by_model in self.splits.items()
            },
            "seen_by_way": self.seen_by_way,
            "data_rows": self.data_rows,
        }
        if self.comparison is not None:
            out["comparison"] = {
                split: {k: asdict(c) for k, c in row.items()}
                for split, row in self.comparison.items()
            }
        return out

    def first_model(self, split: str) -> SplitScores:
        """The split's figures for the first model: its ``n`` and which metrics it has."""
        return self.splits[split][next(iter(self.models))]
