"""Text from the catalogue or a model, made safe to print on a terminal.

Product descriptions and generated answers are data: an ``ESC`` in them would let a catalogue
row (or a model that learned one) recolour the terminal, move the cursor, rewrite the window
title or, on some terminals, answer back with keystrokes. Every C0 and C1 control character
except newline and tab is dropped before printing, ``DEL`` too, and the bidirectional overrides,
embeddings and isolates (U+202A-U+202E, U+2066-U+2069: a title holding one is shown reversed,
"Invoice \u202etxt.exe" as "Invoice exe.txt"); the text is otherwise unchanged.
Stripping the characters, not whole escape sequences, works on streamed pieces too: a
sequence split across two pieces loses its ``ESC`` and is inert text.
"""

from __future__ import annotations

import json
import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def one_line(text: str) -> str:
    """``printable`` on one line: a field printed inside a line (a title, a uid, the gate's
    reason) whose newline would start a line of its own, a forged source (a hostile review).

    >>> one_line("Mug\\n  cited  [B00] Official Charger\\t(score 84)")
    'Mug cited [B00] Official Charger (score 84)'
    """
    return " ".join(printable(text).split())


def printable(text: str) -> str:
    """``text`` without control characters, newlines and tabs kept.

    >>> printable("red \\x1b[31mALERT\\x07\\x9b2J\\r done\\n\\tnext \\u202etxt.exe")
    'red [31mALERT2J done\\n\\tnext txt.exe'
    """
    return _CONTROL.sub("", text)


_ESCAPED = re.compile(r"[\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
"""Escaped in ``json_line``; a lone surrogate too (argv's bytes that are not UTF-8: printed raw,
the line was not UTF-8 and a reader's decode failed)."""


def json_line(payload) -> str:
    """One JSON line for a terminal or a pipe: the data unchanged, every control character
    and bidirectional override escaped (``json.dumps`` escapes C0 ones itself, not ``DEL``, the
    C1 range or U+202A-U+202E, U+2066-U+2069: a review found a title's raw U+202E).

    >>> json_line({"t": "a\\x1bb\\x9b"})
    '{"t": "a\\\\u001bb\\\\u009b"}'
    >>> json_line({"title": "Invoice \\u202etxt.exe"})  # shown reversed on a terminal if raw
    '{"title": "Invoice \\\\u202etxt.exe"}'
    >>> json_line({"question": "whisk" + chr(0xDCFF)})  # a byte 0xff of argv
    '{"question": "whisk\\\\udcff"}'
    """
    text = json.dumps(payload, ensure_ascii=False)
    return _ESCAPED.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
