"""What an output folder belongs to, and one writer at a time.

A command replaces or deletes only what it can prove it wrote:

- a ``prepare`` output is proved by its sealed ``manifest.json`` (the integrity digest matches)
  and by holding nothing but the entries prepare writes; ``--overwrite`` of anything else is
  refused, naming the foreign entries, since the swap would delete them;
- a training run folder is proved by the marker ``.amazon_sft_run.json`` that the run writes
  before anything else (or, for folders from before the marker, by complete checkpoints). A run
  never writes over a ``config.yaml``, ``metrics.jsonl``, ... it cannot prove it wrote, and
  ``overwrite=true`` moves the previous run's outputs aside into ``previous/<UTC time>/`` instead
  of deleting them. Its ``final/`` lists what its save wrote (``.amazon_sft_saved.json``): a run
  holding anything else there is refused before training, since the next save replaces
  ``final/``, and one put there while it trained is kept (the old ``final/`` set aside into
  ``previous/``). Checkpoints are ``checkpoints/step-<8 digits>`` only: a user's copy beside them
  ("step-00000300-best") is neither resumed from nor pruned.

- an eval report folder: ``amazon_sft.eval_ownership``;
- an index folder is proved by its ``stats.json``'s list of files (a prepare ``--overwrite`` or
  an index build that would delete anything else is refused), a shard folder by its four arrays;
- a demo folder is new, empty, or marked ``.amazon_sft_demo.json`` by an earlier demo;
- a generated catalogue (``synth``, one file) by the record beside it:
  ``amazon_sft.synth_ownership``.

``OutputLock`` (one writer a folder) is in ``amazon_sft.output_lock``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from amazon_sft import __version__
from amazon_sft.errors import UserError
from amazon_sft.prepared_ownership import (  # noqa: F401 - re-exported: callers import them here
    INDEX_FILES,
    PREPARED_ENTRY,
    SHARD_FILES,
    check_prepare_target,
    foreign_in_index,
    listing,
)

RUN_MARKER = ".amazon_sft_run.json"
RUN_OUTPUTS = (
    "metrics.jsonl",
    "checkpoints",
    "final",
    "logs",
    "config.yaml",
    "config_changes.jsonl",
)
"""What a training run writes into ``out_dir`` (besides its marker)."""
PREVIOUS_RUNS = "previous"
SAVED_LIST = ".amazon_sft_saved.json"
"""In a saved ``final/``: the entries that save wrote, each with its digest (what a later save
of the run may replace, as long as it is as saved)."""
FINAL_ENTRY = re.compile(
    r"^(README\.md|run_summary\.json|amazon_sft_config\.yaml|trained_on\.json|checksums\.json|"
    r"(generation_|adapter_)?config\.json|.+\.safetensors(\.index\.json)?|tokenizer(\.json|"
    r"_config\.json|\.model)|special_tokens_map\.json|added_tokens\.json|chat_template\.jinja|"
    r"vocab\.(json|txt)|merges\.txt|question_templates\.yaml)$"
)
"""What a save writes into ``final/``, read where its list of entries (``SAVED_LIST``) is gone
or from before the list."""

log = logging.getLogger("amazon_sft.ownership")


CHECKPOINT_NAME = re.compile(r"step-\d{8,}")
"""What ``checkpointing.checkpoint_dir`` names: a user's copy ("step-00000003-backup",
"step-best") is neither resumed from, nor pruned, nor taken for proof of a run."""


COMPLETE = "COMPLETE"
"""Written last into a checkpoint: a folder without it was interrupted mid-save."""


def complete_checkpoints(out_dir: Path) -> list[Path]:
    """A run's complete checkpoints, oldest first (here, not in ``checkpointing``, which imports
    this module: both need them)."""
    root = out_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.glob("step-*")
        if CHECKPOINT_NAME.fullmatch(p.name) and p.is_dir() and (p / COMPLETE).is_file()
    )


def _legacy_run(out_dir: Path) -> bool:
    """A run folder from before the marker: its complete checkpoints prove it."""
    return any((p / "trainer_state.json").is_file() for p in complete_checkpoints(out_dir))


def saved_entries(folder: Path) -> dict[str, str]:
    """What ``SAVED_LIST`` records of a saved ``final/``: each entry's ``quick_digest`` (a
    whole small file: a model card, a generation config), "" for a folder."""
    from amazon_sft.data.shards import quick_digest

    return {
        p.name: quick_digest(p) if p.is_file() else ""
        for p in sorted(folder.iterdir())
        if p.name != SAVED_LIST
    }


def foreign_in_final(final: Path) -> list[str]:
    """Entries of a run's ``final/`` that no save of the run wrote (a user's notes, an eval
    report), or that changed since (a model card the user edited: a hostile review): the next
    save swaps a new folder over ``final/`` and would delete them."""
    from amazon_sft.data.shards import quick_digest

    if not final.is_dir():
        return []
    try:
        listed = json.loads((final / SAVED_LIST).read_text())
    except (OSError, ValueError, TypeError):
        listed = None  # saved before the list: the names a save writes
    names = [p.name for p in final.iterdir() if p.name != SAVED_LIST]
    if isinstance(listed, dict):  # each entry as saved (a list, from before: names only)
        return sorted(
            n
            for n in names
            if n not in listed
            or (listed[n] and (not (final / n).is_file() or quick_digest(final / n) != listed[n]))
        )
    ours = (lambda n: n in listed) if isinstance(listed, list) else FINAL_ENTRY.match
    return sorted(n for n in names if not ours(n))


def run_outputs_present(out_dir: Path) -> list[str]:
    return [name for name in RUN_OUTPUTS if (out_dir / name).exists()]


def is_our_run(out_dir: Path) -> bool:
    return (out_dir / RUN_MARKER).is_file() or _legacy_run(out_dir)


def refuse_link_to_nowhere(out_dir: Path, flag: str) -> None:
    """An output named by a link whose folder does not exist: one line (``mkdir`` raised
    FileExistsError after the lock had made the link's missing parent)."""
    if out_dir.is_symlink() and not out_dir.exists():
        raise UserError(
            f"{flag}{out_dir} is a link to {os.readlink(out_dir)}, which does not exist: create "
            "that folder or name another"
        )


def refuse_run_in_data(out_dir: Path, data_path: str) -> None:
    """A run's folder inside the prepared data's: its checkpoints and final/ would sit among the
    shards, and ``prepare --overwrite`` of that folder refuse it.

    >>> import tempfile; data = Path(tempfile.mkdtemp())
    >>> refuse_run_in_data(data, str(data))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    amazon_sft.errors.UserError: out_dir=... is inside data.path=..., the prepared data: ...
    >>> refuse_run_in_data(data / "run", str(data))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    amazon_sft.errors.UserError: out_dir=... is inside data.path=...
    """
    data = Path(data_path).resolve()
    if data.is_dir() and (out_dir.resolve() == data or data in out_dir.resolve().parents):
        raise UserError(
            f"out_dir={out_dir} is inside data.path={data_path}, the prepared data: give the run "
            "another out_dir (e.g. runs/x)"
        )


def refuse_moving_inputs(out_dir: Path, overwrite: bool, inputs: dict[str, str | None]) -> None:
    """``overwrite=true`` moves the previous run's outputs to ``previous/``: an input the run
    loads (``model.path=RUN/final`` to continue from it) would be moved away before it is read.
    ``inputs``: setting -> path (values that are not local paths are skipped)."""
    present = run_outputs_present(out_dir) if overwrite else []
    moved = [(out_dir / name).resolve() for name in present]
    for key, value in inputs.items():
        if not value or not Path(value).exists():
            continue
        where = Path(value).resolve()
        if any(where == m or m in where.parents for m in moved):
            raise UserError(
                f"{key}={value} is inside the previous run in out_dir={out_dir}, which "
                "overwrite=true moves to previous/ before the model loads: copy it out first, "
                "or write to another out_dir"
            )


def check_run_dir(out_dir_text: str, resume: str, overwrite: bool) -> None:
    """Read-only checks every rank makes before anything is written (same answer on each)."""
    if not out_dir_text.strip():
        raise UserError("out_dir is empty: give the folder the run writes to, e.g. out_dir=runs/x")
    out_dir = Path(out_dir_text)
    refuse_link_to_nowhere(out_dir, "out_dir=")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"out_dir={out_dir} is a file: choose a folder")
    if overwrite and resume != "none":
        raise UserError(f"overwrite=true starts over; it cannot go with resume={resume}")
    present = run_outputs_present(out_dir)
    if not present:
        return
    if not is_our_run(out_dir):
        raise UserError(
            f"out_dir={out_dir} holds {listing(present)} that amazon-sft train did not write "
            f"(no {RUN_MARKER}): a run would replace them; move them out or choose another out_dir"
        )
    _refuse_odd_entries(out_dir, overwrite)
    foreign = foreign_in_final(out_dir / "final") if not overwrite else []
    if foreign:
        raise UserError(
            f"out_dir={out_dir}: final/ holds {listing(foreign)} that amazon-sft train did not "
            "write, or edited since it saved them, and the run's next save replaces final/: "
            "move them out of final/ first"
        )
    no_checkpoint = not complete_checkpoints(out_dir)
    saved = not no_checkpoint or "final" in present  # not a launch killed before its first save
    if resume not in ("none", "auto") and saved and not inside_run(Path(resume), out_dir):
        # another run's checkpoint would replace this run's final/ and mix their metrics (a
        # requeue of a branch from it goes on from the branch's own: resuming.branch_goes_on)
        raise UserError(
            f"resume={resume} is another run's checkpoint and out_dir={out_dir} already holds "
            f"a run ({', '.join(present)}): resume=auto to go on with {out_dir}'s own run, or a "
            f"new out_dir to go on from {resume}"
        )
    if resume == "auto" and "final" in present and no_checkpoint:
        # starting over there would write the new model into the finished run's final/
        raise UserError(
            f"out_dir={out_dir} holds a finished run (final/) and no checkpoint to resume from: "
            f"pass overwrite=true to start over (the old run is moved to {PREVIOUS_RUNS}/), or "
            "another out_dir"
        )
    if resume == "none" and not overwrite:
        found = [name for name in present if name in RUN_OUTPUTS[:3]]
        if found:
            raise UserError(
                f"out_dir={out_dir} already holds a run ({', '.join(found)}): pass resume=auto "
                "to continue it, overwrite=true to start over there (the old run is moved to "
                f"{PREVIOUS_RUNS}/), or another out_dir"
            )


