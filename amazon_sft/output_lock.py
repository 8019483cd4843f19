"""One writer a folder.

``OutputLock`` is an exclusive ``fcntl.flock`` on ``.<name>.lock`` beside the folder, held for
the whole write. Hand-written rather than ``filelock`` because the second writer's error must
name the first one, and ``filelock`` opens its lock file with ``O_TRUNC``, so a waiting process
wipes the holder's note. The lock file itself is never deleted: unlinking it while another
process has it open would let two processes lock two different files of the same name.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import os
import socket
import sys
from pathlib import Path

from amazon_sft.atomic import unwritable_beside
from amazon_sft.errors import UserError

NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)
"""flock's errors on a filesystem without locks (NFS mounted ``nolock``, Lustre ``noflock``):
writing goes on, unchecked, rather than refusing a cluster's only shared disk."""


class LockHeld(UserError):
    """Another process holds the lock (its note in the message)."""


class OutputLock:
    """Exclusive lock on an output folder for one writer; the second gets a one-line error.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "out"
    >>> with OutputLock(target, "doctest"):
    ...     OutputLock(target, "second").acquire()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    amazon_sft.output_lock.LockHeld: ...out is being written by another process (pid ...): wait for it to end or choose another output folder

    The same folder reached through a link is the same lock:

    >>> target.mkdir(); (target.parent / "link").symlink_to(target, target_is_directory=True)
    >>> with OutputLock(target, "doctest"):
    ...     OutputLock(target.parent / "link", "second").acquire()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    amazon_sft.output_lock.LockHeld: ...
    """

    def __init__(self, target: Path, command: str) -> None:
        self.given = Path(target)
        self.target = Path(target).resolve()  # "--out ." locks the folder's real name
        self.path = self.target.parent / f".{self.target.name}.lock"
        self.command = command
        self._fd: int | None = None
        self.locked = False
        """The flock is held (False on a filesystem without locks: nothing may be cleared as
        a dead process's then)."""

    def acquire(self) -> OutputLock:
        from amazon_sft.ownership import refuse_link_to_nowhere

        refuse_link_to_nowhere(self.given, "")  # before the lock makes the link's parent
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # never through a link: opening follows it, and the note would truncate its target
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise UserError(
                    f"{self.path} is a symbolic link, not amazon-sft's lock file: move it away"
                ) from None
            raise UserError(unwritable_beside(Path(self.given), err, "folder")) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.locked = True
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockHeld(
                f"{self.target} is being written by another process ({holder}): wait for it to "
                "end or choose another output folder"
            ) from None
        except OSError as err:
            if err.errno not in NO_LOCKS:
                os.close(fd)
                raise
            print(
                f"warning: {self.path.parent} is on a filesystem with no file locks "
                f"({err.strerror}): {self.command} writes without checking for another writer",
                file=sys.stderr,
            )
        found = os.pread(fd, 64, 0)
        if found and not found.startswith(b"pid "):  # emptied on release, else a holder's note
            os.close(fd)
            raise UserError(
                f"{self.path} is not amazon-sft's lock file (it holds text of its own): move it "
                "away, or choose another output folder"
            )
        note = f"pid {os.getpid()} on {socket.gethostname()}: {self.command}, since {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}"
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode(), 0)
        except OSError:  # a full disk: let go of the lock, the caller names the folder
            os.close(fd)
            self.locked = False
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        self.locked = False
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def writer_of(target: Path) -> str | None:
    """The note of the process writing ``target`` now (its ``OutputLock`` held), else None: a
    reader of a folder still being written is told so, not sent to make it (an outside trial:
    train said "run amazon-sft prepare first" while one ran). A released lock file is empty and
    is not probed: the probe's instant of shared lock would refuse a writer starting then (a
    review); one a killed writer left holds its note, and is."""
    resolved = Path(target).resolve()
    try:
        fd = os.open(resolved.parent / f".{resolved.name}.lock", os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not os.pread(fd, 4, 0).startswith(b"pid "):
            return None  # released (or not ours)
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return os.pread(fd, 4096, 0).decode(errors="replace").strip() or "pid unknown"
    except OSError:  # no locks on this filesystem: nothing to tell
        return None
    finally:
        os.close(fd)


def released_lock(path: Path) -> bool:
    """An amazon-sft lock file no process holds (``OutputLock``: emptied on release, never
    deleted; a killed holder's keeps its note), left in a prepared folder by ``eval --out
    prepared/eval``: not the user's file. One a live process holds is."""
    name = path.name
    if not (name.startswith(".") and name.endswith(".lock")) or path.is_symlink():
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        note = os.pread(fd, 4, 0)
        if note not in (b"", b"pid "):
            return False  # text of the user's own
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:  # held by a live process (or no locks here: not ours to judge)
        return False
    finally:
        os.close(fd)


class DataReadLock:
    """A prepared folder held for reading by a training run, eval, ask, chat or serve (shared:
    they go on together) or for writing by prepare (exclusive): ``fcntl.flock`` on ``.<name>.readers.lock``
    beside it, apart from ``OutputLock``'s so that an index build (prepare's lock) never waits
    for a run. A hostile user's trial: ``prepare --overwrite`` replaced the shards a live run
    read; the run ended with exit 0 on deleted files, then its resume, eval and ask were refused.
    Then eval's: a prepare during an eval made it score the new catalogue's records against
    the old one's questions, exit 0. ``named``: the folder as the reader's command names it
    (``data.path=DIR``, ``--data DIR``). A shared lock of a path that is not a folder locks
    nothing and makes no lock file beside it (a mistyped path: its reader says what it lacks).
    Where the lock file cannot be made (a read-only dataset folder, which no prepare replaces
    either) or locks are not supported, nothing is checked."""

    def __init__(self, folder: Path, shared: bool, named: str | None = None) -> None:
        self.folder = Path(folder).resolve()
        self.named = named or f"data.path={self.folder}"
        self.path = self.folder.parent / f".{self.folder.name}.readers.lock"
        self.shared = shared
        self._fd: int | None = None

    def acquire(self) -> DataReadLock:
        if self._fd is not None or (self.shared and not self.folder.is_dir()):
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError:
            return self  # not ours to make here: unchecked, as without locks
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if self.shared:
                raise UserError(
                    f"{self.named} is being prepared again (amazon-sft prepare): wait for it "
                    "to end, then start again"
                ) from None
            raise UserError(
                f"--out {self.folder} is being read by a training run, eval, ask, chat or serve "
                "(its data or --index): replacing it would change their data under them; wait "
                "for them to end, or prepare into another --out"
            ) from None
        except OSError as err:
            os.close(fd)
            if err.errno in NO_LOCKS:
                return self
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> DataReadLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:  # an index dropped drops its folder's lock (a long-lived caller)
        self.release()
