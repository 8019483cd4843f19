"""Building the catalogue index (answering/index.py reads and searches it): every title and the
opening of every description tokenized as bm25s does, indexed, and swapped into
``PREPARED/index`` whole, under the prepared folder's lock.

A loader that finds the index missing or old builds it through ``build_when_free``, which waits
for another process already building it instead of refusing it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from amazon_sft.answering.index import FORMAT, INDEX_DIR, TOKEN_PATTERN, _stopwords, usable
from amazon_sft.answering.index_checks import STATS, catalogue_stamp
from amazon_sft.atomic import remove_stale, staging_name, swap_into_place
from amazon_sft.data.manifest import refuse_a_catalogue_file
from amazon_sft.data.shards import quick_digest, sha256_file
from amazon_sft.errors import UserError, first_line


def build_index(prepared_dir: str | Path, workers: int | None = None, lock: bool = True) -> dict:
    """Index every title and description of ``catalogue.jsonl``; returns build statistics.
    ``workers``: processes that read and tokenize it (default: one per core from
    ``catalogue_tokens.POOL_LINES`` lines); the files are the same for any count. ``lock``:
    hold the prepared folder's lock, as prepare does (False: prepare's own staging folder,
    under prepare's lock)."""
    from amazon_sft.output_lock import OutputLock

    refuse_a_catalogue_file(prepared_dir)  # before a lock file is made beside it
    _catalogue_of(Path(prepared_dir))  # a mistyped folder: no lock file left beside it
    if not lock:
        return _build_index(Path(prepared_dir), workers)
    with OutputLock(Path(prepared_dir), "amazon-sft index"):
        return _build_index(Path(prepared_dir), workers)


def _catalogue_of(root: Path) -> Path:
    catalogue = root / "catalogue.jsonl"
    if not catalogue.is_file():
        raise UserError(
            f"{catalogue} not found: run amazon-sft prepare first (it writes the catalogue)"
        )
    return catalogue


def _build_index(root: Path, workers: int | None) -> dict:
    from amazon_sft.answering.batched import save_common
    from amazon_sft.answering.bm25 import FastBM25
    from amazon_sft.answering.catalogue_tokens import read_catalogue, repeated_words

    catalogue = _catalogue_of(root)
    out = root / INDEX_DIR
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(
            f"{out} is a {'symbolic link' if out.is_symlink() else 'file'}, not an index the "
            "build wrote; building the index replaces it: move it away first"
        )
    _refuse_foreign(out)  # before minutes of reading the catalogue
    start = time.perf_counter()
    # what is read, stamped before reading: a catalogue written to meanwhile is refused below
    read_stamp = catalogue_stamp(catalogue)
    whole = {**read_stamp, "sha256": sha256_file(catalogue)}
    digest = quick_digest(catalogue)
    # bm25s's tokenizer and matrix, built from flat arrays (catalogue_tokens.py, bm25.py)
    tokens = read_catalogue(catalogue, TOKEN_PATTERN, _stopwords(), workers)
    products = len(tokens.offsets)
    if not products:
        raise UserError(f"{catalogue} is empty: nothing to index")
    staging = staging_name(out)
    try:
        remove_stale(out)  # a killed build's staging folder, else prepare --overwrite refuses it
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        np.save(staging / "title_words.npy", tokens.titles.lens.astype(np.uint16).clip(1))
        # a title's repeated words: a question that repeats one as often has all of them
        np.save(
            staging / "title_repeats.npy", repeated_words(tokens.titles.ids, tokens.titles.lens)
        )
        for name in ("title", "description"):
            field = getattr(tokens, f"{name}s")
            setattr(tokens, f"{name}s", None)  # its arrays go back once it is indexed
            retriever = FastBM25()
            retriever.index_flat(field.ids, field.lens, field.vocab)
            del field
            retriever.save(str(staging / name), show_progress=False)
            save_common(staging / name, retriever.scores)
            del retriever
        np.save(staging / "offsets.npy", tokens.offsets.astype(np.int64))
        np.save(staging / "train.npy", tokens.train.astype(bool))
        stats = {
            "format": FORMAT,
            "products": products,
            "seconds": round(time.perf_counter() - start, 2),
        }
        files = {
            str(p.relative_to(staging)): quick_digest(p)
            for p in sorted(staging.rglob("*"))
            if p.is_file()
        }
        files[catalogue.name] = digest  # the index is only valid for this one
        (staging / STATS).write_text(json.dumps({**stats, "files": files, "catalogue": whole}))
        if catalogue_stamp(catalogue) != read_stamp:
            raise UserError(
                f"{catalogue} changed while it was indexed: run amazon-sft index {root} again "
                "once nothing writes to it"
            )
        _refuse_foreign(out)  # a file put there during the build: the swap would delete it
        swap_into_place(staging, out)
    except (UserError, KeyboardInterrupt):  # a Ctrl-C, or a stop (cli.STOPPABLE), too
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(
            f"cannot write the index into {root} ({first_line(err)}): make the prepared folder "
            "writable, or build it where you can with a copy"
        ) from None
    return stats


INDEX_WAIT_S = 3600.0
"""How long a loader waits for another process building the same index (an 8-rank eval, or serve
and eval started together, each found an old index and all but one were refused)."""


def refuse_unbuildable(root: Path) -> None:
    """A loader (ask, chat, serve, eval) of a prepared folder without a usable index builds it
    there, which takes writing into the folder and a lock beside it. A read-only one (a shared
    mount) was told "cannot write to X: choose a writable folder", by a command that only
    reads: it is told the index is missing and how to get one."""
    unwritable = next((p for p in (root, root.parent) if not os.access(p, os.W_OK)), None)
    if unwritable is None:
        return
    what = "an index of an older version" if (root / INDEX_DIR).exists() else "no index"
    raise UserError(
        f"{root} has {what}, and it cannot be built here ({unwritable} is not writable): run "
        f"amazon-sft index {root} as someone who can write there, or copy the folder to a "
        "writable place and give that"
    )


def build_when_free(root: Path) -> None:
    """Build the index of ``root`` for a loader: when another process holds the folder's lock
    (it is building the index, or prepare is writing the folder), wait for it, then build only
    if the index is still missing or old."""
    from amazon_sft.output_lock import LockHeld, OutputLock

    deadline, said = time.monotonic() + INDEX_WAIT_S, False
    while True:
        try:
            with OutputLock(root, "amazon-sft index"):
                if not usable(root / INDEX_DIR):  # another loader may have built it meanwhile
                    _build_index(root, None)
                return
        except LockHeld as held:
            if time.monotonic() > deadline:
                raise
            if not said:
                print(f"waiting: {str(held).split(': wait')[0]}", file=sys.stderr, flush=True)
                said = True
            time.sleep(0.5)


def _refuse_foreign(out: Path) -> None:
    """Refuse an index folder holding files the build did not write (it replaces the folder)."""
    from amazon_sft.ownership import foreign_in_index

    foreign = foreign_in_index(out)
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise UserError(
            f"{out} holds {shown} that amazon-sft index did not write; building the index "
            "replaces that folder: move them out first"
        )
