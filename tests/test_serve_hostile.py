"""The server against a hostile user's audit (2026-12-01): a generation that fails must not take
the model away from everyone after it, half-sent headers must not hold connections forever, an
IPv6 address must be servable, and every error has the documented ``{"error": ...}`` shape."""

import dataclasses
import json
import socket
import threading
import time

import pytest

from amazon_sft.answering.answer_source import AnswerSource
from amazon_sft.answering.ask import Answer
from amazon_sft.answering.index import Source
from amazon_sft.answering.serve import create_app
from amazon_sft.answering.serve_socket import BackgroundServer
from amazon_sft.errors import UserError

from .conftest import free_port
from .test_hostile import _assert_one_line, _run_cli
from .test_serve import CHROMIUM, SlowAnswerer, app_parts, asked_on_the_page  # noqa: F401 - the fixture

pytestmark = pytest.mark.hostile


class _FailingModel:
    """The tuned model, except that ``generate`` raises (as CUDA out of memory would) once."""

    def __init__(self, model) -> None:
        self.model, self.failures = model, 1

    def __getattr__(self, name):
        return getattr(self.model, name)

    def generate(self, **kwargs):
        if self.failures:
            self.failures -= 1
            raise RuntimeError("CUDA out of memory (a stand-in)")
        return self.model.generate(**kwargs)


def _within(seconds: float, call):
    """``call()``'s result, or a failure naming the hang (a hung request must not hang pytest)."""
    box = []
    thread = threading.Thread(target=lambda: box.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, f"no answer within {seconds} s: the request hangs"
    return box[0]


@pytest.mark.parametrize("route", ["/api/ask", "/api/stream"])
def test_a_generation_that_fails_frees_the_model_for_the_next_request(app_parts, route):  # noqa: F811
    from fastapi.testclient import TestClient

    failing = dataclasses.replace(app_parts, model=_FailingModel(app_parts.model))
    client = TestClient(create_app(failing, default_max_new_tokens=4), base_url="http://127.0.0.1")
    ask = {"question": "Tell me about a speaker", "mode": "closed"}
    first = _within(60, lambda: client.post(route, json=ask))
    if route == "/api/ask":
        assert first.status_code == 500
        assert "RuntimeError" in first.json()["error"] and "log" in first.json()["error"]
    else:
        assert first.status_code == 200 and '"error"' in first.text and "RuntimeError" in first.text
    second = _within(60, lambda: client.post(route, json=ask))
    assert second.status_code == 200 and "error" not in second.text


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(4096) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_half_sent_headers_are_cut_and_connections_are_capped():
    """A slow-headers client (slowloris) held its connections forever: 1,100 of them took every
    file descriptor and the server flooded its log. Headers get ``header_timeout_s``, also for a
    kept-alive connection's next request, and connections beyond ``max_connections`` are closed
    as they come; the server answers again as soon as they are gone."""
    port = free_port()
    server = BackgroundServer(
        create_app(SlowAnswerer()), port, header_timeout_s=1.0, max_connections=6
    )
    with server:
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(6)]
        for sock in slow:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        beyond = socket.create_connection(("127.0.0.1", port))
        assert _closed_within(beyond, 0.5), "a connection beyond the cap was kept"
        assert all(_closed_within(sock, 3.0) for sock in slow), "half-sent headers were kept"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the next one, half sent
            start = time.time()
            while sock.recv(65536):  # the rest of the page, then the close
                pass
            assert time.time() - start < 3.0
        for sock in [*slow, beyond]:
            sock.close()


def test_the_cap_th_connection_is_served():
    """A mutation audit: only a connection beyond the cap was tried; one at the cap was not.
    The one at the cap gets its page (a request, not a wait, so a loaded machine cannot pass a
    server that closes it); the next is closed."""
    port = free_port()
    with BackgroundServer(
        create_app(SlowAnswerer()), port, header_timeout_s=30.0, max_connections=6
    ):
        held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(6)]
        held[-1].sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            reply = held[-1].recv(4096)
        except ConnectionResetError:
            reply = b""
        assert reply.startswith(b"HTTP/1.1 200"), f"the connection at the cap got {reply[:40]!r}"
        beyond = socket.create_connection(("127.0.0.1", port))
        assert _closed_within(beyond, 5.0), "a connection beyond the cap was kept"
        for sock in [*held, beyond]:
            sock.close()


