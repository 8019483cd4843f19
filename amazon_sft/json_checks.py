"""What Python's JSON readers (and orjson) pass over in silence: a key given twice (both keep
the last) and an integer longer than Python converts. One place for serve's request bodies,
``eval --questions``' lines and prepare's catalogue lines."""

from __future__ import annotations

import json


def first_key_twice(text: bytes | str) -> str | None:
    """The first key a JSON object in ``text`` names twice, at any depth (None: each key once,
    or ``text`` is no JSON: its reader says so). Python's JSON, and orjson, keep the last.

    >>> first_key_twice('{"a": 1, "b": {"c": 2, "c": 3}}'), first_key_twice('{"a": 1}')
    ('c', None)
    >>> first_key_twice('{"a": 1, "a": 2, "b": 1, "b": 2}')
    'a'
    """
    twice: list[str] = []

    def pairs(items: list) -> dict:
        keys = [key for key, _ in items]
        twice.extend(key for i, key in enumerate(keys) if key in keys[:i])
        return dict(items)

    try:
        json.loads(text, object_pairs_hook=pairs, parse_int=len)  # ints: no digit limit here
    except (ValueError, RecursionError):
        return None
    return twice[0] if twice else None


def longest_integer(text: str) -> int:
    """The most digits of any integer in the JSON ``text`` (0: none, or not JSON)."""
    longest = 0

    def count(digits: str) -> int:
        nonlocal longest
        longest = max(longest, len(digits.lstrip("-")))
        return 0

    try:
        json.loads(text, parse_int=count)
    except (ValueError, RecursionError):
        return 0
    return longest
