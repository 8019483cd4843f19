"""Output paths checked before the work that fills them, and a full disk reported as one line.

A full disk (``ENOSPC``, or a quota's ``EDQUOT``) surfaces deep inside numpy, torch or
safetensors as an error that names no folder; ``disk_full`` turns it into one line naming the
folder, how much room is left there, and what the command kept.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from amazon_sft.errors import UserError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def landing(path: str | Path) -> Path:
    """Where an output path will land once its missing folders are made: ``nope/../mine`` is
    ``mine``. While ``nope`` is missing, ``nope/..`` resolves to nothing, so every check of the
    path as typed saw no folder there; once the command made ``nope``, it wrote into the user's
    ``mine/``. A path without ``..`` is returned as given.

    >>> import os, tempfile
    >>> here = tempfile.mkdtemp()
    >>> landing(f"{here}/nope/../mine") == Path(os.path.realpath(here)) / "mine"
    True
    >>> landing("runs/a")
    PosixPath('runs/a')
    """
    path = Path(path)
    if ".." not in path.parts:
        return path
    if path.name == "..":  # the path is a folder above: resolve it whole
        return Path(os.path.realpath(path))
    return Path(os.path.realpath(path.parent)) / path.name


def refuse_under_a_file(path: Path, flag: str) -> None:
    """An output path below a file (``FILE/x``) is named so, not "(File exists)" from mkdir."""
    under = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if under is not None:
        raise UserError(
            f"{flag} {path} lies under {under}, which is a file: choose a writable path"
        )


def check_output_folder(path: str | Path, flag: str, replaced_whole: bool = True) -> Path:
    """Refuse an empty output path, the current folder or one above it (``.``, ``..``, ``/``:
    a command building its output aside cannot rename it there, and one writing file by file,
    eval, wrote its report and a lock named ``/..lock`` into the filesystem root), a folder
    that is a file or lies under one, and, when the command builds its output aside and renames
    it into place (``replaced_whole``), a symbolic link. Returns where the path lands
    (``landing``): use it."""
    if not str(path).strip():  # before Path(), which reads "" as "."
        raise UserError(f"{flag} is empty: name a folder")
    path = landing(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder: choose a folder path")
    refuse_under_a_file(path, flag)
    here = Path.cwd().resolve()
    resolved = path.resolve()
    if resolved == here or resolved in here.parents:
        raise UserError(
            f"{flag} {path} is the current folder or one above it: name a new folder for the "
            f"output, e.g. {flag} out"
        )
    if replaced_whole and path.is_symlink():  # the swap would replace the link itself
        raise UserError(
            f"{flag} {path} is a symbolic link (to {os.readlink(path)}): give the folder it "
            f"points to, or a new folder path"
        )
    return path


def free_bytes(folder: Path) -> int | None:
    """Free bytes on the filesystem holding ``folder`` (its nearest existing parent)."""
    for candidate in (folder, *folder.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


NEARLY_FULL_BYTES = 1 << 20
"""A failed write with less than this left on the disk is taken for a full disk."""


def is_disk_full(err: BaseException | None, folder: Path | None = None) -> bool:
    """True for a full disk or quota, also when a library wrapped the OSError in its own error:
    safetensors keeps the OS message; torch's writers drop it (``file write failed``,
    ``basic_ios::clear: iostream error``), so an I/O error (``OSError`` or torch's
    ``RuntimeError``) with the disk holding ``folder`` (nearly) full counts too."""
    seen, wrote = 0, False
    while err is not None and seen < 8:
        if isinstance(err, OSError) and err.errno in DISK_FULL:
            return True
        text = str(err)
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return True
        wrote = wrote or isinstance(err, (OSError, RuntimeError))
        err = err.__cause__ or err.__context__
        seen += 1
    if wrote and folder is not None:
        free = free_bytes(folder.absolute())
        return free is not None and free < NEARLY_FULL_BYTES
    return False


TORCH_WRITE_FAILED = ("unexpected pos", "file write failed", "iostream error")
"""What torch's checkpoint writer says of a failed write, the OS error dropped."""


def file_size_limit() -> int | None:
    """This process's largest file in bytes (``ulimit -f``), None when unlimited."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def is_past_file_size_limit(err: BaseException | None, folder: Path | None = None) -> bool:
    """True for a write past the largest file allowed: ``EFBIG`` (``ulimit -f``, which SLURM
    propagates to its jobs, or the filesystem's own limit), also when torch's writer dropped the
    OS error (``TORCH_WRITE_FAILED``) and a file in ``folder`` has reached the ``ulimit -f``
    (a write stops there: any finite limit alone blamed a full disk on it, a review)."""
    seen, torch_write = 0, False
    while err is not None and seen < 8:
        if isinstance(err, OSError) and err.errno == errno.EFBIG:
            return True
        if os.strerror(errno.EFBIG) in str(err):  # safetensors: "I/O error: File too large"
            return True
        torch_write = torch_write or any(t in str(err) for t in TORCH_WRITE_FAILED)
        err = err.__cause__ or err.__context__
        seen += 1
    limit = file_size_limit()
    if not torch_write or limit is None or folder is None or not folder.is_dir():
        return False
    return any(p.is_file() and p.stat().st_size >= limit for p in folder.rglob("*"))


def run_kept(out_dir: Path) -> str:
    """What a training run keeps when a save fails: its newest complete checkpoint. With none,
    the way on: a plain re-run is refused (the folder holds this run), which the message's
    "re-run" sent a user into (an ML engineer's trial).

    >>> import tempfile
    >>> run_kept(Path(tempfile.mkdtemp()))
    'no checkpoint of this run was complete yet (re-run with resume=auto: it starts at step 0)'
    """
    from amazon_sft.checkpointing import complete_checkpoints

    done = complete_checkpoints(out_dir)
    if not done:
        return (
            "no checkpoint of this run was complete yet (re-run with resume=auto: it starts at "
            "step 0)"
        )
    return f"the newest complete checkpoint, {done[-1]}, is kept (resume=auto continues from it)"


@contextmanager
def disk_full(folder: str | Path, what: str, kept: str | Callable[[], str]) -> Iterator[None]:
    """A full disk inside the block becomes one line: ``<what>: the disk holding <folder> is
    full (N MiB free); <kept>; free space there and re-run``. ``kept`` may be a function, asked
    only then."""
    try:
        yield
    except UserError:
        raise
    except Exception as err:
        folder = Path(folder)
        full = is_disk_full(err, folder)  # first: a full disk is no file-size limit
        if not full and is_past_file_size_limit(err, folder):
            limit = file_size_limit()
            allowed = f"ulimit -f: {limit / 2**20:.1f} MiB" if limit else "the filesystem's limit"
            raise UserError(
                f"{what}: a file in {folder} grew past the largest file allowed ({allowed}; "
                f"{os.strerror(errno.EFBIG)}); {kept() if callable(kept) else kept}; lift the "
                "limit (ulimit -f unlimited; in a SLURM job, srun --propagate=NONE) or choose "
                "another filesystem, and re-run"
            ) from None
        if not full:
            raise
        free = free_bytes(folder.absolute())
        room = f"{free / 2**20:.0f} MiB free" if free is not None else "free space unknown"
        raise UserError(
            f"{what}: the disk holding {folder} is full ({room}; {os.strerror(errno.ENOSPC)}); "
            f"{kept() if callable(kept) else kept}; free space there (or choose another folder) "
            "and re-run"
        ) from None
