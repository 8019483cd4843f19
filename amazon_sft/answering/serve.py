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
  ``POST /api/stream``: the same as NDJSON events while generating.

Product text is never put into HTML by the server: the page inserts it with ``textContent``, and
JSON responses escape ``<``, ``>`` and ``&`` (as ``\\u003c``...), so a description holding
``<script>`` stays text everywhere. The client is not trusted: the body limit counts the bytes
actually received (chunked bodies too), the whole body must arrive within ``BODY_TIMEOUT_S``
(408 after: a body sent a byte at a time cannot hold a connection), the ``Host`` header must
name this server (DNS rebinding), one generation runs at a time with at most ``max_queue``
requests waiting (503 beyond), a stream whose client goes away stops generating, and questions
lose any special-token text before they are encoded (``ask.clean_question``). Bad requests get
a 4xx JSON error.
"""

import asyncio
import json
import queue
import threading
from typing import Literal

from amazon_sft.answering.ask import MAX_QUESTION_CHARS
from amazon_sft.errors import UserError

MAX_BODY_BYTES = 16_384
BODY_TIMEOUT_S = 10.0
"""The whole request body must arrive within this: a body sent a byte at a time would hold a
connection (and its memory) open for as long as the client likes."""
MAX_NEW_TOKENS_CAP = 512
MAX_QUEUE = 8
"""Requests waiting for the model beyond the one generating; more get 503."""
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
DISCONNECT_POLL_S = 0.25
DISCARD_BYTES = 1 << 20
"""How much of an oversized body is read and dropped before the 413 (never kept in memory)."""
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

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>amazon_sft: ask about a product</title>
<style>
body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}
textarea{width:100%;height:4rem}#answer{white-space:pre-wrap;border-left:3px solid #888;padding:.5rem;min-height:2rem}
li{margin:.6rem 0}.desc{color:#444;font-size:.9rem}.meta{color:#777;font-size:.8rem}
.cited{border-left:3px solid #2a7;padding-left:.4rem}.unused{opacity:.6}.tag{font-size:.75rem;margin-left:.4rem}
</style></head><body>
<h1>Ask about a product</h1>
<form id="f"><textarea id="q" name="q" placeholder="What is the description of ...? / Me fale sobre ..."></textarea>
<label>mode <select id="mode"><option value="grounded">grounded: answer from the catalogue records, cited</option>
<option value="closed">closed-book: from what tuning taught</option></select></label>
<button id="ask" type="submit">Ask</button></form>
<h2>Answer</h2><div id="answer"></div><div id="how" class="meta"></div>
<h2>Sources</h2><ol id="sources"></ol>
<script>
const $ = (id) => document.getElementById(id);
$("mode").value = "__MODE__";
function linkCitations() {  // "[source: uid]" -> a link to that source; text nodes only, no HTML
  const text = $("answer").textContent; const parts = []; let last = 0;
  for (const m of text.matchAll(/\\[source: ([^\\]\\s]+)\\]/g)) {
    parts.push(document.createTextNode(text.slice(last, m.index)));
    const a = document.createElement("a"); a.href = "#src-" + m[1]; a.textContent = m[0];
    a.className = "citation"; parts.push(a); last = m.index + m[0].length;
  }
  parts.push(document.createTextNode(text.slice(last))); $("answer").replaceChildren(...parts);
}
$("f").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("answer").textContent = ""; $("how").textContent = ""; $("sources").replaceChildren();
  $("ask").disabled = true;
  try {
    const r = await fetch("/api/stream", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({question: $("q").value, mode: $("mode").value})});
    if (!r.ok) { $("answer").textContent = "error: " + (await r.json()).error; return; }
    const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = "";
    for (;;) {
      const {value, done} = await reader.read(); if (done) break;
      buf += dec.decode(value, {stream: true}); let i;
      while ((i = buf.indexOf("\\n")) >= 0) {
        const ev = JSON.parse(buf.slice(0, i)); buf = buf.slice(i + 1);
        if (ev.text !== undefined) $("answer").textContent += ev.text;
        if (ev.doubt) $("how").textContent = "Abstained without generating: retrieval was not sure: " + ev.doubt;
        else if (ev.quoted) $("how").textContent = "The first record's answer: retrieval was sure and the model's answer did not cite it.";
        if (ev.sources) { linkCitations(); for (const s of ev.sources) {
          const li = document.createElement("li"); li.id = "src-" + s.uid;
          const t = document.createElement("strong"); t.textContent = s.title; li.append(t);
          if (s.cited !== undefined) {
            li.className = s.cited ? "cited" : "unused";
            const tag = document.createElement("span"); tag.className = "tag";
            tag.textContent = s.cited ? "cited by the answer" : "not used by the answer"; li.append(tag);
          }
          const m = document.createElement("div"); m.className = "meta";
          m.textContent = `uid ${s.uid} · retrieval score ${s.score}` +
            (s.cosine !== undefined ? ` (words ${s.words_score}, meaning cosine ${s.cosine})` : "") +
            (s.answer_rougeL !== undefined ? ` · answer ROUGE-L vs description ${s.answer_rougeL}` : "");
          const d = document.createElement("div"); d.className = "desc"; d.textContent = s.content;
          li.append(m, d); $("sources").append(li);
        } }
      }
    }
  } finally { $("ask").disabled = false; }
});
</script></body></html>
"""


