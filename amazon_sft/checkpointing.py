"""Resumable checkpoints: written to a temporary folder, marked COMPLETE, renamed; newest K kept.

A checkpoint is ``accelerator.save_state`` (model, optimizer, scheduler, every rank's RNG; the
DeepSpeed engine's own shards under DeepSpeed; a LoRA run's frozen base left out,
trainable_state.py) plus ``trainer_state.json`` with the step and the
loader's integer cursor, so a resumed run reads exactly the rows the interrupted one had not.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pickle
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from amazon_sft.atomic import STAGING_TAG, staging_name, swap_into_place
from amazon_sft.checkpoint_checksums import (
    CHECKSUMS,
    RUN_CONFIG,
    STATE,
    CorruptCheckpoint,
    verify_checkpoint,
    write_checksums,
)
from amazon_sft.checkpoint_staging import (
    SAVE_MARK,
    SAVE_STAGING,
    clear_staging,
    discard_cut_save,
    end_staging,
    start_staging,
)
from amazon_sft.distributed import agreed
from amazon_sft.errors import UserError
from amazon_sft.ownership import COMPLETE, complete_checkpoints, utc_stamp
from amazon_sft.run_files import read_run_summary
from amazon_sft.tied_weights import tied_weights_said_once
from amazon_sft.trainable_state import load_kwargs, trainable_only
from amazon_sft.trainer_state import StepMismatch, TrainerState, read_trainer_state

log = logging.getLogger(__name__)


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    return out_dir / "checkpoints" / f"step-{step:08d}"


SET_ASIDE = ".set_aside"
"""Where a run resumed from an older checkpoint moves the newer ones of its ``out_dir``."""


def set_aside_newer(out_dir: Path, step: int) -> list[str]:
    """Move ``out_dir``'s complete checkpoints newer than ``step`` into ``checkpoints/.set_aside``
    (one of the same name already there, an earlier branch's, is kept: the new one gets the time
    it moved as a suffix): a run resumed from an older checkpoint left them in
    place, retention then deleted its branch point, and the next ``resume=auto`` (a requeue)
    went on from the abandoned run; and ``final/`` when it was saved after ``step`` (the new
    branch's save replaced it). Moved, not deleted: they are the user's. Returns the names."""
    moved = []
    for path in complete_checkpoints(out_dir):
        found = re.fullmatch(r"step-(\d+)", path.name)
        if found is None or int(found.group(1)) <= step:
            continue
        aside = path.parent / SET_ASIDE
        aside.mkdir(exist_ok=True)
        target = aside / path.name
        if target.exists():  # an earlier branch's: kept beside it, under the time it moved
            target = aside / f"{path.name}-{utc_stamp()}"
        path.rename(target)
        moved.append(path.name)
    final = out_dir / "final"
    steps = _final_steps(final)
    if (
        steps is not None and steps > step
    ):  # the abandoned branch's model: the next save replaces it
        aside = out_dir / "checkpoints" / SET_ASIDE
        aside.mkdir(parents=True, exist_ok=True)
        target = aside / f"final-step-{steps:08d}"
        if target.exists():
            target = aside / f"{target.name}-{utc_stamp()}"
        final.rename(target)
        moved.append(f"final/ (step {steps})")
    return moved


def _final_steps(final: Path) -> int | None:
    """The step ``final/`` was saved at (its ``run_summary.json``), None without one."""
    saved = read_run_summary(final)
    return saved.steps if saved else None


def resume_candidates(resume: str, out_dir: Path) -> list[Path]:
    """Checkpoints to try, in order: ``none`` -> none; ``auto`` -> every complete checkpoint,
    newest first (an unusable one gives way to the one before); else that folder."""
    if resume == "none":
        return []
    if resume == "auto":
        return complete_checkpoints(out_dir)[::-1]
    path = checkpoint_named(resume, out_dir)
    if not path.is_dir():
        # another run's checkpoints folder named: list that run's checkpoints, not this one's
        run = path.parent.parent if path.parent.name == "checkpoints" else out_dir
        run = run if run.is_dir() else out_dir
        have = ", ".join(p.name for p in complete_checkpoints(run)) or "none"
        raise UserError(
            f"resume={resume}: no such checkpoint folder (looked in the working folder and in "
            f"{out_dir}; {run}'s complete checkpoints: {have}): give one of them, or resume=auto"
        )
    if not (path / COMPLETE).is_file():
        raise UserError(f"resume={resume}: not a complete checkpoint folder (no {COMPLETE} file)")
    return [path]


def checkpoint_named(resume: str, out_dir: Path) -> Path:
    """The folder ``resume`` names: a path as given (from the working folder), else one inside
    ``out_dir``; ``step-N`` or ``checkpoints/step-N`` with N unpadded is ``out_dir``'s, and
    ``<run>/checkpoints/step-N`` that run's ``step-0000000N``."""
    path = Path(resume)
    if path.is_dir():
        return path
    named = re.fullmatch(r"(?:checkpoints/)?step-(\d+)/?", resume)
    if named:
        return checkpoint_dir(out_dir, int(named.group(1)))
    if (step := re.fullmatch(r"step-(\d+)", path.name)) and path.parent.name == "checkpoints":
        padded = path.parent / f"step-{int(step.group(1)):08d}"  # another run's, unpadded
        if padded.is_dir():
            return padded
    return path if path.is_absolute() else out_dir / path


def clear_killed_saves(out_dir: Path) -> list[str]:
    """What saves killed on any node left in a run's folder: ``final/``'s staging, checkpoints'
    ``step-N.tmp`` (only the step being saved was cleared, so a stop's save killed mid-way
    stayed for good) and one set aside mid-swap (restored when its step is missing). Only under
    train's lock on ``out_dir``: no live process owns them. Returns what was done (logged)."""
    from amazon_sft.atomic import remove_stale

    done = remove_stale(out_dir / "final", any_machine=True)
    root = out_dir / "checkpoints"
    if not root.is_dir():
        return done
    swapped = {
        m.group(1)
        for p in root.iterdir()
        if (m := re.match(rf"\.(step-\d+)\.{STAGING_TAG}-old-", p.name))
    }
    for name in sorted(swapped):
        done += remove_stale(root / name, any_machine=True)
    for path in sorted(p for p in root.glob("step-*.tmp") if SAVE_STAGING.fullmatch(p.name)):
        done.append(clear_staging(path))
    return done


def after_a_cut_save(out_dir: Path, main_process: bool) -> str:
    """What the run keeps, in words, once ``outputs.disk_full`` has told a full disk or a
    file-size limit (reading the cut file as its evidence); the main process, the one that
    writes them, first removes the cut saves (a checkpoint's, and ``final/``'s own staging),
    which held their space on the full disk until a ``resume=auto`` cleared them (an outside
    trial). A save another rank's disk cut is left to the next launch (the ranks are stopped
    before this one could tell)."""
    from amazon_sft.outputs import run_kept

    if main_process:
        root = out_dir / "checkpoints"
        for path in root.glob("step-*.tmp") if root.is_dir() else ():
            discard_cut_save(path)
        final = staging_name(out_dir / "final")  # this process's own: no other writes it
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final, ignore_errors=True)
    return run_kept(out_dir)


