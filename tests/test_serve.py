"""The web page and JSON API: good, bad and oversized requests, escaping, and a real browser."""

import json
import shutil
import signal
import socket
import threading
import time

import orjson
import pytest

from amazon_sft.answering.ask import Answer, Answerer
from amazon_sft.answering.index import CatalogueIndex
from amazon_sft.answering.index_build import build_index
from amazon_sft.answering.serve import BROWSER_FLAGS, MAX_BODY_BYTES, create_app
from amazon_sft.answering.serve_socket import BackgroundServer
from amazon_sft.evaluation.loading import load_for_eval
from amazon_sft.prompts import build_prompt_format

from .conftest import free_port
from .test_hostile import _assert_one_line, _run_cli

SCRIPT_TITLE = "Zentra Injection Test Speaker"
SCRIPT_TEXT = "Loud <script>window.pwned = 1</script> speaker & <b>bold</b> claims."
ASKED_BY_PART = "Tell me about the loud Zentra speaker"  # not every word of its title
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def asked_on_the_page(answerer, question: str, read):
    """``read(page)`` once the page served for ``answerer`` has answered ``question`` (its
    sources listed), in headless Chromium."""
    from playwright.sync_api import sync_playwright

    with BackgroundServer(create_app(answerer), free_port()) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
        page = browser.new_page()
        page.goto(url)
        page.fill("#q", question)
        page.click("#ask")
        page.wait_for_selector("#sources li", timeout=60_000)
        seen = read(page)
        browser.close()
    return seen


@pytest.fixture(scope="module")
def app_parts(prepared, tuned_run, tmp_path_factory):
    """The tuned tiny model over a copy of the catalogue with one record holding markup."""
    data = tmp_path_factory.mktemp("serve-data")
    for name in ("manifest.json", "catalogue.jsonl"):
        shutil.copy(prepared / name, data / name)
    with open(data / "catalogue.jsonl", "ab") as fh:
        fh.write(
            orjson.dumps(
                {
                    "uid": "B0SCRIPT01",
                    "title": SCRIPT_TITLE,
                    "content": SCRIPT_TEXT,
                    "split": "train",
                }
            )
            + b"\n"
        )
    build_index(data)
    model, tok, cfg, _ = load_for_eval(str(tuned_run), [], "cpu")
    return Answerer(model, tok, build_prompt_format(tok, cfg.data), CatalogueIndex(data), cfg.data)


@pytest.fixture(scope="module")
def client(app_parts):
    from fastapi.testclient import TestClient

    return TestClient(create_app(app_parts, default_max_new_tokens=8), base_url="http://127.0.0.1")


def test_ask_returns_answer_and_sources(client):
    r = client.post(
        "/api/ask", json={"question": f"Tell me about {SCRIPT_TITLE}", "max_new_tokens": 6}
    )
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body["answer"], str)
    top = body["sources"][0]
    assert top["uid"] == "B0SCRIPT01" and top["title"] == SCRIPT_TITLE and top["score"] > 0
    # the prompt as rendered, as `ask --json` gives it: what to send an exported model elsewhere
    assert body["mode"] == "closed" and SCRIPT_TITLE in body["prompt"]  # this model's default
    grounded = client.post(
        "/api/ask",
        json={"question": "Me fale sobre o Zentra", "mode": "grounded", "max_new_tokens": 2},
    ).json()
    assert "Me fale sobre o Zentra" in grounded["prompt"]
    assert all(s["title"] in grounded["prompt"] for s in grounded["sources"])


