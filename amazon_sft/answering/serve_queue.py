"""What ``serve`` asks of the model: the request a client sends (``ask_request_model``) and the
queue in front of the one model (``AnswerQueue``): one generation at a time, in the order
requests came, at most ``max_queue`` waiting, each on a thread of its own, and a stop that lets
no waiting request start."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from amazon_sft.answering.client_errors import MAX_K, MAX_NEW_TOKENS_CAP
from amazon_sft.answering.first_come import FirstComeLock
from amazon_sft.answering.question_text import MAX_QUESTION_CHARS, without_lone_surrogates

STOPPING = object()
"""``AnswerQueue.run``'s answer when the server is stopping (``app.state.stop``)."""
STOPPING_MESSAGE = "the server is stopping: ask again once it is back"


def ask_request_model(default_max_new_tokens: int):
    """The body of ``/api/ask`` and ``/api/stream`` (pydantic), ``max_new_tokens`` defaulting to
    ``serve --max-new-tokens``."""
    from pydantic import BaseModel, ConfigDict, Field, model_validator

    class AskRequest(BaseModel):
        # JSON types as the API documents them: true is not the number 1 (a bool is an int in
        # Python, so "max_new_tokens": true asked for one token), nor "8" the number 8.
        model_config = ConfigDict(strict=True, extra="forbid")  # "max_tokens" is not ignored

        question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
        mode: Literal["grounded", "closed"] | None = None
        grounded: bool | None = None  # the older switch: true = grounded, false = closed
        max_new_tokens: int = Field(default=default_max_new_tokens, ge=1, le=MAX_NEW_TOKENS_CAP)
        k: int | None = Field(default=None, ge=1, le=MAX_K)

        @model_validator(mode="before")
        @classmethod
        def _as_text(cls, body):
            # JSON's "\ud800" is no text: read as ask reads such argv (U+FFFD), in keys too,
            # not refused as "unable to parse raw data as a unicode string". A field sent as
            # null is left out: the server's default, in every optional field alike
            if not isinstance(body, dict):
                return body
            fix = lambda v: without_lone_surrogates(v) if isinstance(v, str) else v  # noqa: E731
            return {fix(k): fix(v) for k, v in body.items() if v is not None}

        @model_validator(mode="after")
        def _one_mode(self):
            both = self.mode is not None and self.grounded is not None
            if both and (self.mode == "grounded") != self.grounded:
                raise ValueError(
                    f"mode {json.dumps(self.mode)} and grounded {json.dumps(self.grounded)} "
                    "disagree: send one of them"
                )
            return self

        def chosen_mode(self) -> str | None:
            if self.mode is None and self.grounded is not None:
                return "grounded" if self.grounded else "closed"
            return self.mode

    return AskRequest


class AnswerQueue:
    """The one model, shared: a request takes a seat (``take_seat``; none left: 503), then waits
    its turn and generates (``run``, on the queue's own threads: waiting in the event loop's
    shared pool, 6 threads on 2 cores, requests took the threads a stream needs to hand on its
    pieces, and it stalled behind them)."""

    def __init__(self, answerer, max_queue: int, default_k: int | None) -> None:
        self.answerer, self.default_k = answerer, default_k
        self.stopping = threading.Event()
        self.live: set[threading.Event] = set()  # each request's cancel, while it is answered
        self.lock = FirstComeLock()  # requests get the model in the order they came
        self.seats = threading.BoundedSemaphore(max_queue + 1)  # the one generating + waiting
        self.threads = ThreadPoolExecutor(max_workers=max_queue + 1, thread_name_prefix="answer")

    def stop(self, force: bool = False) -> None:
        """No waiting request starts generating (it is told 503); ``force`` (a second stop):
        the answer being generated ends too. Waiting for every queued answer would generate for
        clients already gone."""
        self.stopping.set()
        for cancel in list(self.live) if force else []:
            cancel.set()

    def take_seat(self) -> bool:
        return self.seats.acquire(blocking=False)

    def stopped(self, result, cancel: threading.Event) -> bool:
        """The answer was cut short, or never started, because the server is stopping."""
        return result is STOPPING or (self.stopping.is_set() and cancel.is_set())

    def run(self, req, on_text=None, cancel: threading.Event | None = None):
        """Holds a seat (taken by the caller) until done; one generation at a time. None: its
        client left while it waited; ``STOPPING``: the server is stopping."""
        try:
            if self.stopping.is_set():
                return STOPPING
            with self.lock:
                if self.stopping.is_set():
                    return STOPPING
                if cancel is not None and cancel.is_set():
                    return None  # its client left while it waited
                return self.answerer(
                    req.question,
                    k=req.k if req.k is not None else self.default_k,
                    mode=req.chosen_mode(),
                    max_new_tokens=req.max_new_tokens,
                    on_text=on_text,
                    cancel=cancel,
                )
        finally:
            self.seats.release()
