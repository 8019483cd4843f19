"""``amazon_sft/train.py`` whose rank 0 finds the disk full when it writes step ``$FULL_AT``'s
line of metrics.jsonl (or, with ``$FAILS=tracker``, whose tracker raises its own error there),
for ``accelerate launch`` tests of a write only rank 0 makes."""

import errno
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from amazon_sft import trainer
from amazon_sft.train import cli

_report_step, _full_at = trainer.report_step, int(os.environ["FULL_AT"])


def report_step_on_a_full_disk(accelerator, cfg, row, metrics_file, bar):
    if accelerator.is_main_process and row["step"] == _full_at:
        if os.environ.get("FAILS") == "tracker":  # mlflow's REST client, say: no OSError
            raise RuntimeError("the tracking server answered 503")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(metrics_file))
    _report_step(accelerator, cfg, row, metrics_file, bar)


trainer.report_step = report_step_on_a_full_disk
cli()
