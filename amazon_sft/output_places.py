"""Where no command puts its output: inside a folder another command owns.

A file or folder left inside another command's output blocks that command later: eval's report
in ``DATA/index`` made ``amazon-sft index`` and ``prepare --overwrite`` refuse the folder; an
export, a generated catalogue or a run inside prepared data, a run's ``final/`` or
``checkpoints/``, or another export did the same to ``prepare --overwrite``, the run's next
save and ``export --overwrite`` (hostile users' trials). Beside them (``runs/x/eval``) is the
user's choice. One check for every command that writes an output (eval, export, synth,
prepare, train).
"""

from __future__ import annotations

from pathlib import Path

from amazon_sft.errors import UserError


def owner_above(out: Path, replaces: str = "") -> tuple[Path, str] | None:
    """The nearest folder at or above where ``out`` lands (through links) that a command owns,
    and what it is; ``replaces``: the kind of folder the caller itself replaces at ``out``
    (``prepared``, ``export``, ``run``), which is not another's."""
    from amazon_sft.answering.export_files import EXPORT_MARKER
    from amazon_sft.data.manifest import MANIFEST
    from amazon_sft.ownership import is_our_run

    out = out.resolve()
    for folder in (out, *out.parents):
        mine = folder == out
        prepared = (folder / MANIFEST).is_file() and any(folder.glob("shard-*"))
        if prepared and not (mine and replaces == "prepared"):
            return folder, "prepared data (index and prepare --overwrite would refuse it then)"
        if folder.name in ("final", "checkpoints") and is_our_run(folder.parent):
            return folder, (
                f"the run's {folder.name}/, which its saves write (beside it, e.g. "
                f"{folder.parent / 'eval'}, is fine)"
            )
        if (folder / EXPORT_MARKER).is_file() and not (mine and replaces == "export"):
            return folder, "an export (export --overwrite would refuse it then)"
    return None


def refuse_inside_another_output(out: Path, flag: str, replaces: str = "") -> None:
    """One line when ``out`` lies inside (or is) a folder another command owns."""
    found = owner_above(out, replaces)
    if found:
        folder, what = found
        where = "is" if folder == out.resolve() else f"is inside {folder},"
        raise UserError(f"{flag} {out} {where} {what}: choose another {flag}")
