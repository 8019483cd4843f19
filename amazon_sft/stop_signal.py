"""Stop signals (SIGTERM, and SIGUSR1: SLURM's warning before pre-emption) and Ctrl-C, caught from
the first line of a training process on.

The loop honours a stop after an optimizer step (a checkpoint, then exit 0). Caught only once
the loop was built, a signal that came during start-up (imports, loading the model, DeepSpeed's
set-up: minutes for a large model) killed the process with 143 or 138, and ``train_local.sh``
or a scheduler read a failure. Stdlib only, so it can be installed before ``import torch``.
"""

from __future__ import annotations

import os
import signal
import sys

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_received: list[str] = []


def _record(signum, frame) -> None:
    _received.append(signal.Signals(signum).name)


def _interrupt(signum, frame) -> None:
    """Ctrl-C: the first stops after the step with a checkpoint, as a stop signal does (it lost
    every step since the last checkpoint); a second stops at once, as Python's own handler."""
    if "SIGINT" in _received:
        raise KeyboardInterrupt
    _received.append("SIGINT")
    if os.environ.get("RANK", "0") == "0":  # every rank of the terminal's job gets it
        print(
            "\nCtrl-C: stopping after this optimizer step, with a checkpoint "
            "(Ctrl-C again stops at once and loses the steps since the last checkpoint)",
            file=sys.stderr,
            flush=True,
        )


def install(ctrl_c: bool = True) -> None:
    """Catch the stop signals, and Ctrl-C unless ``ctrl_c`` is False (a notebook or a test that
    runs the trainer in its own process keeps Python's), from now on (idempotent; main thread
    only, as ``signal`` demands)."""
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not _record:
            signal.signal(sig, _record)
    if ctrl_c and signal.getsignal(signal.SIGINT) is not _interrupt:
        signal.signal(signal.SIGINT, _interrupt)


def received() -> str | None:
    """The name of the first stop signal caught, or None."""
    return _received[0] if _received else None


def requested() -> bool:
    """Whether a stop signal was caught (the loop all-reduces it: any rank's stops all)."""
    return bool(_received)
