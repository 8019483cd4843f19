"""The micro-batch contract between the loader, the loss and the training loop, typed once.

A ``PackedBatch`` carries the packed rows *and* their document boundaries, so no attention path
has to guess where one document ends from position ids: variable-length kernels (torch
``varlen_attn``, flash-attn, ``sdpa_per_document``) read ``cu_seqlens`` over the flattened rows,
mask-based paths (``sdpa``, ``eager``) get a block-diagonal causal mask built from the same
boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

IGNORE_INDEX = -100


def segment_lengths(doc_lens: list[list[int]], max_seq_len: int) -> list[int]:
    """Attention segments of a batch, row after row: each document, then the row's padding tail
    (pad tokens attend among themselves; they carry no loss).

    >>> segment_lengths([[3, 2], [], [4]], max_seq_len=6)
    [3, 2, 1, 6, 4, 2]
    """
    out: list[int] = []
    for lens in doc_lens:
        out.extend(lens)
        tail = max_seq_len - sum(lens)
        if tail:
            out.append(tail)
    return out


def cumulative_lengths(lengths: list[int]) -> np.ndarray:
    """``cu_seqlens`` as the varlen kernels want it: int32 offsets, 0 first, total last.

    >>> cumulative_lengths([3, 2, 1]).tolist()
    [0, 3, 5, 6]
    """
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)


@dataclass(frozen=True)
class PackedBatch:
    """One rank's micro-batch: ``rows`` packed rows of ``seq`` tokens each."""

    input_ids: torch.Tensor
    """int64 [rows, seq]: token ids, padded with the tokenizer's pad id."""
    labels: torch.Tensor
    """int64 [rows, seq]: the token where it is an answer token (loss), -100 elsewhere."""
    position_ids: torch.Tensor
    """int64 [rows, seq]: restarting at 0 for each document (rotary positions)."""
    cu_seqlens: torch.Tensor
    """int32 [segments + 1]: segment boundaries over the flattened rows (documents and padding
    tails); attention never crosses one."""
    max_segment_len: int
    """The longest segment, in tokens (the varlen kernels' ``max_seqlen``)."""
    doc_lens: list[list[int]]
    """Real documents of each row, in tokens (no padding); an empty list for a padding row."""
    rows: torch.Tensor
    """int64 [rows]: global row index in the prepared shards, -1 for a padding row."""
    label_positions: torch.Tensor
    """int64 [label tokens]: flat indices into the [rows, seq - 1] positions whose next token is
    a label, found on the host, so the loss selects them on the device without a
    data-dependent ``nonzero`` (a host synchronisation per micro-batch on CUDA)."""

    @property
    def label_tokens(self) -> int:
        """Positions whose next token is a label: what the summed loss is summed over."""
        return self.label_positions.numel()

    @property
    def real_tokens(self) -> int:
        """Tokens of real documents (padding excluded): what tokens/s and MFU count.

        >>> ids = np.zeros((2, 4), np.int64)  # a row of 3 + a padding tail, then a padding row
        >>> PackedBatch.from_rows(ids, ids - 100, ids, [[2, 1], []], np.array([0, -1])).real_tokens
        3
        """
        return sum(sum(lens) for lens in self.doc_lens)

    def to(self, device: torch.device | str) -> PackedBatch:
        """The tensors on ``device``; to CUDA from pinned memory, non-blocking: from pageable
        memory ``non_blocking`` has no effect, and each micro-batch's copy waited for the GPU's
        queued backward before the host could queue the next forward."""
        pin = torch.device(device).type == "cuda"

        def move(t: torch.Tensor) -> torch.Tensor:
            t = t.pin_memory() if pin and t.device.type == "cpu" else t
            return t.to(device, non_blocking=True)

        fields = ("input_ids", "labels", "position_ids", "cu_seqlens", "label_positions")
        return replace(self, **{k: move(getattr(self, k)) for k in fields})

    @classmethod
    def from_rows(
        cls,
        input_ids: np.ndarray,
        labels: np.ndarray,
        position_ids: np.ndarray,
        doc_lens: list[list[int]],
        rows: np.ndarray,
    ) -> PackedBatch:
        seq = input_ids.shape[1]
        segments = segment_lengths(doc_lens, seq)
        return cls(
            input_ids=torch.from_numpy(input_ids),
            labels=torch.from_numpy(labels),
            position_ids=torch.from_numpy(position_ids),
            cu_seqlens=torch.from_numpy(cumulative_lengths(segments)),
            max_segment_len=max(segments),
            doc_lens=doc_lens,
            rows=torch.from_numpy(np.asarray(rows, dtype=np.int64)),
            label_positions=torch.from_numpy(
                np.flatnonzero(labels[:, 1:] != IGNORE_INDEX).astype(np.int64)
            ),
        )
