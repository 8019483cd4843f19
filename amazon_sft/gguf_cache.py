"""A GGUF model converted once into a plain transformers folder, then read from there.

transformers reads a GGUF file by walking its metadata in Python and dequantizing every tensor:
on 2 cores about 45 s for SmolLM2-135M's weights and 15 s for its tokenizer, paid again by every
command (prepare, train, eval, ask, serve) and by every rank of a launch. The first load writes
what it read (the dequantized float32 weights as safetensors, the config, the tokenizer) into a
cache folder; later loads read that in seconds. The weights are the very tensors the GGUF load
gives (float32; a bf16 run casts them as it would have cast the GGUF's), which
``tests/test_pretrained.py`` checks tensor for tensor.

The cache is keyed by the GGUF file's resolved path, size and modification time and by the
transformers version that converted it. A conversion is written to a staging folder and renamed
into place whole, under a lock so that ranks and concurrent commands convert it once; each use
checks the folder's checksums first and converts again if they fail. ``AMAZON_SFT_CACHE`` names
the cache folder (default ``$XDG_CACHE_HOME/amazon_sft``, else ``~/.cache/amazon_sft``); ``off``
reads the GGUF file every time. Where the cache cannot be written, the GGUF file is read as
before, with a warning.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from amazon_sft.atomic import new_staging
from amazon_sft.checkpointing import CorruptCheckpoint, verify_checkpoint, write_checksums
from amazon_sft.errors import UserError

log = logging.getLogger(__name__)
CACHE_ENV = "AMAZON_SFT_CACHE"
FORMAT = 2
"""Bump when what a converted folder holds changes: older folders are then converted again."""
SOURCE = "gguf_source.json"


def cache_root() -> Path | None:
    """Where converted models live; None when ``AMAZON_SFT_CACHE=off``."""
    chosen = os.environ.get(CACHE_ENV, "").strip()
    if chosen.lower() == "off":
        return None
    if chosen:
        return Path(chosen).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "amazon_sft"


def converted_folder(folder: str, gguf_file: str, kind: str) -> Path | None:
    """The cache folder holding ``kind`` ("model" or "tokenizer") of ``folder/gguf_file``,
    converted now if it is not there yet; None when there is no cache to use (the caller then
    reads the GGUF file itself)."""
    source = Path(folder) / gguf_file
    root = cache_root()
    if root is None or not source.is_file():
        return None  # off, or a hub id: transformers reads it (and says what is wrong)
    stat = source.resolve().stat()
    import transformers

    identity = {
        "gguf": str(source.resolve()),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "transformers": transformers.__version__,
        "format": FORMAT,
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    target = root / "gguf" / f"{source.stem}-{key}" / kind
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _locked(target.parent / f".{kind}.lock"):
            if not _usable(target):
                _convert(source, gguf_file, kind, target, identity)
    except (OSError, UserError) as err:
        log.warning(
            "could not use the GGUF cache %s (%s): reading %s directly (slow); set %s to a "
            "writable folder",
            target,
            err,
            source,
            CACHE_ENV,
        )
        return None
    return target


@contextmanager
def _locked(path: Path):
    """Ranks and concurrent commands wait here while one of them converts."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _usable(target: Path) -> bool:
    if not target.is_dir():
        return False
    try:
        verify_checkpoint(target)
    except CorruptCheckpoint as err:
        log.warning("the GGUF cache %s is damaged (%s): converting again", target, err)
        shutil.rmtree(target, ignore_errors=True)
        return False
    return True


def _convert(source: Path, gguf_file: str, kind: str, target: Path, identity: dict) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s's %s once into %s (later loads read that)", source, kind, target)
    staging = new_staging(target)
    try:
        if kind == "tokenizer":
            tok = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=gguf_file)
            tok.save_pretrained(staging)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                str(source.parent), gguf_file=gguf_file, dtype=torch.float32
            )
            forget_dequantized_gguf(model)
            model.save_pretrained(staging)
        (staging / SOURCE).write_text(json.dumps(identity, indent=1) + "\n")
        write_checksums(staging)
        staging.rename(target)  # under the lock: nobody else renames into it
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def forget_dequantized_gguf(model) -> None:
    """Without GGUF kernels transformers unpacks a GGUF file into plain float tensors but keeps
    its quantizer attached, and ``save_pretrained`` then refuses to save the model ("quantized
    with gguf and is not serializable"). The weights are ordinary tensors, so drop the marker;
    a model whose weights really stay in GGUF blocks keeps it."""
    import torch

    if not all(type(p) is torch.nn.Parameter and p.is_floating_point() for p in model.parameters()):
        return
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
