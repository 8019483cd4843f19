"""What an eval report folder belongs to: eval replaces only the report files it can prove it
wrote.

The folder is proved by the marker ``.amazon_sft_eval.json`` that eval writes before its report
(a file, never a link: it is replaced whole, never written through); eval never writes its
report over a ``report.md``, ``report.json``, ... it cannot prove it wrote, or one changed since
it wrote it (the marker keeps each report file's sha256). A report from before the marker kept
digests (an eval's ``report.json`` with no marker, or a marker without ``files``) is eval's,
but whether it was edited cannot be told: it is not replaced either (an outside review: a
``cp`` of a report folder, which leaves dotfiles behind, lost the user's notes in report.md to
``--overwrite``). The other output folders: ``amazon_sft.ownership``.
"""

from __future__ import annotations

import json
from pathlib import Path

from amazon_sft import __version__
from amazon_sft.atomic import write_text_whole
from amazon_sft.data.shards import sha256_file
from amazon_sft.errors import UserError
from amazon_sft.ownership import listing, now_iso, refuse_link_to_nowhere

EVAL_MARKER = ".amazon_sft_eval.json"
EVAL_OUTPUTS = ("report.json", "answers.jsonl", "report.md", "report.png")
"""What ``amazon-sft eval`` writes into ``--out`` (besides its marker)."""


def is_our_eval(out_dir: Path) -> bool:
    """The marker, or (a folder from before it) an eval's report.json: its models, data and its
    splits (oracle context) or groups (end to end). A link named as the marker proves nothing."""
    marker = out_dir / EVAL_MARKER
    if marker.is_symlink():
        return False
    if marker.is_file():
        return True
    try:
        report = json.loads((out_dir / "report.json").read_text())
    except (OSError, ValueError):
        return False
    keys = set(report) if isinstance(report, dict) else set()
    return {"models", "data"} <= keys and bool({"splits", "groups"} & keys)


def _eval_digests(out_dir: Path) -> dict | None:
    """The marker's digests of the report files eval wrote (name -> sha256s it may hold), None
    for no marker (or a link) or one from before they were kept."""
    if (out_dir / EVAL_MARKER).is_symlink():
        return None
    try:
        files = json.loads((out_dir / EVAL_MARKER).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return None
    return files if isinstance(files, dict) else None


def changed_since_eval(out_dir: Path) -> list[str]:
    """The report files in ``out_dir`` changed since eval wrote them, or that eval's record
    does not hold (every one present where no record of digests is: unverifiable)."""
    digests = _eval_digests(out_dir) or {}
    return [
        name
        for name in EVAL_OUTPUTS
        if (out_dir / name).exists()
        and (
            not (out_dir / name).is_file()
            or sha256_file(out_dir / name) not in digests.get(name, ())
        )
    ]


def report_written_since(out_dir: Path, since_epoch_s: float) -> bool:
    """Whether ``out_dir`` holds a whole eval report moved in after ``since_epoch_s``: every
    file eval's record names is there with the one digest recorded after the move, report.md
    among them (launch/eval_slurm.sbatch: a warning that came after its eval ended does not
    requeue it)."""
    digests = _eval_digests(out_dir)
    report = out_dir / "report.md"
    if not digests or "report.md" not in digests or not report.is_file():
        return False
    if report.stat().st_mtime < since_epoch_s:
        return False
    return all(
        len(sums) == 1 and (out_dir / name).is_file() and sha256_file(out_dir / name) in sums
        for name, sums in digests.items()
    )


def check_eval_dir(out_dir: Path, overwrite: bool = True) -> None:
    """Refuse an eval ``--out`` holding report files eval cannot prove it wrote, or that were
    changed since it wrote them, or (without ``overwrite``) an earlier report at all
    (read-only: every rank may call it, before any model loads)."""
    refuse_link_to_nowhere(out_dir, "--out ")
    if (out_dir / EVAL_MARKER).is_symlink():
        raise UserError(
            f"--out {out_dir}: its {EVAL_MARKER} is a link, where eval keeps its record of the "
            "report files: remove the link or choose another --out"
        )
    present = [name for name in EVAL_OUTPUTS if (out_dir / name).exists()]
    if present and not is_our_eval(out_dir):
        raise UserError(
            f"--out {out_dir} holds {listing(present)} that amazon-sft eval did not write (no "
            f"{EVAL_MARKER}): the report would replace them; move them out or choose another --out"
        )
    if present and _eval_digests(out_dir) is None:
        raise UserError(
            f"--out {out_dir} holds an eval report ({listing(present)}) from before eval kept "
            f"digests of its files in {EVAL_MARKER}: whether one was edited cannot be told, so "
            "it is not replaced; move them out or choose another --out"
        )
    if present:
        changed = changed_since_eval(out_dir)
        if changed:
            raise UserError(
                f"--out {out_dir}: {listing(changed)} changed since eval wrote it (or eval did "
                "not write it): the report would replace it; move it out or choose another --out"
            )
    if present and not overwrite:  # a new user's base-vs-tuned report went without a word
        raise UserError(
            f"--out {out_dir} already holds an eval report ({listing(present)}): pass "
            "--overwrite to replace it, or choose another --out"
        )


def record_eval_files(out_dir: Path, files: dict[str, list[str]]) -> None:
    """Keep in the marker the sha256 of each report file eval wrote (before the files move in:
    the old and new digest of each, so a kill between moves leaves the folder eval's; after:
    the new only). A file changed since is then the user's, never replaced."""
    marker = out_dir / EVAL_MARKER
    try:
        note = json.loads(marker.read_text())
    except (OSError, ValueError):
        note = {}
    note = note if isinstance(note, dict) else {}
    note["files"] = files
    write_text_whole(marker, json.dumps(note) + "\n")


def claim_eval_dir(out_dir: Path) -> None:
    """Check again, then mark the folder as eval's before its report is written."""
    check_eval_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / EVAL_MARKER
    if not marker.is_file():  # no files recorded yet: a report found here is not eval's
        note = {"written_by": f"amazon_sft {__version__} eval", "created": now_iso(), "files": {}}
        write_text_whole(marker, json.dumps(note) + "\n")
