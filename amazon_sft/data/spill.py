"""Token ids of every training document, spilled to disk while prepare reads (memory holds only
per-document lengths), read back one document at a time when the shards are written."""

from __future__ import annotations

import os
from array import array
from pathlib import Path

import numpy as np

from amazon_sft.data.encode import EncodedBatch


class Spill:
    """Token ids of every training document, appended to one file; lengths kept in memory.

    Documents are read back with ``pread``, not a memory map: this kernel maps whole cached
    folios (~250 KB) per fault, so random reads through a map grow RSS with the file size.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "w+b")  # noqa: SIM115 - closed in close()
        self.doc_lens = array("i")  # 4 bytes a document, not a Python int object
        self.prompt_lens = array("i")
        self.offsets = np.zeros(1, dtype=np.int64)

    def add(self, enc: EncodedBatch) -> None:
        enc.tokens.tofile(self._fh)
        self.doc_lens.extend(enc.doc_lens)
        self.prompt_lens.extend(enc.prompt_lens)

    def finish(self) -> np.ndarray:
        """Stop writing; returns the document lengths."""
        self._fh.flush()
        lens = np.asarray(self.doc_lens, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lens)]) * 4  # bytes
        return lens

    def document(self, index: int) -> tuple[np.ndarray, int]:
        """(token ids, prompt length) of one document."""
        start, end = self.offsets[index], self.offsets[index + 1]
        data = os.pread(self._fh.fileno(), int(end - start), int(start))
        return np.frombuffer(data, dtype=np.int32), self.prompt_lens[index]

    def close(self) -> None:
        self._fh.close()
        self.path.unlink()
