"""Stream packed rows to each rank: same order on any world size, equal rows per rank, O(1) resume.

The global order of an epoch is a permutation of all rows seeded by ``(seed, epoch)``. It is
padded with empty rows (pad ids, no loss) up to whole optimizer steps (``world_size *
micro_batch_size * accumulation_steps`` rows), then consumed one global micro-step at a time:
rank ``r`` takes the ``r``-th block of ``micro_batch_size`` rows. Padding to whole steps (not
to micro-steps) makes an epoch end on a step, so every split of the same global batch reads
the same rows in each step, in every epoch. The only state is ``(epoch, cursor)``, the count of global rows
consumed, so resuming is computing one permutation and a slice.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from amazon_sft.data.batch import IGNORE_INDEX, PackedBatch
from amazon_sft.data.packing import position_ids
from amazon_sft.data.shards import PackedShards

__all__ = ["IGNORE_INDEX", "PackedLoader", "epoch_order"]


def epoch_order(n_rows: int, seed: int, epoch: int, rows_per_step: int) -> np.ndarray:
    """Row indices of one epoch in read order, padded to whole optimizer steps of
    ``rows_per_step`` rows; -1 marks an empty padding row.

    >>> epoch_order(5, seed=0, epoch=0, rows_per_step=4).tolist()
    [2, 4, 3, 0, 1, -1, -1, -1]
    """
    order = np.random.default_rng([seed, epoch]).permutation(n_rows)
    padded = -(-n_rows // rows_per_step) * rows_per_step
    return np.concatenate([order, np.full(padded - n_rows, -1, dtype=order.dtype)])


class PackedLoader:
    """Micro-batches for one rank, as ``PackedBatch`` (ids, labels, positions restarting per
    document, and the document boundaries the attention kernels use)."""

    def __init__(
        self,
        shards: PackedShards,
        micro_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        accumulation_steps: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.shards, self.micro_batch_size = shards, micro_batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch, self.cursor = 0, 0
        self.rows_per_step = world_size * micro_batch_size  # one micro-step of every rank
        self.rows_per_optimizer_step = self.rows_per_step * accumulation_steps

    def _order(self) -> np.ndarray:
        steps = self.rows_per_optimizer_step
        return epoch_order(len(self.shards), self.seed, self.epoch, steps)

    def __len__(self) -> int:
        """Micro-batches per epoch for this rank (the same on every rank)."""
        return len(self._order()) // self.rows_per_step

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        for name in ("epoch", "cursor", "seed"):  # a checkpoint's checksums do not vouch for them
            value = state.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"data {name} {value!r} is not a count; no save wrote it")
        if state["cursor"] % self.rows_per_step:
            raise ValueError(
                f"data cursor {state['cursor']} is not a multiple of world_size x micro_batch_size "
                f"= {self.rows_per_step}; resume with the batch shape the run was saved with"
            )
        self.epoch, self.cursor, self.seed = state["epoch"], state["cursor"], state["seed"]

    def __iter__(self) -> Iterator[PackedBatch]:
        """The rest of the current epoch from the cursor; afterwards the next epoch begins."""
        order = self._order()
        while self.cursor < len(order):
            start = self.cursor + self.rank * self.micro_batch_size
            batch = self._collate(order[start : start + self.micro_batch_size])
            self.cursor += (
                self.rows_per_step
            )  # counted before yield: a saved state skips this batch
            yield batch
        self.epoch, self.cursor = self.epoch + 1, 0

    def _collate(self, rows: np.ndarray) -> PackedBatch:
        seq = self.shards.max_seq_len
        ids = np.full((len(rows), seq), self.shards.pad_id, dtype=np.int64)
        labels = np.full((len(rows), seq), IGNORE_INDEX, dtype=np.int64)
        positions = np.tile(np.arange(seq, dtype=np.int64), (len(rows), 1))
        doc_lens: list[list[int]] = []
        for i, row in enumerate(rows.tolist()):
            if row < 0:  # padding row: keeps every rank stepping together, adds no loss
                doc_lens.append([])
                continue
            row_ids, mask, lens = self.shards.row(row)
            ids[i] = row_ids
            labels[i] = np.where(mask.astype(bool), row_ids, IGNORE_INDEX)
            positions[i] = position_ids(lens, seq)
            doc_lens.append([int(n) for n in lens])
        return PackedBatch.from_rows(ids, labels, positions, doc_lens, rows)
