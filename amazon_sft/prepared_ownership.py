"""Whether a folder is a ``prepare`` output that ``prepare --overwrite`` may replace: its sealed
``manifest.json`` (the integrity digest matches) and nothing but the entries prepare writes; an
index folder is proved by its ``stats.json``'s list of files, a shard folder by its four arrays.
Apart from amazon_sft.ownership (run, demo and marked folders) to keep each file one concern."""

from __future__ import annotations

import os
import re
from pathlib import Path

from amazon_sft.atomic import stale_staging
from amazon_sft.data.manifest import MANIFEST, edited_since_written, read_manifest
from amazon_sft.data.shards import ARRAYS
from amazon_sft.errors import UserError
from amazon_sft.output_lock import released_lock

PREPARED_ENTRY = re.compile(
    r"^(manifest\.json|catalogue\.jsonl|heldout\.jsonl|seen_probe\.jsonl|not_taught\.txt|"
    r"report\.json|report\.md|index|shard-\d{5})$"
)
"""Top-level entries of a prepare output (``index`` may also be built later by ``ask``)."""


def listing(names: list[str], most: int = 5) -> str:
    """``names`` sorted, the first ``most`` of them, for an error message."""
    shown = ", ".join(sorted(names)[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def check_prepare_target(out_dir: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that prepare may not replace (a file, a foreign folder).

    An absent or empty folder is always fine; a non-empty one only with ``--overwrite`` and only
    when it is a prepare output: sealed manifest, no foreign entries.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a folder: choose a folder path")
    if not out_dir.is_dir():
        return
    entries = [p.name for p in out_dir.iterdir()]
    if not entries:
        return
    if not overwrite:
        raise UserError(
            f"output {out_dir} exists and is not empty: pass --overwrite or another --out"
        )
    foreign = foreign_in_prepared(out_dir)
    if foreign:
        raise UserError(
            f"--overwrite replaces only a folder amazon-sft prepare wrote, and {out_dir} holds "
            f"{listing(foreign)}, which prepare did not write: move them out or choose "
            "another --out"
        )
    if not (out_dir / MANIFEST).is_file():
        raise UserError(
            f"--overwrite replaces only a folder amazon-sft prepare wrote, and {out_dir} has no "
            f"{MANIFEST}: remove the folder yourself or choose another --out"
        )
    try:
        manifest = read_manifest(out_dir)
    except UserError as err:
        raise UserError(
            f"--overwrite replaces only a folder amazon-sft prepare wrote, and {out_dir}'s "
            f"{MANIFEST} does not prove it ({str(err).split(': re-run')[0]}): remove the folder "
            "yourself or choose another --out"
        ) from None
    edited = edited_since_written(out_dir, manifest)
    if edited:
        raise UserError(
            f"--overwrite would replace {listing(edited)} in {out_dir}, changed since prepare "
            "wrote it: move it out (or undo the edit), or choose another --out"
        )


SHARD_FILES = frozenset(f"{name}.npy" for name in ARRAYS)
INDEX_FILES = frozenset(
    ["stats.json", "offsets.npy", "train.npy", "title_words.npy", "title_repeats.npy"]
    + [
        f"{field}/{name}"
        for field in ("title", "description")
        for name in (
            "common_rows.npy",
            "common_tids.npy",
            "data.csc.index.npy",
            "indices.csc.index.npy",
            "indptr.csc.index.npy",
            "params.index.json",
            "vocab.index.json",
        )
    ]
)
"""The files an index build writes, for an index whose ``stats.json`` does not list them (any
other file, even a ``.npy``, is someone else's)."""


def foreign_in_prepared(out_dir: Path) -> list[str]:
    """Entries of a prepared folder, at any depth, that prepare (or its index build) did not
    write: what a swap over the folder would delete."""
    foreign = [
        p.name
        for p in sorted(out_dir.iterdir())
        if not PREPARED_ENTRY.match(p.name)
        and not released_lock(p)
        and stale_staging(out_dir / "index", p.name) is None  # a killed index build's
    ]
    return foreign + _foreign_inside(out_dir)


def _foreign_inside(out_dir: Path) -> list[str]:
    """Entries inside the folders prepare writes that it did not write (the swap deletes them):
    a shard the manifest lists holds its four arrays (one it does not list is all foreign,
    whatever its files are named: a hostile user's trial); the index holds the files its
    ``stats.json`` lists."""
    foreign = []
    listed = _listed_shards(out_dir)
    for shard in sorted(out_dir.glob("shard-*")):
        if not PREPARED_ENTRY.match(shard.name):
            continue  # named at the top level already
        if shard.is_symlink() or not shard.is_dir():
            foreign.append(shard.name)
            continue
        if listed is not None and shard.name not in listed:
            foreign += [f"{shard.name}/{p.name}" for p in sorted(shard.iterdir())] or [shard.name]
            continue
        foreign += [
            f"{shard.name}/{p.name}"
            for p in sorted(shard.iterdir())
            if p.name not in SHARD_FILES or p.is_symlink() or not p.is_file()
        ]
    index = out_dir / "index"
    if index.is_symlink() or (index.exists() and not index.is_dir()):
        return [*foreign, "index"]
    return foreign + [f"index/{rel}" for rel in foreign_in_index(index)]


def foreign_in_index(index: Path) -> list[str]:
    """Files (and links) in an index folder that the index build did not write, relative to it:
    what its ``stats.json`` lists is the build's (an index from before the list: its layout,
    beside a ``stats.json`` a build wrote, which names its format; a user's own ``stats.json``
    and ``train.npy`` passed by their names, and were replaced: a hostile user's trial)."""
    if not index.is_dir():
        return []
    from amazon_sft.answering.index_checks import STATS, read_stats

    stats = read_stats(index)
    if stats is not None and stats.files is not None:
        ours = ({*stats.files} | {STATS}).__contains__
    elif stats is not None and isinstance(stats.format, int):  # an index from before the list
        ours = INDEX_FILES.__contains__
    else:
        ours = frozenset().__contains__
    foreign = []
    for root, dirs, files in os.walk(index):  # symlinks are listed, never followed
        for name in [*files, *(d for d in dirs if Path(root, d).is_symlink())]:
            rel = Path(root, name).relative_to(index).as_posix()
            if not ours(rel) or Path(root, name).is_symlink():
                foreign.append(rel)
    return sorted(foreign)


def _listed_shards(out_dir: Path) -> set[str] | None:
    """The shards the folder's manifest lists; None when it cannot be read (refused apart)."""
    try:
        return {shard.name for shard in read_manifest(out_dir).shards}
    except UserError:
        return None
