import random

from amazon_sft.data.split import ProbeSample, is_heldout, normalise_title, title_hash


def test_hash_is_stable_and_ignores_case_and_punctuation():
    assert title_hash("The Prophet") == title_hash("the prophet!!") == title_hash(" THE  PROPHET ")
    assert normalise_title("Mog's Kittens") == "mog s kittens"


def test_heldout_share_is_close_to_the_fraction_and_never_splits_a_title():
    titles = [f"Product number {i}" for i in range(20000)]
    held = [t for t in titles if is_heldout(t, 0.1)]
    assert 0.09 < len(held) / len(titles) < 0.11
    assert all(is_heldout(t.upper() + "!", 0.1) for t in held)
    assert not any(is_heldout(t, 0.0) for t in titles)


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