def _refuse_odd_entries(out_dir: Path, overwrite: bool) -> None:
    """A ``final/`` that is a link (a save replaces final/ by renames, and rmtree refuses a
    link: a traceback after the whole run, the user's link renamed aside), and, for
    ``overwrite``, a ``previous`` that is not a folder (the old run is moved into it)."""
    final = out_dir / "final"
    if final.is_symlink():
        raise UserError(
            f"out_dir={out_dir}: final/ is a symbolic link (to {os.readlink(final)}), and a "
            "save replaces final/: put the folder it points to in its place, or choose another "
            "out_dir"
        )
    previous = out_dir / PREVIOUS_RUNS
    if overwrite and (previous.is_symlink() or previous.exists()) and not previous.is_dir():
        raise UserError(
            f"out_dir={out_dir}: {PREVIOUS_RUNS} is not a folder, and overwrite=true moves the "
            f"old run into {PREVIOUS_RUNS}/: move it out of {out_dir} first"
        )


def inside_run(named: Path, out_dir: Path) -> bool:
    """``resume``'s folder is ``out_dir``'s: a name resume reads inside ``out_dir``
    (``step-N``, ``checkpoints/step-N``), or a path that resolves under it."""
    if not (named.is_dir() or named.is_absolute()):
        return True
    return out_dir.resolve() in named.resolve().parents


