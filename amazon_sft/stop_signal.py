"""Stop signals (SIGTERM, and SIGUSR1: SLURM's warning before pre-emption), caught from the
first line of a training process on.

The loop honours a stop after an optimizer step (a checkpoint, then exit 0). Caught only once
the loop was built, a signal that came during start-up (imports, loading the model, DeepSpeed's
set-up: minutes for a large model) killed the process with 143 or 138, and ``train_local.sh``
or a scheduler read a failure. Stdlib only, so it can be installed before ``import torch``.
"""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_received: list[str] = []


def _record(signum, frame) -> None:
    _received.append(signal.Signals(signum).name)


def install() -> None:
    """Catch the stop signals from now on (idempotent; main thread only, as ``signal`` demands)."""
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not _record:
            signal.signal(sig, _record)


def received() -> str | None:
    """The name of the first stop signal caught, or None."""
    return _received[0] if _received else None


def requested() -> bool:
    """Whether a stop signal was caught (the loop all-reduces it: any rank's stops all)."""
    return bool(_received)
