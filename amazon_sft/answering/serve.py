"""``amazon-sft serve``: a small web page and a JSON API on FastAPI/uvicorn, 127.0.0.1 by default.

- ``GET /``: a question box; the answer streams in; the sources follow with their descriptions,
  each marked cited or not used, and the answer's ``[source: uid]`` becomes a link to its source.
- ``POST /api/ask`` ``{"question": ..., "mode": "grounded" | "closed", "max_new_tokens": 128}``
  -> the answer, its mode, the uids it cites, ``doubtful`` (retrieval was not sure: the
  answer is the abstention, ``--abstain-below``; ``doubt`` says why, and the page shows it
  under the answer), ``quoted`` (retrieval was sure and the
  answer did not cite its first record: it is that record's, ``--quote-when-sure``) and its
  sources as JSON (``mode`` left out: the mode ``serve`` was started with, ``--grounded`` or
  ``--closed-book``, else grounded for a model trained with grounded examples).
  ``POST /api/stream``: NDJSON events, ``{"text": ...}`` pieces while generating, then one
  with all ``/api/ask`` returns (the whole answer too: a client need not join the pieces). The
  status (200) is sent before the question is planned, so an error found then (a prompt too
  long for the model's context, a damaged file) is the stream's last event, ``{"error": ...}``,
  not a 4xx/500 status as on ``/api/ask``.

Product text is never put into HTML by the server: the page inserts it with ``textContent``, and
JSON responses escape ``<``, ``>`` and ``&`` (as ``\\u003c``...), so a description holding
``<script>`` stays text everywhere. The client is not trusted (``serve_guards``): the body limit
counts the bytes actually received (chunked bodies too), the whole body must arrive within
``BODY_TIMEOUT_S`` and the headers within ``HEADER_TIMEOUT_S`` (a client trickling bytes cannot
hold a connection), connections are capped, and the ``Host`` header must name this server (DNS
rebinding). One generation runs at a time, in the order requests came, with at most
``max_queue`` requests waiting (503 beyond), each on a thread of its own; a stream whose client goes away stops generating; questions
lose any special-token text before they are encoded (``question_text.clean_question``). Every error is
``{"error": ...}``: 4xx for the request's fault (``RequestError``), 500 when the model failed or a
file is damaged (logged, with the paths the client is not shown; the model is free for the next
request).
"""

import asyncio
import logging
import threading

from amazon_sft.answering.client_errors import (
    EMPTY_BODY,
    MAX_K,
    MAX_NEW_TOKENS_CAP,
    PARSE_FAILED,
    body_error,
    key_sent_twice,
    unreadable_body,
    wrong_content_type,
    wrong_route,
)
from amazon_sft.answering.serve_guards import (
    BODY_TIMEOUT_S,
    MAX_BODY_BYTES,
    BodyLimit,
    HostCheck,
    safe_json,
)
from amazon_sft.answering.serve_queue import STOPPING_MESSAGE, AnswerQueue, ask_request_model
from amazon_sft.answering.web_page import PAGE
from amazon_sft.errors import RequestError, UserError

log = logging.getLogger("amazon_sft.serve")

MAX_QUEUE = 8
"""Requests waiting for the model beyond the one generating; more get 503."""
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
DISCONNECT_POLL_S = 0.25
# Headless Chromium on a closed network: without these it keeps trying to reach Google's hosts.
BROWSER_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def check_default_tokens(max_new_tokens: int) -> None:
    """``serve --max-new-tokens``: what a request that names none gets, within the API's cap."""
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS_CAP:
        raise UserError(
            f"--max-new-tokens must be between 1 and {MAX_NEW_TOKENS_CAP} for serve (the cap a "
            f"request may ask for), got {max_new_tokens}"
        )


def check_default_k(k: int | None) -> None:
    """``serve --k``: the records a request without k gets, within the cap a request has."""
    if k is not None and not 1 <= k <= MAX_K:
        raise UserError(f"--k must be between 1 and {MAX_K} (what a request may ask for), got {k}")


PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


def failed(err: BaseException) -> str:
    """What a client is told when answering failed for a reason not its own. A known fault (a
    ``UserError``: the catalogue edited while serving) is logged as its one line, which names
    the fix; anything else with its traceback. The client never sees the server's paths."""
    if isinstance(err, UserError):
        log.error("answering failed: %s", err)
        return "answering failed on the server (a file it reads changed or is damaged); the server log names the fix"
    log.error("answering failed", exc_info=err)
    return f"answering failed on the server ({type(err).__name__}); the server log has the details"