def claim_run_dir(out_dir: Path, resume: str, overwrite: bool) -> str | None:
    """On the main process, under the folder's lock: check again, move a previous run aside when
    ``overwrite``, write the marker. Returns where the previous run went, if it was moved. A
    failure on the way (a full disk, a rename refused) puts back what was moved and removes
    the folder it made: nothing was written."""
    check_run_dir(str(out_dir), resume, overwrite)
    aside = None
    present = run_outputs_present(out_dir)
    made = not out_dir.exists()
    try:  # under the lock: nobody else puts anything there
        if overwrite and present:
            aside = out_dir / PREVIOUS_RUNS / utc_stamp()
            aside.mkdir(parents=True)
            for name in [n for n in [*present, RUN_MARKER] if (out_dir / n).exists()]:
                (out_dir / name).rename(aside / name)
        out_dir.mkdir(parents=True, exist_ok=True)
        marker = out_dir / RUN_MARKER
        if not marker.is_file():
            from amazon_sft.atomic import write_text_whole

            note = {"written_by": f"amazon_sft {__version__} train", "created": now_iso()}
            # whole or not at all: an empty marker (a full disk) would claim the folder
            write_text_whole(marker, json.dumps(note) + "\n")
    except OSError:
        if aside is not None:  # also when only previous/ was made (a full disk)
            _move_back(out_dir, aside)  # the previous run back where it was, whole
        if made:
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise
    return None if aside is None else str(aside)


