"""Packed-row shards on disk: a writer, a memory-mapped reader and the manifest checks.

A shard is a folder of ``.npy`` arrays (numpy's own format, so any tool can read them and
``np.load(mmap_mode="r")`` maps them without reading them whole):

- ``input_ids.npy``   int32  [rows, max_seq_len]
- ``loss_mask.npy``   uint8  [rows, max_seq_len]   1 on answer tokens and EOS
- ``doc_lens.npy``    int32  [documents]           lengths of the documents, row after row
- ``row_docs.npy``    int64  [rows + 1]            row i holds doc_lens[row_docs[i]:row_docs[i+1]]
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from amazon_sft.bounds import check_row_buffer
from amazon_sft.data.manifest import (  # noqa: F401 - the manifest's readers import them here
    MANIFEST,
    Manifest,
    ShardEntry,
    read_manifest,
    seal,
)
from amazon_sft.errors import UserError

ARRAYS = ("input_ids", "loss_mask", "doc_lens", "row_docs")


QUICK_EDGE_BYTES = 64 << 10
QUICK_BLOCKS, QUICK_BLOCK_BYTES = 64, 4 << 10


def quick_digest(path: Path) -> str:
    """sha256 of a file's size, its first and last 64 KiB and 64 evenly spread 4 KiB blocks:
    ~0.4 MB read whatever the size, so it runs at every start (``data.verify=full`` reads every byte).

    >>> import tempfile, os
    >>> f = Path(tempfile.mkdtemp()) / "x"; _ = f.write_bytes(b"a" * 300_000)
    >>> quick_digest(f) == quick_digest(f)
    True
    """
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(QUICK_EDGE_BYTES))
        for i in range(QUICK_BLOCKS):
            fh.seek(size * i // QUICK_BLOCKS)
            h.update(fh.read(QUICK_BLOCK_BYTES))
        fh.seek(max(0, size - QUICK_EDGE_BYTES))
        h.update(fh.read())
    return h.hexdigest()


def quick_digest_bytes(data: bytes | memoryview) -> str:
    """``quick_digest`` of a file's bytes already in memory (the shard writer's, before they
    are written): the same blocks, so the same digest, without reading the file back.

    >>> f = Path(__import__("tempfile").mkdtemp()) / "x"; _ = f.write_bytes(bytes(range(256)) * 999)
    >>> quick_digest_bytes(f.read_bytes()) == quick_digest(f)
    True
    """
    size = len(data)
    h = hashlib.sha256(str(size).encode())
    h.update(data[:QUICK_EDGE_BYTES])
    for i in range(QUICK_BLOCKS):
        start = size * i // QUICK_BLOCKS
        h.update(data[start : start + QUICK_BLOCK_BYTES])
    h.update(data[max(0, size - QUICK_EDGE_BYTES) :])
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ShardWriter:
    """Buffers rows and writes one shard folder every ``shard_rows`` rows."""

    def __init__(self, root: Path, max_seq_len: int, shard_rows: int) -> None:
        check_row_buffer(shard_rows, max_seq_len)  # before np.empty asks for it
        self.root, self.max_seq_len, self.shard_rows = root, max_seq_len, shard_rows
        self.shards: list[dict] = []
        self._reset()

    def _reset(self) -> None:
        self._ids = np.empty((self.shard_rows, self.max_seq_len), dtype=np.int32)
        self._mask = np.empty((self.shard_rows, self.max_seq_len), dtype=np.uint8)
        self._lens: list[np.ndarray] = []
        self._n = 0

    def add(self, input_ids: np.ndarray, loss_mask: np.ndarray, doc_lens: np.ndarray) -> None:
        self._ids[self._n] = input_ids
        self._mask[self._n] = loss_mask
        self._lens.append(doc_lens)
        self._n += 1
        if self._n == self.shard_rows:
            self.flush()

    def flush(self) -> None:
        if self._n == 0:
            return
        name = f"shard-{len(self.shards):05d}"
        folder = self.root / name
        folder.mkdir(parents=True)
        counts = np.array([len(x) for x in self._lens], dtype=np.int64)
        arrays = {
            "input_ids": self._ids[: self._n],
            "loss_mask": self._mask[: self._n],
            "doc_lens": np.concatenate(self._lens).astype(np.int32),
            "row_docs": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        }
        sha, size, quick = {}, {}, {}
        for key, arr in arrays.items():
            # saved to memory first: the digests come from these bytes, not a re-read of the file
            buf = io.BytesIO()
            np.save(buf, arr)
            data = buf.getbuffer()
            file = folder / f"{key}.npy"
            file.write_bytes(data)
            sha[file.name], size[file.name] = hashlib.sha256(data).hexdigest(), len(data)
            quick[file.name] = quick_digest_bytes(data)
            del data  # the buffer cannot be freed while a view of it lives
        self.shards.append(ShardEntry(name, self._n, sha, size, quick))
        self._reset()


def verify_shards(path: str | Path, manifest: Manifest, full: bool = False) -> None:
    """Every shard the manifest lists is there, in order, with its size and digest, and no
    other shard folder is: sizes + ``quick_digest`` (default), or a full sha256 (``full``)."""
    root = Path(path)
    redo = f"re-run `amazon-sft prepare ... --out {root} --overwrite`"
    names = [s.name for s in manifest.shards]
    if names != [f"shard-{i:05d}" for i in range(len(names))]:
        raise UserError(f"{root / MANIFEST} lists shards {names[:3]}...: not shard-00000 onwards")
    on_disk = sorted(p.name for p in root.glob("shard-*"))
    if on_disk != names:
        extra = sorted(set(on_disk) ^ set(names))
        raise UserError(f"{root}: shard folders and manifest disagree ({extra[0]}): {redo}")
    if sum(s.rows for s in manifest.shards) != manifest.rows:
        raise UserError(f"{root / MANIFEST}: shard rows do not add up to {manifest.rows}")
    for shard in manifest.shards:
        for name, digest in shard.sha256.items():
            file = root / shard.name / name
            if not file.is_file() or file.stat().st_size != shard.bytes[name]:
                raise UserError(f"{file} is missing or has the wrong size: {redo}")
            got = sha256_file(file) if full else quick_digest(file)
            if got != (digest if full else shard.quick[name]):
                raise UserError(f"{file} is corrupt (checksum mismatch): {redo}")


def verify_checksums(path: str | Path) -> None:
    """Recompute every shard file's sha256 against the manifest (a full read of the data)."""
    verify_shards(path, read_manifest(path), full=True)


