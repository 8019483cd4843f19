"""What a client of ``amazon-sft serve``'s API is told when its request body cannot be taken:
where its JSON breaks, what bytes are not UTF-8, and in every case what to send instead."""

from __future__ import annotations

import json
import sys

from amazon_sft.json_checks import first_key_twice, longest_integer

MAX_NEW_TOKENS_CAP = 512
"""The most tokens a request may ask for (``max_new_tokens``), and ``serve --max-new-tokens``."""
MAX_K = 10
"""The most records a request may ask for (``k``), and ``serve --k``'s cap."""

HOW_TO_ASK = (
    'send {"question": "..."} as Content-Type: application/json (optional: "mode": "grounded" '
    f'or "closed", "max_new_tokens": 1 to {MAX_NEW_TOKENS_CAP}, "k": records, 1 to {MAX_K})'
)


def wrong_route(status: int, method: str, path: str) -> str | None:
    """What a 404 or 405 says: what this server serves and what to send (it said only "Method
    Not Allowed" or "Not Found": an outside trial). None for another status.

    >>> wrong_route(405, "GET", "/api/ask")[:54]
    '/api/ask takes POST, not GET /api/ask: send {"question'
    >>> wrong_route(405, "POST", "/")[:48]
    'POST / is not served: GET / is the page; to ask,'
    """
    served = "GET / (the page), POST /api/ask or POST /api/stream"
    if status == 405 and path == "/":
        return (
            f"{method} / is not served: GET / is the page; to ask, POST /api/ask and {HOW_TO_ASK}"
        )
    if status == 405:
        return f"{path} takes POST, not {method} {path}: {HOW_TO_ASK}"
    if status == 404:
        return f"no {path} here: this server answers {served}"
    return None


def body_error(first: dict, body: object) -> str | None:
    """What a client whose body is not a JSON object is told: where its JSON breaks (FastAPI
    gives a character offset), and what to send. None: the body is an object; its fields'
    errors say what is wrong."""
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid" and isinstance(body, str) and len(loc) == 2:
        pos = loc[1]
        line, column = body.count("\n", 0, pos) + 1, pos - body.rfind("\n", 0, pos)
        reason = first.get("ctx", {}).get("error", "JSON decode error")
        return (
            f"request body is not valid JSON (line {line} column {column}: {reason}): {HOW_TO_ASK}"
        )
    # none, a list or a string, or not sent as JSON; an object whose fields disagree (the
    # request's own check, a value_error at the body) is told its own error
    if loc == ("body",) and first.get("type") != "value_error":
        return f"request body must be a JSON object: {HOW_TO_ASK}"
    return None


def wrong_content_type(content_type: str) -> str | None:
    """What a client that sent its body as another media type than JSON is told (status 415);
    None for JSON (``application/json``, ``application/*+json``). Without this a JSON object
    sent as text was told "must be a JSON object" (a new user's trial).

    >>> wrong_content_type("application/json; charset=utf-8") is None
    True
    >>> wrong_content_type("text/plain")[:55]
    'request body was sent as Content-Type: text/plain, not '
    >>> wrong_content_type("")[:56]
    'request body was sent without a Content-Type, not as app'
    >>> wrong_content_type(";;;")[:61]  # was "without a Content-Type" (a hostile user's trial)
    "request body was sent as Content-Type: ';;;', no media type, "
    """
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return None
    if not media and content_type.strip():
        shown = repr(content_type.strip()[:80].encode("ascii", "replace").decode())
        return (
            f"request body was sent as Content-Type: {shown}, no media type, not "
            f"application/json: {HOW_TO_ASK}"
        )
    if not media:
        return (
            f"request body was sent without a Content-Type, not as application/json: {HOW_TO_ASK}"
        )
    shown = media[:80].encode("ascii", "replace").decode()  # a header is the client's to fill
    if media == "application/x-www-form-urlencoded":
        shown += " (curl -d's default)"
    return f"request body was sent as Content-Type: {shown}, not application/json: {HOW_TO_ASK}"


def encoded_body(content_encoding: bytes) -> str | None:
    """What a client that sent its body compressed is told (status 415): the server reads plain
    JSON only, and a gzip body was "not UTF-8 (byte 0x8b)", naming no cause. None: no
    ``Content-Encoding``, or ``identity``.

    >>> encoded_body(b"gzip")[:60]
    'request body was sent with Content-Encoding: gzip; send it u'
    >>> encoded_body(b"identity") is None and encoded_body(b"") is None
    True
    """
    coding = content_encoding.strip().lower()
    if coding in (b"", b"identity"):
        return None
    shown = coding[:40].decode("ascii", "replace")  # a header is the client's to fill
    return (
        f"request body was sent with Content-Encoding: {shown}; send it uncompressed: {HOW_TO_ASK}"
    )


EMPTY_BODY = f"request body is empty: {HOW_TO_ASK}"


PARSE_FAILED = "There was an error parsing the body"
"""FastAPI's detail for a body its JSON decoder could not take as text (not UTF-8)."""


def unreadable_body(body: bytes) -> str:
    """What a client whose body FastAPI could not parse is told, instead of its bare words.

    >>> unreadable_body(b'{"question": "caf\\xe9"}')[:46]
    'request body is not UTF-8 (byte 0xe9 at 17): s'
    >>> unreadable_body(b'{"k": 1' + b"0" * 4300 + b"}")[:46]
    'request body holds an integer of 4301 digits ('
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        return (
            f"request body is not UTF-8 (byte 0x{body[err.start]:02x} at {err.start}): {HOW_TO_ASK}"
        )
    limit = sys.get_int_max_str_digits()  # 0: no limit
    if limit and (digits := longest_integer(text)) > limit:
        # valid JSON that Python will not read (CVE-2020-10735's limit): say so, not "not JSON"
        return f"request body holds an integer of {digits} digits (at most {limit}): {HOW_TO_ASK}"
    return f"request body could not be read as JSON: {HOW_TO_ASK}"


def key_sent_twice(body: bytes) -> str | None:
    """What a client whose JSON object names a key twice is told (None: each key once).

    Python's JSON keeps the last of the two, while a proxy, a log or a firewall in front of
    the server may read the first: the answer would be to a question nobody in between saw.

    >>> key_sent_twice(b'{"question": "cats", "question": "dogs"}')[:41]
    'request body names "question" twice: send'
    >>> key_sent_twice(b'{"question": "cats", "k": 2}') is None
    True
    """
    twice = first_key_twice(body)
    if twice is None:
        return None
    return f"request body names {json.dumps(twice[:40])} twice: send each key once: {HOW_TO_ASK}"
