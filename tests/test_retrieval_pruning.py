"""The sparse scorer's common-word pruning (answering/batched.py) and the index format bump."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from amazon_sft.answering import batched
from amazon_sft.answering.index import FORMAT, CatalogueIndex
from amazon_sft.answering.index_build import build_index


def _catalogue(folder, titles_contents):
    folder.mkdir()
    with open(folder / "catalogue.jsonl", "wb") as fh:
        for i, (title, content) in enumerate(titles_contents):
            fh.write(orjson.dumps({"uid": f"u{i}", "title": title, "content": content}) + b"\n")


def _dense_top(index, question, k):
    dense = index.scores(index.words(question))
    order = np.lexsort((np.arange(len(dense)), -dense))[:k]
    return [(int(i), float(dense[i])) for i in order if dense[i] > 0]


@pytest.fixture
def pruned(tmp_path, monkeypatch):
    """200 products that all say "widget" (a common word once COMMON_DF is 20), each with a
    rare word of its own; the pruning tables are built at that size."""
    monkeypatch.setattr(batched, "COMMON_DF", 20)
    monkeypatch.setattr(batched, "COMMON_KEEP", 5)
    monkeypatch.setattr(batched, "SHORTLIST", 8)
    rows = [(f"Widget model {i:03d} zq{i:03d}x", f"A widget for {i % 7} rooms") for i in range(200)]
    rows += [("Gizmo holder", "holds a gizmo"), ("Gizmo stand", "a stand")]
    _catalogue(tmp_path / "data", rows)
    build_index(tmp_path / "data")
    return CatalogueIndex(tmp_path / "data")


def test_a_common_word_is_pruned_and_the_named_product_still_comes_first(pruned):
    title_common = np.load(pruned.catalogue.parent / "index" / "title" / "common_tids.npy")
    assert len(title_common) > 0  # "widget" (and "model") were pruned in titles
    for i in (0, 77, 199):
        question = f"Tell me about Widget model {i:03d} zq{i:03d}x"
        got = pruned.top(question, 3)
        assert got[0] == _dense_top(pruned, question, 1)[0]
        assert got[0][0] == i


def test_only_common_words_still_rank_their_best_products(pruned):
    """A question of common words alone: its candidates are their best products only, and
    those are scored exactly (the scores are the dense path's)."""
    got = pruned.top("widget", 3)
    dense = pruned.scores(pruned.words("widget"))
    assert len(got) == 3 and all(dense[i] == s for i, s in got)


def test_a_question_with_a_common_word_scores_at_most_its_shortlist(pruned):
    """The shortlist passed to ``top`` (prepare's ``data.grounded_shortlist``) bounds the
    candidates scored exactly; without one, ``SHORTLIST`` does."""
    scorer = pruned._batch_scorer()
    words = pruned.words("widget model rooms zq005x")
    postings = [p for p in map(scorer._postings, words) if p]
    assert len(scorer._candidates(postings, False, 3)) == 3
    assert len(scorer._candidates(postings, False, batched.SHORTLIST)) > 3
    assert pruned.top("widget model rooms zq005x", 2, shortlist=3)[0][0] == 5


def test_without_a_common_word_the_sparse_scorer_is_the_dense_one(pruned):
    for question in ("gizmo holder", "gizmo stand", "zq005x gizmo", "holds"):
        assert pruned.top(question, 5) == _dense_top(pruned, question, 5)


def test_an_index_of_the_previous_format_is_rebuilt_with_the_pruning_tables(pruned):
    folder = pruned.catalogue.parent / "index"
    stats = folder / "stats.json"
    stats.write_bytes(orjson.dumps({**orjson.loads(stats.read_bytes()), "format": FORMAT - 1}))
    for field in ("title", "description"):  # format 3 had no pruning tables
        (folder / field / "common_tids.npy").unlink()
        (folder / field / "common_rows.npy").unlink()
    again = CatalogueIndex(pruned.catalogue.parent)
    assert orjson.loads(stats.read_bytes())["format"] == FORMAT
    assert (folder / "title" / "common_rows.npy").is_file()
    assert again.top("Tell me about Widget model 005 zq005x", 1)[0][0] == 5


def test_a_posting_looked_up_either_way_gives_the_same_scores():
    """``_lookup`` searches the shorter of posting and candidates in the longer: both ways
    must give every candidate its posting score, bit for bit (shards depend on it)."""
    rng = np.random.default_rng(0)
    for size_rows, size_wanted in ((3, 500), (500, 3), (50, 50), (0, 10), (10, 0)):
        rows = np.sort(rng.choice(2_000, size_rows, replace=False))
        data = rng.random(size_rows, dtype=np.float32) + np.float32(0.1)
        wanted = np.sort(rng.choice(2_000, size_wanted, replace=False))
        wanted = np.union1d(wanted, rows[::2])  # some hits, some misses
        expected = np.zeros(len(wanted), np.float32)
        at = {int(r): d for r, d in zip(rows, data)}
        expected[:] = [at.get(int(w), 0.0) for w in wanted]
        assert np.array_equal(batched._lookup(rows, data, wanted), expected)
