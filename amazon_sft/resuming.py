"""Resuming a run: which checkpoint loads, and the config changes since it was written (applied,
or refused when they would make it another run). The changes are checked before the model
loads (``plan_resume``), the weights after (``resume``)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import zlib
from pathlib import Path

import torch

from amazon_sft.checkpoint_engine import check_same_engine
from amazon_sft.checkpointing import (
    LOAD_ERRORS,
    SET_ASIDE,
    TrainerState,
    checkpoint_named,
    load_checkpoint,
    resume_candidates,
    set_aside_newer,
    verify_checkpoint,
)
from amazon_sft.config import RunConfig
from amazon_sft.config_loader import to_dict
from amazon_sft.data.loader import PackedLoader
from amazon_sft.data.manifest import DataIdentity
from amazon_sft.distributed import (
    agreed,
    codes_of_ranks,
    raise_if_any_rank,
    running_engine,
    schedule_the_stepped_optimizer,
)
from amazon_sft.errors import UserError
from amazon_sft.lora_base import folder_here, frozen_base_of
from amazon_sft.ownership import inside_run
from amazon_sft.resume_config import (
    base_change,
    changes_on_resume,
    forget_changes_from,
    rebase_schedule,
    record_changes,
    saved_record,
)
from amazon_sft.run_files import drop_metrics_after

log = logging.getLogger("amazon_sft.train")


def branched_from(cfg: RunConfig, out_dir: Path) -> str | None:
    """The other run's checkpoint ``resume=`` names (resolved, ``step-N`` unpadded too, as
    resume reads it), None when it names none."""
    if cfg.resume in ("none", "auto"):
        return None
    named = checkpoint_named(cfg.resume, out_dir)
    if not named.is_dir() or inside_run(named.resolve(), out_dir):
        return None
    return str(named.resolve())


def _branch_of(checkpoint: Path, out_dir: Path) -> str | None:
    """The checkpoint a run branched from, as ``checkpoint``'s record says: its own
    ``branched_from``, or (checkpoints before it) the ``resume=`` of the launch that wrote it;
    a relaunch records ``resume=auto``, so only the first launch's said it."""
    try:
        record = saved_record(checkpoint, out_dir) or {}
        said = record.get("branched_from") or record["config"]["resume"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(said, str) or said in ("none", "auto"):
        return None
    named = checkpoint_named(said, out_dir)
    if not named.is_dir() or inside_run(named.resolve(), out_dir):
        return None  # gone, or this run's own (a resume from an older step of it)
    return str(named.resolve())


def branch_origin(cfg: RunConfig, out_dir: Path) -> str | None:
    """What this launch's checkpoints record as ``branched_from``: the other run's checkpoint
    ``resume=`` names, or, relaunched with ``resume=auto``, what the newest checkpoint recorded."""
    if (asked := branched_from(cfg, out_dir)) is not None or cfg.resume != "auto":
        return asked
    return next(
        (b for c in resume_candidates("auto", out_dir) if (b := _branch_of(c, out_dir))), None
    )


def branch_goes_on(cfg: RunConfig, out_dir: Path) -> RunConfig:
    """``resume=PATH`` of another run's checkpoint into a folder whose own checkpoints went on
    from that very checkpoint (a SLURM requeue repeats the command line): ``resume=auto``, so
    the branch goes on from its newest step rather than starting over from PATH (or being
    refused as a second run: ``ownership.check_run_dir``)."""
    asked = branched_from(cfg, out_dir)
    if asked is None:
        return cfg
    for checkpoint in resume_candidates("auto", out_dir):
        if _branch_of(checkpoint, out_dir) == asked:
            log.info(
                "resume=%s: %s went on from it to %s; going on from there (resume=auto)",
                cfg.resume,
                out_dir,
                checkpoint.name,
            )
            return dataclasses.replace(cfg, resume="auto")
    return cfg


def plan_resume(
    cfg: RunConfig, accelerator, data: DataIdentity, out_dir: Path, base: dict | None
) -> dict[Path, list | Exception | None]:
    """Before the model loads (minutes for a 7B base; a GGUF one converted and cached first):
    each checkpoint resume may load, newest first, with the config changes since it was written,
    or why it cannot be used. A change that would make the newest readable one another run (its
    base model's files, LoRA's shape, the data) is refused here, and on every rank when any
    rank refuses it (node-local copies of a base that differ), so none waits at a collective for
    a rank that gave up. ``data``: the prepared data's identity (its manifest); ``base``: a LoRA
    run's ``frozen_base_of`` (None before a hub name's weights are downloaded: ``base_after_load``
    after the load). Per checkpoint: its changes, None (no config recorded) or the error."""
    planned: dict[Path, list | Exception | None] = {}
    error = None
    try:
        for path in resume_candidates(cfg.resume, out_dir):
            try:
                # its files first: a missing rank's file is damage, not another launch's count
                verify_checkpoint(path)
                check_same_engine(path, running_engine(accelerator))  # not "unusable": relaunch
                saved = saved_record(path, out_dir)
                ran = accelerator.mixed_precision
                planned[path] = config_changes(cfg, data, saved, path, base, ran)
            except LOAD_ERRORS as err:  # resume reports it as unusable and tries the one before
                planned[path] = err
            except UserError as err:  # an older one's is raised only if resume comes to it
                planned[path] = err
                if all(isinstance(why, LOAD_ERRORS) for why in list(planned.values())[:-1]):
                    raise  # the checkpoint resume would load first
    except UserError as err:
        error = err
    raise_if_any_rank(accelerator, error)
    check_same_checkpoints(accelerator, list(planned), out_dir)
    return planned


def check_same_checkpoints(accelerator, candidates: list[Path], out_dir: Path) -> None:
    """Refuse, on every rank, a resume whose ranks list different checkpoints (one all-reduce
    of a digest of the names). A shared file system whose listing lags on one node (NFS's
    attribute cache) had each rank load the newest it saw: ranks that loaded different steps
    all loaded, and trained on from different weights and data positions."""
    names = [path.name for path in candidates]
    digest = zlib.crc32("\n".join(names).encode())  # < 2**32: exact in the float64 reduce
    if len(set(codes_of_ranks(accelerator, digest))) > 1:
        raise UserError(
            f"the ranks of this launch list different checkpoints in {out_dir} (rank "
            f"{accelerator.process_index}: {', '.join(names) or 'none'}): a shared file system "
            "that has not caught up on one node? resume again once every node lists the same"
        )


def base_after_load(
    cfg: RunConfig, accelerator, planned: dict, out_dir: Path, base: dict | None
) -> dict | None:
    """A LoRA run's ``frozen_base_of``, read again after the load of a hub name (its weights
    come with the load, which may also bring a cached snapshot up to date: the base compared
    before it is then not the one loaded), and compared with each checkpoint resume may load:
    a refusal of the first is raised, an older one's kept in ``planned`` for a fallback. Every
    rank of a LoRA run takes part (a rank's cache may hold the weights where another's does
    not), refusing on all when any refuses. A local folder was compared before the load."""
    if not cfg.lora.enabled:
        return base
    error, first = None, True
    if base is None or not folder_here(cfg.model.path):
        try:
            base = frozen_base_of(cfg) or base
        except OSError as err:  # a rank's own copy unreadable: refused on every rank below
            error = UserError(f"model.path {cfg.model.path}: its files could not be read ({err})")
        for path, changes in planned.items() if error is None else ():
            if isinstance(changes, Exception):
                continue
            if changed := base_change(saved_record(path, out_dir) or {}, base):
                planned[path] = refused(path, changed.describe())  # raised if resume comes to it
                error = planned[path] if first else error
            first = False
    raise_if_any_rank(accelerator, error)
    return base


DAMAGED, OUT_OF_MEMORY = 1, 2
"""How a rank's load of a checkpoint failed (0: it loaded), agreed across ranks."""


def _failure_code(failure: BaseException | None) -> int:
    if failure is None:
        return 0
    return OUT_OF_MEMORY if isinstance(failure, (torch.OutOfMemoryError, MemoryError)) else DAMAGED


def _said(err: BaseException) -> str:
    return " ".join(str(err).split())[:300] or type(err).__name__


def _out_of_memory(path: Path, failure: BaseException | None, rank: int) -> UserError:
    """Not a damaged checkpoint: falling back to an older one would set this one aside and
    train its steps again."""
    where = _said(failure) if failure else f"rank {rank} ran out: see its message"
    return UserError(
        f"not enough memory to load checkpoint {path} ({where}): it is kept; free the memory "
        "(another process on the GPU?) and resume again"
    )


def resume(
    cfg: RunConfig,
    accelerator,
    model,
    loader: PackedLoader,
    optimizer,
    scheduler,
    out_dir: Path,
    planned: dict[Path, list | Exception | None],
) -> TrainerState:
    """The newest checkpoint that loads on every rank (one any rank cannot load is reported and
    the one before tried, by all: a rank that went back alone trained from other weights), with
    the config changes since it was written (``plan_resume``) applied."""
    rejected: list[str] = []
    for path, changes in planned.items():
        failure: BaseException | None = None
        try:
            if isinstance(changes, Exception):
                raise changes  # a refused change stops the run; an unreadable record: the one before
            if changes is None:
                log.warning(
                    "checkpoint %s carries no config: changes since it cannot be checked", path
                )
            state = load_checkpoint(accelerator, model, path)
            schedule_the_stepped_optimizer(scheduler, optimizer)  # before the lr is set below
            loader.load_state_dict(state.loader)
            # accelerate restores its micro-batch counter: with more accumulation now (fewer
            # processes), one not a multiple of it synced mid-step and skipped every optimizer
            # step after. A checkpoint is always at a step's end: the counter starts over.
            accelerator.step = 0
        except (torch.OutOfMemoryError, MemoryError) as err:  # before RuntimeError: not damage
            failure = err
        except LOAD_ERRORS as err:
            failure = err
        codes = codes_of_ranks(accelerator, _failure_code(failure))
        if OUT_OF_MEMORY in codes:
            raise _out_of_memory(path, failure, codes.index(OUT_OF_MEMORY))
        if any(codes):
            why = _said(failure) if failure else f"rank {codes.index(DAMAGED)} could not load it"
            log.warning("checkpoint %s is unusable (%s); trying the one before", path, why)
            rejected.append(f"{path.name}: {why}")
            continue
        log.info(
            "resumed from %s at step %d (data epoch %d, row cursor %d): %s",
            path,
            state.step,
            state.loader["epoch"],
            state.loader["cursor"],
            f"newer ones unusable ({'; '.join(rejected)})"
            if rejected
            else ("the newest complete" if cfg.resume == "auto" else "as asked"),
        )
        log_file = out_dir / "metrics.jsonl"
        fresh_log = not log_file.is_file() or log_file.stat().st_size == 0
        if accelerator.is_main_process and fresh_log and not inside_run(path.resolve(), out_dir):
            log.info(earlier_steps_note(path, out_dir, state.step))  # the curve looked cut
        # rank 0's writes, each agreed (a full disk there left the others at the barrier):
        # a branch from an older checkpoint keeps its own history, the newer steps go aside
        resuming = f"while resuming from {path.name}"
        forget = functools.partial(_forget_changes_after, out_dir, state.step, path)
        agreed(accelerator, forget, resuming, main_only=True)
        apply = functools.partial(  # every rank; rank 0 records them (config_changes.jsonl)
            apply_config_changes, cfg, accelerator, scheduler, changes or [], state.step
        )
        agreed(accelerator, apply, resuming, main_only=False)
        aside = functools.partial(_set_aside_newer_than, out_dir, state.step)
        agreed(accelerator, aside, resuming, main_only=True)
        return state
    if rejected:
        raise UserError(
            f"no checkpoint in {out_dir} loads ({'; '.join(rejected)}): resume=none with "
            "overwrite=true starts over"
        )
    if cfg.resume == "auto":
        log.info("resume=auto: no checkpoint in %s yet; starting at step 0", out_dir)
    # resume=auto before the first checkpoint: start over (rank 0's write, agreed)
    forget_all = functools.partial(drop_metrics_after, out_dir / "metrics.jsonl", 0)
    agreed(accelerator, forget_all, "while starting over", main_only=True)
    return TrainerState(loader=loader.state_dict())


def earlier_steps_note(checkpoint: Path, out_dir: Path, step: int) -> str:
    """Said when a run goes on from another run's checkpoint: where its steps up to ``step``
    are logged (this folder's log starts after them)."""
    origin = checkpoint.resolve().parent.parent / "metrics.jsonl"  # <run>/checkpoints/step-N
    where = origin if origin.is_file() else f"the run that wrote {checkpoint}"
    return (
        f"{out_dir / 'metrics.jsonl'} starts after step {step}, the checkpoint's: earlier steps "
        f"are in its log, {where}"
    )


def config_changes(
    cfg,
    data: DataIdentity,
    saved,
    checkpoint: Path,
    base: dict | None,
    precision: str | None = None,
) -> list | None:
    """The changes since ``checkpoint`` was written (None: it carries no config to compare);
    those that make another run are refused. ``precision``: the mixed precision this launch
    runs (accelerate's)."""
    if saved is None:
        return None
    try:
        return changes_on_resume(saved, to_dict(cfg), data, base, precision)
    except ValueError as err:
        raise refused(checkpoint, str(err)) from None


def refused(checkpoint: Path, changes: str) -> UserError:
    return UserError(
        f"resume: these changes since the checkpoint {checkpoint.name} would make it another "
        f"run ({changes}): restore them, or start a new run (another out_dir)"
    )


def apply_config_changes(cfg, accelerator, scheduler, changes: list, step: int) -> None:
    """Apply, log and record the changes that can go on from ``step``."""
    t = cfg.train
    if t.max_steps < step:
        raise UserError(
            f"resume: train.max_steps={t.max_steps} is below the checkpoint's step {step}: a "
            f"run does not go back; give train.max_steps >= {step}, or resume=PATH from an "
            "earlier checkpoint"
        )
    rebase_schedule(scheduler, t.lr, t.warmup_steps, t.max_steps, t.min_lr_ratio, t.lr_schedule)
    for change in changes:
        log.info("changed at step %d: %s", step, change.describe())
    if changes and accelerator.is_main_process:
        record_changes(Path(cfg.out_dir), step, changes)


def _forget_changes_after(out_dir: Path, step: int, path: Path) -> None:
    """Rank 0, resuming at ``step`` from ``path``: a branch from an older checkpoint keeps
    only its own change history."""
    forget_changes_from(out_dir, step, saved_record(path, out_dir))


def _set_aside_newer_than(out_dir: Path, step: int) -> None:
    """Rank 0, resuming at ``step``: the log's later rows dropped, newer checkpoints set aside."""
    drop_metrics_after(out_dir / "metrics.jsonl", step)
    if moved := set_aside_newer(out_dir, step):
        log.warning(
            "set aside %s, newer than the step resumed from, into %s: resume=auto goes on from "
            "this run's own checkpoints",
            ", ".join(moved),
            out_dir / "checkpoints" / SET_ASIDE,
        )
