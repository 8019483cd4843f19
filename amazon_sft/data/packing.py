"""Pack tokenized documents into fixed-length rows: one global best-fit-decreasing pass.

Pure functions, no I/O. ``pack_bfd`` decides which documents share a row; ``build_row`` lays them
out with a loss mask that is 1 only on answer tokens (the EOS included) and 0 on every prompt token,
so the first token of a document is never a target of the one before it; ``position_ids`` restarts
at 0 for each document, which is what keeps attention inside a document.

Written by hand because the bin search is the whole algorithm (~30 lines) and the library versions
work in 1,000-row windows or need a dataset object; here one pass covers every document.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pack_bfd(lengths: Sequence[int] | np.ndarray, capacity: int) -> list[list[int]]:
    """Group document indices into bins of total length <= ``capacity``, best-fit-decreasing.

    Documents are taken longest first; each goes into the open bin with the least room that still
    fits it, or a new bin. Room per bin is tracked in a bit mask of "some bin has r free", so
    finding the best fit is one shift and one lowest-set-bit, whatever the number of bins.

    >>> pack_bfd([5, 3, 4, 2, 6], capacity=8)
    [[4, 3], [0, 1], [2]]
    >>> pack_bfd([], capacity=8)
    []
    >>> pack_bfd([7, 7, 1], capacity=8)  # a bin's last free token is used too
    [[0], [1, 2]]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and (lengths.max() > capacity or lengths.min() < 1):
        raise ValueError(f"every length must be in [1, {capacity}]")
    order = np.argsort(-lengths, kind="stable")
    bins: list[list[int]] = []
    bins_with_room: dict[int, list[int]] = {}  # free slots -> bins with exactly that room
    mask = 0  # bit r set <=> bins_with_room[r] is not empty
    for index in order.tolist():
        length = int(lengths[index])
        fits = mask >> length
        if fits:
            room = length + (fits & -fits).bit_length() - 1  # smallest room >= length
            stack = bins_with_room[room]
            b = stack.pop()
            if not stack:
                mask &= ~(1 << room)
        else:
            b, room = len(bins), capacity
            bins.append([])
        bins[b].append(index)
        left = room - length
        if left:
            bins_with_room.setdefault(left, []).append(b)
            mask |= 1 << left
    return bins


def build_row(
    docs: Sequence[tuple[np.ndarray, int]], max_seq_len: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lay out ``(token_ids, n_prompt_tokens)`` documents in one row.

    Returns ``input_ids`` (int32, padded with ``pad_id``), ``loss_mask`` (uint8: 1 on answer
    tokens) and the document lengths (int32). Padding carries no loss.

    >>> ids, mask, lens = build_row([(np.array([7, 8, 9]), 1), (np.array([4, 5]), 1)], 6, 0)
    >>> ids.tolist(), mask.tolist(), lens.tolist()
    ([7, 8, 9, 4, 5, 0], [0, 1, 1, 0, 1, 0], [3, 2])
    """
    input_ids = np.full(max_seq_len, pad_id, dtype=np.int32)
    loss_mask = np.zeros(max_seq_len, dtype=np.uint8)
    lens = np.empty(len(docs), dtype=np.int32)
    pos = 0
    for i, (ids, n_prompt) in enumerate(docs):
        n = len(ids)
        if pos + n > max_seq_len:
            raise ValueError(f"documents need {pos + n} tokens, the row holds {max_seq_len}")
        input_ids[pos : pos + n] = ids
        loss_mask[pos + max(n_prompt, 1) : pos + n] = (
            1  # a document's first token is never a target
        )
        lens[i] = n
        pos += n
    return input_ids, loss_mask, lens


def position_ids(doc_lens: np.ndarray, max_seq_len: int) -> np.ndarray:
    """Positions restarting at 0 per document; the padded tail counts as one more document.

    >>> position_ids(np.array([3, 2]), 7).tolist()
    [0, 1, 2, 0, 1, 0, 1]
    """
    lens = [int(n) for n in doc_lens]
    tail = max_seq_len - sum(lens)
    if tail:
        lens.append(tail)
    starts = np.repeat(np.cumsum([0, *lens[:-1]]), lens)
    return (np.arange(max_seq_len) - starts).astype(np.int64)
