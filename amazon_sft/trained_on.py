"""Which prepared folder a saved model was trained on, so that answering finds that one and eval
refuses another.

A run's config keeps ``data.path`` as it was typed: ``data/prepared`` is another folder from
another directory, and two projects can both have one. ``ask`` without ``--index`` answered
from whichever catalogue was there, and ``eval --data`` scored "held-out" titles from another
folder's split (titles the run may have been trained on). ``save_final`` writes
``trained_on.json`` beside the weights: the prepared folder's absolute path and its data's
digest (``data_digest``: over the manifest, which lists every shard's digest, the split's counts
and the data settings, less its reports' timings), so a prepared folder is recognised wherever it is, and told apart from a
namesake. A model saved before this file existed, or a base model, is not checked.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from amazon_sft.data.manifest import DataIdentity, Manifest
from amazon_sft.errors import UserError

FILE = "trained_on.json"


@dataclass(frozen=True)
class TrainedOn:
    """The prepared folder a run was trained on."""

    folder: str
    """Its absolute path when the run was trained."""
    data_integrity: str
    """Its data's digest (``manifest.data_digest``; before 2026-12-04 the manifest's
    ``integrity``, still accepted)."""
    prompt_format: str = ""
    """The fingerprint of the prompts it was trained on (``PromptFormat.fingerprint``, as the
    manifest has it): a command loading the run refuses other prompts. Empty in runs saved
    before 2026-12-05: not checked."""
    model_path: str = ""
    """``model.path`` whole, where it named a folder (a LoRA run's base): the saved config keeps
    it as typed, read from where a command runs (a project moved whole still finds ``base``),
    and this where that finds nothing (``ask`` from another folder). Empty: a name."""


def write_trained_on(model_folder: Path, record: TrainedOn) -> None:
    (model_folder / FILE).write_text(json.dumps(asdict(record), indent=2) + "\n")


def read_trained_on(model_folder: Path) -> TrainedOn | None:
    """The record of ``model_folder`` (a saved model), or None when it has none."""
    path = model_folder / FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        raw = None
    texts = ("folder", "data_integrity", "prompt_format", "model_path")
    shaped = isinstance(raw, dict) and all(isinstance(raw.get(k, ""), str) for k in texts)
    if not shaped or not raw.get("folder") or not raw.get("data_integrity"):
        raise UserError(f"{path} is damaged: copy the saved model folder again")
    fields = [raw.get(k) or "" for k in texts]
    return TrainedOn(*fields)


def identity_of(prepared: str | Path) -> DataIdentity | None:
    """The data of a prepared folder, or None when it has no readable manifest (the command
    that reads the folder says why)."""
    try:
        raw = json.loads((Path(prepared) / "manifest.json").read_text())
        return Manifest.from_dict(raw).identity
    except (OSError, ValueError, KeyError, TypeError, UserError):
        return None


def _holds(prepared: str | Path, record: TrainedOn) -> bool:
    identity = identity_of(prepared)
    return identity is not None and identity.names(record.data_integrity)


def index_folder_for(model_folder: Path | None, data_path: str) -> str:
    """The prepared folder to answer from when no ``--index`` is given: the one the model was
    trained on, where it was recorded or at the config's ``data.path``; ``data.path`` as it
    stands for a model without a record."""
    record = read_trained_on(model_folder) if model_folder is not None else None
    if record is None:
        return data_path
    for folder in (record.folder, data_path):
        if _holds(folder, record):
            return folder
    # the training folder itself, prepared again since (data.path only where it is that folder:
    # another prepared folder there was never the one trained on)
    same = [f for f in (record.folder, data_path) if Path(f).resolve() == Path(record.folder)]
    again = [f for f in same[:1] if identity_of(f) is not None]
    if again:  # there, but prepared again since: saying "neither at" named the folder it was in
        raise UserError(
            f"no --index given, and {again[0]} was prepared again since the model was trained "
            "on it (its manifest digest differs): pass --index "
            f"{again[0]} to answer from it as it is now, or train again on it"
        )
    raise UserError(
        f"no --index given, and the prepared folder the model was trained on is neither at "
        f"{record.folder} nor at its data.path {data_path} here: pass --index PREPARED"
    )


def check_trained_on(model_folder: Path | None, data: Path, option: str = "--data") -> None:
    """Refuse scoring a saved model on a prepared folder other than the one it was trained on:
    that folder's held-out titles may be ones it was trained on."""
    record = read_trained_on(model_folder) if model_folder is not None else None
    if record is None or identity_of(data) is None or _holds(data, record):
        return
    if Path(data).resolve() == Path(record.folder):
        raise UserError(
            f"{option} {data} was prepared again since the model was trained on it (its manifest "
            "digest differs): its held-out titles may be ones the model was trained on; train "
            "again on it, or evaluate on the data as it was prepared then"
        )
    raise UserError(
        f"{option} {data} is not the prepared folder the model was trained on ({record.folder}, "
        "by its manifest digest): its held-out titles may be ones the model was trained on; "
        f"pass {option} {record.folder}"
    )


TEMPLATES = "question_templates.yaml"
"""A saved model's copy of the ``data.templates`` file it was trained with, which its config
names: the run renders its prompts wherever it is read, moved or exported, whatever the file
it was copied from holds by then (a review: an edited file was used unsaid)."""


def templates_read(cfg) -> bytes:
    """The ``data.templates`` file's bytes (the builtin file's too), read when training reads
    it: the run carries these, not what the file holds when it saves (a review: an edit made
    while the run trained went into final/, and every command refused the run's own model)."""
    from amazon_sft import prompts

    builtin = cfg.data.templates == "builtin"
    return (prompts.BUILTIN_TEMPLATES if builtin else Path(cfg.data.templates)).read_bytes()


def keep_templates(cfg, folder: Path, read: bytes | None = None):
    """``cfg`` (a RunConfig) naming the saved model's own copy of its templates, written into
    ``folder``: ``read`` (what training read), else the file ``cfg`` names (export: the run's
    copy). The builtin ones too: the file's own comment invites editing it in place, which
    locked every run trained on it out (a new user)."""
    import dataclasses

    (folder / TEMPLATES).write_bytes(read if read is not None else templates_read(cfg))
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, templates=TEMPLATES))


def own_templates(folder: Path) -> list[str]:
    """The override that reads a saved model's templates from its folder (its config names the
    copy relatively); none where it carries none."""
    path = folder / TEMPLATES
    return [f"data.templates={path}"] if path.is_file() else []


def whole_model_path(path: str) -> str:
    """``model.path`` whole where it names a folder here, else empty (a name: random, a hub id)."""
    import os

    return os.path.abspath(path) if path != "random" and os.path.isdir(path) else ""