def create_app(
    answerer,
    default_max_new_tokens: int = 128,
    allowed_hosts: tuple[str, ...] = LOCAL_HOSTS,
    max_queue: int = MAX_QUEUE,
    body_timeout_s: float = BODY_TIMEOUT_S,
    default_k: int | None = None,
):
    """The FastAPI app. ``allowed_hosts``: names the ``Host`` header may carry (add the public
    name when binding beyond this machine); ``body_timeout_s``: time the whole request body
    has to arrive (408 after); ``default_k``: records a request without ``k`` gets (``serve
    --k``; None: the records training showed)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException

    check_default_tokens(default_max_new_tokens)
    AskRequest = ask_request_model(default_max_new_tokens)
    app = FastAPI(title="amazon_sft", docs_url=None, redoc_url=None, openapi_url=None)
    queue = AnswerQueue(answerer, max_queue, default_k)
    app.state.stop = queue.stop
    app.add_middleware(HostCheck, allowed_hosts=allowed_hosts)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES, timeout_s=body_timeout_s)

    def error(status: int, message: str) -> Response:
        return Response(
            safe_json({"error": message}), status_code=status, media_type="application/json"
        )

    def busy() -> Response:
        return error(503, f"busy: {max_queue} requests are already waiting; retry in a moment")

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        if not await request.body():  # FastAPI reads it as a missing object: it is no JSON
            return error(400, EMPTY_BODY)
        if (whole := body_error(first, exc.body)) is not None:
            if media := wrong_content_type(request.headers.get("content-type", "")):
                return error(415, media)  # the object may be fine: its type is not
            # unreadable as JSON: 400, as a body that is not UTF-8 is; JSON of another shape: 422
            return error(400 if first.get("type") == "json_invalid" else 422, whole)
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if not where and first.get("type") == "value_error":  # the request's own check
            return error(422, str(first.get("ctx", {}).get("error", first.get("msg"))))
        return error(422, f"{where or 'body'}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(HTTPException)  # 404, 405, a body that is not UTF-8 JSON: same shape
    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 400 and exc.detail == PARSE_FAILED:
            return error(400, unreadable_body(await request.body()))
        said = wrong_route(exc.status_code, request.method, request.url.path)
        refused = error(exc.status_code, said or str(exc.detail))
        refused.headers.update(exc.headers or {})  # a 405's Allow
        return refused

    def refusal(req, body: bytes) -> str | None:
        """Why a request that read as valid is refused anyway (None: it is not)."""
        return key_sent_twice(body) or (None if req.question.strip() else "question: empty")

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    def page() -> HTMLResponse:
        # never inside another site's frame (clickjacking)
        return HTMLResponse(PAGE.replace("__MODE__", answerer.default_mode), headers=PAGE_HEADERS)

    @app.post("/api/ask")
    async def ask(req: AskRequest, request: Request) -> Response:
        if (refused := refusal(req, await request.body())) is not None:
            return error(422, refused)
        if not queue.take_seat():
            return busy()
        cancel = threading.Event()
        queue.live.add(cancel)
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(
            loop.run_in_executor(queue.threads, queue.run, req, None, cancel)
        )
        try:
            while not task.done():  # a client that leaves stops the generation it asked for
                await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
                if not task.done() and await request.is_disconnected():
                    cancel.set()
        finally:  # this handler cancelled (a forced stop): nobody is waiting for the answer
            queue.live.discard(cancel)
            if not task.done():
                cancel.set()
        try:
            result = task.result()
        except RequestError as err:  # the question, k, the answer length: the client's to fix
            return error(422, str(err))
        except Exception as err:  # the model failed (out of memory), a file is damaged: ours
            return error(500, failed(err))
        if queue.stopped(result, cancel):
            return error(503, STOPPING_MESSAGE)
        if result is None:
            return error(499, "client closed the request")
        return Response(
            safe_json({**result.fields(), "sources": result.sources_shown()}),
            media_type="application/json",
        )

    @app.post("/api/stream")
    async def stream(req: AskRequest, request: Request):
        if (refused := refusal(req, await request.body())) is not None:
            return error(422, refused)
        if not queue.take_seat():
            return busy()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        queue.live.add(cancel)

        def put(event: dict | None) -> None:
            """Hand an event to the loop from the generating thread. A thread waiting on a
            queue for each stream took the loop's shared pool: queued streams slowed the one
            generating. Nothing to hand to a loop that is already closed (server stopping)."""
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:
                cancel.set()

        def work() -> None:
            try:
                result = queue.run(req, on_text=lambda t: put({"text": t}), cancel=cancel)
                if queue.stopped(result, cancel):
                    put({"error": STOPPING_MESSAGE})
                elif result is not None:  # the last event is /api/ask's reply, answer included
                    put({**result.fields(), "sources": result.sources_shown()})
            except RequestError as err:
                put({"error": str(err)})
            except Exception as err:  # the model failed: the stream says so, the next is served
                put({"error": failed(err)})
            finally:
                queue.live.discard(cancel)
                put(None)

        threading.Thread(target=work, daemon=True).start()

        async def body():
            """Events as they come; every ``DISCONNECT_POLL_S`` a look at whether the client is
            still there (a closed connection is only noticed by reading it)."""
            checked = loop.time()
            try:
                while True:
                    try:
                        event = await asyncio.wait_for(events.get(), DISCONNECT_POLL_S)
                    except TimeoutError:
                        event = ...
                    if loop.time() - checked >= DISCONNECT_POLL_S:
                        checked = loop.time()
                        if await request.is_disconnected():
                            return
                    if event is None:
                        return
                    if event is not ...:
                        yield safe_json(event) + b"\n"
            finally:  # the answer is complete, or its client went away: stop generating
                cancel.set()

        return StreamingResponse(body(), media_type="application/x-ndjson")

    return app