def safe_json(payload) -> bytes:
    """JSON with <, > and & escaped, so product text can never become markup where it lands."""
    text = json.dumps(payload, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


class BodyLimit:
    """ASGI middleware: read the request body, counting the bytes that really arrive (a chunked
    body has no Content-Length to trust), answer 413 past ``limit``, then hand the app the body
    it read. Later ``receive`` calls pass through, so the app still sees a disconnect."""

    def __init__(self, app, limit: int, timeout_s: float = BODY_TIMEOUT_S) -> None:
        self.app, self.limit, self.timeout_s = app, limit, timeout_s

    @staticmethod
    async def _discard(receive, more: bool) -> None:
        """Read and drop the rest of an oversized body, up to ``DISCARD_BYTES``: a server that
        closes with unread data makes the client's kernel drop the 413 on the reset."""
        dropped = 0
        while more and dropped < DISCARD_BYTES:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            dropped += len(message.get("body", b""))
            more = message.get("more_body", False)

    @staticmethod
    async def _refuse(send, status: int, message: str) -> None:
        payload = safe_json({"error": message})
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body, more = b"", True
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while more:
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(left, 0.0))
            except asyncio.TimeoutError:
                sent = f"{len(body)} bytes in {self.timeout_s:g} s"
                return await self._refuse(send, 408, f"request body too slow ({sent})")
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._discard(receive, more)  # so the reply is not lost to a TCP reset
                return await self._refuse(send, 413, f"request body over {self.limit} bytes")
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


def create_app(
    answerer,
    default_max_new_tokens: int = 128,
    allowed_hosts: tuple[str, ...] = LOCAL_HOSTS,
    max_queue: int = MAX_QUEUE,
    body_timeout_s: float = BODY_TIMEOUT_S,
):
    """The FastAPI app. ``allowed_hosts``: names the ``Host`` header may carry (add the public
    name when binding beyond this machine); ``body_timeout_s``: time the whole request body
    has to arrive (408 after)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, Response, StreamingResponse
    from pydantic import BaseModel, Field
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    class AskRequest(BaseModel):
        question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
        mode: Literal["grounded", "closed"] | None = None
        grounded: bool | None = None  # the older switch: true = grounded, false = closed
        max_new_tokens: int = Field(default=default_max_new_tokens, ge=1, le=MAX_NEW_TOKENS_CAP)
        k: int | None = Field(default=None, ge=1, le=10)

        def chosen_mode(self) -> str | None:
            if self.mode is None and self.grounded is not None:
                return "grounded" if self.grounded else "closed"
            return self.mode

    app = FastAPI(title="amazon_sft", docs_url=None, redoc_url=None)
    lock = threading.Lock()
    seats = threading.BoundedSemaphore(max_queue + 1)  # the one generating + those waiting
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=[h.strip("[]") for h in allowed_hosts])
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
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(422, f"{where or 'body'}: {first.get('msg', 'invalid request')}")

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.replace("__MODE__", answerer.default_mode)

    def run(req: AskRequest, on_text=None, cancel=None):
        """Holds a seat (taken by the caller) until done; one generation at a time."""
        try:
            with lock:  # the model is shared
                if cancel is not None and cancel.is_set():
                    return None  # its client left while it waited
                return answerer(
                    req.question,
                    k=req.k,
                    mode=req.chosen_mode(),
                    max_new_tokens=req.max_new_tokens,
                    on_text=on_text,
                    cancel=cancel,
                )
        finally:
            seats.release()

    @app.post("/api/ask")
    async def ask(req: AskRequest, request: Request) -> Response:
        if not req.question.strip():
            return error(422, "question: empty")
        if not seats.acquire(blocking=False):
            return busy()
        cancel = threading.Event()
        task = asyncio.ensure_future(asyncio.to_thread(run, req, None, cancel))
        while not task.done():  # a client that leaves stops the generation it asked for
            await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if not task.done() and await request.is_disconnected():
                cancel.set()
        try:
            result = task.result()
        except UserError as err:
            return error(422, str(err))
        if result is None:
            return error(499, "client closed the request")
        return Response(
            safe_json(
                {
                    "answer": result.answer,
                    "mode": result.mode,
                    "cited": result.cited,
                    "doubtful": result.doubtful,
                    "doubt": result.doubt,
                    "quoted": result.quoted,
                    "sources": result.sources,
                }
            ),
            media_type="application/json",
        )

    @app.post("/api/stream")
    def stream(req: AskRequest, request: Request):
        if not req.question.strip():
            return error(422, "question: empty")
        if not seats.acquire(blocking=False):
            return busy()
        events: queue.Queue = queue.Queue()
        cancel = threading.Event()

        def work() -> None:
            try:
                result = run(req, on_text=lambda t: events.put({"text": t}), cancel=cancel)
                if result is not None:
                    events.put(
                        {
                            "sources": result.sources,
                            "cited": result.cited,
                            "mode": result.mode,
                            "doubtful": result.doubtful,
                            "doubt": result.doubt,
                            "quoted": result.quoted,
                        }
                    )
            except UserError as err:
                events.put({"error": str(err)})
            finally:
                events.put(None)

        threading.Thread(target=work, daemon=True).start()

        async def body():
            """Events as they come; every ``DISCONNECT_POLL_S`` a look at whether the client is
            still there (a closed connection is only noticed by reading it)."""
            loop = asyncio.get_running_loop()
            checked = loop.time()
            try:
                while True:
                    try:
                        event = await asyncio.to_thread(events.get, True, DISCONNECT_POLL_S)
                    except queue.Empty:
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


def serve(app, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")


class BackgroundServer:
    """The app on a local port in a thread (tests and screenshots): ``with BackgroundServer(app) as url``."""

    def __init__(self, app, port: int) -> None:
        import uvicorn

        self.port = port
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        import time

        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}/"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