def test_markup_in_descriptions_is_escaped_in_the_api(client):
    r = client.post("/api/ask", json={"question": f"What is {SCRIPT_TITLE}?", "max_new_tokens": 4})
    assert b"<script>" not in r.content and b"\\u003cscript\\u003e" in r.content
    assert r.json()["sources"][0]["content"] == SCRIPT_TEXT  # escaped on the wire, intact as data


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        ({"question": ""}, 422, "question"),
        ({"question": "   "}, 422, "question"),
        ({"question": "x", "max_new_tokens": 100000}, 422, "max_new_tokens"),
        ({"question": "x", "max_new_tokens": 0}, 422, "max_new_tokens"),
        ({"nothing": 1}, 422, "question"),
        ({"question": "x" * 5000}, 422, "question"),
        # JSON's true is not the number 1 (Python's bool is an int), nor 1 true: each field
        # takes its own JSON type only
        ({"question": "x", "max_new_tokens": True}, 422, "max_new_tokens: Input should be"),
        ({"question": "x", "k": True}, 422, "k: Input should be"),
        ({"question": "x", "max_new_tokens": "8"}, 422, "max_new_tokens: Input should be"),
        ({"question": "x", "grounded": 1}, 422, "grounded: Input should be"),
    ],
)
def test_bad_requests_get_a_4xx_json_error(client, payload, status, needle):
    r = client.post("/api/ask", json=payload)
    assert r.status_code == status and needle in r.json()["error"]


