"""The context length a GGUF file declares, read from its header without reading the rest.

Written by hand because the one library that reads GGUF, ``gguf``'s ``GGUFReader``, parses every
key and every tensor's description before it answers: 4.6 s on SmolLM2-135M's 98 MB file on 2
cores (its tokenizer's 49,152-string arrays), paid by every ``prepare`` that checks
``data.max_seq_len`` against the model. The header is a list of typed key/value pairs
(https://github.com/ggml-org/ggml/blob/master/docs/gguf.md); llama.cpp's converter writes
``general.architecture`` first and ``<arch>.context_length`` among the next dozen keys, so this
walks the keys until it has both (skipping any array whole) and stops: a millisecond.

A file that is not GGUF, is cut short or claims absurd lengths gives None: the model's load then
reports it, as it always did.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

MAGIC = b"GGUF"
MAX_KEYS = 10_000
"""Keys read at most (SmolLM2's file has 38): a header claiming more is not one to trust."""
MAX_STRING_BYTES = 1 << 20
"""A key or string value longer than this is damage, not metadata."""
# value type -> struct format of one scalar (GGUF v2/v3 little-endian)
SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
STRING, ARRAY = 8, 9


class _Damaged(Exception):
    """The header does not parse as GGUF."""


def _read(f: BinaryIO, fmt: str):
    size = struct.calcsize(fmt)
    raw = f.read(size)
    if len(raw) != size:
        raise _Damaged
    return struct.unpack("<" + fmt, raw)[0]


def _string(f: BinaryIO) -> bytes:
    length = _read(f, "Q")
    if length > MAX_STRING_BYTES:
        raise _Damaged
    raw = f.read(length)
    if len(raw) != length:
        raise _Damaged
    return raw


def _value(f: BinaryIO, kind: int, depth: int = 0):
    """The value of type ``kind``; an array is skipped (None): no key read here is one."""
    if kind in SCALARS:
        return _read(f, SCALARS[kind])
    if kind == STRING:
        return _string(f)
    if kind == ARRAY and depth == 0:
        item_kind, count = _read(f, "I"), _read(f, "Q")
        if item_kind in SCALARS:  # fixed size: seek past it
            f.seek(struct.calcsize(SCALARS[item_kind]) * count, 1)
        elif item_kind == STRING:
            for _ in range(count):
                f.seek(_read(f, "Q"), 1)
        else:
            raise _Damaged  # arrays of arrays: not in any model file
        return None
    raise _Damaged


def context_length(path: str | Path) -> int | None:
    """``<general.architecture>.context_length`` of the GGUF file at ``path``, or None when the
    file does not say or is not a GGUF file it can read."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != MAGIC or _read(f, "I") not in (2, 3):
                return None
            _read(f, "Q")  # tensors
            keys = _read(f, "Q")
            arch, contexts = None, {}
            for _ in range(min(keys, MAX_KEYS)):
                key = _string(f).decode("utf-8", "replace")
                value = _value(f, _read(f, "I"))
                if key == "general.architecture" and isinstance(value, bytes):
                    arch = value.decode("utf-8", "replace")
                elif key.endswith(".context_length") and isinstance(value, int):
                    contexts[key] = value
                if arch is not None and f"{arch}.context_length" in contexts:
                    found = contexts[f"{arch}.context_length"]
                    return found if found > 0 else None
    except (OSError, _Damaged, struct.error, OverflowError, ValueError):
        return None
    return None
