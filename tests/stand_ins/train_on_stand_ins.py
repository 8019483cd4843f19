"""``amazon_sft/train.py`` with the flash-kernel stand-ins in place, for ``accelerate launch``
on CPU: every rank trains through the kernel contracts of ``flash_kernels``. Each rank appends
its kernel calls (kernel, dtype, count) to ``$STAND_IN_LOG`` as one JSON line on exit."""

import atexit
import collections
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]

import flash_kernels  # noqa: E402

from amazon_sft.train import cli  # noqa: E402


def _write_calls() -> None:
    counts = collections.Counter((c["kernel"], str(c["dtype"])) for c in flash_kernels.CALLS)
    rows = [{"kernel": k, "dtype": d, "calls": n} for (k, d), n in counts.items()]
    with open(os.environ["STAND_IN_LOG"], "a") as fh:
        fh.write(json.dumps({"rank": os.environ.get("RANK", "0"), "calls": rows}) + "\n")


if __name__ == "__main__":
    flash_kernels.install_globally()
    if os.environ.get("STAND_IN_LOG"):
        atexit.register(_write_calls)
    cli()