def test_an_ipv6_host_and_a_host_with_its_port_are_served():
    from fastapi.testclient import TestClient

    app = create_app(SlowAnswerer(), allowed_hosts=("::1", "shop.example:8000"))
    client = TestClient(app, base_url="http://127.0.0.1")
    assert client.get("/", headers={"Host": "[::1]:8765"}).status_code == 200
    assert client.get("/", headers={"Host": "shop.example"}).status_code == 200
    evil = client.get("/", headers={"Host": "[::2]:8765"})
    assert evil.status_code == 400 and "host" in evil.json()["error"].lower()


def test_every_error_has_the_documented_shape():
    from fastapi.testclient import TestClient

    client = TestClient(create_app(SlowAnswerer()), base_url="http://127.0.0.1")
    bad_bytes = client.post(
        "/api/ask",
        content=b'{"question": "\xff\xfe"}',
        headers={"content-type": "application/json"},
    )
    assert bad_bytes.status_code == 400 and "error" in bad_bytes.json()
    assert client.get("/nowhere").json().keys() == {"error"}
    assert client.get("/api/ask").json().keys() == {"error"}  # 405
    assert client.get("/openapi.json").status_code == 404


@pytest.mark.parametrize(
    ("body", "content_type", "status", "needle"),
    [
        (b"{not json", "application/json", 400, "not valid JSON (line 1 column 2: Expecting"),
        (
            b'{\n "question": "x",\n}',
            "application/json",
            400,
            "not valid JSON (line 3 column 1: Expecting",
        ),
        (b'["question"]', "application/json", 422, "must be a JSON object"),
        # no body at all was a 422 while one of spaces was a 400 (a hostile user's review)
        (b"", "application/json", 400, "request body is empty"),
        (b"  \n", "application/json", 400, "not valid JSON"),
        # a JSON object under another type was told "must be a JSON object" (a new user's
        # trial); curl -d sends application/x-www-form-urlencoded unless told otherwise
        (b'{"question": "x"}', "text/plain", 415, "was sent as Content-Type: text/plain, not"),
        (
            b'{"question": "x"}',
            "application/x-www-form-urlencoded",
            415,
            "x-www-form-urlencoded (curl -d's default), not application/json",
        ),
        # FastAPI's own words were "There was an error parsing the body" (status 400, kept)
        (b'{"question": "caf\xe9"}', "application/json", 400, "not UTF-8 (byte 0xe9 at 17)"),
        # valid JSON, past Python's 4300-digit limit on reading an integer: it was "could not
        # be read as JSON", naming nothing (a review)
        (b'{"question": "x", "k": 1' + b"0" * 4300 + b"}", "application/json", 400, "4301 digits"),
    ],
)
def test_a_body_that_is_not_a_json_object_says_what_to_send(body, content_type, status, needle):
    """A body that was not JSON got ``{"error": "13: JSON decode error"}`` (13: an offset).
    Its status says whose the fault is, one way for each: a body that cannot be read as JSON
    is a 400 (malformed JSON was a 422 while bytes that were not UTF-8 were a 400: a new user's
    trial), JSON of the wrong shape a 422, another Content-Type a 415."""
    from fastapi.testclient import TestClient

    client = TestClient(create_app(SlowAnswerer()), base_url="http://127.0.0.1")
    r = client.post("/api/ask", content=body, headers={"content-type": content_type})
    error = r.json()["error"]
    assert r.status_code == status
    assert needle in error and 'send {"question": ' in error, error


def test_serve_refuses_a_default_answer_length_over_its_cap(capsys):
    code, err = _run_cli(capsys, "serve", "--model", "config:tiny", "--max-new-tokens", "700")
    _assert_one_line(code, err, "serve", "--max-new-tokens", "512")
    with pytest.raises(UserError, match="512"):
        create_app(SlowAnswerer(), default_max_new_tokens=700)


def test_a_question_too_long_for_the_context_says_shorten_it(app_parts):  # noqa: F811
    long = "Quokka Lantern 7 8 9 " * 90  # about 1,100 tokens: no answer length fits
    with pytest.raises(UserError, match="shorten the question") as err:
        app_parts(long, k=None, mode="grounded", max_new_tokens=64)
    assert "at most 0" not in str(err.value)
    # room for a shorter answer than asked: the page cannot set one, so both ways are said
    with pytest.raises(
        UserError, match=r"ask for at most \d+ new tokens, or .*shorten the question"
    ):
        app_parts("Quokka Lantern " * 130, k=None, mode="grounded", max_new_tokens=64)


