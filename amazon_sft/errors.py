"""The one exception type that reaches the user as a one-line message instead of a traceback,
and the helper that turns the known ways a file can be bad into one."""

from __future__ import annotations

import argparse
import contextlib
import os
import struct
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class UserError(Exception):
    """A problem the user can fix: the message names the field or file, and the fix."""


class RequestError(UserError):
    """The request's own fault (an empty question, a prompt the model's context cannot take):
    ``serve`` answers it 422 with its words; any other ``UserError`` met while answering (a
    damaged file) is the server's, 500, its words only in the server log."""


REFUSAL_FILE_ENV = "AMAZON_SFT_REFUSAL_FILE"
"""Set by launch/train_local.sh: a refusal is appended there too, so the script can end on it
(after it, torch's failure report or accelerate's warnings had buried the one line)."""


def tell_the_launcher(said: str) -> None:
    """Append a refusal's line to ``REFUSAL_FILE_ENV``'s file, when a launcher set one."""
    if path := os.environ.get(REFUSAL_FILE_ENV):
        with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as file:
            file.write(said + "\n")  # one short write: ranks' lines do not interleave


class OneLineParser(argparse.ArgumentParser):
    """argparse whose own refusals (a value of the wrong type, a missing argument, an unknown
    command) are one line, like every other refusal, pointing at ``--help`` for the usage block
    argparse would print (a page for ``ask``)."""

    def error(self, message: str):
        said = f"{self.prog}: error: {message} (see {self.prog} --help)"
        print(said, file=sys.stderr)
        tell_the_launcher(said)  # an unknown flag through train_local.sh: its last line too
        sys.exit(2)


def _safetensors_error() -> tuple[type[BaseException], ...]:
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors is a dependency
        return ()
    return (SafetensorError,)


READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # missing, unreadable, a folder where a file belongs, truncated gzip
    EOFError,
    zlib.error,  # corrupt deflate data is not an OSError
    ValueError,  # JSON (json, orjson), numpy headers, UnicodeDecodeError
    KeyError,  # a record or manifest without a field it must have
    IndexError,
    struct.error,  # a GGUF file cut inside its header (its reader unpacks past the end)
    *_safetensors_error(),  # a cut or altered .safetensors file
)
"""What reading a truncated, corrupted, empty or wrong-kind file raises. Caught only around the
read of one named file, so an unexpected exception elsewhere still shows its traceback."""


def permission_denied(err: PermissionError) -> str:
    """The one line for a file or folder this user may not read or write, wherever it was met.

    >>> permission_denied(PermissionError(13, "Permission denied", "/data/locked/manifest.json"))
    '/data/locked/manifest.json: Permission denied: check its permissions and those of the folders above it'
    """
    where = err.filename or "a file or folder"
    return f"{where}: {err.strerror or 'permission denied'}: check its permissions and those of the folders above it"


KNOWN_FAILURES = (UserError, PermissionError, KeyboardInterrupt)
"""What ends an ``amazon-sft`` command with one line, not a traceback (``known_failure``)."""


def known_failure(command: str, err: BaseException) -> tuple[str, int]:
    """The line ``amazon-sft <command>`` prints for one of ``KNOWN_FAILURES``, and its exit
    code: one place for ``cli.main`` and the scripts accelerate launches (``train.py``,
    ``eval/evaluate.py``), whose own copies had drifted (eval's lacked Ctrl-C: a traceback).

    >>> known_failure("eval", UserError("--data x is not a prepared folder"))
    ('amazon-sft eval: error: --data x is not a prepared folder', 2)
    >>> known_failure("train", KeyboardInterrupt())
    ('amazon-sft train: interrupted (resume=auto goes on from the last checkpoint)', 130)
    """
    if isinstance(err, KeyboardInterrupt):
        later = " (resume=auto goes on from the last checkpoint)" if command == "train" else ""
        return f"amazon-sft {command}: interrupted{later}", 130
    said = permission_denied(err) if isinstance(err, PermissionError) else str(err)
    return f"amazon-sft {command}: error: {said}", 2


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextmanager
def reading(path: str | Path, what: str, fix: str) -> Iterator[None]:
    """Known read failures inside the block become ``UserError("<what> <path> ...: <fix>")``.

    >>> with reading("x.json", "catalogue", "re-run prepare"):
    ...     int("not a number")
    Traceback (most recent call last):
    amazon_sft.errors.UserError: catalogue x.json is unreadable or corrupt (invalid literal for int() with base 10: 'not a number'): re-run prepare
    """
    try:
        yield
    except UserError:
        raise
    except READ_ERRORS as err:
        raise UserError(
            f"{what} {path} is unreadable or corrupt ({first_line(err)}): {fix}"
        ) from None
