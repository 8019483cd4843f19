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
from pathlib import Path

from amazon_sft.atomic import write_text_whole
from amazon_sft.data.shards import sha256_file
from amazon_sft.errors import UserError

RECORD = ".amazon_sft_demo_files.json"
"""In the demo folder: file name -> sha256 of what the demo last wrote there."""
DEMO_FILES = ("trn.json.gz", "heldout_questions.jsonl", "answers.json", "demo.log")


WRITING = "writing"
"""A file's record while the demo writes it: one killed half-way is still the demo's."""


FORMAT_KEY, FORMAT = "_format", 2
"""Records of format 2 name every file the demo wrote (one being written is marked
``WRITING``), so a name missing from one is not the demo's. Earlier records dropped a name
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
    left unnamed marked ``WRITING`` (the demo's, by its rule), not dropped as not the demo's."""
    known = _digests_known(out)
    if _recorded(out) is None:
        for name in DEMO_FILES:
            if name not in known and (out / name).is_file():
                known[name] = WRITING
    return known


def _write_record(out: Path, recorded: dict[str, str]) -> None:
    body = {FORMAT_KEY: FORMAT, **recorded}
    write_text_whole(out / RECORD, json.dumps(body, indent=1) + "\n")


def record_demo_file(out: Path, name: str) -> None:
    """Record the digest of ``out/name`` as the demo wrote it."""
    recorded = _current(out)
    recorded[name] = sha256_file(out / name)
    _write_record(out, recorded)


def forget_demo_file(out: Path, name: str) -> None:
    """Mark ``name`` as being written before the demo writes it again: a demo killed while
    writing it (SIGKILL, a closed terminal) leaves a file whose digest differs, which the next
    demo must take as its own, not refuse."""
    recorded = _current(out)
    recorded[name] = WRITING
    _write_record(out, recorded)


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
    return [
        name
        for name in names
        if name in known and known[name] != WRITING and sha256_file(out / name) != known[name]
    ]
