"""A GGUF model converted once into a plain transformers folder, then read from there.

transformers reads a GGUF file by walking its metadata in Python and dequantizing every tensor:
on 2 cores about 45 s for SmolLM2-135M's weights and 15 s for its tokenizer, paid again by every
command (prepare, train, eval, ask, serve) and by every rank of a launch. The first load writes
what it read (the dequantized float32 weights as safetensors, the config, the tokenizer) into a
cache folder; later loads read that in seconds. The weights are the very tensors the GGUF load
gives (float32; a bf16 run casts them as it would have cast the GGUF's), which
``tests/test_pretrained.py`` checks tensor for tensor.

The cache is keyed by the GGUF file's resolved path, size and modification time and by the
transformers version that converted it; a new key's conversion removes the older ones of the
same file. A conversion is written to a staging folder and renamed into place whole, under a
lock so that ranks and concurrent commands convert it once; each use checks every file's full
sha256 first (a sampled digest let a flipped weight through) and converts again if one fails.
A read-only cache (a container image) is read, never written. ``AMAZON_SFT_CACHE`` names the
cache folder (default ``$XDG_CACHE_HOME/amazon_sft``, else ``~/.cache/amazon_sft``; delete it
to reclaim the space); ``off`` reads the GGUF file every time. Where the cache cannot be used
(no room, a damaged GGUF file), the GGUF file is read as before, after a warning, and a
damaged file is reported as it always was.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import struct
from contextlib import contextmanager
from pathlib import Path

from amazon_sft.atomic import new_staging

log = logging.getLogger(__name__)
CACHE_ENV = "AMAZON_SFT_CACHE"
FORMAT = 3
"""Bump when what a converted folder holds changes: older folders are then converted again."""
SOURCE = "gguf_source.json"
DIGESTS = "gguf_sha256.json"
"""Full sha256 of every file of a converted folder, checked before each use (~1 s a 500 MB)."""


def cache_root() -> Path | None:
    """Where converted models live; None when ``AMAZON_SFT_CACHE=off``."""
    chosen = os.environ.get(CACHE_ENV, "").strip()
    if chosen.lower() == "off":
        return None
    if chosen:
        return Path(chosen).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"  # XDG spec
    return base / "amazon_sft"


def converted_folder(folder: str, gguf_file: str, kind: str) -> Path | None:
    """The cache folder holding ``kind`` ("model" or "tokenizer") of ``folder/gguf_file``,
    converted now if it is not there yet; None when there is no cache to use (the caller then
    reads the GGUF file itself, and reports a damaged file as it always did)."""
    source = Path(folder) / gguf_file
    root = cache_root()
    if root is None or not source.is_file():
        return None  # off, or a hub id: transformers reads it (and says what is wrong)
    identity = _identity(source)
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    target = root / "gguf" / f"{source.stem}-{key}" / kind
    try:  # opening the lock file fails at once where the cache cannot be written
        target.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(target.parent / f".{kind}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:  # a read-only cache (a container image): read it, never write it
        try:
            usable = _usable(target, repair=False)
        except OSError:  # another user's private entry: read the GGUF file itself
            usable = False
        if usable:
            log.info("reading %s from the GGUF cache %s (read-only)", kind, target)
            return target
        return _not_used(target, source, err)
    try:
        with _locked(lock_fd, target):
            if _usable(target):
                log.info("reading %s from the GGUF cache %s", kind, target)
                return target
            _convert(source, gguf_file, kind, target, identity)
    except Exception as err:  # a full disk (safetensors' own error), a damaged GGUF file...
        return _not_used(target, source, err)
    _prune_older(target, identity)
    return target


def _identity(source: Path) -> dict:
    import transformers

    stat = source.resolve().stat()
    return {
        "gguf": str(source.resolve()),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "transformers": transformers.__version__,
        "format": FORMAT,
    }


def _not_used(target: Path, source: Path, err: BaseException) -> None:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, (struct.error, ValueError, EOFError)):  # the file, not the cache
        log.warning("could not convert %s (%s): reading it directly", source, first[:200])
        _remove_if_only_locks(target.parent)
        return None
    log.warning(
        "could not use the GGUF cache %s (%s): reading %s directly (about a minute each time); "
        "set %s to a writable folder with room for it, or to off",
        target,
        first[:200],
        source,
        CACHE_ENV,
    )
    _remove_if_only_locks(target.parent)
    return None


@contextmanager
def _locked(fd: int, target: Path):
    """Ranks and concurrent commands wait here while one of them converts."""
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process that is converting into %s", target)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _usable(target: Path, repair: bool = True) -> bool:
    """The folder is there and every file matches its full sha256 (a sampled digest missed a
    flipped weight and a changed token id). ``repair``: remove what is damaged."""
    if not target.exists():
        return False
    why = _damage(target)
    if why is None:
        return True
    log.warning("the GGUF cache %s is damaged (%s): converting again", target, why)
    if repair:
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
    return False


def _damage(target: Path) -> str | None:
    if not target.is_dir():
        return "not a folder"
    try:
        listed = json.loads((target / DIGESTS).read_text())
    except (OSError, ValueError) as err:
        return f"{DIGESTS}: {type(err).__name__}"
    if (
        not isinstance(listed, dict)
        or not listed
        or not all(isinstance(v, str) for v in listed.values())
    ):
        return f"{DIGESTS} is not a list of files and digests"
    for name, digest in listed.items():
        path = target / name
        if not path.is_file() or _sha256(path) != digest:
            return f"{name} is missing or changed"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _convert(source: Path, gguf_file: str, kind: str, target: Path, identity: dict) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info(
        "converting the %s of %s once into %s (about a minute on 2 cores; the model takes "
        "4 bytes a parameter there); later loads read that",
        kind,
        source.name,
        target,
    )
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
        digests = {p.name: _sha256(p) for p in sorted(staging.iterdir()) if p.is_file()}
        (staging / DIGESTS).write_text(json.dumps(digests, indent=1) + "\n")
        staging.rename(target)  # under the lock: nobody else renames into it
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _prune_older(target: Path, identity: dict) -> None:
    """Conversions of the same GGUF file made before it changed are never read again: removed
    (each holds the model's float32 weights). Another transformers' or cache format's of the
    file as it is stays: two installs sharing the cache removed each other's in turn."""
    for other in target.parent.parent.glob(f"{Path(identity['gguf']).stem}-*"):
        if other == target.parent or not other.is_dir():
            continue
        for kind_folder in other.iterdir():
            try:
                was = json.loads((kind_folder / SOURCE).read_text())
                same_file = all(was[k] == identity[k] for k in ("bytes", "mtime_ns"))
                was = was["gguf"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if was == identity["gguf"] and not same_file:
                log.info("removing an older conversion of %s: %s", was, kind_folder)
                shutil.rmtree(kind_folder, ignore_errors=True)
        _remove_if_only_locks(other)


def _remove_if_only_locks(key_folder: Path) -> None:
    """A key folder left with nothing but lock files (a failed or pruned conversion)."""
    try:
        if all(p.name.endswith(".lock") for p in key_folder.iterdir()):
            shutil.rmtree(key_folder)
    except OSError:
        pass


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
