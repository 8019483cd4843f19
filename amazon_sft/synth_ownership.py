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
        return "changed since synth wrote it, or a synth stopped before recording it"
    return None


def record_synth_output(out: Path, rows: int, seed: int, version: int) -> None:
    """Write the record that proves ``out`` synth's, once the file is in place. The old file's
    record stays until then: a full disk or a kill while the new file is written leaves the
    old file with its record (set aside or dropped first, it was refused by every later
    ``--overwrite``: reviews); only a stop in the instant between the two leaves a file whose
    digest is not its record's, refused."""
    record = {
        "file": out.name,
        "sha256": sha256_file(out),
        "rows": rows,
        "seed": seed,
        "generator_version": version,
        "amazon_sft": __version__,
    }
    write_text_whole(record_path(out), json.dumps(record, indent=1) + "\n")
