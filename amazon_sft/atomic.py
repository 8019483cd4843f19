"""Replace an output folder atomically, and clean up what killed runs left behind.

``swap_into_place`` exchanges a finished staging folder with the old output in one
``renameat2(RENAME_EXCHANGE)`` call on Linux: at every instant the output path holds either the
complete old folder or the complete new one. Elsewhere (or on a filesystem without the call) it
renames the old folder aside first, then the new one in, and only then deletes the old one, so a
kill in between leaves both complete folders and the next run's ``remove_stale`` restores the old
one if the new one never arrived.

Staging folders carry the machine's name beside the process id: on a cluster's shared
filesystem another node's process id means nothing here, so only this machine's dead
processes' folders are cleaned. A name without the tool's word (``STAGING_TAG``; older
versions wrote ``.NAME.tmp-MACHINE-PID``) is left: a user's backup may carry such a name.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
import shutil
import signal
import socket
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _machine() -> str:
    """This machine's name as it goes into a file name (no separator a name cannot hold)."""
    return re.sub(r"[^A-Za-z0-9._]", "_", socket.gethostname()) or "localhost"


STAGING_TAG = "amazon-sft"
"""The word every staging name carries (``.NAME.amazon-sft-tmp-MACHINE-PID``): a name is all
that marks a killed run's leftovers, and a user's backup ``.data.old-backup-7`` beside an
output read as another machine's staging, and was deleted (a review). A user does not name a
backup with the tool's name."""


def staging_name(
    out_dir: Path, kind: str = "tmp", machine: str | None = None, pid: int | None = None
) -> Path:
    """The hidden sibling a process writes into: ``.NAME.amazon-sft-tmp-MACHINE-PID`` (``old``
    for one set aside); another ``machine`` or ``pid`` than this process's names theirs."""
    machine, pid = machine or _machine(), os.getpid() if pid is None else pid
    return out_dir.parent / f".{out_dir.name}.{STAGING_TAG}-{kind}-{machine}-{pid}"


STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def stops_held() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP for the few renames that make a set of files whole; one
    that came meanwhile is raised again once they are done, to the handler there was (a stop
    between eval's moves left new answers without their report.json, and said nothing partial
    was left). Handlers, not the thread's signal mask: a process signal goes to any thread
    that does not block it (torch's), and Python runs its handler on the main thread anyway.
    Off the main thread (where no handler can be set) it holds nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    previous = {stop: signal.signal(stop, lambda signum, _: came.append(signum)) for stop in STOPS}
    try:
        yield
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, signal.SIG_DFL if handler is None else handler)
        if came:
            signal.raise_signal(came[0])


def write_text_whole(path: Path, text: str | bytes) -> None:
    """Write a small file (a record, a marker) beside it, then rename it into place: a kill
    leaves the old file or the new one, never half of one, and a link at ``path`` (symbolic,
    or a hard link a user's ``cp -al`` snapshot shares) is replaced, not written through into
    the file it points to."""
    staging = staging_name(path)
    try:
        staging.write_bytes(text.encode() if isinstance(text, str) else text)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def new_staging(out_dir: Path, any_machine: bool = False) -> Path:
    """An empty staging folder for ``out_dir`` (stale ones of killed runs cleaned first: of any
    machine's with ``any_machine``, for a caller holding the folder's lock); a folder that
    cannot be written is a one-line error naming it."""
    from amazon_sft.errors import UserError

    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out_dir, any_machine)
        staging = staging_name(out_dir)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as err:
        raise UserError(unwritable_beside(out_dir, err, "--out")) from None
    return staging