@contextmanager
def run_dir_given_back(out_dir: Path, made_here: bool, moved: str | None = None) -> Iterator[None]:
    """A refusal before the first step (a mistyped model.path, resume=step-9) leaves the run
    folder as it was: the folder this launch made (``made_here``) goes, when it holds nothing
    but the marker and empty folders (a typo leaves nothing to clean), and a previous run
    ``overwrite=true`` moved aside (``moved``) comes back (it stayed in ``previous/``, and the
    next ``resume=auto`` started over at step 0: an ML engineer's trial). (The lock file beside
    it stays: ``output_lock``.)"""
    try:
        yield
    except UserError:
        if out_dir.is_dir() and not _written_since(out_dir):
            if moved is not None:
                # this run's marker goes: the previous run's comes back with it
                (out_dir / RUN_MARKER).unlink(missing_ok=True)
                _move_back(out_dir, Path(moved))
                log.info("refused before its first step: the previous run is back in %s", out_dir)
            elif made_here:
                (out_dir / RUN_MARKER).unlink(missing_ok=True)
                for folder in sorted(out_dir.rglob("*"), reverse=True):  # deepest first
                    folder.rmdir()
                out_dir.rmdir()
        raise


def _written_since(out_dir: Path) -> bool:
    """Whether the run wrote any file into ``out_dir`` (its marker, ``previous/`` aside)."""
    previous = out_dir / PREVIOUS_RUNS
    return any(
        not p.is_dir() and p.name != RUN_MARKER and previous not in p.parents
        for p in out_dir.rglob("*")
    )


def _move_back(out_dir: Path, aside: Path) -> None:
    """The previous run from ``aside`` back into ``out_dir`` (a refusal before the first step,
    or a claim that failed half-way)."""
    for entry in sorted(aside.iterdir()) if aside.is_dir() else ():
        with contextlib.suppress(OSError):  # an empty folder this run made: taken over
            (out_dir / entry.name).rmdir()
        entry.rename(out_dir / entry.name)
    for folder in (aside, aside.parent):
        with contextlib.suppress(OSError):  # an earlier previous/ stays
            folder.rmdir()


DEMO_MARKER = ".amazon_sft_demo.json"


def claim_marked_dir(out_dir: Path, marker: str, what: str, earlier: bool = False) -> None:
    """A folder ``what`` writes several files into (the demo, the GPU check): new, empty, or one
    an earlier run of it wrote (``marker``, or ``earlier``: its proof from before the marker),
    else refused naming what is there; then marked."""
    refuse_link_to_nowhere(out_dir, "--out ")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file: name a new folder for the {what}")
    entries = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    mark = out_dir / marker  # a link proves nothing: writing the mark would write where it points
    marked = mark.is_file() and not mark.is_symlink()
    if entries and not (marked or (earlier and not mark.is_symlink())):
        why = f"its {marker} is a link" if mark.is_symlink() else f"no {marker}"
        raise UserError(
            f"--out {out_dir} holds {listing(entries)} and is not a {what} folder ({why}): "
            f"the {what} would write over them; name a new folder"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    if not marked:  # whole or not at all: a kill mid-write left a marker that proved nothing
        from amazon_sft.atomic import write_text_whole

        note = {"written_by": f"amazon_sft {__version__} {what}", "created": now_iso()}
        write_text_whole(mark, json.dumps(note) + "\n")


def claim_demo_dir(out_dir: Path) -> None:
    """The demo writes a dozen files and folders into ``--out``: a new or empty folder, or one an
    earlier demo wrote (its marker, or from before the marker its ``demo.log``), else refused."""
    log = out_dir / "demo.log"
    earlier = log.is_file() and log.read_bytes()[:13] == b"$ amazon-sft "
    claim_marked_dir(out_dir, DEMO_MARKER, "demo", earlier)


def utc_stamp() -> str:
    """The time now as a folder name for what is set aside (``previous/<stamp>``), sortable."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def now_iso() -> str:
    """The time now, ISO 8601 in UTC to the second (the markers' ``created``)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