class PackedShards:
    """Random access to packed rows across shards, through memory maps."""

    def __init__(
        self, path: str | Path, verify: str = "quick", config: list[str] | None = None
    ) -> None:
        """``verify``: quick (sizes + sampled digests), full (sha256 of everything) or none;
        ``config``: the run config that reads them (named in a refusal's prepare command)."""
        self.path = Path(path)
        self.manifest = read_manifest(self.path, config)
        if verify != "none":
            verify_shards(self.path, self.manifest, full=verify == "full")
        self.max_seq_len = self.manifest.max_seq_len
        self.pad_id = self.manifest.pad_id
        self._shards = []
        for shard in self.manifest.shards:
            folder = self.path / shard.name
            try:
                arrays = {k: np.load(folder / f"{k}.npy", mmap_mode="r") for k in ARRAYS}
            except (OSError, ValueError) as err:
                raise UserError(
                    f"{folder} is unreadable ({err}): re-run amazon-sft prepare"
                ) from None
            self._shards.append(arrays)
        self._starts = np.cumsum([0] + [len(s["input_ids"]) for s in self._shards])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def row(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input_ids, loss_mask, doc_lens) of global row ``index``."""
        s = int(np.searchsorted(self._starts, index, side="right")) - 1
        arrays, local = self._shards[s], index - int(self._starts[s])
        lo, hi = arrays["row_docs"][local], arrays["row_docs"][local + 1]
        return arrays["input_ids"][local], arrays["loss_mask"][local], arrays["doc_lens"][lo:hi]
