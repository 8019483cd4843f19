"""How long a run is, decided once the prepared data is read: the rows held back for the
validation loss (``train.validation_rows``), the steps ``train.epochs`` makes, and the warmup
``train.warmup_ratio`` makes of them. ``config.yaml`` records the results (steps, not epochs or
ratios), so a resume compares like with like."""

from __future__ import annotations

import dataclasses
import logging
import math

from amazon_sft.bounds import check_epochs_per_step, steps_for_epochs
from amazon_sft.config import RunConfig
from amazon_sft.data.shards import PackedShards
from amazon_sft.validation import split_rows

log = logging.getLogger("amazon_sft.train")


def hold_back(cfg: RunConfig, shards: PackedShards) -> tuple:
    """(the rows to train on, the rows held back for the validation loss or None)."""
    rows, held = split_rows(shards, cfg.train.validation_rows)
    left = f" left after train.validation_rows={len(held)}" if held is not None else ""
    check_epochs_per_step(cfg.train.global_batch_size, len(rows), f"{cfg.data.path}{left}")
    if held is not None:
        every = cfg.train.validation_every
        log.info(
            "validation loss: %d rows held back of %d, scored %safter the last step",
            len(held),
            len(shards),
            f"every {every} steps and " if every else "",
        )
    return rows, held


def steps_from_epochs(cfg: RunConfig, data_rows: int) -> RunConfig:
    """The run config with ``train.max_steps`` set from ``train.epochs`` when that is given."""
    t = cfg.train
    if not t.epochs:
        return cfg
    steps = steps_for_epochs(t.epochs, data_rows, t.global_batch_size)
    log.info(
        "train.epochs=%g: %d optimizer steps (%d rows, %d a step)",
        t.epochs,
        steps,
        data_rows,
        t.global_batch_size,
    )
    return dataclasses.replace(cfg, train=dataclasses.replace(t, max_steps=steps, epochs=0.0))


def resolve_schedule(cfg: RunConfig) -> RunConfig:
    """The run config with ``train.warmup_steps`` set from ``train.warmup_ratio`` when that is
    given (after ``steps_from_epochs``: the ratio is of the steps the run takes)."""
    t = cfg.train
    if not t.warmup_ratio:
        return cfg
    # rounded first: 0.07 x 100 is 7.000000000000001 in floats, and ceil made it 8; at most
    # max_steps - 1, so the last step is the decay's (a ratio near 1 made the run all warmup)
    warmup = min(math.ceil(round(t.warmup_ratio * t.max_steps, 9)), t.max_steps - 1)
    log.info("train.warmup_ratio=%g: %d warmup steps of %d", t.warmup_ratio, warmup, t.max_steps)
    return dataclasses.replace(
        cfg, train=dataclasses.replace(t, warmup_steps=warmup, warmup_ratio=0.0)
    )


def warmup_warning(warmup_steps: int, max_steps: int) -> str | None:
    """What a warmup as long as the run does to the learning rate (None: a usual warmup).

    >>> warmup_warning(10, 100) is None
    True
    """
    if warmup_steps < max_steps:
        return None
    if warmup_steps == max_steps:
        reach = "reaches train.lr only at the last step and never decays"
    else:
        reach = "never reaches train.lr"
    return (
        f"train.warmup_steps={warmup_steps} is not below train.max_steps={max_steps}: the "
        f"learning rate {reach}; lower train.warmup_steps (or give train.warmup_ratio)"
    )
