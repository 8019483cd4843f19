import random

import numpy as np

from amazon_sft.data.split import (
    ProbeSample,
    heldout_mask,
    normalise_title,
    split_groups,
    title_hash,
)


def _held(titles: list[str], texts: list[str], fraction: float) -> np.ndarray:
    t = np.array([title_hash(x) for x in titles], dtype=np.uint64)
    d = np.array([title_hash(x, key=x) for x in texts], dtype=np.uint64)
    return heldout_mask(split_groups(t, d), fraction)


def test_hash_is_stable_and_ignores_case_and_punctuation():
    assert title_hash("The Prophet") == title_hash("the prophet!!") == title_hash(" THE  PROPHET ")
    assert normalise_title("Mog's Kittens") == "mog s kittens"


def test_heldout_share_is_close_to_the_fraction_and_never_splits_a_title():
    titles = [f"Product number {i}" for i in range(20000)]
    texts = [f"Text {i}" for i in range(20000)]
    held = _held(titles, texts, 0.1)
    assert 0.09 < held.mean() < 0.11
    shouted = [t.upper() + "!" for t in titles]  # the same normalised titles, other texts
    again = _held(titles + shouted, texts + [x + "?" for x in texts], 0.1)
    assert (again[:20000] == again[20000:]).all()  # a title is never on both sides
    assert not _held(titles, texts, 0.0).any()


def test_probe_sample_does_not_depend_on_order_or_repeats():
    rows = [(f"Title {i}", {"uid": str(i)}) for i in range(500)]
    a, b = ProbeSample(20), ProbeSample(20)
    for title, rec in rows:
        a.offer(title, rec)
    shuffled = rows + rows[:100]
    random.Random(1).shuffle(shuffled)
    for title, rec in shuffled:
        b.offer(title, rec)
    assert a.records() == b.records()
    assert len(a.records()) == 20 and len({r["uid"] for r in a.records()}) == 20
