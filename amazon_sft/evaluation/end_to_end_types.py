"""The end-to-end report (``amazon-sft eval --questions``'s report.json), typed once.

eval writes it (``end_to_end_run``), renders it (``end_to_end_report``), and ``make demo`` and
``scripts/gpu_check.py`` read it back: each reads these fields, not dict keys of its own. The
JSON layout is the one reports have had (a group's figures beside its ``n``), so a report
written before this module reads the same (one from before a field was written reads it as
its default); ``read_end_to_end_report`` says in one line which field a file lacks rather than a
``KeyError`` three modules away.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amazon_sft.errors import UserError


@dataclass(frozen=True)
class Figure:
    """A rate or a mean over a group's questions, with its 95% interval."""

    value: float
    low: float | None
    """None where the interval could not be drawn (JSON null: a bootstrap of NaNs)."""
    high: float | None
    of: int
    """The denominator: the questions the figure is over (about a product, absent, ...)."""


@dataclass(frozen=True)
class Change:
    """Tuned minus base over the same questions, with its paired 95% interval."""

    delta: float
    low: float | None
    high: float | None


@dataclass(frozen=True)
class GroupFigures:
    """One group of questions (all, a kind, held-out products, ...) for one model."""

    n: int
    """Questions in the group, about a product or not."""
    figures: dict[str, Figure]
    """Metric name (``end_to_end.METRICS``) -> its figure; a metric with nothing to count in
    the group is absent."""


@dataclass(frozen=True)
class ModelRun:
    """How one model was asked."""

    label: str
    spec: str
    """The model as given on the command line (``config:NAME`` or a run folder)."""
    k: int
    """Records retrieved into each prompt."""
    record_tokens: int | None = None
    """Tokens each record is cut to (None in reports written before it was recorded)."""
    validation_rows: int = 0
    """Prepared rows its run held back from training (``train.validation_rows``): a product
    taught only in them counts as seen, not trained on."""


@dataclass(frozen=True)
class OwnRight:
    """Right citations the model's own answers made (not the gate's quote), of the questions
    about a product."""

    right: int
    of: int


@dataclass(frozen=True)
class EndToEndReport:
    """What report.json holds."""

    data: str
    questions: str
    asked: int
    skipped_lines: list[int]
    """Question-file lines whose product is not in the catalogue."""
    other_source: int | None
    """Questions left out by ``--question-source`` (None without it)."""
    question_source: str | None
    max_new_tokens: int
    batch_size: int
    abstain_below: float
    quote_when_sure: bool
    meaning_weight: float
    seed: int
    models: dict[str, ModelRun]
    groups: dict[str, dict[str, GroupFigures]]
    """Model name -> group -> figures; every model has the same groups, in the same order."""
    comparison: dict[str, dict[str, Change]] | None = None
    """Group -> metric -> tuned minus base (``--compare`` only)."""
    own_right: dict[str, OwnRight] | None = None
    """Per model (``--quote-when-sure`` only)."""
    catalogue: str = ""
    """What the catalogue is, in words: the file prepare read and what the questions say they
    are about, real or generated rows (``end_to_end_run.catalogue_said``; empty in reports
    written before it)."""
    mode: str = field(default="end to end", init=False)

    def to_json(self) -> dict:
        """The report.json layout: a group's figures beside its ``n``."""
        out = {
            "mode": self.mode,
            "data": self.data,
            "questions": self.questions,
            "asked": self.asked,
            "question_source": self.question_source,
            "skipped": {"not_in_catalogue": self.skipped_lines}
            | ({} if self.other_source is None else {"other_source": self.other_source}),
            "max_new_tokens": self.max_new_tokens,
            "batch_size": self.batch_size,
            "abstain_below": self.abstain_below,
            "quote_when_sure": self.quote_when_sure,
            "meaning_weight": self.meaning_weight,
            "seed": self.seed,
            "catalogue": self.catalogue,
            "models": {name: asdict(run) for name, run in self.models.items()},
            "groups": {
                model: {
                    group: {"n": g.n} | {k: asdict(f) for k, f in g.figures.items()}
                    for group, g in groups.items()
                }
                for model, groups in self.groups.items()
            },
        }
        if self.comparison is not None:
            out["comparison"] = {
                group: {k: asdict(c) for k, c in row.items()}
                for group, row in self.comparison.items()
            }
        if self.own_right is not None:
            out["own_right"] = {name: asdict(o) for name, o in self.own_right.items()}
        return out

    @classmethod
    def from_json(cls, raw: object) -> EndToEndReport:
        """Read what ``to_json`` wrote; ``KeyError``/``TypeError``/``ValueError`` name what a
        file lacks (``read_end_to_end_report`` turns them into one line)."""
        if not isinstance(raw, dict) or raw.get("mode") != "end to end":
            raise ValueError('"mode" is not "end to end" (an oracle-context report?)')
        skipped = _object(raw, "skipped")
        comparison, own = raw.get("comparison"), raw.get("own_right")
        return cls(
            data=str(raw["data"]),
            questions=str(raw["questions"]),
            asked=int(raw["asked"]),
            skipped_lines=[int(n) for n in skipped["not_in_catalogue"]],
            other_source=None if "other_source" not in skipped else int(skipped["other_source"]),
            question_source=raw.get("question_source"),
            max_new_tokens=int(raw["max_new_tokens"]),
            batch_size=int(raw.get("batch_size", 1)),
            abstain_below=float(raw.get("abstain_below") or 0.0),
            quote_when_sure=bool(raw.get("quote_when_sure")),
            meaning_weight=float(raw.get("meaning_weight") or 0.0),
            seed=int(raw.get("seed", 0)),
            models={name: ModelRun(**run) for name, run in _object(raw, "models").items()},
            groups={
                model: {group: _group(row) for group, row in groups.items()}
                for model, groups in _object(raw, "groups").items()
            },
            comparison=None
            if comparison is None
            else {
                group: {k: Change(**_number_fields(c)) for k, c in row.items()}
                for group, row in comparison.items()
            },
            catalogue=str(raw.get("catalogue") or ""),
            own_right=None
            if own is None
            else {name: OwnRight(int(o["right"]), int(o["of"])) for name, o in own.items()},
        )


def _object(raw: dict, key: str) -> dict:
    value = raw[key]
    if not isinstance(value, dict):
        raise TypeError(f'"{key}" is not an object')
    return value


def _number_fields(raw: dict) -> dict:
    """NaN came back from JSON as null: keep it None (``Figure.low``)."""
    return {k: (None if v is None else float(v)) if k != "of" else int(v) for k, v in raw.items()}


def _group(row: dict) -> GroupFigures:
    figures = {k: Figure(**_number_fields(v)) for k, v in row.items() if k != "n"}
    for name, f in figures.items():
        if f.value is None or math.isnan(f.value):
            raise ValueError(f'figure "{name}" has no value')
    return GroupFigures(n=int(row["n"]), figures=figures)


def read_end_to_end_report(path: Path) -> EndToEndReport:
    """report.json of ``eval --questions``, or one line naming the file and what it lacks."""
    try:
        return EndToEndReport.from_json(json.loads(path.read_text(encoding="utf-8")))
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror}): run eval --questions") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        what = f'no "{e.args[0]}"' if isinstance(e, KeyError) else str(e).splitlines()[0]
        raise UserError(
            f"{path} is not the report of amazon-sft eval --questions ({what}): "
            "write it again with eval --questions FILE --out DIR"
        ) from None
