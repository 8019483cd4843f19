"""The run folder a training launch claims: checked before anything is written (every rank),
then locked, a previous run moved aside (``overwrite``) and marked, on the main process."""

from __future__ import annotations

import logging
from pathlib import Path

from amazon_sft.checkpointing import clear_killed_saves
from amazon_sft.config import RunConfig
from amazon_sft.distributed import raise_if_any_rank
from amazon_sft.errors import UserError
from amazon_sft.output_lock import OutputLock
from amazon_sft.output_places import refuse_inside_another_output
from amazon_sft.outputs import disk_full
from amazon_sft.ownership import (
    check_run_dir,
    claim_run_dir,
    refuse_moving_inputs,
    refuse_run_in_data,
)

log = logging.getLogger("amazon_sft.train")


def check_out_dir(cfg: RunConfig, out_dir: Path) -> None:
    """The run folder can take this run: resumable or new as asked, not inside the prepared
    data, and not a run of other inputs."""
    check_run_dir(cfg.out_dir, cfg.resume, cfg.overwrite)
    refuse_run_in_data(out_dir, cfg.data.path)
    refuse_inside_another_output(out_dir, "out_dir")
    refuse_moving_inputs(
        out_dir,
        cfg.overwrite,
        {
            "model.path": cfg.model.path,
            "model.tokenizer": cfg.model.tokenizer,
            "data.templates": cfg.data.templates,
        },
    )


def claim_out_dir(
    cfg: RunConfig, accelerator, out_dir: Path
) -> tuple[OutputLock | None, str | None]:
    """The main process locks ``out_dir`` for the whole run, checks again under the lock, moves a
    previous run aside (``overwrite``) and marks the folder as a run's; every rank learns whether
    that worked, so none waits at a barrier for a rank that gave up. The lock (main process)
    and where the previous run went, if it was moved."""
    lock, error, moved = None, None, None
    if accelerator.is_main_process:
        try:
            with disk_full(out_dir, "train could not claim its folder", "nothing was written"):
                lock = OutputLock(out_dir, "amazon-sft train").acquire()
                moved = claim_run_dir(out_dir, cfg.resume, cfg.overwrite)
            if lock.locked:  # no live process owns them (without locks: unknown, kept)
                clear_killed_saves(out_dir)
            if moved:
                log.info("overwrite=true: the previous run in %s was moved to %s", out_dir, moved)
        except (UserError, OSError) as err:
            # a read-only or foreign folder is one line too: every rank stops, none waits
            error = (
                err
                if isinstance(err, UserError)
                else UserError(
                    f"train could not write to out_dir {out_dir} ({err.strerror}): choose a "
                    "writable folder"
                )
            )
            if lock is not None:
                lock.release()
    raise_if_any_rank(accelerator, error)
    return lock, moved
