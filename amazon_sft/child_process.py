"""A child process that dies with its parent, however the parent dies.

The benchmark runs each variant in a process of its own; a parent killed outright (a test's
timeout sends SIGKILL, which no handler sees) left the variant training on for an hour, a GPU
check stopped from its terminal left its benchmark running, and a killed demo its step. Linux's parent-death signal
(``prctl(PR_SET_PDEATHSIG)``) has the kernel stop the child then; elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for ``subprocess``: SIGKILL this child when the process that started it
    ends (Linux only; a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
