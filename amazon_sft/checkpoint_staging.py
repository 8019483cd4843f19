"""A checkpoint save's staging folder, ``checkpoints/step-N.tmp``, told apart from a user's.

A save marks the folder first (``SAVE_MARK``) and removes the mark just before the folder takes
its step's name, so a ``step-N.tmp`` holding the mark is a killed save's, to remove; anything
else of that name (a link, a user's copy of a checkpoint with notes in it) is set aside, whole.
A hostile user's trial: a link named ``step-N.tmp`` was written through (the save's files into
the user's folder, over a file there), and a user's folder of that name was deleted, both logged
as "left by a killed save".
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from amazon_sft.ownership import utc_stamp

log = logging.getLogger("amazon_sft.checkpoint_staging")

SAVE_STAGING = re.compile(r"step-\d{8,}\.tmp")
"""The staging folder a save writes (``checkpoint_dir``'s name + ``.tmp``); any other name is
not ours to remove (a user's ``step-00000003-before-lr-change.tmp`` backup)."""
SAVE_MARK = ".amazon-sft-save"
"""Written first into a save's staging folder (its checksums leave it out), removed last, just
before the folder takes its step's name (removed before the checksums, a kill after them left a
whole staging folder taken for a user's: an ML engineer's trial)."""


def killed_save(path: Path) -> bool:
    """Whether ``path`` is a save's staging folder left by a killed save: its name, a real
    folder (not a link), the mark inside."""
    return (
        bool(SAVE_STAGING.fullmatch(path.name))
        and path.is_dir()
        and not path.is_symlink()
        and (path / SAVE_MARK).is_file()
    )


def clear_staging(path: Path) -> str | None:
    """Remove a killed save's ``path``; set anything else there aside as
    ``NAME.yours-STAMP``. What was done, in words (None: nothing there)."""
    if not (path.exists() or path.is_symlink()):
        return None
    if killed_save(path):
        shutil.rmtree(path)
        log.warning("removed %s, left by a killed save", path)
        return f"removed {path.name}"
    aside = path.with_name(f"{path.name}.yours-{utc_stamp()}")
    path.rename(aside)
    log.warning(
        "set %s aside as %s: a save's staging name, but no save of this version left it "
        "(a link, or no %s in it)",
        path,
        aside.name,
        SAVE_MARK,
    )
    return f"set aside {path.name}"


def discard_cut_save(path: Path) -> None:
    """Remove the staging folder of a save that failed (a full disk, a file-size limit), mark
    still in it: nothing can complete it, and it held its space on the full disk until a
    ``resume=auto`` cleared it (an outside trial)."""
    if killed_save(path):
        shutil.rmtree(path, ignore_errors=True)


def start_staging(path: Path) -> None:
    """Clear ``path`` (``clear_staging``), then make it, marked as a save's."""
    clear_staging(path)
    path.mkdir(parents=True)
    (path / SAVE_MARK).write_text("a checkpoint save writes this folder\n")


def end_staging(path: Path) -> None:
    """The mark removed: the folder is whole, checksums and ``COMPLETE`` in, and it takes its
    step's name next."""
    (path / SAVE_MARK).unlink()