class _RefusingAnswerer(SlowAnswerer):
    def __call__(self, question, **kwargs):
        from amazon_sft.errors import RequestError

        raise RequestError("the question is too long for the model's context: shorten the question")


@pytest.mark.e2e
@pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium: apt-get install chromium (.ci/run does)"
)
def test_the_page_shows_an_error_the_stream_reports():
    """The stream answers 200 and then ``{"error": ...}``; the page showed a blank answer."""
    from playwright.sync_api import sync_playwright

    from amazon_sft.answering.serve import BROWSER_FLAGS

    port = free_port()
    with BackgroundServer(create_app(_RefusingAnswerer()), port) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
        page = browser.new_page()
        page.goto(url)
        page.fill("#q", "anything")
        page.click("#ask")
        page.wait_for_function("document.getElementById('answer').textContent.length > 0")
        assert "shorten the question" in page.text_content("#answer")
        browser.close()


def test_a_stream_keeps_flowing_while_requests_wait_for_the_model():
    """Requests waiting for the model each held a thread of the event loop's shared pool (6 on
    2 cores), which a stream also needs to hand on its pieces: with 7 waiting, the stream stalled
    until they were done. Waiting requests get threads of their own."""
    import http.client

    slow = SlowAnswerer()
    port = free_port()
    ask = json.dumps({"question": "anything", "max_new_tokens": 4})
    with BackgroundServer(create_app(slow, max_queue=8), port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        conn.request("POST", "/api/stream", ask, {"Content-Type": "application/json"})
        stream = conn.getresponse()
        assert stream.status == 200
        stream.read(40)  # generating
        waiting = []
        for _ in range(7):
            other = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            other.request("POST", "/api/ask", ask, {"Content-Type": "application/json"})
            waiting.append(other)
        time.sleep(1.0)  # they are all waiting for the model now
        start = time.time()
        got = stream.read(1000)  # pieces come every 20 ms: 1,000 bytes take about 1 s
        took = time.time() - start
        slow.release.set()
        for other in waiting:
            other.getresponse().read()
        assert took < 5.0, f"the stream stalled {took:.1f} s behind waiting requests ({len(got)} B)"


def test_a_stream_hands_on_its_pieces_without_the_loops_shared_threads():
    """Each stream waited for its next piece on a thread of the event loop's shared pool: eight
    streams queued for the model slowed the one generating (25 s against 6 s alone, the
    re-audit). Pieces are now handed to the loop directly; here the shared pool is one thread,
    held busy all along, and the stream must still arrive whole."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    class Quick:
        default_mode = "closed"

        def __call__(self, question, *, k, mode, max_new_tokens, on_text=None, cancel=None):
            for _ in range(5):
                on_text("x")
            return Answer(question, "xxxxx", [], "", "closed", [])

    app = create_app(Quick())
    held = threading.Event()

    @app.post("/test/hold-the-shared-pool")
    async def hold() -> dict:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
        loop.run_in_executor(None, held.wait)
        return {}

    with TestClient(app, base_url="http://127.0.0.1") as client:
        try:
            assert client.post("/test/hold-the-shared-pool").status_code == 200
            ask = {"question": "anything", "max_new_tokens": 5}
            reply = _within(20, lambda: client.post("/api/stream", json=ask))
        finally:
            held.set()  # else the loop waits for the held thread when the client closes
    pieces = [json.loads(line) for line in reply.text.splitlines()]
    assert [p["text"] for p in pieces if "text" in p] == ["x"] * 5
    assert "sources" in pieces[-1]


class _BidiAnswerer:
    """A catalogue whose title and description hold bidi overrides and isolates."""

    default_mode = "grounded"
    title = "Invoice \u202etxt.exe\u202c and \u2067isolated\u2069"

    def __call__(self, question, *, k, mode, max_new_tokens, on_text=None, cancel=None):
        answer = "It is \u202ereversed [source: B1]"
        if on_text:
            on_text(answer)
        source = AnswerSource(Source("B1", self.title, "\u202egnirts", 1.0))
        return Answer(question, answer, [source], "", "grounded", ["B1"])


@pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium: apt-get install chromium (.ci/run does)"
)
def test_the_page_drops_bidi_overrides_from_what_it_shows():
    """The terminal dropped them, the page did not: a title "Invoice U+202E txt.exe" read as
    "Invoice exe.txt" there. The JSON keeps the catalogue's text as it is."""
    shown = asked_on_the_page(
        _BidiAnswerer(), "invoice", lambda page: page.locator("body").inner_text()
    )
    assert "Invoice txt.exe and isolated" in shown and "It is reversed" in shown
    assert "gnirts" in shown
    assert not any(ch in shown for ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


_LOW_FILE_LIMIT_SERVER = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from amazon_sft.answering.ask import Answer
from amazon_sft.answering.serve import create_app
from amazon_sft.answering.serve_socket import listen, serve

class Quiet:
    default_mode = "closed"

    def __call__(self, question, *, k, mode, max_new_tokens, on_text=None, cancel=None):
        return Answer(question, "x", [], "", "closed", [])

serve(create_app(Quiet()), listen("127.0.0.1", int(sys.argv[1])))
"""


def test_a_connection_burst_never_runs_the_server_out_of_files():
    """With a soft file limit of 1,024 a burst of connections still logged asyncio's "accept
    out of system resource" (190 KB/s): it accepts up to uvicorn's backlog (2,048) per wake-up,
    before the connection cap can close them. The backlog is now bounded by the cap and the
    file limit. Here the limit is 256 and 600 connections come at once."""
    import subprocess
    import sys

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", _LOW_FILE_LIMIT_SERVER, str(port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        burst = []
        for _ in range(600):  # all at once: connects that do not wait for their answer
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            burst.append(sock)
        time.sleep(3.0)
        for sock in burst:
            sock.close()
        time.sleep(1.0)
        page = _within(30, lambda: _get(port))
        assert page.startswith(b"HTTP/1.1 200")
    finally:
        server.terminate()
        err = server.communicate(timeout=30)[1]
    assert "out of system resource" not in err and "Too many open files" not in err, err[-1500:]


def _get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return sock.recv(64)


def _turns(lock) -> list[str]:
    """Who gets ``lock`` after a waiter when its holder lets go and at once asks again (what a
    burst of new requests does): the waiter, if the lock is first come, first served."""
    order: list[str] = []
    lock.__enter__()
    waiter = threading.Thread(
        target=lambda: [lock.__enter__(), order.append("waiter"), lock.__exit__()]
    )
    waiter.start()
    time.sleep(0.2)  # the waiter is blocked in the lock by now
    lock.__exit__()
    with lock:
        order.append("newcomer")
    waiter.join(timeout=10)
    return order


def test_the_model_goes_to_requests_in_the_order_they_came():
    """serve's model lock: with ``threading.Lock`` a new request could take the model in the
    moment after a release, before a request that had waited all along (newcomer first)."""
    from amazon_sft.answering.first_come import FirstComeLock

    assert _turns(FirstComeLock()) == ["waiter", "newcomer"]


class _DamagedCatalogueAnswerer(SlowAnswerer):
    """The catalogue was cut while the server ran: the answerer's one-line damage report."""

    def __call__(self, question, **kwargs):
        raise UserError("catalogue /srv/secret/data/catalogue.jsonl is unreadable: re-run prepare")


class _TooLongAnswerer(SlowAnswerer):
    def __call__(self, question, **kwargs):
        from amazon_sft.errors import RequestError

        raise RequestError("the prompt does not fit the model's context: shorten the question")


@pytest.mark.parametrize("route", ["/api/ask", "/api/stream"])
def test_a_fault_of_the_server_is_a_500_that_shows_no_path_and_is_logged(route, caplog):
    """A damaged catalogue while serving was a 422 (the client's fault) naming the server's
    file paths, and only "422" in the log; the request's own faults stay 422 with their words.
    A hostile user's review: a known fault (the catalogue edited while serving) was logged as a
    25-line traceback on every request, its one line of remedy buried in it."""
    from fastapi.testclient import TestClient

    client = TestClient(create_app(_DamagedCatalogueAnswerer()), base_url="http://127.0.0.1")
    with caplog.at_level("ERROR"):
        got = client.post(route, json={"question": "a bear"})
    text = got.text
    assert "/srv/secret" not in text and "answering failed on the server" in text
    assert got.status_code == (500 if route == "/api/ask" else 200)  # a stream has begun
    assert "/srv/secret/data/catalogue.jsonl" in caplog.text
    assert "Traceback" not in caplog.text and "server log names the fix" in text
    mine = TestClient(create_app(_TooLongAnswerer()), base_url="http://127.0.0.1")
    got = mine.post(route, json={"question": "a bear"})
    assert "shorten the question" in got.text
    assert got.status_code == (422 if route == "/api/ask" else 200)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"question": "x", "max_tokens": 1}, "max_tokens"),
        # the generic "must be a JSON object" also names "mode": the conflict itself is said
        # in JSON's words, not pydantic's ("body: Value error, ... grounded True"): a review
        (
            {"question": "x", "mode": "closed", "grounded": True},
            'mode "closed" and grounded true disagree: send one of them',
        ),
    ],
)
def test_a_request_field_the_api_does_not_have_or_two_that_disagree_are_refused(body, needle):
    """Unknown fields ran with the defaults (a client's "max_tokens" silently ignored), and
    mode closed with grounded true ran closed."""
    from fastapi.testclient import TestClient

    client = TestClient(create_app(SlowAnswerer()), base_url="http://127.0.0.1")
    got = client.post("/api/ask", json=body)
    assert got.status_code == 422 and needle in got.json()["error"], got.text
    assert "Value error" not in got.json()["error"]