def test_oversized_and_malformed_bodies(client):
    big = client.post(
        "/api/ask",
        content=b'{"question": "' + b"x" * (MAX_BODY_BYTES + 10) + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert big.status_code == 413 and "bytes" in big.json()["error"]
    broken = client.post(
        "/api/ask", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400 and "error" in broken.json()


def test_null_is_the_servers_default_for_every_optional_field(client):
    """A hostile user's review: ``"k": null`` and ``"mode": null`` were the defaults, while
    ``"max_new_tokens": null`` was refused; null now means "the server's default" in each."""
    r = client.post(
        "/api/ask",
        json={"question": f"What is {SCRIPT_TITLE}?", "max_new_tokens": None, "k": None,
              "mode": None, "grounded": None},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["mode"] == "closed"  # this model's default


def test_a_compressed_body_is_a_415_naming_its_encoding(client):
    """A hostile user's review: a gzip body was "not UTF-8 (byte 0x8b)", naming no cause."""
    import gzip

    r = client.post(
        "/api/ask",
        content=gzip.compress(b'{"question": "x"}'),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 415 and "Content-Encoding: gzip" in r.json()["error"], r.text


def test_stream_sends_text_then_what_ask_returns(client):
    """The last event is /api/ask's reply, the whole answer included: it lacked ``answer``, so
    a client had to join the pieces (and could not tell a lost piece)."""
    ask = {"question": f"Me fale sobre {SCRIPT_TITLE}", "max_new_tokens": 6}
    events = [json.loads(line) for line in client.post("/api/stream", json=ask).text.splitlines()]
    assert events[-1]["sources"][0]["title"] == SCRIPT_TITLE
    assert SCRIPT_TITLE in events[-1]["prompt"]
    assert all("text" in e for e in events[:-1])
    assert events[-1]["answer"] == "".join(e["text"] for e in events[:-1])
    assert events[-1] == client.post("/api/ask", json=ask).json()


@pytest.mark.e2e
@pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium: apt-get install chromium (.ci/run does)"
)
def test_page_in_headless_chromium_shows_answer_and_sources(app_parts, tmp_path):
    from playwright.sync_api import sync_playwright

    with (
        BackgroundServer(create_app(app_parts, default_max_new_tokens=8), free_port()) as url,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
        page = browser.new_page()
        page.goto(url)
        page.fill("#q", f"Can you describe the product '{SCRIPT_TITLE}'?")
        page.click("#ask")
        page.wait_for_selector("#sources li", timeout=60_000)
        page.wait_for_function("!document.getElementById('ask').disabled", timeout=60_000)
        first = page.locator("#sources li").first
        assert SCRIPT_TITLE in first.inner_text()
        assert first.locator(".desc").inner_text() == SCRIPT_TEXT  # shown as text, not markup
        assert page.evaluate("window.pwned") is None  # the description's script never ran
        assert page.locator("#answer").inner_text() != "" or page.locator("#sources li").count() > 0
        page.screenshot(path=str(tmp_path / "page.png"))
        browser.close()


# --- the client is not trusted (issue 13, class 5) --------------------------------------------


class SlowAnswerer:
    """Stands in for the model: a piece of text every 20 ms for up to 8 s, stopping when the
    request's ``cancel`` is set (recorded) or when the test releases it."""

    default_mode = "closed"

    def __init__(self) -> None:
        self.cancelled, self.release = threading.Event(), threading.Event()
        self.running = 0

    def __call__(self, question, *, k, mode, max_new_tokens, on_text=None, cancel=None):
        self.running += 1
        for _ in range(400):
            if cancel is not None and cancel.is_set():
                self.cancelled.set()
                break
            if self.release.is_set():
                break
            if on_text:
                on_text("x")
            time.sleep(0.02)
        return Answer(question, "x", [], "", "closed", [])  # the contract serve reads


def test_the_host_header_must_name_this_server(client):
    assert client.get("/").status_code == 200
    evil = client.get("/", headers={"Host": "rebind.attacker.example"})
    assert evil.status_code == 400  # DNS rebinding: a page elsewhere cannot reach this server


def _raw_request(port: int, head: bytes, chunks, read_timeout: float = 10.0) -> bytes:
    """Send ``head`` and a chunked body, then read the reply until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sock.sendall(head)
        for chunk in chunks:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")
        reply = b""
        while piece := sock.recv(65536):
            reply += piece
        return reply


def test_a_chunked_body_is_limited_by_the_bytes_that_arrive():
    """No Content-Length to trust: 3 x 16 KB of chunked body are refused by count. (Small
    enough for the server to read off the socket whole, so the 413 is not lost to a reset.)"""
    app = create_app(SlowAnswerer())
    port = free_port()
    head = (
        b"POST /api/ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    with BackgroundServer(app, port):
        reply = _raw_request(port, head, [b"x" * MAX_BODY_BYTES] * 3)
    assert reply.startswith(b"HTTP/1.1 413") and b"bytes" in reply


@pytest.mark.parametrize(
    "expect, sent",
    [(b"Expect: 100-continue\r\n", b""), (b"", b'{"question": "')],
    ids=["waits for continue", "sends then waits"],
)
def test_a_body_declared_too_large_is_refused_at_once(expect, sent):
    """A hostile user's trial: ``Expect: 100-continue`` with a Content-Length past the limit was
    sent ``100 Continue``, then waited on for 10 s and answered 408 "too slow"; the client sends
    nothing until told to, so the 413 goes at once, before any Continue. An outside trial: the
    same Content-Length without ``Expect``, a few bytes sent, then the client waits: held the
    whole 10 s too; it gets the 413 within the short grace given to bytes in flight."""
    app = create_app(SlowAnswerer())
    port = free_port()
    head = (
        b"POST /api/ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + expect
        + b"Content-Length: 99999999999999\r\n\r\n"
    )
    with BackgroundServer(app, port), socket.create_connection(("127.0.0.1", port)) as sock:
        started = time.monotonic()
        sock.sendall(head + sent)
        sock.settimeout(15.0)
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert time.monotonic() - started < 5.0


def test_the_queue_is_bounded_and_says_503():
    from fastapi.testclient import TestClient

    slow = SlowAnswerer()
    client = TestClient(create_app(slow, max_queue=1), base_url="http://127.0.0.1")
    results = []
    ask = {"question": "anything", "max_new_tokens": 4}
    threads = [
        threading.Thread(target=lambda: results.append(client.post("/api/ask", json=ask)))
        for _ in range(2)
    ]
    for t in threads:  # one generating, one waiting: both seats taken
        t.start()
    deadline = time.time() + 10
    while slow.running < 1 and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    third = client.post("/api/ask", json=ask)
    slow.release.set()
    for t in threads:
        t.join(timeout=20)
    assert third.status_code == 503 and "busy" in third.json()["error"]
    assert [r.status_code for r in results] == [200, 200]
    assert client.post("/api/ask", json=ask).status_code == 200  # seats come back


@pytest.mark.parametrize("route", ["/api/stream", "/api/ask"])
def test_an_abandoned_request_stops_generating(route):
    slow = SlowAnswerer()
    port = free_port()
    payload = json.dumps({"question": "anything", "max_new_tokens": 8}).encode()
    head = (
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (route.encode(), len(payload), payload)
    )
    with BackgroundServer(create_app(slow), port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head)
            if route == "/api/stream":
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # streaming has begun
            else:
                deadline = time.time() + 10
                while not slow.running and time.time() < deadline:
                    time.sleep(0.02)  # generation has begun
        # the client is gone early in an 8 s answer: generation must stop within seconds
        assert slow.cancelled.wait(timeout=5), "generation went on for a client that left"


def test_a_stop_starts_no_waiting_answer_and_a_second_ends_the_one_generating():
    """A hostile review: Ctrl-C twice (uvicorn's force quit) with 4 requests queued told every
    client 500 at once, then took 25 s to exit (60 s with 9), generating every queued answer
    for clients already gone; one Ctrl-C or SIGTERM waited for the whole queue (86 s with 9).
    A stop lets the answer being generated finish and starts none of those waiting; a second
    stop ends that one too."""
    import http.client

    slow = SlowAnswerer()
    port = free_port()
    background = BackgroundServer(create_app(slow, max_queue=3), port)
    replies: list = []

    def ask() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/api/ask", json.dumps({"question": "q"}),
                         {"Content-Type": "application/json"})  # fmt: skip
            replies.append(conn.getresponse().status)
        except OSError as err:  # a forced stop may close the connection first
            replies.append(type(err).__name__)

    with background:
        threads = [threading.Thread(target=ask) for _ in range(3)]
        for thread in threads:
            thread.start()
            time.sleep(0.1)
        deadline = time.time() + 10
        while slow.running < 1 and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # the other two wait for the model
        background.server.handle_exit(signal.SIGINT, None)  # Ctrl-C
        time.sleep(0.5)
        assert not slow.cancelled.is_set()  # the answer being generated goes on
        background.server.handle_exit(signal.SIGINT, None)  # Ctrl-C again
        assert slow.cancelled.wait(timeout=3), "the answer being generated went on"
        for thread in threads:
            thread.join(timeout=10)
    assert slow.running == 1, f"{slow.running} answers generated after the stop"
    assert len(replies) == 3 and 200 not in replies, replies


@pytest.mark.e2e
@pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium: apt-get install chromium (.ci/run does)"
)
def test_the_page_and_the_api_say_why_the_gate_abstained(app_parts):
    """With ``--abstain-below`` too high for any lead, every answer is the gate's abstention: the
    API gives the rule in words (``doubt``) and the page shows it under the answer, as text. (A
    question naming the whole title would be sure at any ratio: answering/named_title.py.)"""
    import dataclasses

    from fastapi.testclient import TestClient
    from playwright.sync_api import sync_playwright

    gated = dataclasses.replace(app_parts, abstain_below=1e9)
    app = create_app(gated, default_max_new_tokens=4)
    body = (
        TestClient(app, base_url="http://127.0.0.1")
        .post("/api/ask", json={"question": ASKED_BY_PART, "mode": "grounded"})
        .json()
    )
    assert body["doubtful"] and "times the second's" in body["doubt"]
    with BackgroundServer(app, free_port()) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
        page = browser.new_page()
        page.goto(url)
        page.fill("#q", ASKED_BY_PART)
        page.select_option("#mode", "grounded")
        page.click("#ask")
        page.wait_for_selector("#sources li", timeout=60_000)
        how = page.locator("#how").inner_text()
        assert how.startswith("Abstained without generating: retrieval was not sure: the first")
        browser.close()


def test_serve_answers_in_the_mode_its_command_line_chose(prepared, tuned_run):
    """``serve --grounded`` (or ``--closed-book``) is the mode of a request that names none and
    of the page's first choice; before, both took the model's trained default, so an untuned
    model served with ``--grounded --abstain-below 2.0`` answered closed-book, the gate off."""
    from fastapi.testclient import TestClient

    from amazon_sft.answering.ask import default_mode
    from amazon_sft.answering.commands import _session
    from amazon_sft.cli import build_parser
    from amazon_sft.evaluation.loading import run_config_for

    trained = default_mode(run_config_for(str(tuned_run), []).data)
    chosen, flag = (
        ("closed", "--closed-book") if trained == "grounded" else ("grounded", "--grounded")
    )
    args = build_parser().parse_args(
        ["serve", "--model", str(tuned_run), "--index", str(prepared), flag]
    )
    served = TestClient(
        create_app(_session(args), default_max_new_tokens=4), base_url="http://127.0.0.1"
    )
    assert f'$("mode").value = "{chosen}";' in served.get("/").text
    r = served.post("/api/ask", json={"question": "Tell me about a speaker", "max_new_tokens": 4})
    assert r.status_code == 200 and r.json()["mode"] == chosen
    other = served.post(
        "/api/ask", json={"question": "a speaker", "max_new_tokens": 4, "mode": trained}
    )
    assert other.json()["mode"] == trained  # a request that names its mode still gets it


# --- the port is bound before the model loads -------------------------------------------------


def _no_model(*args, **kwargs):
    raise AssertionError("serve loaded the model before binding its port")


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_a_port_out_of_range_is_refused_before_the_model_loads(port, capsys, monkeypatch):
    """``serve --port 70000`` loaded the model, said "serving on ...:70000/", then died in
    uvicorn with an ``OverflowError`` traceback, exit 1."""
    import amazon_sft.evaluation.loading as loading

    monkeypatch.setattr(loading, "load_for_eval", _no_model)
    code, err = _run_cli(capsys, "serve", "--model", "config:tiny", f"--port={port}")
    _assert_one_line(code, err, "serve", "--port must be between 0 and 65535", f"got {port}")


def test_a_port_in_use_is_refused_before_the_model_loads(prepared, capsys, monkeypatch):
    """A taken port was found by uvicorn after the model's load and the "serving on" line:
    ``ERROR: [Errno 98] address already in use``, exit 3."""
    import amazon_sft.evaluation.loading as loading

    monkeypatch.setattr(loading, "load_for_eval", _no_model)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        code, err = _run_cli(
            capsys, "serve", "--model", "config:tiny", "--index", str(prepared), "--port", port
        )
    _assert_one_line(code, err, "serve", f"--port {port} is already in use", "another --port")


def test_port_0_says_the_port_it_serves_on(prepared, tiny_tok, tiny_cfg, capsys, monkeypatch):
    """``--port 0`` said "serving on http://127.0.0.1:0/" while uvicorn bound a port of its
    own choosing: the socket is bound first, and its port is the one said."""
    import amazon_sft.evaluation.loading as loading
    from amazon_sft.answering import serve_socket as serving
    from amazon_sft.cli import main

    served = []
    monkeypatch.setattr(loading, "load_for_eval", lambda *a: (None, tiny_tok, tiny_cfg, None))
    monkeypatch.setattr(serving, "serve", lambda app, sock: served.append(sock.getsockname()))
    args = ["serve", "--model", "config:tiny", "--index", str(prepared), "--port", "0"]
    assert main(args) == 0
    host, port = served[0]
    assert host == "127.0.0.1" and port != 0
    assert f"serving on http://127.0.0.1:{port}/" in capsys.readouterr().out


def test_a_wrong_method_or_path_says_what_to_send(client):
    """An outside trial: ``GET /api/ask`` (and PUT, DELETE) was answered ``{"error": "Method
    Not Allowed"}``, and an unknown path "Not Found": neither said what to send, as every
    other refusal does."""
    for method in ("GET", "PUT", "DELETE"):
        got = client.request(method, "/api/ask")
        said = got.json()["error"]
        assert got.status_code == 405 and "POST" in got.headers["allow"], (method, said)
        assert f"{method} /api/ask" in said and 'send {"question"' in said, said
    got = client.get("/api/nope")
    assert got.status_code == 404 and "POST /api/ask" in got.json()["error"], got.text
