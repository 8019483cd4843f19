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
from collections import Counter
from contextlib import suppress
from pathlib import Path

from amazon_sft import __version__
from amazon_sft.atomic import write_text_whole
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


def check_synth_target(out: Path, overwrite: bool) -> str | None:
    """One line when ``out`` is there and may not be replaced: without ``--overwrite``, or
    with it for a file synth's record does not prove (a link is never synth's: it writes
    regular files). Otherwise the digest of the file it may replace, or None (none there)."""
    if not (out.exists() or out.is_symlink()):
        return None
    if not overwrite:
        raise UserError(
            f"--out {out} already exists: pass --overwrite to replace it, or another --out"
        )
    why, digest = _unproved(out)
    if why:
        raise UserError(
            f"--out {out} is not a file synth wrote ({why}): --overwrite replaces only synth's "
            "own output; move the file aside or choose another --out"
        )
    return digest


def _unproved(out: Path) -> tuple[str | None, str | None]:
    """Why synth's record does not prove ``out`` its own (None when it does), and the digest
    of ``out`` when it was read."""
    if out.is_symlink():
        return "a link", None
    record_file = record_path(out)
    if not record_file.exists() and not record_file.is_symlink():
        return f"no record {record_file.name} beside it", None
    if record_file.is_symlink() or not record_file.is_file():  # a pipe hung, /dev/zero filled
        return f"its record {record_file.name} is not a regular file", None
    try:
        with open(record_file, "rb") as fh:
            text = fh.read(MAX_RECORD_BYTES + 1)
        record = json.loads(text) if len(text) <= MAX_RECORD_BYTES else None
    except (OSError, ValueError):
        return f"its record {record_file.name} is unreadable", None
    if not isinstance(record, dict) or record.get("file") != out.name:
        return f"its record {record_path(out).name} names another file", None
    digest = sha256_file(out)
    if digest not in _digests(record):
        return "changed since synth wrote it", digest
    return None, digest


def _digests(record: dict) -> list:
    """The digests a record proves: one, or two while synth swaps in a new file."""
    digests = record.get("sha256")
    return digests if isinstance(digests, list) else [digests]


def record_synth_output(out: Path, rows: int, seed: int, version: int, digests: list[str]) -> None:
    """Write the record that proves ``out`` synth's. Written with both digests before a new
    file takes the old one's place, then with the new one's alone: a kill or a stop anywhere
    leaves a record that proves whichever file is there (written after the swap, a stop while
    it hashed the new file left it refused by every later ``--overwrite``; dropped or set aside
    while the file was written, a full disk or a kill did: reviews)."""
    record = {
        "file": out.name,
        "sha256": digests if len(digests) > 1 else digests[0],
        "rows": rows,
        "seed": seed,
        "generator_version": version,
        "amazon_sft": __version__,
    }
    try:
        write_text_whole(record_path(out), json.dumps(record, indent=1) + "\n")
    except OSError as err:
        raise UserError(
            f"cannot write synth's record {record_path(out)} ({err.strerror}): remove what is "
            "at that path, or choose another --out"
        ) from None


def write_synth_output(out: Path, old: str | None, rows: int, seed: int, version: int) -> Counter:
    """Write the generated catalogue to ``out``, in place of the file of digest ``old`` (None:
    none there), its record proving both files while the new one takes the old one's place,
    then the new one alone; returns the quirk counts."""
    from amazon_sft.data.synthetic import write_catalogue

    new: list[str] = []

    def record_both(staged: Path) -> None:
        new.append(sha256_file(staged))
        record_synth_output(out, rows, seed, version, [*new, *([old] if old else [])])

    made = write_catalogue(out, rows, seed, version, before_swap=record_both)
    with suppress(UserError):  # not narrowed, the record proves the new file all the same
        record_synth_output(out, rows, seed, version, new)
    return made
