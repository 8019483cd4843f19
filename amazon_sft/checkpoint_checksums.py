"""A checkpoint's (and a saved model's) list of its files, ``checksums.json``: written by a
save, checked before a load, so a cut, swapped, re-saved or missing file is refused, not loaded.
Each file's digest is ``quick_digest``'s (its size and ~0.4 MB of sampled blocks, at every
load of a 14 GB checkpoint): a same-size edit between the sampled blocks is not caught (a
review); what a copy cuts, a save rewrites or a user swaps in is."""

from __future__ import annotations

import json
from pathlib import Path

from amazon_sft.data.shards import quick_digest

STATE = "trainer_state.json"
CHECKSUMS = "checksums.json"
RUN_CONFIG = "run_config.json"  # read by resume_config


class CorruptCheckpoint(Exception):
    """A checkpoint whose files do not match what was written; an older one may still load."""


def write_checksums(
    folder: Path, patterns: tuple[str, ...] = ("*",), skip: tuple[str, ...] = ()
) -> None:
    """Size and quick digest of the files of a checkpoint or a saved model, checked before
    they are loaded; ``skip``: names left out (files a user may edit, ``FINAL_UNLISTED``)."""
    found = {p for pattern in patterns for p in folder.rglob(pattern)}
    files = {
        str(p.relative_to(folder)): {"bytes": p.stat().st_size, "quick": quick_digest(p)}
        for p in sorted(found)
        if p.is_file() and p.name != CHECKSUMS and p.name not in skip
    }
    (folder / CHECKSUMS).write_text(json.dumps(files, indent=1))


FINAL_UNLISTED = ("README.md", "generation_config.json", "run_summary.json")
"""A saved model's files its checksums leave out: the model card and the generation defaults
(edited before an upload) and the run's summary. Every other file shapes its answers: the
weights, the configs that give them their shape (a changed ``num_hidden_layers`` loaded with a
layer of random weights), the tokenizer, the chat template, ``amazon_sft_config.yaml``, the
prompt templates and the record of its data (a hostile user's trial: each, edited, changed
every answer without a word)."""


ANSWER_FILES = (
    "tokenizer*.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "*.model",
    "chat_template.jinja",
    "chat_template.json",
    "amazon_sft_config.yaml",
    "question_templates.yaml",
    "lora_base.json",
)
"""Files besides the weights that a saved model's answers depend on. A list that holds
``trained_on.json`` (a save or an export since 2026-12-06; earlier ones listed less, and load
as before) must hold every one of them in the folder: a ``chat_template.jinja`` put beside the
tokenizer was used, and blamed on the prompt templates."""


READ_ON_LOAD = ("*.safetensors", "*.bin", "*.pkl", "*.pt", "config.json", "adapter_config.json")
"""Names a resume or a model load reads, which every save lists (``write_checksums``): one
missing from the list was let through unchecked (a hostile user's trial: another run's weights
copied in, the list cut to the other files; a LoRA ``adapter_config.json`` put into a full
model's ``final/``)."""


ENGINE_FOLDER = "pytorch_model"
"""Where accelerate has DeepSpeed save a checkpoint's model and optimizer shards."""


def _read_but_unlisted(folder: Path, files: dict) -> str | None:
    """The first file a load reads (``READ_ON_LOAD``, the state and the run record: in
    ``folder`` itself or DeepSpeed's ``ENGINE_FOLDER``; a saved model's ``ANSWER_FILES``) that
    ``files`` does not list; a user's folder inside a checkpoint is theirs, whatever it holds."""
    engine, answers = folder / ENGINE_FOLDER, "trained_on.json" in files
    inside = engine.rglob("*") if engine.is_dir() and not engine.is_symlink() else ()
    for path in sorted([*folder.iterdir(), *inside]):
        name = str(path.relative_to(folder))
        if name in files or not path.is_file():
            continue
        if path.name in (STATE, RUN_CONFIG) or any(path.match(p) for p in READ_ON_LOAD):
            return name
        shaped = answers and path.parent == folder  # see ANSWER_FILES
        if shaped and any(path.match(p) for p in ANSWER_FILES):
            return name
    return None


def verify_checkpoint(folder: Path) -> None:
    """Raise ``CorruptCheckpoint`` naming the first file that is missing, cut or changed."""
    listed = folder / CHECKSUMS
    if not listed.is_file():
        raise CorruptCheckpoint(f"{folder} has no {CHECKSUMS}")
    try:
        files = json.loads(listed.read_text())
    except ValueError as err:
        raise CorruptCheckpoint(f"{listed} is not JSON ({err})") from None
    well_formed = isinstance(files, dict) and all(
        isinstance(w, dict) and isinstance(w.get("bytes"), int) and isinstance(w.get("quick"), str)
        for w in files.values()
    )
    if not well_formed or not files:  # {} verified nothing: the weights loaded unchecked
        raise CorruptCheckpoint(f"{listed} does not list its files' sizes and digests")
    if unlisted := _read_but_unlisted(folder, files):  # a list cut to what was not swapped
        raise CorruptCheckpoint(f"{unlisted} is loaded but not in {CHECKSUMS}")
    for name, want in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != want["bytes"]:
            raise CorruptCheckpoint(f"{path.name} is missing or has the wrong size")
        if quick_digest(path) != want["quick"]:
            raise CorruptCheckpoint(f"{path.name} does not match its checksum")
