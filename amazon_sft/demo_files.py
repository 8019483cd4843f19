"""Which files of a demo folder the next demo may replace, checked before its first step.

The demo writes files of its own into ``--out`` (the catalogue it generates, the question file,
the answers, its log) and runs prepare, train and eval into folders there. A second demo
replaced an edited question file without a word, and refused an edited eval report only at its
eval step, after generating, preparing and training again. Each file the demo writes is
recorded with its digest as it is written; before any step, a recorded file that changed since
is refused, and the prepared folder and the eval reports are checked as prepare and eval would
check them. A file no demo recorded (a folder from before the record) is the demo's, as the
folder's claim says.
"""

from __future__ import annotations

import json
from pathlib import Path

from amazon_sft.data.shards import sha256_file
from amazon_sft.errors import UserError

RECORD = ".amazon_sft_demo_files.json"
"""In the demo folder: file name -> sha256 of what the demo last wrote there."""
DEMO_FILES = ("trn.json.gz", "heldout_questions.jsonl", "answers.json", "demo.log")


def _recorded(out: Path) -> dict[str, str]:
    try:
        raw = json.loads((out / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def record_demo_file(out: Path, name: str) -> None:
    """Record the digest of ``out/name`` as the demo wrote it."""
    recorded = _recorded(out)
    recorded[name] = sha256_file(out / name)
    (out / RECORD).write_text(json.dumps(recorded, indent=1) + "\n")


def forget_demo_file(out: Path, name: str) -> None:
    """Drop ``name``'s record before the demo writes it again: a demo killed while writing it
    (SIGKILL, a closed terminal) leaves a file no record claims, taken as the demo's, not one
    whose digest differs and that the next demo would refuse."""
    recorded = _recorded(out)
    if recorded.pop(name, None) is not None:
        (out / RECORD).write_text(json.dumps(recorded, indent=1) + "\n")


def check_demo_files(out: Path, prepared: Path, reports: list[Path]) -> None:
    """Refuse, before the first step, a demo file changed since the demo wrote it, a prepared
    folder prepare may not replace, or an eval report eval may not (read-only)."""
    from amazon_sft.eval_ownership import check_eval_dir
    from amazon_sft.ownership import check_prepare_target

    recorded = _recorded(out)
    changed = [
        name
        for name in DEMO_FILES
        if name in recorded and (out / name).is_file() and sha256_file(out / name) != recorded[name]
    ]
    if changed:
        raise UserError(
            f"--out {out}: {', '.join(changed)} changed since the demo wrote it, and the demo "
            "would write it again: move it out of the folder, or choose another --out"
        )
    check_prepare_target(prepared, overwrite=True)
    for report in reports:
        check_eval_dir(report, overwrite=True)
