"""chat's questions, a line of stdin each: a terminal's through ``input`` (its line editing), a
pipe's or a file's read at most ``MAX_LINE_CHARS`` a line.

``input`` reads a whole line whatever its length: ``chat < /dev/zero`` filled memory (a
MemoryError traceback under a 3 GB cap), as ``eval --questions`` did on the same file (a
hostile user's trial). A closed stdin (``chat <&-``) was ``RuntimeError: input(): lost
sys.stdin``. Both are one line now.
"""

from __future__ import annotations

import sys

from amazon_sft.answering.question_text import MAX_QUESTION_CHARS
from amazon_sft.errors import UserError

MAX_LINE_CHARS = 64 * MAX_QUESTION_CHARS
"""A line of piped stdin read at most this far: a question of ``MAX_QUESTION_CHARS`` fits many
times over (a longer one under this is refused as ask refuses it, and the chat goes on)."""


def read_question(prompt: str = "> ") -> str | None:
    """The next line of stdin (None at its end), after ``prompt``; a line longer than
    ``MAX_LINE_CHARS`` ends the chat with one line (the rest of it may never end)."""
    stdin = sys.stdin
    if stdin is None or stdin.closed:
        raise UserError(
            "chat reads questions from stdin, which is closed: run it in a terminal, or pipe "
            "questions into it (one a line)"
        )
    if stdin.isatty():
        try:
            return input(prompt)
        except EOFError:
            return None
    print(prompt, end="", flush=True)
    line = stdin.readline(MAX_LINE_CHARS + 1)
    if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):
        raise UserError(
            f"a line of stdin is over {MAX_LINE_CHARS:,} characters (a question is at most "
            f"{MAX_QUESTION_CHARS}): give one question a line"
        )
    return line or None
