"""How an ``amazon-sft`` command's process takes a stop: SIGTERM and SIGHUP raised as
``Stopped`` where the main thread is (so ``finally`` blocks remove staging and the command says
so in one line), no stop lost in a callback Python drops exceptions from, and a stop after the
command finished leaving its exit status alone. (``train`` has its own: ``stop_signal``.)"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import NoReturn

from amazon_sft.exiting import exit_skipping_teardown

RESEND_AFTER_S = 0.01
"""How soon a dropped stop is sent again: long enough for the callback that dropped it to end."""


class Stopped(KeyboardInterrupt):
    """A command's SIGTERM or SIGHUP, raised where the main thread is."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum, frame) -> None:
    raise Stopped(signum)


def _send_dropped_stops_again(unraisable, previous, timers: list) -> None:
    """A stop raised while Python ran a callback whose exceptions it drops (a weakref's, such
    as importlib's module locks on every import; a ``__del__``) was printed as "Exception
    ignored" and lost: the command ran on to its end (CI). The signal is sent again shortly,
    from a timer thread, so that its handler runs back on the main thread's own code."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        previous(unraisable)
        return
    signum = getattr(unraisable.exc_value, "signum", signal.SIGINT)
    again = threading.Timer(
        RESEND_AFTER_S, signal.pthread_kill, (threading.main_thread().ident, signum)
    )
    again.daemon = True
    timers.append(again)
    again.start()


@contextmanager
def stops_raised() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``Stopped`` (nohup's ignored hang-up stays ignored), and no
    stop, Ctrl-C's included, is lost in a callback whose exceptions Python drops. Afterwards the
    handlers and hook there were are back, and a stop still waiting to be sent again is not sent
    (the command ended in the meantime: into a caller in the same process, or the next command
    it runs, it would be a stop of theirs: a review)."""
    handlers = {
        stop: signal.signal(stop, _stop)
        for stop in (signal.SIGTERM, signal.SIGHUP)
        if signal.getsignal(stop) is not signal.SIG_IGN
    }
    hook, timers = sys.unraisablehook, []
    sys.unraisablehook = functools.partial(_send_dropped_stops_again, previous=hook, timers=timers)
    try:
        yield
    finally:
        for timer in timers:
            timer.cancel()
        sys.unraisablehook = hook
        for stop, handler in handlers.items():
            signal.signal(stop, signal.SIG_DFL if handler is None else handler)


def exit_as_finished(code: int) -> NoReturn:
    """End the process of a command that returned ``code``, which no stop changes any more.

    A stop between a command's last line and the end of the process (torch's teardown, half a
    second) killed it with a stop's status, its output already whole: a scheduler or a script
    read a finished command as failed (a hostile user's trial). From here a stop ends the
    process at once with ``code``; exit handlers run and output is flushed, and the
    interpreter's teardown, where a handler would be reset before torch's slow part, is skipped
    (``exiting.exit_skipping_teardown``: every file a command writes is closed by then). The
    handler flushes nothing itself: a flush it interrupts would be re-entered, and one to a
    stalled pipe would not end."""

    def finished(signum, frame) -> None:
        os._exit(code)

    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(stop) is not signal.SIG_IGN:
            signal.signal(stop, finished)
    for stream in (sys.stdout, sys.stderr):  # before the exit handlers: a stop during them
        with suppress(Exception):  # loses no output (a reader gone: the code stands)
            stream.flush()
    exit_skipping_teardown(code)
