"""``make clean``: a demo or GPU-check folder goes only when all of it, at every depth, is what
its tools wrote; otherwise it is kept whole and the user's files are named.

The folder's marker proves the tool made it, not that everything in it is the tool's: checking
its top-level names only, ``make clean`` deleted a user's ``eval/my_analysis.md`` and
``run/my_run_notes.txt`` with the rest (a hostile review). Each part is checked as the command
that writes it checks it before replacing it (prepare's, eval's and train's own rules), plus the
names the command writes; anything else is the user's.

    python -m amazon_sft.clean_outputs DEMO_DIR [gpu_check_out]
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from amazon_sft.atomic import STAGING_TAG
from amazon_sft.errors import UserError
from amazon_sft.gpu_check_files import FILES as GPU_CHECK_FILES
from amazon_sft.gpu_check_files import MARKER as GPU_MARKER
from amazon_sft.gpu_check_files import not_as_written

STAGING = re.compile(rf"\..+\.{STAGING_TAG}-(tmp|old)-[A-Za-z0-9._]+-\d+(\.[A-Za-z0-9]+)?")
"""Killed runs' staging files and folders beside an output:
``.NAME.amazon-sft-tmp-MACHINE-PID`` (or ``old``; ``atomic.staging_name``), with the name's
suffix where it keeps one."""
LOCK_NOTE = b"pid "


def is_litter(path: Path) -> bool:
    """A killed run's staging entry, or an output lock file (``output_lock``: empty, or its
    holder's note). Matched by name alone, any hidden ``.X.tmp-*`` or ``.X.lock`` went, a user's
    folder with all in it (a hostile review)."""
    if path.is_symlink():
        return False
    if path.name.startswith(".") and path.name.endswith(".lock"):
        if not path.is_file() or path.stat().st_size > 4096:
            return False
        with open(path, "rb") as fh:
            head = fh.read(len(LOCK_NOTE))
        return not head or head == LOCK_NOTE
    return bool(STAGING.fullmatch(path.name))


TENSORBOARD = re.compile(r"events\.out\.tfevents\..+")


def _tensorboard_on(run: Path) -> bool:
    """Whether the run's resolved config.yaml has it log to TensorBoard (the demo trains with
    ``train.trackers=[]``: an events file in its logs/ was a user's, and make clean took it)."""
    import yaml

    try:
        trackers = yaml.safe_load((run / "config.yaml").read_text())["train"]["trackers"]
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return False
    return isinstance(trackers, list) and "tensorboard" in trackers


def foreign_in_run(run: Path) -> list[str]:
    """What in a training run folder (or one set aside in ``previous/``) no run wrote."""
    from amazon_sft.checkpoint_staging import killed_save
    from amazon_sft.checkpointing import not_written_by_its_save
    from amazon_sft.ownership import (
        CHECKPOINT_NAME,
        PREVIOUS_RUNS,
        RUN_MARKER,
        RUN_OUTPUTS,
        SAVED_LIST,
        foreign_in_final,
    )

    found = []
    for entry in sorted(run.iterdir()):
        name = entry.name
        folder = entry.is_dir() and not entry.is_symlink()
        if name in ("final", "checkpoints", "logs", PREVIOUS_RUNS) and not folder:
            found.append(name)  # a file (or link) of a folder's name is a user's (a review)
        elif name == "final":
            found += [f"final/{n}" for n in foreign_in_final(entry) if n != SAVED_LIST]
        elif name == "checkpoints" and entry.is_dir():
            for step in sorted(entry.iterdir()):
                if CHECKPOINT_NAME.fullmatch(step.name) and step.is_dir():
                    mine = not_written_by_its_save(step)
                    found += [f"checkpoints/{step.name}/{n}" for n in mine]
                elif not (killed_save(step) or is_litter(step)):
                    found.append(f"checkpoints/{step.name}")
        elif name == "logs" and entry.is_dir():
            tracked = _tensorboard_on(run)  # else an events file is the user's (a baseline)
            found += [
                f"logs/{p.relative_to(entry)}"
                for p in entry.rglob("*")
                if not p.is_dir() and not (tracked and TENSORBOARD.fullmatch(p.name))
            ]
        elif name == PREVIOUS_RUNS and entry.is_dir():
            for earlier in sorted(entry.iterdir()):
                inside = foreign_in_run(earlier) if earlier.is_dir() else [""]
                found += [f"{PREVIOUS_RUNS}/{earlier.name}/{n}".rstrip("/") for n in inside]
        elif name not in RUN_OUTPUTS and name != RUN_MARKER and not is_litter(entry):
            found.append(name)
    return found


