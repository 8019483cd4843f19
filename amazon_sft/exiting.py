"""How a launched command leaves once its work is done."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys


def exit_skipping_teardown(code: int) -> None:
    """Exit with ``code`` once the run is over, without the interpreter's teardown.

    Exit handlers run (trackers, log handlers) and output is flushed; what is skipped is the
    destruction of leftover module state and C++ statics, where gloo's and DeepSpeed's threads
    sometimes abort a finished run ("terminate called without an active exception", SIGABRT:
    seen once in CI after the final save of a 2-rank ZeRO-3 training run, its process group
    already destroyed). Every file the run writes is closed by then, and a launcher must see the
    run's own exit code.
    Uncaught exceptions do not come here: they exit as Python would, with their traceback."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a reader gone (``| head``): the code stands
            stream.flush()
    os._exit(code)
