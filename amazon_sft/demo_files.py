"""Which files of a demo folder the next demo may replace, checked before its first step.

The demo writes files of its own into ``--out`` (the catalogue it generates, the question file,
the answers, its log) and runs prepare, train and eval into folders there. A second demo
replaced an edited question file without a word, and refused an edited eval report only at its
eval step, after generating, preparing and training again. Each file the demo writes is
recorded with its digest as it is written; before any step, a recorded file that changed since
is refused, and the prepared folder and the eval reports are checked as prepare and eval would
check them. A file the record does not name is not the demo's (a ``--data`` demo writes no
catalogue; the user's put there later is theirs), except in a folder from before the record,
which is the demo's, as the folder's claim says.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from amazon_sft.atomic import staging_name, write_text_whole
from amazon_sft.data.shards import sha256_file
from amazon_sft.errors import UserError

RECORD = ".amazon_sft_demo_files.json"
"""In the demo folder: file name -> sha256 of what the demo last wrote there (two while it
replaces the file)."""
DEMO_FILES = ("trn.json.gz", "heldout_questions.jsonl", "answers.json", "demo.log")


FORMAT_KEY, FORMAT = "_format", 2
"""Records of format 2 name every file the demo wrote, so a name missing from one is not the
demo's. Earlier records dropped a name
while its file was rewritten: a demo killed then left its own file unnamed."""


def _read(out: Path) -> dict:
    try:
        raw = json.loads((out / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _recorded(out: Path) -> dict[str, str] | None:
    """The record's files, or None in a folder from before demos kept one or named every file
    (format 2): there, a file the record does not name is the demo's."""
    raw = _read(out)
    return _digests_known(out) if raw.get(FORMAT_KEY) == FORMAT else None


def _digests_known(out: Path) -> dict[str, str]:
    """What any record holds, whatever its format (what a digest check may compare)."""
    return {k: v for k, v in _read(out).items() if k != FORMAT_KEY}


def _current(out: Path) -> dict[str, str]:
    """The record to add to: an older one (or none) becomes format 2 with every demo file it
    left unnamed recorded as it is (the demo's, by its rule), not dropped as not the demo's."""
    known = _digests_known(out)
    if _recorded(out) is None:
        for name in DEMO_FILES:
            if name not in known and (out / name).is_file():
                known[name] = sha256_file(out / name)  # the demo's as it is now
    return known


def _write_record(out: Path, recorded: dict[str, str]) -> None:
    body = {FORMAT_KEY: FORMAT, **recorded}
    write_text_whole(out / RECORD, json.dumps(body, indent=1) + "\n")


def _set(out: Path, name: str, value: str | list[str]) -> None:
    recorded = _current(out)
    recorded[name] = value
    _write_record(out, recorded)


def record_demo_file(out: Path, name: str) -> None:
    """Record the digest of ``out/name`` as the demo wrote it."""
    _set(out, name, sha256_file(out / name))


@contextmanager
def staged_demo_file(out: Path, name: str) -> Iterator[Path]:
    """Write ``name`` into the path yielded (a hidden staging file that keeps the name's
    suffix: synth compresses a ``.gz``); then it replaces ``out/name`` and is recorded. While
    it does, the record holds the old digest and the new one, so a kill at any instant leaves
    a file the record names as the demo's, and no mark that would take a user's file put
    there later for the demo's (a review: a ``writing`` mark outlived a kill)."""
    plain = staging_name(out / name)  # .NAME.amazon-sft-tmp-MACHINE-PID: make clean's litter
    staging = plain.with_name(plain.name + "".join(Path(name).suffixes[-1:]))
    old = _digests_known(out).get(name)
    try:
        yield staging
        new = sha256_file(staging)
        _set(out, name, [*(old if isinstance(old, list) else [old] if old else []), new])
        os.replace(staging, out / name)
        _set(out, name, new)
    finally:
        staging.unlink(missing_ok=True)


class DemoLog:
    """The demo's log, written whole at each step (``staged_demo_file``): it is small, and a
    kill at any instant leaves the old log or the new, each recorded. Written in place and
    marked by its inode while open, a file a user put there after a kill (``cp`` over it, or a
    new file given the freed inode) was taken for the demo's and emptied (a review)."""

    def __init__(self, out: Path) -> None:
        self.out, self.text = out, ""

    def write(self, text: str) -> None:
        self.text += text
        with staged_demo_file(self.out, "demo.log") as staging:
            staging.write_text(self.text)


def demo_log(out: Path, started: str) -> DemoLog:
    """The demo's log, begun with ``started`` (the demo's command): the last demo's goes now."""
    log = DemoLog(out)
    log.write(started)
    return log


def _as_written(path: Path, recorded: object) -> bool:
    """Whether ``path`` is the file the record names (a digest, or digests mid-swap). An
    earlier version's marks of a file being written (``writing``, ``open:DEVICE:INODE``) name
    no content: a file found under one may be a user's, so it is not the demo's."""
    digests = recorded if isinstance(recorded, list) else [recorded]
    return sha256_file(path) in digests


def check_demo_files(
    out: Path, prepared: Path, reports: list[Path], writes: tuple[str, ...] | list[str] = DEMO_FILES
) -> None:
    """Refuse, before the first step, a file the demo will write (``writes``) that it did not
    write or that changed since, a prepared folder prepare may not replace, or an eval report
    eval may not (read-only)."""
    from amazon_sft.eval_ownership import check_eval_dir
    from amazon_sft.ownership import check_prepare_target

    present = [name for name in writes if (out / name).is_file()]
    foreign = not_written_by_demo(out, present)
    if foreign:
        raise UserError(
            f"--out {out}: {', '.join(foreign)} was not written by the demo, and the demo "
            "would write it: move it out of the folder, or choose another --out"
        )
    changed = edited_since_demo(out, present)
    if changed:
        raise UserError(
            f"--out {out}: {', '.join(changed)} changed since the demo wrote it, and the "
            "demo would write it again: move it out of the folder, or choose another --out"
        )
    check_prepare_target(prepared, overwrite=True)
    for report in reports:
        check_eval_dir(report, overwrite=True)


def not_written_by_demo(out: Path, names: list[str]) -> list[str]:
    """Of ``names``, those a record of format 2 does not name (none with an older record or
    none: there, every file is the demo's)."""
    named = _recorded(out)
    return [] if named is None else [name for name in names if name not in named]


def edited_since_demo(out: Path, names: list[str]) -> list[str]:
    """Of ``names``, those whose recorded digest (any record's) differs from the file's."""
    known = _digests_known(out)
    return [name for name in names if name in known and not _as_written(out / name, known[name])]
