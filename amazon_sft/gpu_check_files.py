"""Which files of the GPU check's folder (``scripts/gpu_check.py``) are its own, as it wrote them.

Once its folder was marked, the check took any file of its names there as its own: a re-run
wrote over an edited ``gpu_check.json`` or a user's ``demo.txt``, and ``make clean`` removed
them. The marker now records each file's sha256 as the check wrote it, so a file of its names
that it never wrote, or that changed since, is named and kept. A marker from before the record
(its JSON without ``files``) names no files: there, its names are the check's. A marker that is
a link, or not the check's JSON, proves nothing: every file of its names there is kept.

Each file is written under a hidden staging name, its digest recorded, then renamed into place:
a kill leaves only the staging file (litter ``make clean`` removes), never a record of a file
being written that a user's file could later pass for. The marker itself is replaced whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from amazon_sft.atomic import staging_name, write_text_whole
from amazon_sft.data.shards import sha256_file

MARKER = ".amazon_sft_gpu_check.json"
"""Written into the folder first: a non-empty folder without it is not the check's to write."""
FILES = ("gpu_tests.txt", "benchmark.txt", "demo.txt", "gpu_check.json")
"""The files the check writes beside its ``demo/`` (a demo folder, checked as one)."""
_DAMAGED = "damaged"


def _note(out: Path) -> dict | None:
    """The marker's JSON; None where it is a link or not a JSON object."""
    marker = out / MARKER
    if marker.is_symlink():
        return None
    try:
        note = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return note if isinstance(note, dict) else None


def _files(out: Path) -> dict | str | None:
    """The record; None in a marker from before it; ``_DAMAGED`` where the marker proves nothing."""
    note = _note(out)
    if note is None:
        return _DAMAGED
    if "files" not in note:
        return None
    files = note["files"]
    ok = isinstance(files, dict) and all(
        isinstance(v, str) or (isinstance(v, list) and all(isinstance(d, str) for d in v))
        for v in files.values()
    )
    return files if ok else _DAMAGED


def not_as_written(out: Path) -> tuple[list[str], list[str]]:
    """(files of the check's names it did not write, its files edited since it wrote them)."""
    files = _files(out)
    theirs, edited = [], []
    for name in FILES:
        path = out / name
        if path.is_symlink() or (path.exists() and not path.is_file()):
            theirs.append(name)  # writing through a link would replace what it points to
        elif not path.exists() or files is None:
            continue  # nothing there, or a folder from before the record: the check's
        elif files == _DAMAGED or name not in files:
            theirs.append(name)
        elif sha256_file(path) not in _digests(files[name]):  # "writing" (before) too
            edited.append(name)
    return theirs, edited


def refusal(out: Path) -> str | None:
    """The one line that refuses ``out``, or None when every file of the check's names there
    is its own as it wrote it."""
    theirs, edited = not_as_written(out)
    held = [f"{n}, which the GPU check did not write" for n in theirs]
    held += [f"{n}, edited since the GPU check wrote it" for n in edited]
    if not held:
        return None
    why = f" (its {MARKER} is not the check's record)" if _files(out) == _DAMAGED else ""
    return (
        f"--out {out} holds {'; '.join(held)}{why}: move it out of the folder, or name a new "
        "folder with --out"
    )


def adopt(out: Path) -> None:
    """Start the record: in a folder from before it, the files of the check's names there are
    the check's (its claim says so) and are recorded as they are now."""
    files = _files(out)
    if not isinstance(files, dict):
        _record(out, {n: sha256_file(out / n) for n in FILES if (out / n).is_file()})


def _record(out: Path, files: dict) -> None:
    note = _note(out) or {}
    note["files"] = files
    write_text_whole(out / MARKER, json.dumps(note, indent=1) + "\n")


def _digests(recorded: str | list[str]) -> list[str]:
    """A file's recorded digests: one, or the old and the new while ``staged`` swaps it."""
    return recorded if isinstance(recorded, list) else [recorded]


@contextmanager
def staged(out: Path, name: str) -> Iterator[Path]:
    """Write one of the check's files into the path yielded (a hidden staging file); when the
    block ends, it is renamed into place, the record holding the old digest and the new one
    while it is (a stop between the two left the old file under the new digest, refused as
    "edited since" by the next check: a review), then the new one alone."""
    staging = staging_name(out / name)
    try:
        yield staging
        files = _files(out)
        files = files if isinstance(files, dict) else {}
        new = sha256_file(staging)
        old = [d for d in _digests(files.get(name, [])) if d != new]
        _record(out, {**files, name: [*old, new] if old else new})
        os.replace(staging, out / name)
        if old:
            _record(out, {**files, name: new})
    finally:
        staging.unlink(missing_ok=True)


def write_text(out: Path, name: str, text: str) -> None:
    """Write one of the check's files and record it."""
    with staged(out, name) as path:
        path.write_text(text)
