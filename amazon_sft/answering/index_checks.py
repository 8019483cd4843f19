"""Whether the index on disk is the one its catalogue was indexed into: its files as built
(sizes and sampled digests), the catalogue unchanged since (sampled, then whole when its size
or time moved), and written in the current format. A damaged or stale index is refused or
rebuilt, never half-read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from amazon_sft.data.catalogue_row import CorruptRow, catalogue_row
from amazon_sft.data.shards import quick_digest, sha256_file
from amazon_sft.errors import UserError

REDO = "re-run amazon-sft prepare (it writes catalogue.jsonl), then amazon-sft index"
STATS = "stats.json"


@dataclass(frozen=True)
class IndexStats:
    """An index's ``stats.json``, as ``index_build`` writes it: the one reader of the file, so
    that its readers do not each tolerate a damaged one in their own way."""

    format: object
    """The index format it was written in (``index.FORMAT``)."""
    files: dict | None
    """File name (relative to the index folder, and the catalogue's name) -> its quick digest;
    None where absent or not a mapping (an index from before the list, or a damaged file)."""
    catalogue: dict | None
    """The whole catalogue's ``bytes``, ``mtime_ns`` and ``sha256`` at the build; None where
    absent (an index from before it was kept)."""


def read_stats(folder: Path) -> IndexStats | None:
    """``folder``'s ``stats.json``; None where it is missing, unreadable or not a JSON object.

    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> read_stats(folder) is None
    True
    >>> _ = (folder / STATS).write_text('{"format": 3, "files": []}')
    >>> read_stats(folder)
    IndexStats(format=3, files=None, catalogue=None)
    """
    try:
        stats = json.loads((folder / STATS).read_text())
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(stats, dict):
        return None
    files, whole = stats.get("files"), stats.get("catalogue")
    return IndexStats(
        format=stats.get("format"),
        files=files if isinstance(files, dict) else None,
        catalogue=whole if isinstance(whole, dict) else None,
    )


def check_index(folder: Path, catalogue: Path) -> None:
    """The index files and the catalogue are the ones the index was built from (sizes and
    sampled digests): a damaged file or a catalogue changed since is refused, not half-read."""
    from amazon_sft.ownership import INDEX_FILES

    stats = read_stats(folder)
    if stats is None:
        raise ValueError(f"{STATS} is missing or not a JSON object")
    files = stats.files
    if files is None:
        raise ValueError(f"{STATS} has no mapping of files to digests")
    unlisted = sorted((INDEX_FILES - {STATS, *files}) | ({catalogue.name} - files.keys()))
    if unlisted:  # {} checked nothing: shifted offsets answered with unrelated records
        raise ValueError(f"{STATS} does not list {', '.join(unlisted[:3])}")
    for name, digest in files.items():
        if name == catalogue.name:
            continue  # ``check_catalogue``: its fix is another command's
        if quick_digest(folder / name) != digest:
            raise ValueError(f"{name} changed since the index was built")


def check_catalogue(folder: Path, catalogue: Path) -> None:
    """The catalogue is the one the index was built from, else a one-line error with the fix
    that works: prepare for a catalogue that is gone or cut mid-record (the index cannot be
    rebuilt from it), ``amazon-sft index`` for a whole one edited since. Only a catalogue that
    changed is read whole, to tell the two apart."""
    if not catalogue.is_file():
        raise UserError(f"{catalogue.name} is missing from {catalogue.parent}: {REDO}")
    stats = read_stats(folder)
    built_from = (stats.files or {}).get(catalogue.name) if stats else None
    if built_from is None:
        return  # a damaged stats file: ``check_index`` refuses it
    if quick_digest(catalogue) == built_from and _same_whole(catalogue, stats.catalogue):
        return
    with open(catalogue, "rb") as fh:
        for number, line in enumerate(fh, 1):
            try:
                catalogue_row(line)
            except CorruptRow as err:
                raise UserError(
                    f"{catalogue.name} changed since the index was built and its line {number} "
                    f"is cut or corrupt ({err}): {REDO}"
                ) from None
    raise UserError(
        f"{catalogue.name} changed since the index was built (edited or replaced): rebuild the "
        f"index: amazon-sft index {catalogue.parent}"
    )


def catalogue_stamp(catalogue: Path) -> dict:
    """The catalogue's size and modification time, as the index build saw them."""
    st = catalogue.stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _same_whole(catalogue: Path, whole: dict | None) -> bool:
    """The quick digest samples ~0.4 MB: a same-size edit between its blocks (one uid for
    another) passed. Unchanged size and time since the build prove nothing was written; else
    (a copy, a touch, an edit) the whole file's sha256 must match. An index built before the
    whole digest was kept proves nothing (``is_current`` has it rebuilt)."""
    if whole is None:
        return False  # nothing to prove it by (is_current rebuilds such an index)
    if catalogue_stamp(catalogue) == {k: whole.get(k) for k in ("bytes", "mtime_ns")}:
        return True
    return sha256_file(catalogue) == whole.get("sha256")


def whole_sha(folder: Path) -> str | None:
    """The sha256 of the whole catalogue the index in ``folder`` was built from (None: not
    recorded, or stats.json unreadable: ``check_index`` reports that)."""
    stats = read_stats(folder)
    return stats.catalogue.get("sha256") if stats and stats.catalogue else None


def is_current(folder: Path, index_format: int) -> bool:
    """The index in ``folder`` was written in ``index_format``, with the whole catalogue's
    stamp (an index from before it was checked by a sampled digest only), else it is rebuilt."""
    stats = read_stats(folder)
    if stats is None:
        return True  # a damaged stats file is reported by check_index, not silently rebuilt
    return stats.format == index_format and stats.catalogue is not None
