"""The web page and JSON API: good, bad and oversized requests, escaping, and a real browser."""

import json
import shutil

import orjson
import pytest

from amazon_sft.answering.ask import Answerer
from amazon_sft.answering.index import CatalogueIndex, build_index
from amazon_sft.answering.serve import BROWSER_FLAGS, MAX_BODY_BYTES, BackgroundServer, create_app
from amazon_sft.evaluation.loading import load_for_eval
from amazon_sft.prompts import build_prompt_format

from .conftest import free_port

SCRIPT_TITLE = "Zentra Injection Test Speaker"
SCRIPT_TEXT = "Loud <script>window.pwned = 1</script> speaker & <b>bold</b> claims."
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


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
    return Answerer(model, tok, build_prompt_format(tok, cfg.data), CatalogueIndex(data))


@pytest.fixture(scope="module")
def client(app_parts):
    from fastapi.testclient import TestClient

    return TestClient(create_app(app_parts, default_max_new_tokens=8))


def test_ask_returns_answer_and_sources(client):
    r = client.post(
        "/api/ask", json={"question": f"Tell me about {SCRIPT_TITLE}", "max_new_tokens": 6}
    )
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body["answer"], str)
    top = body["sources"][0]
    assert top["uid"] == "B0SCRIPT01" and top["title"] == SCRIPT_TITLE and top["score"] > 0


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
    assert broken.status_code == 422 and "error" in broken.json()


def test_stream_sends_text_then_sources(client):
    r = client.post(
        "/api/stream", json={"question": f"Me fale sobre {SCRIPT_TITLE}", "max_new_tokens": 6}
    )
    events = [json.loads(line) for line in r.text.splitlines()]
    assert events[-1]["sources"][0]["title"] == SCRIPT_TITLE
    assert all("text" in e for e in events[:-1])


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
