"""Stream ``trn.json`` / ``trn.json.gz`` / ``tst.json`` line by line into (uid, title, content).

Nothing is loaded whole: lines come from a buffered (optionally gzip) reader and are parsed one by
one with orjson. Bad lines are skipped and counted by reason with their first line numbers, or,
in strict mode, stop the run with the line number and the reason.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from amazon_sft.data.shards import quick_digest
from amazon_sft.errors import UserError
from amazon_sft.json_checks import first_key_twice
from amazon_sft.safe_input import require_regular_file

BOM = b"\xef\xbb\xbf"
"""A UTF-8 byte order mark some editors put before line 1: not part of the record."""
FIRST_LINES_KEPT = 5
"""How many line numbers the report keeps per skip reason."""


@dataclass
class RawRecord:
    line_no: int
    uid: str
    title: str
    content: str


@dataclass
class ReadStats:
    lines: int = 0
    bytes_read: int = 0
    skipped: Counter = field(default_factory=Counter)
    first_lines: dict[str, list[int]] = field(default_factory=dict)
    uid_derived: int = 0
    uid_coerced: int = 0
    source: str = ""
    """The file read, named in a --strict stop."""
    opened: tuple | None = None
    """The file as it was opened (``file_stamp``): an input that changes while it is read
    is refused (``check_unchanged``), not recorded as the catalogue read."""
    digest: str = ""
    """``quick_digest`` of the file read, taken at the end of its read."""

    def skip(self, reason: str, line_no: int, strict: bool, detail: str = "") -> None:
        if strict:
            where = f"{self.source} line {line_no}" if self.source else f"line {line_no}"
            raise UserError(
                f"{where}: {reason}{': ' + detail if detail else ''} (--strict): fix or remove "
                "that line, or drop --strict to skip and count such lines"
            )
        self.skipped[reason] += 1
        note_first_line(self.first_lines, reason, line_no)


def note_first_line(first_lines: dict[str, list[int]], reason: str, line_no: int) -> None:
    """Keep ``line_no`` among the first ``FIRST_LINES_KEPT`` skipped for ``reason``."""
    kept = first_lines.setdefault(reason, [])
    if len(kept) < FIRST_LINES_KEPT:
        kept.append(line_no)


UID_MAX_CHARS = 100
"""A longer uid is not an id (it would fill the prompt's record lines): skipped and counted."""


def derived_uid(title: str) -> str:
    """A stable id for a row without ``uid``: ``t-`` plus 16 hex digits of the title's hash.

    >>> derived_uid("Mog's Kittens")
    't-fdbd78b7d8a18821'
    """
    return "t-" + hashlib.blake2b(title.encode(), digest_size=8).hexdigest()


def check_input(path: Path) -> None:
    """One-line errors for an input that is missing, a folder, a pipe or device (never ending, or
    blocking at open: save it to a file first), or that cannot be opened."""
    if os.path.isdir(path):  # False, not raised, when a folder on the way is unreadable
        raise UserError(f"input {path} is a directory: pass the trn.json(.gz) file inside it")
    require_regular_file(
        path,
        "input",
        "pass the path to trn.json or trn.json.gz (prepare reads .gz itself; save a stream to a "
        "file first)",
    )
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
            if head[:2] == b"\x1f\x8b":  # what the gzip holds
                try:
                    fh.seek(0)
                    head = gzip.GzipFile(fileobj=fh).read(HEAD_BYTES)
                except (OSError, EOFError, zlib.error):  # damaged: read_records says where;
                    return  # its compressed bytes are no text to judge (a review: "old Mac")
    except OSError as err:
        raise UserError(
            f"input {path} cannot be opened ({err.strerror}): check its permissions"
        ) from None
    if why := not_json_lines(head):
        raise UserError(f"input {path} is {why}")


HEAD_BYTES = 1 << 20
"""What ``check_input`` reads of an input to name its format: a first line that is an array
and ends within it is one bad line of JSON lines, not an array file."""
_PACKED = {
    b"PK\x03\x04": "a zip archive: unzip it (LF-Amazon-1.3M.raw.zip holds trn.json.gz) and "
    "pass the trn.json.gz inside",
    b"BZh": "bzip2-compressed: decompress it (bunzip2), or gzip it; prepare reads .gz itself",
    b"\xfd7zXZ": "xz-compressed: decompress it (unxz), or gzip it; prepare reads .gz itself",
    b"\x28\xb5\x2f\xfd": "zstd-compressed: decompress it (unzstd), or gzip it",
    b"\xff\xfe": "UTF-16 text: save it as UTF-8, one JSON object a line",
    b"\xfe\xff": "UTF-16 text: save it as UTF-8, one JSON object a line",
}


def not_json_lines(head: bytes) -> str | None:
    """What the first bytes of an input say it is when it is no JSON lines (an archive, another
    compression, UTF-16, one JSON array), else None: all of these were read as "every line
    filtered out", with advice to relax the cleaning (a review).

    >>> not_json_lines(b'{"uid": "1"}\\n'), not_json_lines(b"PK\\x03\\x04...")[:13]
    (None, 'a zip archive')
    >>> not_json_lines(b'\\xef\\xbb\\xbf  [{"uid": "1"}, ')[:12], not_json_lines(b'["x"]\\n{"uid": 1}')
    ('a JSON array', None)
    >>> not_json_lines(b'[{"uid": "1"}]\\n{"uid": 2}'), not_json_lines(b'[{"uid": "1"}]\\n')[:12]
    (None, 'a JSON array')
    >>> not_json_lines(b'{"uid": "1"}\\r{"uid": "2"}\\r')[:25], not_json_lines(bytes(4096))[:21]
    ('a file whose lines end in', 'mostly NUL bytes, not')
    """
    for magic, what in _PACKED.items():
        if head.startswith(magic):
            return what
    # read as one endless line: "raise data.clean.max_line_bytes" was advice that then read
    # the whole file into memory (a hostile-input review)
    one_line = b"\n" not in head
    if one_line and head.count(b"\0") > len(head) // 2:
        return (
            "mostly NUL bytes, not text (a download cut short, or space set aside for one?): "
            "give the complete trn.json(.gz)"
        )
    if one_line and head.count(b"\r") > 1:
        return (
            "a file whose lines end in a carriage return alone (old Mac line ends): convert "
            "them first (tr '\\r' '\\n' < FILE > trn.json)"
        )
    start = head.removeprefix(BOM).lstrip()  # "[{": an array of objects, unless
    first, _, rest = start.partition(b"\n")  # a whole first line of more (one bad line)
    whole_line = first.rstrip().endswith(b"]") and bool(rest.strip())
    if start[:1] == b"[" and start[1:].lstrip()[:1] == b"{" and not whole_line:
        return (
            "a JSON array, not JSON lines: write one object a line (e.g. jq -c '.[]' FILE > "
            "trn.json)"
        )
    return None


def file_stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    """What tells a file apart from itself changed or replaced: size, mtime, inode, device."""
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev


def check_unchanged(path: Path, opened: tuple | None) -> None:
    """Refuse an input that is not the file prepare opened and read: one still being written
    (a download, ``zcat > trn.json``) or replaced meanwhile was recorded by its final size and
    digest, which launch/train_slurm.sbatch trusts to tell which catalogue PREPARED holds (a
    hostile-input review: "lines_read 40000" beside the 60-line file put in its place)."""
    try:
        now = file_stamp(os.stat(path))
    except OSError:
        now = None
    if opened is not None and now != opened:
        raise UserError(
            f"input {path} changed while prepare read it (still being written, or replaced): "
            "nothing was written; prepare again once nothing writes to it"
        )


def open_lines(path: Path) -> tuple[io.BufferedReader, io.BufferedReader | gzip.GzipFile]:
    """(raw file for progress by compressed bytes, reader that yields decompressed lines)."""
    check_input(path)
    raw = open(path, "rb")  # noqa: SIM115 - read_records closes it
    magic = raw.read(2)
    raw.seek(0)
    if magic == b"\x1f\x8b":  # gzip by content, whatever the name says
        return raw, gzip.GzipFile(fileobj=raw, mode="rb")
    return raw, raw


def bounded_lines(reader, max_line_bytes: int) -> Iterator[tuple[bytes | None, int]]:
    """(line, bytes) per line, reading at most ``max_line_bytes + 1`` bytes of a line into
    memory: a longer line is drained in 1 MiB pieces and given as (None, its length).

    >>> list(bounded_lines(io.BytesIO(b"ab\\n" + b"x" * 10 + b"\\nc"), 5))
    [(b'ab\\n', 3), (None, 11), (b'c', 1)]
    """
    while line := reader.readline(max_line_bytes + 1):
        if len(line) <= max_line_bytes:
            yield line, len(line)
            continue
        total = len(line)
        while not line.endswith(b"\n") and (line := reader.readline(1 << 20)):
            total += len(line)
        yield None, total


def read_records(
    path: Path,
    stats: ReadStats,
    strict: bool = False,
    max_line_bytes: int = 1_000_000,
) -> Iterator[RawRecord]:
    """Yield one ``RawRecord`` per usable line; count every other line in ``stats.skipped``."""
    raw, reader = open_lines(path)
    stats.opened = file_stamp(os.stat(path))  # by path, as check_unchanged reads it after
    loads = orjson.loads
    try:
        for line_no, (line, size) in enumerate(bounded_lines(reader, max_line_bytes), start=1):
            stats.lines = line_no
            stats.bytes_read = raw.tell()
            if line is None:
                stats.skip("line_too_long", line_no, strict, f"{size} bytes > {max_line_bytes}")
                continue
            if line.startswith(BOM):  # a file's first line, or a joined file's (cat a b)
                line = line[len(BOM) :]
            if not line.strip():  # no row to lose (a Windows file's last "\r\n"): never a stop
                stats.skip("blank_line", line_no, strict=False)
                continue
            try:
                obj = loads(line)
            except orjson.JSONDecodeError as err:
                reason = "invalid_utf8" if "utf-8" in str(err).lower() else "malformed_json"
                stats.skip(reason, line_no, strict, str(err))
                continue
            if not isinstance(obj, dict):
                stats.skip("not_an_object", line_no, strict, type(obj).__name__)
                continue
            if (twice := repeated_key(line)) is not None:
                stats.skip("key_repeated", line_no, strict, twice)
                continue
            record = _to_record(obj, line_no, stats, strict)
            if record is not None:
                yield record
        # at the read's end, not after the later stages (hours at 1.3M rows, in which a touch
        # or an NFS remount would have thrown the whole prepare away: a review)
        check_unchanged(path, stats.opened)
        stats.digest = quick_digest(path)  # the same catalogue at another path
        check_unchanged(path, stats.opened)  # ... nor while its digest was taken
    except (OSError, EOFError, zlib.error) as err:  # zlib.error (corrupt deflate) is no OSError
        raise UserError(
            f"input {path} could not be read at line {stats.lines + 1} ({err}): is it a "
            "complete file, not corrupted? (`gzip -t FILE` checks a .gz)"
        ) from None
    finally:
        raw.close()


_QUOTED_KEYS = (b'"uid"', b'"title"', b'"content"')
_ESCAPED_LETTER = re.compile(rb"\\u00[67][0-9a-fA-F]")
"""A lowercase ASCII letter written as an escape (``"t\\u0069tle"``): no JSON writer escapes
one, so a line holding it is read again; real rows' escapes are of other characters."""


def repeated_key(line: bytes) -> str | None:
    """A key the line's JSON gives twice, looked for when a key prepare reads (uid, title,
    content) may be one of them: JSON readers keep the last, so a row would be read as one of
    its two titles, silently. The cheap test first, on every line: the key's quoted name twice
    (inside a value a quote is escaped, so it is a key or that exact value); only then the line
    read again (``first_key_twice``); so is a line with a letter escaped, which may spell a
    key another way (a hostile-input review: ``"t\\u0069tle"`` gave the row its second title).

    >>> repeated_key(b'{"title": "a", "content": "b", "title": "c"}')
    'title'
    >>> repeated_key(b'{"title": "a", "content": "b", "t\\u0069tle": "c"}')
    'title'
    >>> repeated_key(b'{"title": "title", "content": "b"}') is None
    True
    """
    escaped = _ESCAPED_LETTER.search(line) is not None
    if not escaped and not any(line.count(quoted) > 1 for quoted in _QUOTED_KEYS):
        return None
    return first_key_twice(line)


def _to_record(obj: dict, line_no: int, stats: ReadStats, strict: bool) -> RawRecord | None:
    title = obj.get("title")
    content = obj.get("content")
    if title is None:
        stats.skip("missing_title", line_no, strict)
        return None
    if content is None:
        stats.skip("missing_content", line_no, strict)
        return None
    if not isinstance(title, str):
        stats.skip("title_not_string", line_no, strict, type(title).__name__)
        return None
    if not isinstance(content, str):
        stats.skip("content_not_string", line_no, strict, type(content).__name__)
        return None
    uid = obj.get("uid")
    if uid is None or uid == "":
        uid = derived_uid(title)
        stats.uid_derived += 1
    elif not isinstance(uid, str):
        if not isinstance(uid, int) or isinstance(uid, bool):
            stats.skip("uid_bad_type", line_no, strict, type(uid).__name__)
            return None
        uid = str(uid)  # a number: leading zeros are already gone, but keep it usable
        stats.uid_coerced += 1
    if not citable(uid):
        stats.skip("uid_not_citable", line_no, strict, uid[:40])
        return None
    return RawRecord(line_no, uid, title, content)


def citable(uid: str) -> bool:
    """Whether answers can cite ``uid`` as ``[source: UID]``: read back up to the first space or
    bracket, so those (and control characters) would turn a right citation into none or into
    another uid; and at most ``UID_MAX_CHARS`` (an ASIN has 10).

    >>> citable("0001360000"), citable("t-fdbd78b7d8a18821"), citable("B00 MOG K"), citable("B01]x")
    (True, True, False, False)
    """
    return (
        len(uid) <= UID_MAX_CHARS
        and uid.isprintable()
        and not any(c.isspace() or c in "[]" for c in uid)
    )
