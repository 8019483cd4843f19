"""Resume is honest about the config: what changed since the checkpoint is refused or applied.

Each checkpoint carries the config it was written under (``run_config.json``, with the prepared
data's manifest digest). On resume the new config is compared with it, key by key:

- a change that alters what the run *is* (data, model, tokenizer, batch shape, optimizer
  hyper-parameters held in the optimizer's state, precision, LoRA, seeds) is refused with the
  diff: the resumed run would silently be a different one;
- a change that can be applied from here on (lr and its schedule, max_steps, clipping, logging,
  checkpoint cadence, attention kernel) is applied: the restored scheduler is re-based on the new
  lr (``LambdaLR`` restores the old ``base_lrs``), logged as ``changed at step N: old -> new``,
  appended to ``config_changes.jsonl`` and written at the top of the run's ``config.yaml``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from amazon_sft.atomic import write_text_whole
from amazon_sft.checkpointing import RUN_CONFIG
from amazon_sft.config import RunConfig
from amazon_sft.config_loader import to_dict
from amazon_sft.data.manifest import DataIdentity
from amazon_sft.lora_base import as_recorded
from amazon_sft.optim import lr_factor

CHANGES = "config_changes.jsonl"
_ABSENT = object()  # a key the checkpoint's config lacks
RAN_PRECISION = "train.precision as it ran"
"""The change of the precision that ran (``auto`` resolved), recorded beside the config's."""

