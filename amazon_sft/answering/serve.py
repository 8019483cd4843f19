"""``amazon-sft serve``: a small web page and a JSON API on FastAPI/uvicorn, 127.0.0.1 by default.

- ``GET /``: a question box; the answer streams in; the sources follow with their descriptions.
- ``POST /api/ask`` ``{"question": ..., "grounded": false, "max_new_tokens": 128}`` -> the answer
  and its sources as JSON. ``POST /api/stream``: the same as NDJSON events while generating.

Product text is never put into HTML by the server: the page inserts it with ``textContent``, and
JSON responses escape ``<``, ``>`` and ``&`` (as ``\\u003c``...), so a description holding
``<script>`` stays text everywhere. Requests are bounded in size and generation length; bad ones
get a 4xx JSON error. One generation runs at a time (a lock around the model).
"""

import json
import queue
import threading

from amazon_sft.answering.ask import MAX_QUESTION_CHARS

MAX_BODY_BYTES = 16_384
MAX_NEW_TOKENS_CAP = 512
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
</style></head><body>
<h1>Ask about a product</h1>
<form id="f"><textarea id="q" name="q" placeholder="What is the description of ...? / Me fale sobre ..."></textarea>
<label><input type="checkbox" id="grounded"> grounded (put the retrieved description in the prompt)</label>
<button id="ask" type="submit">Ask</button></form>
<h2>Answer</h2><div id="answer"></div>
<h2>Sources</h2><ol id="sources"></ol>
<script>
const $ = (id) => document.getElementById(id);
$("f").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("answer").textContent = ""; $("sources").replaceChildren(); $("ask").disabled = true;
  try {
    const r = await fetch("/api/stream", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({question: $("q").value, grounded: $("grounded").checked})});
    if (!r.ok) { $("answer").textContent = "error: " + (await r.json()).error; return; }
    const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = "";
    for (;;) {
      const {value, done} = await reader.read(); if (done) break;
      buf += dec.decode(value, {stream: true}); let i;
      while ((i = buf.indexOf("\\n")) >= 0) {
        const ev = JSON.parse(buf.slice(0, i)); buf = buf.slice(i + 1);
        if (ev.text !== undefined) $("answer").textContent += ev.text;
        if (ev.sources) for (const s of ev.sources) {
          const li = document.createElement("li");
          const t = document.createElement("strong"); t.textContent = s.title; li.append(t);
          const m = document.createElement("div"); m.className = "meta";
          m.textContent = `uid ${s.uid} · retrieval score ${s.score}` +
            (s.answer_rougeL !== undefined ? ` · answer ROUGE-L vs description ${s.answer_rougeL}` : "");
          const d = document.createElement("div"); d.className = "desc"; d.textContent = s.content;
          li.append(m, d); $("sources").append(li);
        }
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


def create_app(answerer, default_max_new_tokens: int = 128):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, Response, StreamingResponse
    from pydantic import BaseModel, Field

    class AskRequest(BaseModel):
        question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
        grounded: bool = False
        max_new_tokens: int = Field(default=default_max_new_tokens, ge=1, le=MAX_NEW_TOKENS_CAP)
        k: int = Field(default=3, ge=1, le=10)

    app = FastAPI(title="amazon_sft", docs_url=None, redoc_url=None)
    lock = threading.Lock()

    def error(status: int, message: str) -> Response:
        return Response(
            safe_json({"error": message}), status_code=status, media_type="application/json"
        )

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and int(size) > MAX_BODY_BYTES:
            return error(413, f"request body over {MAX_BODY_BYTES} bytes")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(422, f"{where or 'body'}: {first.get('msg', 'invalid request')}")

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE

    def run(req: AskRequest, on_text=None):
        with lock:  # one generation at a time: the model is shared
            return answerer(
                req.question,
                k=req.k,
                grounded=req.grounded,
                max_new_tokens=req.max_new_tokens,
                on_text=on_text,
            )

    @app.post("/api/ask")
    def ask(req: AskRequest) -> Response:
        if not req.question.strip():
            return error(422, "question: empty")
        result = run(req)
        return Response(
            safe_json({"answer": result.answer, "sources": result.sources}),
            media_type="application/json",
        )

    @app.post("/api/stream")
    def stream(req: AskRequest):
        if not req.question.strip():
            return error(422, "question: empty")
        events: queue.Queue = queue.Queue()

        def work() -> None:
            try:
                events.put({"sources": run(req, on_text=lambda t: events.put({"text": t})).sources})
            finally:
                events.put(None)

        threading.Thread(target=work, daemon=True).start()

        def body():
            while (event := events.get()) is not None:
                yield safe_json(event) + b"\n"

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
