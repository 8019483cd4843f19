"""The loop's own progress (``TrainerState``), saved beside accelerate's state as a checkpoint's
``trainer_state.json``, and read back checked (``read_trainer_state``): its checksums say the
file is the one listed, not that the list was written by a save (a hostile user's trial: an
edited ``"step": -5``, with the checksums written again, was resumed and trained steps -4, -3,
...; a ``step-2`` folder holding step 1's state was resumed as step 2). Beside it, what one
optimizer step did (``StepResult``) and what a dropped step restores (``StepStart``)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from amazon_sft.checkpoint_checksums import STATE, CorruptCheckpoint


@dataclass
class TrainerState:
    """The loop's own progress, saved beside accelerate's state as ``trainer_state.json``."""

    step: int = 0
    """Optimizer steps taken."""
    bad_in_row: int = 0
    """Consecutive steps with a non-finite loss or gradient norm, up to now."""
    tokens_seen: int = 0
    """Real (non-padding) tokens trained on, over all ranks."""
    loader: dict = field(default_factory=dict)
    """``PackedLoader.state_dict()``: data epoch, row cursor and seed."""
    train_seconds: float = 0.0
    """Wall-clock seconds in optimizer steps, over every launch of the run so far."""


def _counts(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _problem(state: dict) -> str | None:
    """What makes a ``trainer_state.json`` object one no save wrote (None: nothing).

    >>> _problem({"step": 3, "loader": {}, "train_seconds": 1.5})
    >>> _problem({"step": -5})
    'step -5 is not a count'
    >>> _problem({"step": 3, "epoch": 1})
    "'epoch' is not a field of it"
    """
    known = {f.name for f in fields(TrainerState)}
    if unknown := sorted(set(state) - known):
        return f"{unknown[0]!r} is not a field of it"
    for name in ("step", "bad_in_row", "tokens_seen"):
        if name in state and not _counts(state[name]):
            return f"{name} {state[name]!r} is not a count"
    seconds = state.get("train_seconds", 0.0)
    number = isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
    if not number or not math.isfinite(seconds) or seconds < 0:
        return f"train_seconds {seconds!r} is not a duration"
    if not isinstance(state.get("loader", {}), dict):
        return f"loader {state['loader']!r} is not an object"
    return None


class StepMismatch(CorruptCheckpoint):
    """A ``trainer_state.json`` of another step than its ``step-N`` folder: a copy of another
    checkpoint, which no save of that step wrote."""


def read_trainer_state(folder: Path) -> TrainerState:
    """``folder``'s ``trainer_state.json``; ``CorruptCheckpoint`` when no save could have
    written it, or when it holds another step than the ``step-N`` folder it is in."""
    path = folder / STATE
    try:
        state = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CorruptCheckpoint(f"{path} is not JSON ({err})") from None
    why = "it is not an object" if not isinstance(state, dict) else _problem(state)
    if why is not None:
        raise CorruptCheckpoint(f"{path}: {why}; no save wrote it")
    named = re.fullmatch(r"step-(\d+)", folder.name)
    if named and int(named.group(1)) != state.get("step", 0):
        raise StepMismatch(
            f"{path} holds step {state.get('step', 0)}, in a folder named {folder.name}"
        )
    return TrainerState(**state)


@dataclass(frozen=True)
class StepStart:
    """The state a dropped step restores."""

    rng: dict
    accelerate_step: int


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step did, over all ranks (read from the device once)."""

    loss: float | None
    """Summed answer cross-entropy / answer tokens of the step; None when a micro-batch's loss
    was non-finite on some rank (the sum would be partial: that micro-batch counts as 0)."""
    grad_norm: float
    """Global gradient norm before clipping."""
    lr: float
    """The learning rate this step used."""
    label_tokens: int
    real_tokens: int
    flops: float
    finite: bool
    """Loss and gradient norm were finite on every rank."""
    optimizer_stepped: bool
    """The weights changed (False for a skipped non-finite step, or one DeepSpeed skipped)."""
    stop_requested: bool
    """SIGTERM / SIGUSR1 arrived on some rank."""
    save_due: bool = False
    """``checkpoint.every_minutes`` have passed since the last save, on some rank's clock."""
