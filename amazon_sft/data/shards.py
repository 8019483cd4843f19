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
import json
from pathlib import Path

import numpy as np

from amazon_sft.errors import UserError

MANIFEST = "manifest.json"
ARRAYS = ("input_ids", "loss_mask", "doc_lens", "row_docs")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ShardWriter:
    """Buffers rows and writes one shard folder every ``shard_rows`` rows."""

    def __init__(self, root: Path, max_seq_len: int, shard_rows: int) -> None:
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
        files = {}
        for key, arr in arrays.items():
            np.save(folder / f"{key}.npy", arr)
            files[f"{key}.npy"] = sha256_file(folder / f"{key}.npy")
        self.shards.append({"name": name, "rows": self._n, "sha256": files})
        self._reset()


def read_manifest(path: str | Path) -> dict:
    """The manifest of a prepared folder, with an error that says how to make one."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise UserError(
            f"{file} not found: run `amazon-sft prepare trn.json.gz --out {path}` first "
            "(or set data.path to a prepared folder)"
        )
    return json.loads(file.read_text())


def check_fingerprints(manifest: dict, tokenizer_fp: str, template_fp: str, where: str) -> None:
    """Refuse shards made with another tokenizer or prompt template: the ids would be wrong."""
    if manifest["tokenizer_fingerprint"] != tokenizer_fp:
        raise UserError(
            f"{where} was prepared with another tokenizer ({manifest['tokenizer']!r}, fingerprint "
            f"{manifest['tokenizer_fingerprint']} != {tokenizer_fp}); re-run amazon-sft prepare "
            "with this model's config or point data.path at matching shards"
        )
    if manifest["template_fingerprint"] != template_fp:
        raise UserError(
            f"{where} was prepared with another prompt template (fingerprint "
            f"{manifest['template_fingerprint']} != {template_fp}); re-run amazon-sft prepare "
            "with the same data.templates / use_chat_template / system_prompt"
        )


def verify_checksums(path: str | Path) -> None:
    """Recompute every shard file's sha256 against the manifest (a full read of the data)."""
    root = Path(path)
    for shard in read_manifest(root)["shards"]:
        for name, digest in shard["sha256"].items():
            if sha256_file(root / shard["name"] / name) != digest:
                raise UserError(f"{root / shard['name'] / name} is corrupt: checksum mismatch")


class PackedShards:
    """Random access to packed rows across shards, through memory maps."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.max_seq_len = int(self.manifest["max_seq_len"])
        self.pad_id = int(self.manifest["pad_id"])
        self._shards = []
        for shard in self.manifest["shards"]:
            folder = self.path / shard["name"]
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
