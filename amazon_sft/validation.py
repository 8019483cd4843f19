"""Validation loss: packed rows held back from training and scored between steps.

``train.validation_rows`` rows of the prepared data are drawn once by a fixed seed over the row
count alone, so the same rows are held back whatever ``data.seed``, the world size or the batch
shape: runs of other learning rates or seeds compare on the same rows. Training reads the other
rows (``RowView``); the held-back ones are scored with the model in eval mode and no gradient,
every ``train.validation_every`` steps and after the last step.

What it measures: the answer loss on documents the run never trained on. Their products may be
taught by other documents (another phrasing, a grounded example), as in any split of examples
(axolotl's ``val_set_size``); the held-out *products* are scored by ``amazon-sft eval``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from amazon_sft.data.loader import PackedLoader
from amazon_sft.distributed import reduce_sum
from amazon_sft.errors import UserError

VALIDATION_SEED = 0x5EED_0A11
"""Draws the held-back rows: a constant, so the rows depend on the data's row count alone."""


def held_back_rows(n_rows: int, held: int) -> np.ndarray:
    """Sorted indices of the ``held`` rows held back from ``n_rows``.

    >>> held_back_rows(10, 3).tolist()
    [0, 7, 9]
    >>> held_back_rows(10, 0).tolist()
    []
    """
    order = np.random.default_rng(VALIDATION_SEED).permutation(n_rows)
    return np.sort(order[:held])


class RowView:
    """Some rows of ``PackedShards``, numbered from 0: what ``PackedLoader`` reads."""

    def __init__(self, shards, rows: np.ndarray) -> None:
        self.shards, self.rows = shards, rows
        self.manifest, self.path = shards.manifest, shards.path
        self.max_seq_len, self.pad_id = shards.max_seq_len, shards.pad_id

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, index: int):
        return self.shards.row(int(self.rows[index]))


def split_rows(shards, held: int):
    """(rows to train on, rows held back); with nothing held back, the shards themselves and
    None (the loader reads them exactly as before validation existed)."""
    n_rows = len(shards)
    if held == 0:
        return shards, None
    if held >= n_rows:
        raise UserError(
            f"train.validation_rows={held} holds back all {n_rows} prepared rows of "
            f"{shards.path}, leaving none to train on: give fewer (about 5%: "
            f"train.validation_rows={max(1, n_rows // 20)})"
        )
    valid = held_back_rows(n_rows, held)
    keep = np.ones(n_rows, dtype=bool)
    keep[valid] = False
    return RowView(shards, np.flatnonzero(keep)), RowView(shards, valid)


@dataclass(frozen=True)
class ValidationResult:
    loss: float | None
    """Summed answer cross-entropy / answer tokens over the held-back rows, all ranks; None
    when non-finite (metrics.jsonl is JSON)."""
    label_tokens: int
    seconds: float


def validation_due(step: int, every: int, last: bool) -> bool:
    """Score after this step: every ``every`` steps (0: never in between) and after the last.

    >>> [s for s in range(1, 8) if validation_due(s, 3, s == 7)]
    [3, 6, 7]
    """
    return last or (bool(every) and step % every == 0)


@torch.no_grad()
def validation_loss(accelerator, model, rows: RowView, micro_batch_size: int) -> ValidationResult:
    """The loss over ``rows``, every rank scoring its share. The rows are padded to whole
    rounds of ``world x micro_batch_size`` (as training's are), so every rank runs the same
    number of forwards: under ZeRO-3 each forward gathers parameters from every rank, and one
    rank forwarding less would leave the others waiting. One host read at the end."""
    started = time.perf_counter()
    world, rank = accelerator.num_processes, accelerator.process_index
    loader = PackedLoader(rows, micro_batch_size, rank, world, seed=VALIDATION_SEED)
    device = accelerator.device
    summed = torch.zeros((), dtype=torch.float64, device=device)
    tokens = 0
    model.eval()  # no dropout; checkpointed layers do not recompute without gradients
    try:
        for batch in loader:  # one pass, the same rows on every call
            loss, _ = model(batch.to(device))
            summed = summed + loss.double()
            tokens += batch.label_tokens
    finally:
        model.train()
    both = torch.stack([summed, torch.tensor(float(tokens), dtype=torch.float64, device=device)])
    total, labels = reduce_sum(accelerator, both).tolist()
    loss = total / max(labels, 1.0)
    return ValidationResult(
        loss if math.isfinite(loss) else None, int(labels), time.perf_counter() - started
    )