def test_serve_k_is_the_default_a_request_can_override():
    """``serve --k 5`` was checked and then never used."""
    from fastapi.testclient import TestClient

    asked = []

    class Recording(SlowAnswerer):
        def __call__(self, question, *, k, **kwargs):
            asked.append(k)
            return Answer(question, "x", [], "", "closed", [])

    client = TestClient(create_app(Recording(), default_k=5), base_url="http://127.0.0.1")
    assert client.post("/api/ask", json={"question": "a"}).status_code == 200
    assert client.post("/api/ask", json={"question": "a", "k": 2}).status_code == 200
    assert asked == [5, 2]
    from amazon_sft.answering.serve import check_default_k

    with pytest.raises(UserError, match="--k must be between 1 and 10"):
        check_default_k(40)  # a request without k was refused for a k it never sent


def test_the_page_cannot_be_framed_by_another_site_and_answers_head():
    """No X-Frame-Options or frame-ancestors: another site could frame the page (clickjacking);
    HEAD / (what monitors send) was 405."""
    from fastapi.testclient import TestClient

    client = TestClient(create_app(SlowAnswerer()), base_url="http://127.0.0.1")
    page = client.get("/")
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.head("/").status_code == 200


def test_a_lone_surrogate_in_a_json_question_is_read_as_ask_reads_it():
    """``{"question": "cats \\ud800"}`` (valid JSON, no valid text) got "Input should be a valid
    string, unable to parse raw data as a unicode string", and a lone surrogate in a key "must
    be a JSON object" (an outside review). The question's is U+FFFD, as ask reads argv's."""
    from fastapi.testclient import TestClient

    client = TestClient(create_app(SlowAnswerer()), base_url="http://127.0.0.1")
    body = b'{"question": "cats \\ud800", "mode": "closed", "max_new_tokens": 1}'
    r = client.post("/api/ask", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.json()
    odd_key = b'{"question": "x", "\\ud800": 1}'
    r = client.post("/api/ask", content=odd_key, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "must be a JSON object" not in r.json()["error"], r.json()


def test_an_empty_host_is_refused_not_bound_to_every_interface(capsys):
    """``serve --host ''`` (an unset ``$HOST``) listened on 0.0.0.0 (a hostile user's trial)."""
    from .test_hostile import _assert_one_line, _run_cli

    code, err = _run_cli(capsys, "serve", "--model", "unused", "--host", "")
    _assert_one_line(code, err, "serve", "--host is empty", "0.0.0.0")


@pytest.mark.parametrize("route", ["/api/ask", "/api/stream"])
def test_a_key_sent_twice_is_refused_not_read_as_its_last(route):
    """``{"question": "a", "question": "b"}`` was answered about "b" (Python's JSON keeps the
    last key), while a proxy or a log that reads the first saw "a" (left by the last session's
    review). Refused with a 422 naming the key, before any generation."""
    from fastapi.testclient import TestClient

    answerer = SlowAnswerer()
    client = TestClient(create_app(answerer), base_url="http://127.0.0.1")
    body = b'{"question": "cats", "mode": "closed", "question": "dogs"}'
    r = client.post(route, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert '"question" twice' in error and 'send {"question": ' in error, error
    assert answerer.running == 0
    answerer.release.set()
    once = b'{"question": "cats", "mode": "closed", "max_new_tokens": 1}'
    r = client.post(route, content=once, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
