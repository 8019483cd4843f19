"""A lock granted in the order it was asked for (``serve``'s one model, shared by requests).

``threading.Lock`` lets a newcomer take the lock in the moment between its release and the
wake-up of a thread that has waited all along, so under steady load a request could wait behind
any number of later ones. Tickets fix the order. The standard library has no fair lock.
"""

from __future__ import annotations

import threading


class FirstComeLock:
    """A context-manager lock whose waiters get it first come, first served (each takes a
    ticket and waits for its number; tests/test_serve_hostile.py checks the order)."""

    def __init__(self) -> None:
        self._turns = threading.Condition(threading.Lock())
        self._next_ticket = 0
        self._serving = 0

    def __enter__(self) -> FirstComeLock:
        with self._turns:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._turns.wait_for(lambda: self._serving == ticket)
        return self

    def __exit__(self, *exc) -> None:
        with self._turns:
            self._serving += 1
            self._turns.notify_all()  # waiters are few (serve's queue): each checks its ticket
