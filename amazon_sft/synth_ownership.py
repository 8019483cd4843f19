"""What ``amazon-sft synth`` may replace: only a file it wrote, unedited since.

synth writes one file, not a folder, so its proof lies beside the file: a hidden record
``.NAME.amazon_sft_synth.json`` holding the file's SHA-256 and how it was generated. With
``--overwrite``, a file whose record is missing, names another file or holds another digest
(a user's real ``trn.json.gz``, a generated file edited since) is refused, never replaced (a
review: ``--overwrite`` replaced any file, where every other command replaces only what it can
prove it wrote).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from amazon_sft import __version__
from amazon_sft.atomic import staging_name, write_text_whole
from amazon_sft.data.shards import sha256_file
from amazon_sft.errors import UserError


def record_path(out: Path) -> Path:
    """The record beside a generated file.

    >>> record_path(Path("data/trn.json.gz"))
    PosixPath('data/.trn.json.gz.amazon_sft_synth.json')
    """
    return out.parent / f".{out.name}.amazon_sft_synth.json"


MAX_RECORD_BYTES = 1 << 16
"""A record is a few hundred bytes; more is not one synth wrote (and is never read whole)."""


def check_synth_target(out: Path, overwrite: bool) -> None:
    """One line when ``out`` is there and may not be replaced: without ``--overwrite``, or
    with it for a file synth's record does not prove (a link is never synth's: it writes
    regular files)."""
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise UserError(
            f"--out {out} already exists: pass --overwrite to replace it, or another --out"
        )
    why = _unproved(out)
    if why:
        raise UserError(
            f"--out {out} is not a file synth wrote ({why}): --overwrite replaces only synth's "
            "own output; move the file aside or choose another --out"
        )


def _unproved(out: Path) -> str | None:
    """Why synth's record does not prove ``out`` its own, or None when it does."""
    if out.is_symlink():
        return "a link"
    record_file = record_path(out)
    if not record_file.exists() and not record_file.is_symlink():
        return f"no record {record_file.name} beside it"
    if record_file.is_symlink() or not record_file.is_file():  # a pipe hung, /dev/zero filled
        return f"its record {record_file.name} is not a regular file"
    try:
        with open(record_file, "rb") as fh:
            text = fh.read(MAX_RECORD_BYTES + 1)
        record = json.loads(text) if len(text) <= MAX_RECORD_BYTES else None
    except (OSError, ValueError):
        return f"its record {record_file.name} is unreadable"
    if not isinstance(record, dict) or record.get("file") != out.name:
        return f"its record {record_path(out).name} names another file"
    if record.get("sha256") != sha256_file(out):
        return "changed since synth wrote it"
    return None


@contextmanager
def record_set_aside(out: Path) -> Iterator[None]:
    """Set the record of the file about to be replaced aside while it is: a stop between the
    replacement and the new record leaves a file synth will not replace, never a record of
    the file before it (which would call the new file edited). When the replacement fails (a
    full disk, a Ctrl-C while writing), the old file is still there and its record goes back
    (dropped for good, it made every later ``--overwrite`` refuse synth's own file: a review).
    A rename both ways: no space is needed on a full disk."""
    record = record_path(out)
    aside = staging_name(record, kind="old")
    if not (record.is_symlink() or record.is_file()):
        yield
        return
    os.replace(record, aside)
    try:
        yield
    except BaseException:
        if not _replaced(out, aside):
            os.replace(aside, record)
        raise
    finally:
        aside.unlink(missing_ok=True)


def _replaced(out: Path, aside: Path) -> bool:
    """Whether ``out`` is no longer the file the record set aside proves."""
    try:
        return json.loads(aside.read_text()).get("sha256") != sha256_file(out)
    except (OSError, ValueError, AttributeError):
        return True


def record_synth_output(out: Path, rows: int, seed: int, version: int) -> None:
    """Write the record that proves ``out`` synth's, once the file is in place."""
    record = {
        "file": out.name,
        "sha256": sha256_file(out),
        "rows": rows,
        "seed": seed,
        "generator_version": version,
        "amazon_sft": __version__,
    }
    write_text_whole(record_path(out), json.dumps(record, indent=1) + "\n")