def unwritable_beside(out_dir: Path, err: OSError, what: str) -> str:
    """The line for a hidden file beside ``out_dir`` that cannot be made: a name too long once
    ``.NAME.lock`` or ``.NAME.amazon-sft-tmp-MACHINE-PID`` wraps it (it blamed the folder
    above), else the folder above is not writable.

    >>> import errno
    >>> unwritable_beside(Path("x") / ("e" * 250), OSError(errno.ENAMETOOLONG, "x"), "--out")[:60]
    'the name of --out x/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee...'
    """
    import errno

    if err.errno == errno.ENAMETOOLONG:
        shown = f"{out_dir.parent / out_dir.name[:40]}..." if len(out_dir.name) > 40 else out_dir
        return (
            f"the name of {what} {shown} is too long ({len(out_dir.name)} characters) for the "
            "hidden files amazon-sft keeps beside it (.NAME.lock, "
            ".NAME.amazon-sft-tmp-MACHINE-PID; a name takes 255 bytes at most): choose a "
            "shorter name"
        )
    return f"cannot write to {out_dir.parent} ({err.strerror}): choose a writable {what}"


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths; False when the platform cannot."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    rc = libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def swap_into_place(staging: Path, out_dir: Path) -> None:
    """Make ``staging`` the new ``out_dir``; the old ``out_dir`` (if any) is deleted after, and
    its mode and group are the new one's (``take_on``)."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    take_on(out_dir.stat(), staging)
    if _exchange(staging, out_dir):
        shutil.rmtree(staging)  # now holds the old output
        return
    aside = staging_name(out_dir, "old")
    out_dir.rename(aside)
    staging.rename(out_dir)
    shutil.rmtree(aside)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


PID_LIMIT = 1 << 22
"""Linux's largest ``pid_max``: a larger number is no process id of any machine (and
``os.kill`` raises ``OverflowError`` on one of 20 digits)."""


def stale_staging(out_dir: Path, name: str, any_machine: bool = False) -> str | None:
    """``tmp`` or ``old`` when ``name`` (beside ``out_dir``) is a staging folder of ``out_dir``
    left by a dead process of this machine (of any machine with ``any_machine``), else None.

    >>> stale_staging(Path("x/index"), ".index.amazon-sft-tmp-somewhere-1")  # another's
    >>> stale_staging(Path("x/index"), ".index.amazon-sft-tmp-somewhere-1", any_machine=True)
    'tmp'

    A machine's name holds no ``-`` (``_machine``), so a sibling folder's staging is never read
    as this folder's:

    >>> stale_staging(Path("x/i"), ".i.amazon-sft-tmp-x.amazon-sft-tmp-y-1", any_machine=True)

    A name without the tool's word, or whose number no process can have (a date), is a user's:
    a hostile user's trial lost ``.data.old-20240101`` and a review ``.data.old-backup-7``,
    backups beside prepare's ``--out``; export renamed ``.e2.old-1999`` into its ``--out``:

    >>> stale_staging(Path("x/data"), ".data.old-backup-7", any_machine=True)
    >>> stale_staging(Path("x/data"), ".data.amazon-sft-old-host-20240101", any_machine=True)
    """
    tagged = rf"^\.{re.escape(out_dir.name)}\.{STAGING_TAG}-(tmp|old)-([A-Za-z0-9._]+)-(\d+)$"
    m = re.match(tagged, name)
    if not m or int(m.group(3)) > PID_LIMIT:
        return None
    this_machine = m.group(2) == _machine()
    if this_machine and _pid_alive(int(m.group(3))):
        return None  # a live process of this machine: never, lock or not
    if not this_machine and not any_machine:
        return None
    return m.group(1)


def remove_stale(out_dir: Path, any_machine: bool = False) -> list[str]:
    """Delete staging folders of this machine's dead processes beside ``out_dir`` (restoring an
    old output set aside by a run killed mid-swap); returns what was done, for the log. Another
    machine's are left: whether its process lives cannot be known from here, unless the caller
    holds the folder's lock (``any_machine``: train, whose requeue lands on another node)."""
    done = []
    if not out_dir.parent.is_dir():
        return done
    for path in sorted(out_dir.parent.iterdir()):
        kind = stale_staging(out_dir, path.name, any_machine)
        if kind is None:
            continue
        if kind == "old" and not out_dir.exists():
            path.rename(out_dir)
            done.append(
                f"restored {out_dir} from {path.name} (a run was killed while replacing it)"
            )
            continue
        if path.is_symlink() or path.is_file():  # rmtree refuses a link (and must not follow
            try:  # it) or a file (synth's staging is one)
                path.unlink()
            except OSError:  # another user's in a shared folder: theirs to remove
                continue
        else:
            shutil.rmtree(path, ignore_errors=True)
        done.append(f"removed {path.name}, left by a killed run")
    for line in done:
        log.warning(line)
    return done


def take_on(made: os.stat_result, staging: Path) -> None:
    """``staging`` and what it holds with the group of the folder it replaces, and that folder's
    mode on ``staging`` itself (files keep theirs, as made inside a setgid folder): a team
    folder made for the output (setgid, group-only) was replaced by a world-readable one."""
    try:
        for path in [staging, *staging.rglob("*")]:
            if not path.is_symlink() and path.stat().st_gid != made.st_gid:
                os.chown(path, -1, made.st_gid)
        os.chmod(staging, stat.S_IMODE(made.st_mode))
    except PermissionError as err:  # not in that group: the output is whole, the group not
        log.warning(
            "could not give %s the group and mode of the folder it replaces (%s)",
            staging,
            err.strerror,
        )


def is_mount_point(path: Path) -> bool:
    """Whether ``path`` is a mount point, which no rename can replace or cross. ``ismount``
    misses a bind mount within one filesystem (the same device as its parent); the kernel's
    list of this process's mounts has it.

    >>> is_mount_point(Path("/")), is_mount_point(Path(__file__))
    (True, False)
    """
    if os.path.ismount(path):
        return True
    try:
        mounts = Path("/proc/self/mountinfo").read_text()
    except OSError:  # not Linux: ismount's answer
        return False
    real = os.path.realpath(path)
    octal = re.compile(r"\\([0-7]{3})")  # a space in a mount point is written \040
    for line in mounts.splitlines():
        fields = line.split(" ")
        if len(fields) > 4 and octal.sub(lambda m: chr(int(m[1], 8)), fields[4]) == real:
            return True
    return False


def refuse_mount_point(out_dir: Path, flag: str, what: str) -> None:
    """A one-line error for an ``out_dir`` that is a mount point, before any work: ``what`` is
    written beside it and renamed into place, which a mount point cannot take (EBUSY)."""
    from amazon_sft.errors import UserError

    if out_dir.is_dir() and is_mount_point(out_dir):
        raise UserError(
            f"{flag} {out_dir} is a mount point: {what} is written beside {flag} and renamed "
            f"into place, which a mount point cannot take; give {flag} {out_dir}/NAME"
        )