APPLIED = frozenset(
    {
        "train.lr",
        "train.min_lr_ratio",
        "train.warmup_steps",
        "train.warmup_ratio",
        "train.lr_schedule",
        "train.max_steps",
        "train.epochs",
        "train.micro_batch_size",  # the same rows each step (global_batch_size is refused)
        "train.max_grad_norm",
        "train.max_bad_steps",
        "train.log_every",
        "train.trackers",
        "train.peak_tflops",
        "train.loss_chunk_tokens",
        "train.gradient_checkpointing",
        "train.compile",
        "train.attention",
        "train.validation_every",  # when to score; which rows (validation_rows) is refused
        "checkpoint.every_steps",
        "checkpoint.every_minutes",
        "checkpoint.keep_last",
        "data.verify",
        "data.grounded_workers",
        "data.tokenize_batch_docs",
        "data.tokenizer_backend",
        "data.shard_rows",
        "resume",
        "overwrite",
        "out_dir",
    }
)
"""Keys whose change a resumed run can apply from its next step on; any other change is refused
(an unknown key too: refusing is the safe default)."""


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any

    def describe(self) -> str:
        return f"{self.key}: {self.old!r} -> {self.new!r}"


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested config dict.

    >>> flatten({"train": {"lr": 1.0, "betas": [0.9]}, "seed": 3})
    {'train.lr': 1.0, 'train.betas': [0.9], 'seed': 3}
    """
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "arch":  # model.arch is one value
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def diff(old: dict, new: dict) -> list[Change]:
    """Changed keys between two nested configs, in the new config's order.

    >>> diff({"train": {"lr": 1.0, "max_steps": 4}}, {"train": {"lr": 2.0, "max_steps": 4}})
    [Change(key='train.lr', old=1.0, new=2.0)]
    """
    a, b = flatten(old), flatten(new)
    return [
        Change(k, a.get(k), b.get(k))
        for k in [*b, *(k for k in a if k not in b)]
        if a.get(k) != b.get(k)
    ]


def run_record(
    config: dict,
    data_integrity: str,
    base_weights: dict | None = None,
    precision: str | None = None,
    branched_from: str | None = None,
) -> dict:
    """What a checkpoint stores of the run it belongs to (``base_weights``: a LoRA run's base
    files' digest, trainable_state.py: its checkpoints do not hold the base; ``precision``: the
    mixed precision that ran, accelerate's "bf16", "fp16" or "no", which ``auto`` leaves to
    the machine; ``branched_from``: the other run's checkpoint this run branched from, as a
    resolved path, kept by every launch: ``resuming.branch_goes_on``)."""
    return {
        "config": config,
        "data_integrity": data_integrity,
        "base_weights": base_weights,
        "precision": precision,
        "branched_from": branched_from,
    }


def saved_record(checkpoint: Path, out_dir: Path) -> dict | None:
    """The checkpoint's run record; for checkpoints from before it, the run's ``config.yaml``
    (written by the invocation that made them); None when neither exists."""
    path = checkpoint / RUN_CONFIG
    if path.is_file():
        return json.loads(path.read_text())
    legacy = out_dir / "config.yaml"
    if legacy.is_file():
        return {"config": yaml.safe_load(legacy.read_text()), "data_integrity": None}
    return None


def changes_on_resume(
    saved: dict,
    config: dict,
    data: DataIdentity,
    base_weights: dict | None = None,
    precision: str | None = None,
) -> list[Change]:
    """The changes to apply; raises ``ValueError`` listing the ones that cannot be applied.

    The data may move (``data.path``) when the prepared folder is the same one, which its
    manifest digest proves. A LoRA checkpoint's base must be the files it was trained on, and
    may move (``model.path``) when they are. When
    the checkpoint recorded the precision that ran, that is compared with ``precision`` (what
    would run now), not ``train.precision``'s word: ``auto`` is fp32 on a CPU, bf16 on an
    Ampere GPU.
    """
    changes = _not_new_defaults(diff(saved["config"], config), saved["config"])
    ran = saved.get("precision")
    if ran is not None and precision is not None:
        changes = [c for c in changes if c.key != "train.precision"]
        if ran != precision:
            changes.append(Change(RAN_PRECISION, precision_name(ran), precision_name(precision)))
    same_data = data.names(saved.get("data_integrity"))
    # a LoRA base copied elsewhere (a requeue onto node-local storage): its weight files' record
    # proves the same base; a full fine-tune records none, so its model.path stays put
    recorded = saved.get("base_weights")
    base_weights = as_recorded(base_weights, recorded)
    same_base = bool(recorded) and base_weights is not None and recorded == base_weights
    moved = {"data.path": same_data, "model.path": same_base}
    refused = [c for c in changes if c.key not in APPLIED and not moved.get(c.key, False)]
    if saved.get("data_integrity") is not None and not same_data:
        refused.append(Change("data (manifest digest)", saved["data_integrity"], data.digest))
    if changed := base_change(saved, base_weights):
        refused.append(changed)
    if refused:
        raise ValueError("; ".join(c.describe() for c in refused))
    return [c for c in changes if c.key not in ("resume", "overwrite")]


def precision_name(precision: str) -> str:
    """accelerate's mixed precision as ``train.precision`` names it ("no" is fp32).

    >>> precision_name("no"), precision_name("bf16")
    ('fp32', 'bf16')
    """
    return "fp32" if precision == "no" else precision


def base_change(saved: dict, base_weights: dict | None) -> Change | None:
    """The change of a LoRA run's base weight files since the checkpoint ``saved`` recorded
    them; None when they are the same, or when either side is unknown (a checkpoint from
    before the record, a hub name whose weights are not downloaded yet: compared after the
    load, ``resuming.base_after_load``)."""
    recorded = saved.get("base_weights")  # {}: recorded before the weights were downloaded
    base_weights = as_recorded(base_weights, recorded)
    if not recorded or base_weights is None or recorded == base_weights:
        return None
    return Change(
        "the base model's weight files or config.json (a LoRA checkpoint holds only the adapter)",
        _files(recorded),
        _files(base_weights),
    )


def _files(digests: dict | None) -> str:
    """A base's weight files as a short text for the refusal (digests cut to 12 characters).

    >>> _files({"model.safetensors": "0123456789abcdef"})
    'model.safetensors 0123456789ab'
    >>> _files(None)
    'none found'
    """
    if not digests:
        return "none found"
    return ", ".join(f"{name} {digest[:12]}" for name, digest in sorted(digests.items()))


def _not_new_defaults(changes: list[Change], saved_config: dict) -> list[Change]:
    """Drop keys the checkpoint's config lacks (added to the tool since) that hold their default:
    the run is the same one; a new key set to another value is still a change."""
    saved_keys = flatten(saved_config)
    defaults = flatten(to_dict(RunConfig()))
    return [
        c
        for c in changes
        if c.key in saved_keys or c.key not in defaults or c.new != defaults[c.key]
    ]


def rebase_schedule(
    scheduler, lr: float, warmup: int, max_steps: int, min_ratio: float, schedule: str = "cosine"
) -> None:
    """Make the restored scheduler follow the new lr and schedule from its current step: its
    ``base_lrs`` come back from the checkpoint, and the optimizer's lr for the next step was set
    by the old schedule, so both are recomputed here."""
    inner = getattr(scheduler, "scheduler", scheduler)  # accelerate's wrapper
    step = inner.last_epoch
    factor = lr_factor(step, warmup, max_steps, min_ratio, schedule)
    inner.base_lrs = [lr for _ in inner.base_lrs]
    for group in inner.optimizer.param_groups:
        group["initial_lr"] = lr
        group["lr"] = lr * factor
    inner._last_lr = [group["lr"] for group in inner.optimizer.param_groups]


def _history(out_dir: Path) -> bytes:
    """The bytes of ``config_changes.jsonl``; none for a link there (it points at a file that is
    no history of this run: a user's, never read, never written through)."""
    path = out_dir / CHANGES
    return path.read_bytes() if path.is_file() and not path.is_symlink() else b""


def record_changes(out_dir: Path, step: int, changes: list[Change]) -> None:
    """Add to ``config_changes.jsonl`` (the history ``config.yaml``'s header is made from):
    the file is written again beside and renamed, not appended to, so a link there (to a
    user's file, or shared with a ``cp -al`` snapshot of the run) is replaced, not written
    through."""
    when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    old = _history(out_dir)
    if old and not old.endswith(b"\n"):  # a line cut by a kill must not swallow the next one
        old += b"\n"
    lines = [
        json.dumps({"step": step, "key": c.key, "old": c.old, "new": c.new, "at": when}) + "\n"
        for c in changes
    ]
    write_text_whole(out_dir / CHANGES, old + "".join(lines).encode())


def forget_changes_from(out_dir: Path, step: int, saved: dict | None = None) -> None:
    """On resume from ``step``, forget the changes recorded after it: they belong to the branch
    left behind (recorded again against its checkpoint if made again), as ``metrics.jsonl``
    forgets the steps after it. A change recorded *at* ``step`` is kept when the checkpoint
    (run record ``saved``) already holds its new value: a launch stopped within its first step
    saves the step it resumed from again, with its config, and that change still happened.
    Rewritten beside, renamed."""
    history = _history(out_dir)
    if not history:
        return
    held = flatten(saved["config"]) if saved and isinstance(saved.get("config"), dict) else {}
    if saved and saved.get("precision"):
        held[RAN_PRECISION] = precision_name(saved["precision"])
    kept = []
    for line in history.decode(errors="replace").splitlines():
        try:
            change = json.loads(line)
            at = int(change["step"])
            if at > step or (at == step and held.get(change["key"], _ABSENT) != change["new"]):
                continue
        except (ValueError, TypeError, KeyError, AttributeError):  # a cut line: history_header
            pass
        kept.append(line)
    write_text_whole(out_dir / CHANGES, "".join(line + "\n" for line in kept))


def history_header(out_dir: Path) -> str:
    """YAML comment lines, one per recorded change: ``# changed at step N: key: old -> new``."""
    lines, unreadable = [], 0
    for line in _history(out_dir).decode(errors="replace").splitlines():
        try:
            c = json.loads(line)
            lines.append(
                f"# changed at step {c['step']} ({c['at']}): {c['key']}: "
                f"{c['old']!r} -> {c['new']!r}"
            )
        except (ValueError, TypeError, KeyError):  # cut by a kill or a full disk mid-append
            unreadable += 1
    if unreadable:
        lines.append(f"# ({unreadable} unreadable line(s) of {CHANGES} skipped)")
    if not lines:  # every change forgotten by a branch from an older checkpoint
        return ""
    return (
        "# This run's config changed on resume (config_changes.jsonl):\n" + "\n".join(lines) + "\n"
    )
