import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amazon_sft.data.loader import PackedLoader, epoch_order


class FakeShards:
    """Rows whose first token is their own index, to follow them through the loader."""

    max_seq_len = 4
    pad_id = 0

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def row(self, i):
        return np.array([i + 1, 7, 7, 7]), np.array([0, 1, 1, 0], dtype=np.uint8), np.array([3])


def _rows_seen(loader, limit=None):
    """Rows of the next ``limit`` batches (all, when None), fetching no batch beyond them."""
    return [int(r) for batch in itertools.islice(loader, limit) for r in batch.rows]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), st.integers(1, 4), st.integers(1, 3), st.integers(0, 5))
def test_every_row_once_across_ranks_and_equal_batches(n_rows, world, micro, seed):
    shards = FakeShards(n_rows)
    loaders = [PackedLoader(shards, micro, r, world, seed) for r in range(world)]
    per_rank = [_rows_seen(ld) for ld in loaders]
    assert len({len(x) for x in per_rank}) == 1  # no rank runs dry before another
    real = sorted(r for x in per_rank for r in x if r >= 0)
    assert real == list(range(n_rows))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 50), st.integers(1, 3), st.integers(1, 3), st.data())
def test_resume_from_any_cursor_continues_exactly(n_rows, world, micro, data):
    shards = FakeShards(n_rows)
    full = [_rows_seen(PackedLoader(shards, micro, r, world, 1)) for r in range(world)]
    steps = len(full[0]) // micro
    k = data.draw(st.integers(0, steps))
    for r in range(world):
        first = PackedLoader(shards, micro, r, world, 1)
        head = _rows_seen(first, limit=k) if k else []
        state = first.state_dict()
        resumed = PackedLoader(shards, micro, r, world, 1)
        resumed.load_state_dict(state)
        assert head + _rows_seen(resumed) == full[r]


def test_order_does_not_depend_on_world_size():
    a = epoch_order(37, seed=5, epoch=0, rows_per_step=1)
    b = epoch_order(37, seed=5, epoch=0, rows_per_step=12)
    assert a.tolist() == [x for x in b.tolist() if x >= 0]
    assert epoch_order(37, 5, 1, 1).tolist() != a.tolist()  # each epoch reshuffles


def test_padding_rows_have_no_labels_and_batches_are_tensors():
    loader = PackedLoader(FakeShards(3), micro_batch_size=2, rank=1, world_size=2, seed=0)
    batch = next(iter(loader))
    padded = [i for i, r in enumerate(batch.rows.tolist()) if r < 0]
    assert padded and (batch.labels[padded] == -100).all()
    real = [i for i, r in enumerate(batch.rows.tolist()) if r >= 0]
    assert batch.labels[real[0]].tolist() == [-100, 7, 7, -100]
    assert batch.position_ids[real[0]].tolist() == [0, 1, 2, 0]


def test_resume_with_another_batch_shape_is_refused():
    loader = PackedLoader(FakeShards(10), 2, 0, 2, 0)
    with pytest.raises(ValueError, match="batch shape"):
        loader.load_state_dict({"epoch": 0, "cursor": 6, "seed": 0})


def _step_rows(n_rows: int, world: int, micro: int, accumulation: int, steps: int):
    """The real rows of each of the first ``steps`` optimizer steps, as ``Trainer`` reads them
    (every rank's ``accumulation`` micro-batches, epochs read on end to end)."""

    def forever(loader):
        while True:
            yield from loader

    ranks = [
        forever(PackedLoader(FakeShards(n_rows), micro, r, world, 3, accumulation))
        for r in range(world)
    ]
    return [
        sorted(
            int(row)
            for stream in ranks
            for batch in itertools.islice(stream, accumulation)
            for row in batch.rows
            if row >= 0
        )
        for _ in range(steps)
    ]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.sampled_from([4, 8, 12]))
def test_each_step_reads_the_same_rows_for_any_split_of_the_global_batch(n_rows, global_rows):
    """A helper's audit: epochs were padded to processes x micro-batch, so a 1-process run
    (micro 2 x accumulation 4) and 2 processes (micro 2 x accumulation 2) put other rows in
    the same step from the second epoch on. Padded to whole steps, every split agrees."""
    splits = [
        (w, m, global_rows // (w * m))
        for w in (1, 2, 4)
        for m in (1, 2, 3)
        if global_rows % (w * m) == 0
    ]
    steps = 3 * -(-n_rows // global_rows)  # three epochs
    reference = _step_rows(n_rows, *splits[0], steps)
    for split in splits[1:]:
        assert _step_rows(n_rows, *split, steps) == reference, split


@pytest.mark.parametrize("name", ["epoch", "cursor", "seed"])
def test_a_loader_state_no_save_wrote_is_refused(name):
    """A checkpoint's ``"cursor": -2`` (its checksums written again) read rows from the end of
    the epoch's order (a hostile user's trial)."""
    loader, saved = PackedLoader(FakeShards(8), 2), {"epoch": 0, "cursor": 2, "seed": 0}
    loader.load_state_dict(saved)
    with pytest.raises(ValueError, match=f"data {name} -2 is not a count"):
        loader.load_state_dict({**saved, name: -2})
