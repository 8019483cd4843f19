"""``train.trackers``: the experiment trackers accelerate logs to, checked at start (and by
``train.py --check-world`` before a SLURM job prepares)."""

from __future__ import annotations

import importlib.util

from amazon_sft.errors import UserError


def checked_trackers(names: list) -> list[str]:
    """``train.trackers``, each one accelerate knows and is installed: an unknown name was a
    ValueError traceback, one not installed (wandb) only a warning, and the run went on unlogged.
    """
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    for name in names:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise UserError(
                f"train.trackers: {name!r} is not a tracker accelerate knows: use "
                f"{', '.join(sorted(LOGGER_TYPE_TO_CLASS))}, or [] for none"
            )
        if importlib.util.find_spec(name) is None:
            raise UserError(
                f"train.trackers: {name} is not installed: pip install {name.replace('_', '-')}, "
                "or leave it out (train.trackers=[tensorboard])"
            )
    return list(names)
