"""Which engine saved a checkpoint, read from its files, so a resume under another one is one
line naming the launcher that loads it.

DeepSpeed writes its own layout (a tag folder of ``zero_pp_rank_R_mp_rank_00_*`` files, one per
rank) that only DeepSpeed reads, and ZeRO's optimizer partitions load only on the same number
of processes: without this check, a ZeRO checkpoint resumed by a plain ``amazon-sft train`` read
as "unusable" (then "start over"), and one resumed on another process count stopped in a
traceback (ZeRO-3: a bare ``AssertionError``; ZeRO-2: "Automatic adjustment ... not supported").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from amazon_sft.errors import UserError

_RANK_FILE = re.compile(r"zero_pp_rank_(\d+)_mp_rank_\d+_(model|optim)_states\.pt")


@dataclass(frozen=True)
class Engine:
    """What saves and loads a checkpoint: DeepSpeed's ZeRO stage (None without DeepSpeed) and
    the number of processes."""

    zero_stage: int | None
    processes: int

    def describe(self) -> str:
        """As the one-line errors say it.

        >>> Engine(3, 2).describe()
        'DeepSpeed ZeRO-3 on 2 processes'
        >>> Engine(None, 1).describe()
        'no DeepSpeed'
        """
        if self.zero_stage is None:
            return "no DeepSpeed"
        return f"DeepSpeed ZeRO-{self.zero_stage} on {self.processes} process" + (
            "es" if self.processes != 1 else ""
        )


def saved_engine(checkpoint: Path) -> Engine | None:
    """The engine that wrote ``checkpoint``; None when its files say no DeepSpeed (any process
    count loads those). ZeRO-3 writes model states per rank, ZeRO-1/2 optimizer states only."""
    ranks: dict[str, set[int]] = {"model": set(), "optim": set()}
    for path in checkpoint.glob("*/zero_pp_rank_*"):
        if match := _RANK_FILE.fullmatch(path.name):
            ranks[match.group(2)].add(int(match.group(1)))
    if not ranks["optim"]:
        return None
    return Engine(3 if ranks["model"] else 2, len(ranks["optim"]))


def check_same_engine(checkpoint: Path, running: Engine) -> None:
    """Raise one line naming the launcher when ``checkpoint`` cannot load under ``running``."""
    saved = saved_engine(checkpoint)
    if saved is None:
        if running.zero_stage is None:
            return
        fix = (
            "resume it without DeepSpeed (deepspeed=none, no DeepSpeed accelerate config; a "
            "SLURM job: ACCEL=multi_node_ddp)"
        )
    elif running.zero_stage is None or saved.zero_stage != (3 if running.zero_stage == 3 else 2):
        fix = _launch(saved)
    elif saved.processes != running.processes:
        fix = _launch(saved)  # ZeRO's optimizer partitions are per rank (DeepSpeed refuses)
    else:
        return
    raise UserError(
        f"checkpoint {checkpoint} was saved under {(saved or Engine(None, 1)).describe()} and "
        f"loads only so (this run: {running.describe()}): {fix}, same out_dir, resume=auto"
    )


def _launch(saved: Engine) -> str:
    config = "zero3" if saved.zero_stage == 3 else "zero2"
    return (
        f"resume it with accelerate launch --config_file launch/accelerate/{config}.yaml "
        f"--num_processes {saved.processes} amazon_sft/train.py --config ... (a SLURM job: "
        f"nodes x GPUs per node = {saved.processes}, ACCEL={config})"
    )