def save_checkpoint(
    accelerator, model, out_dir: Path, state: TrainerState, keep_last: int, run_record: dict
) -> Path:
    """Every rank calls this; rank 0 finalises. Returns the checkpoint folder. ``run_record``
    (the config and the data's digest) is stored with it, so a resume can tell what changed.
    ``model``: the prepared one; its frozen weights are not saved (trainable_state.py)."""
    step = state.step
    final = checkpoint_dir(out_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    # a complete checkpoint of this step stays until the new one is whole (a re-save after a
    # dropped step); each part ends with every rank learning whether it failed on any rank
    saving = f"while saving checkpoint {final.name}"
    agreed(accelerator, lambda: start_staging(tmp), saving, main_only=True)
    with (
        trainable_only(accelerator, model) as save_kwargs,
        tied_weights_said_once(model),
    ):
        save = functools.partial(accelerator.save_state, str(tmp), **save_kwargs)
        agreed(accelerator, save, saving, main_only=False)  # every rank writes its part

    def finish() -> None:
        (tmp / STATE).write_text(json.dumps(asdict(state), indent=2))
        (tmp / RUN_CONFIG).write_text(json.dumps(run_record, indent=1))
        write_checksums(tmp, skip=(SAVE_MARK,))
        (tmp / COMPLETE).write_text(f"step {step}\n")
        _set_aside_unless_saved(final)
        _carry_files_not_ours(final, tmp)
        end_staging(tmp)  # last: a kill before it leaves a killed save's folder, removed
        swap_into_place(tmp, final)
        drop_old_checkpoints(out_dir, keep_last)

    agreed(accelerator, finish, saving, main_only=True)
    return final


def _set_aside_unless_saved(folder: Path) -> None:
    """A ``step-N`` no save wrote (a link, a folder without ``COMPLETE`` or a readable
    ``checksums.json``: a user's notes, a prepared folder put there) is renamed
    ``step-N.yours-STAMP`` beside it, whole, before the save of step N takes its name (it was
    replaced, all of it deleted: a hostile user's trial)."""
    if not (folder.exists() or folder.is_symlink()) or _listed(folder) is not None:
        return
    aside = folder.with_name(f"{folder.name}.yours-{utc_stamp()}")
    folder.rename(aside)
    log.warning(
        "set %s aside as %s: no save wrote it, and the save of that step takes its name",
        folder,
        aside.name,
    )


def _listed(folder: Path) -> set[str] | None:
    """What a complete checkpoint's save wrote, by its ``checksums.json``; None for a link, a
    folder without ``COMPLETE`` or one whose list cannot be read (what its save wrote cannot
    be told)."""
    if folder.is_symlink() or not (folder / COMPLETE).is_file():
        return None
    try:
        listed = json.loads((folder / CHECKSUMS).read_text())
    except (OSError, ValueError):
        return None
    return set(listed) if isinstance(listed, dict) else None


def drop_old_checkpoints(out_dir: Path, keep_last: int) -> None:
    """Remove all but the newest ``keep_last`` of the run's own complete checkpoints. One whose
    ``trainer_state.json`` no save of its step wrote (a user's copy of another step, under a
    higher step too) or whose state is damaged takes none of those places; it, one holding
    files its save did not write (a user's eval report put inside) and one whose list of them
    is lost are kept and named, never removed whole."""
    places = keep_last
    for old in reversed(complete_checkpoints(out_dir)):  # newest first: they take the places
        try:  # a copy under another step's name (cp -r step-10 step-4): its checksums are whole
            read_trainer_state(old)
        except (CorruptCheckpoint, OSError) as err:
            copy = isinstance(err, StepMismatch)  # else its state file is damaged or gone
            why = "no save of that step wrote it" if copy else f"its {STATE} is damaged or missing"
            log.warning(
                "kept %s, not counted in checkpoint.keep_last: %s (%s); remove it yourself if "
                "it is the run's",
                old,
                why,
                err,
            )
            continue
        if places:
            places -= 1
            continue
        if _listed(old) is None:
            log.warning(
                "kept %s past checkpoint.keep_last: its %s is unreadable, so which of its files "
                "its save wrote cannot be told; remove it yourself if all are the run's",
                old,
                CHECKSUMS,
            )
            continue
        if theirs := not_written_by_its_save(old):
            shown = ", ".join(theirs[:3]) + (" ..." if len(theirs) > 3 else "")
            log.warning(
                "kept %s past checkpoint.keep_last: it holds files its save did not write (%s); "
                "move them out and remove the folder yourself",
                old,
                shown,
            )
            continue
        shutil.rmtree(old, ignore_errors=True)


def _carry_files_not_ours(old: Path, new: Path) -> None:
    """A step saved again (a stop dropped the step after a resume, or a branch reaching a step
    its abandoned branch saved) replaces its folder whole: the files its save did not write (a
    user's notes, an eval report) are linked into the new folder first (a hard link: no copy,
    and no moment when the only copy sits in a folder a killed save's clean-up removes)."""
    if not old.is_dir():
        return
    for name in not_written_by_its_save(old):
        target = new / name
        if target.exists():  # a name the new save writes: the user's copy stays beside it
            target = target.with_name(target.name + ".yours")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(old / name, target, follow_symlinks=False)
        except OSError:  # a filesystem without hard links
            shutil.copy2(old / name, target, follow_symlinks=False)
        log.warning("kept %s (not written by a save) in the new checkpoint of %s", name, new.stem)


def not_written_by_its_save(folder: Path) -> list[str]:
    """Files in a checkpoint that its ``checksums.json`` does not list (nor itself, nor
    ``COMPLETE``, written after it); every file but ``COMPLETE`` when the list cannot be read
    (a lost list counted all as the run's: pruning and ``make clean`` removed a user's notes)."""
    ours = (_listed(folder) or set()) | {CHECKSUMS, COMPLETE}
    # a link to a folder is a file here: pruning removed a user's link inside an old checkpoint
    found = (
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_symlink() or not p.is_dir()
    )
    return sorted(name for name in found if name not in ours)


LOAD_ERRORS = (
    CorruptCheckpoint,
    OSError,
    EOFError,
    ValueError,
    RuntimeError,
    KeyError,
    TypeError,
    pickle.UnpicklingError,
)
"""What a cut or altered checkpoint raises while loading (safetensors, torch.load, json): caught
only around one checkpoint's load, so the next older one can be tried."""


def load_checkpoint(accelerator, model, path: Path) -> TrainerState:
    """Check, then restore model/optimizer/scheduler/RNG into the prepared objects (``model``
    keeps the frozen weights a LoRA checkpoint leaves out); return the loop's state. Raises
    one of ``LOAD_ERRORS`` when the checkpoint is unusable."""
    verify_checkpoint(path)
    state = read_trainer_state(path)
    accelerator.load_state(str(path), **load_kwargs(accelerator, model, path))
    if not (path / f"random_states_{accelerator.process_index}.pkl").is_file():
        # accelerate says so at INFO only: the resume is not the uninterrupted run's
        log.warning(
            "%s holds no random states for rank %d (saved by fewer processes): its dropout "
            "draws a new stream, so the loss curve from here is not the uninterrupted run's",
            path,
            accelerator.process_index,
        )
    return state


def capture_rng() -> dict:
    """Python, NumPy, torch (and CUDA) RNG states: what accelerate's ``save_state`` saves."""
    import random

    import numpy as np

    states = {"python": random.getstate(), "numpy": np.random.get_state()}
    states["torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict) -> None:
    import random

    import numpy as np

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])
