import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from amazon_sft.data.packing import build_row, pack_bfd, position_ids


@settings(max_examples=200, deadline=None)
@given(
    st.integers(8, 64).flatmap(
        lambda cap: st.tuples(st.just(cap), st.lists(st.integers(1, cap), max_size=60))
    )
)
def test_bfd_places_every_document_once_within_capacity(case):
    capacity, lengths = case
    bins = pack_bfd(lengths, capacity)
    placed = sorted(i for b in bins for i in b)
    assert placed == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= capacity for b in bins)
    # best fit never needs more bins than one per item and opens a bin only when nothing fits
    assert len(bins) <= max(1, len(lengths))
    lower_bound = -(-sum(lengths) // capacity)
    assert len(bins) >= lower_bound


def test_bfd_is_near_optimal_on_many_small_documents():
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 600, size=5000)
    bins = pack_bfd(lengths, 2048)
    fill = lengths.sum() / (len(bins) * 2048)
    assert fill > 0.995


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 12), st.integers(0, 12)), min_size=1, max_size=8))
def test_rows_never_cross_documents_and_never_drop_tokens(docs):
    seq = sum(n for n, _ in docs) + 3
    token_docs = []
    next_id = 10
    for n, n_prompt in docs:
        token_docs.append((np.arange(next_id, next_id + n), min(n_prompt, n)))
        next_id += n
    ids, mask, lens = build_row(token_docs, seq, pad_id=0)
    pos = position_ids(lens, seq)
    assert ids[: seq - 3].tolist() == list(range(10, next_id))  # every token, in order
    starts = np.flatnonzero(pos == 0)[: len(docs)]
    assert starts.tolist() == np.cumsum([0] + [n for n, _ in docs[:-1]]).tolist()
    assert mask[starts].sum() == 0  # no target at a document's first token
    assert mask[seq - 3 :].sum() == 0  # padding carries no loss
    for (n, n_prompt), s in zip(docs, starts):
        assert mask[s : s + n].tolist() == [0] * max(min(n_prompt, n), 1) + [1] * (
            n - max(min(n_prompt, n), 1)
        )


def test_tiny_config_shards_stay_under_the_memory_map_limit_at_full_size():
    """Training maps every shard file (4 a shard); Linux refuses maps past vm.max_map_count
    (65,530 by default). The whole catalogue (docs/dataset.md: 1.36M products with a description)
    with 30% grounded examples is at most 1.77M documents, so at most that many rows: with
    the tiny config's shard_rows they must stay well under the limit (64 rows made ~110k maps)."""
    from amazon_sft.config import load_run_config
    from amazon_sft.data.shards import ARRAYS

    described, grounded_fraction, default_map_limit = 1_360_000, 0.3, 65_530
    rows = int(described * (1 + grounded_fraction))
    shard_rows = load_run_config("tiny").data.shard_rows
    maps = -(-rows // shard_rows) * len(ARRAYS)
    assert maps < default_map_limit // 2, (shard_rows, maps)