def foreign_in_eval(report: Path) -> tuple[list[str], list[str]]:
    """(files in an eval report folder eval did not write, report files edited since)."""
    from amazon_sft.eval_ownership import (
        EVAL_MARKER,
        EVAL_OUTPUTS,
        changed_since_eval,
        is_our_eval,
    )

    theirs = [
        p.name
        for p in sorted(report.iterdir())
        if p.name not in (*EVAL_OUTPUTS, EVAL_MARKER) and not is_litter(p)
    ]
    present = [n for n in EVAL_OUTPUTS if (report / n).exists()]
    if present and not is_our_eval(report):
        return theirs + present, []
    return theirs, changed_since_eval(report)


def foreign_in_demo(out: Path) -> tuple[list[str], list[str]]:
    """(what in a demo folder, at any depth, no demo step wrote; what it wrote, edited since)."""
    from amazon_sft.data.manifest import edited_since_written, read_manifest
    from amazon_sft.demo_files import DEMO_FILES, RECORD, edited_since_demo, not_written_by_demo
    from amazon_sft.ownership import DEMO_MARKER
    from amazon_sft.prepared_ownership import foreign_in_prepared

    present = [n for n in DEMO_FILES if (out / n).is_file()]
    theirs = not_written_by_demo(out, present)
    edited = [n for n in edited_since_demo(out, present) if n not in theirs]
    for entry in sorted(out.iterdir()):
        name = entry.name
        if name in (DEMO_MARKER, RECORD, *DEMO_FILES) or is_litter(entry):
            continue
        if not entry.is_dir() or entry.is_symlink():
            theirs.append(name)
        elif name == "prepared":
            if not any(entry.iterdir()):
                continue  # a prepare that wrote nothing yet
            theirs += [f"prepared/{n}" for n in foreign_in_prepared(entry)]
            try:
                edited += [
                    f"prepared/{n}" for n in edited_since_written(entry, read_manifest(entry))
                ]
            except UserError:  # no sealed manifest: not a whole prepare output
                theirs.append("prepared/manifest.json (missing or not prepare's)")
        elif name in ("eval", "eval-oracle"):
            mine, changed = foreign_in_eval(entry)
            theirs += [f"{name}/{n}" for n in mine]
            edited += [f"{name}/{n}" for n in changed]
        elif name == "run":
            theirs += [f"run/{n}" for n in foreign_in_run(entry)]
        else:
            theirs.append(name)
    return theirs, edited


def foreign_in_gpu_check(out: Path) -> tuple[list[str], list[str]]:
    """(what in the GPU check's folder it did not write; edited since), its demo/ as a demo's."""
    theirs, edited = not_as_written(out)
    for entry in sorted(out.iterdir()):
        name = entry.name
        if name in (*GPU_CHECK_FILES, GPU_MARKER) or is_litter(entry):
            continue
        if name == "demo" and entry.is_dir() and not entry.is_symlink() and _marked(entry):
            mine, changed = foreign_in_demo(entry)
            theirs += [f"demo/{n}" for n in mine]
            edited += [f"demo/{n}" for n in changed]
        else:
            theirs.append(name)
    return theirs, edited


def _marked(folder: Path) -> bool:
    from amazon_sft.ownership import DEMO_MARKER

    return (folder / DEMO_MARKER).is_file()


def _shown(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _them(names: list[str]) -> str:
    return "it" if len(names) == 1 else "them"


def clean(folder: Path) -> str:
    """Remove ``folder`` (and its lock beside it) if a demo or the GPU check wrote all of it;
    returns the line to print."""
    from amazon_sft.ownership import DEMO_MARKER

    if not folder.exists() and not folder.is_symlink():
        return ""
    if folder.is_symlink() or not folder.is_dir():
        return f"make clean: kept {folder}: not a folder make demo / make gpu-check wrote"
    if (folder / DEMO_MARKER).is_file():
        theirs, edited = foreign_in_demo(folder)
    elif (folder / GPU_MARKER).is_file():
        theirs, edited = foreign_in_gpu_check(folder)
    else:
        return (
            f"make clean: kept {folder}: no {DEMO_MARKER} or {GPU_MARKER} in it, so make demo / "
            "make gpu-check did not write it; remove it yourself"
        )
    held = []
    if theirs:
        held.append(f"{_shown(theirs)}, which make demo / make gpu-check did not write")
    if edited:
        held.append(f"{_shown(edited)}, edited since it wrote {_them(edited)}")
    if held:
        return (
            f"make clean: kept {folder}: it holds {'; and '.join(held)}. Move what you keep "
            "out of the folder, or remove the folder yourself"
        )
    shutil.rmtree(folder)
    (folder.parent / f".{folder.name}.lock").unlink(missing_ok=True)
    return f"removed {folder}"


def main(argv: list[str] | None = None) -> int:
    for name in sys.argv[1:] if argv is None else argv:
        line = clean(Path(name))
        if line:
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
