"""A LoRA run's record of its base: the weight files and config.json of ``model.path`` when it
trained, which a resume (resume_config.py) and ask, eval and export (``check_lora_base``)
compare with what ``model.path`` holds then. A LoRA run saves the adapter alone (its
checkpoints too: trainable_state.py), put back on that base whenever it is loaded: a base
replaced since would be another model under the adapter, silently."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from amazon_sft.errors import UserError

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
"""Files of a model folder whose bytes are weights (tokenizer files are compared as the run's
config)."""
BASE_CONFIG = "config.json"
"""The base's model config, recorded beside its weights: the same weights read with another
``num_hidden_layers``, ``rope_theta`` or ``tie_word_embeddings`` are another model (a review:
an edited config.json passed, and the adapter was put on a 2-layer cut of its 4-layer base)."""
CONFIG_NOT_MODEL = ("transformers_version", "_name_or_path")
"""Keys of config.json that say who saved it, not what the model computes: a base re-saved by
another transformers version that writes the same keys is the same base (4.x -> 5 renames some,
``torch_dtype`` -> ``dtype``: such a re-save is refused, the safe way, until trained again)."""


def base_weights_digest(path: str, gguf_file: str | None) -> dict[str, str] | None:
    """Per weight file of the base model (``model.path``, or its ``gguf_file``): its size and
    sampled-block digest (``quick_digest``: ~0.4 MB read a file). A hub name is read from its
    local snapshot. None for a random model (its weights come from the seed and arch, both in
    the config), a name neither a folder nor cached here, or a folder without weight files yet
    (a hub snapshot holding what prepare read: the tokenizer and config).

    >>> base_weights_digest("random", None) is None
    True
    """
    from amazon_sft.data.shards import quick_digest
    from amazon_sft.tokenizer import resolve_location

    if path == "random":
        return None
    try:
        folder = Path(resolve_location(path))
    except UserError:  # a path that is no folder here: nothing to compare (the load says why)
        return None
    if not folder.is_dir():
        folder = _cached_snapshot(path)
        if folder is None:
            return None
    files = [folder / gguf_file] if gguf_file else sorted(folder.iterdir())
    digests = {
        f.name: quick_digest(f) for f in files if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES)
    }
    if not digests:  # a hub snapshot with the tokenizer only: the weights come with the load
        return None
    if not gguf_file and (folder / BASE_CONFIG).is_file():  # a GGUF file holds its own
        digests[BASE_CONFIG] = config_digest(folder / BASE_CONFIG)
    return digests


def config_digest(path: Path) -> str:
    """sha256 of a model's config.json as the model reads it: its keys sorted, without
    ``CONFIG_NOT_MODEL``; of its bytes when it is not a JSON object (loading it says why).

    >>> import json, tempfile
    >>> p = Path(tempfile.mkdtemp()) / "config.json"
    >>> _ = p.write_text(json.dumps({"num_hidden_layers": 4, "transformers_version": "4.57"}))
    >>> first = config_digest(p)
    >>> _ = p.write_text(json.dumps({"transformers_version": "5.2", "num_hidden_layers": 4}))
    >>> config_digest(p) == first
    True
    >>> _ = p.write_text(json.dumps({"num_hidden_layers": 2, "transformers_version": "4.57"}))
    >>> config_digest(p) == first
    False
    """
    raw = path.read_bytes()
    try:
        config = json.loads(raw)
    except ValueError:
        config = None
    if isinstance(config, dict):
        kept = {k: v for k, v in config.items() if k not in CONFIG_NOT_MODEL}
        raw = json.dumps(kept, sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()


def as_recorded(now: dict | None, recorded: dict | None) -> dict | None:
    """``now`` (a ``base_weights_digest``) as a record of ``recorded``'s time holds it: a LoRA run
    saved before the base's config was recorded is compared on its weight files alone.

    >>> as_recorded({"model.safetensors": "a", "config.json": "c"}, {"model.safetensors": "a"})
    {'model.safetensors': 'a'}
    >>> as_recorded({"model.safetensors": "a", "config.json": "c"}, {"config.json": "d"})
    {'model.safetensors': 'a', 'config.json': 'c'}
    """
    if now is None or not recorded or BASE_CONFIG in recorded:
        return now
    return {name: digest for name, digest in now.items() if name != BASE_CONFIG}


def _cached_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a hub name (the files ``from_pretrained`` read), never a
    download; None when it is not cached here (then nothing can be compared)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError), not a hub name
        return None


def frozen_base_of(cfg) -> dict[str, str] | None:
    """``base_weights_digest`` of a LoRA run's base (``cfg``: the RunConfig); None for a full
    fine-tune, whose checkpoints hold every weight."""
    if not cfg.lora.enabled:
        return None
    return base_weights_digest(cfg.model.path, cfg.model.gguf_file)


def check_lora_base(folder: Path, cfg, what: str, spec: str, loaded: bool = False) -> bool:
    """Refuse a base at ``model.path`` whose weight files or config.json differ from those the
    adapter was trained on (``saving.LORA_BASE``; runs saved before it are not checked): the
    adapter would be put on another model, silently or with a shape traceback. False unless
    ``model.path`` is a folder here: a hub name's weights come with its load, which may also
    bring a cached snapshot up to date, so it is asked again after it (``loaded``)."""
    from amazon_sft.saving import LORA_BASE

    recorded = folder / LORA_BASE
    if not recorded.is_file():
        return True
    try:
        then = json.loads(recorded.read_text())
    except (OSError, ValueError):
        raise UserError(f"{recorded} is damaged: copy the saved model folder again") from None
    now = as_recorded(base_weights_digest(cfg.model.path, cfg.model.gguf_file), then)
    if now is None:
        if loaded:
            what_base = f"{what} {spec}: the LoRA base {cfg.model.path}"
            log.warning(
                "%s loaded, but its files are not here to check against its record", what_base
            )
        return False
    if now != then:
        changed = sorted(set(now) ^ set(then) | {f for f in now if now[f] != then.get(f)})
        raise UserError(
            f"{what} {spec}: the LoRA adapter was trained on another base than model.path "
            f"{cfg.model.path} holds now ({', '.join(changed[:3])} differ): put the base it was "
            "trained on there (or a link there to it), or train again on this one"
        )
    return folder_here(cfg.model.path)


def folder_here(path: str) -> bool:
    """``model.path`` is a folder on this machine (not a hub name)."""
    from amazon_sft.tokenizer import resolve_location

    try:
        return Path(resolve_location(path)).is_dir()
    except UserError:
        return False
