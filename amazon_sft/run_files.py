"""Two files a run writes and other commands read back: ``metrics.jsonl`` (a row a step) and
``final/run_summary.json`` (the run's last step, loss and tokens). One reader each, so a line
cut by a kill, or a file edited by hand, reads the same everywhere: a row that is not a step's
record is skipped, a summary that is not the run's is absent. They were read in five places,
each with its own tolerance (an outside review: two raised AttributeError where a third
returned None).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from amazon_sft.atomic import write_text_whole

SUMMARY_FILE = "run_summary.json"

log = logging.getLogger("amazon_sft.train")


@dataclass(frozen=True)
class RunSummary:
    """What ``Trainer.train`` returns and ``final/run_summary.json`` keeps."""

    steps: int
    """Optimizer steps done, over every launch of the run."""
    final_loss: float | None
    """The last step's loss; None when this launch ran no step (a finished or stopped run
    finalised by ``resume=auto``) and ``metrics.jsonl`` logged none for it."""
    tokens_seen: int
    """Real (not padding) tokens trained on, all ranks, every launch."""
    stopped_by: str | None = None
    """The signal or time limit that stopped the run early, None when it ran to the end."""
    train_seconds: float = 0.0
    """Seconds in training steps, every launch."""
    train_seconds_this_launch: float = 0.0
    """Seconds this launch spent, from its first step."""
    val_loss: float | None = None
    """The validation loss after the last step (``train.validation_rows``); None without."""

    def as_dict(self) -> dict:
        return asdict(self)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_run_summary(folder: Path) -> RunSummary | None:
    """``folder/run_summary.json``; None when it is missing, cut, or not a run's summary (a
    field of another type: edited by hand).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / SUMMARY_FILE).write_text('{"steps": 4, "final_loss": 1.5, "tokens_seen": 9}')
    >>> read_run_summary(d).steps, read_run_summary(d).stopped_by
    (4, None)
    >>> _ = (d / SUMMARY_FILE).write_text('{"steps": "4", "final_loss": 1.5, "tokens_seen": 9}')
    >>> read_run_summary(d) is None
    True
    """
    try:
        raw = json.loads((folder / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    known = {f.name for f in fields(RunSummary)}
    raw = {k: v for k, v in raw.items() if k in known}  # a later version's extra fields
    loss, stopped, val = raw.get("final_loss"), raw.get("stopped_by"), raw.get("val_loss")
    if not (
        {"steps", "final_loss", "tokens_seen"} <= raw.keys()  # the fields without a default
        and isinstance(raw.get("steps"), int)
        and isinstance(raw.get("tokens_seen"), int)
        and (loss is None or (_number(loss) and math.isfinite(loss)))
        and (val is None or (_number(val) and math.isfinite(val)))
        and (stopped is None or isinstance(stopped, str))
        and all(_number(raw.get(k, 0.0)) for k in ("train_seconds", "train_seconds_this_launch"))
    ):
        return None
    return RunSummary(**raw)


def write_run_summary(folder: Path, summary: RunSummary) -> None:
    (folder / SUMMARY_FILE).write_text(json.dumps(summary.as_dict(), indent=2) + "\n")


def metrics_lines(path: Path) -> Iterator[tuple[str, dict | None]]:
    """Each line of ``metrics.jsonl`` and its step's record: None for a line that is none (cut
    by a kill, or not an object with a numeric ``step``)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            ok = isinstance(row, dict) and _number(row.get("step"))
            yield line, row if ok else None


def drop_metrics_after(metrics_file: Path, step: int) -> None:
    """On resume from ``step``, forget the rows of steps after it (they are run again), so
    ``metrics.jsonl`` never repeats a step; rewritten beside and renamed, never cut in place."""
    if not metrics_file.is_file():
        return
    kept = []
    for line, row in metrics_lines(metrics_file):
        if row is None:  # the line a killed run was writing: cut, so not a step's record
            log.warning("metrics.jsonl: dropped a line that is no step's record (cut by a kill?)")
        elif row["step"] <= step:
            kept.append(line)
    write_text_whole(metrics_file, "".join(line + "\n" for line in kept))
