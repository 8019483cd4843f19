"""Which files of the GPU check's folder (``scripts/gpu_check.py``) are its own, as it wrote them.

Once its folder was marked, the check took any file of its names there as its own: a re-run
wrote over an edited ``gpu_check.json`` or a user's ``demo.txt``, and ``make clean`` removed
them. The marker now records each file's sha256 as the check wrote it (``WRITING`` while it
writes one), so a file of its names that it never wrote, or that changed since, is named and
kept. A marker from before the record names no files: there, its names are the check's.
"""

from __future__ import annotations

import json
from pathlib import Path

from amazon_sft.data.shards import sha256_file

MARKER = ".amazon_sft_gpu_check.json"
"""Written into the folder first: a non-empty folder without it is not the check's to write."""
FILES = ("gpu_tests.txt", "benchmark.txt", "demo.txt", "gpu_check.json")
"""The files the check writes beside its ``demo/`` (a demo folder, checked as one)."""
WRITING = "writing"
"""A file's record while the check writes it: one killed half-way is still the check's."""


def _note(out: Path) -> dict:
    try:
        note = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return note if isinstance(note, dict) else {}


def _files(out: Path) -> dict | None:
    files = _note(out).get("files")
    return files if isinstance(files, dict) else None


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
        elif name not in files:
            theirs.append(name)
        elif files[name] != WRITING and files[name] != sha256_file(path):
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
    return (
        f"--out {out} holds {'; '.join(held)}: move it out of the folder, or name a new "
        "folder with --out"
    )


def adopt(out: Path) -> None:
    """Start the record: in a folder from before it, the files of the check's names there are
    the check's (its claim says so) and are recorded as they are now."""
    if _files(out) is None:
        _record(out, {n: sha256_file(out / n) for n in FILES if (out / n).is_file()})


def _record(out: Path, files: dict) -> None:
    note = _note(out)
    note["files"] = files
    (out / MARKER).write_text(json.dumps(note, indent=1) + "\n")


def writing(out: Path, name: str) -> Path:
    """Mark ``name`` as being written (a kill leaves it the check's); returns its path."""
    _record(out, {**(_files(out) or {}), name: WRITING})
    return out / name


def written(out: Path, name: str) -> None:
    """Record ``name``'s digest as the check wrote it."""
    _record(out, {**(_files(out) or {}), name: sha256_file(out / name)})


def write_text(out: Path, name: str, text: str) -> None:
    """Write one of the check's files and record it."""
    writing(out, name).write_text(text)
    written(out, name)
