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


# --- near-duplicate descriptions (split version 2) ---

TWIN_A = (
    "The second book of the Lantern saga: the king's heir is lost at sea - and his sister must "
    "hold the realm together while old enemies gather at the borders."
)
TWIN_B = TWIN_A.replace("'", "\u2019").replace(" - ", " \u2013 ")  # typographic quote and dash


def _groups(titles: list[str], text_keys: np.ndarray) -> np.ndarray:
    return split_groups(np.array([title_hash(x) for x in titles], dtype=np.uint64), text_keys)


def _near(texts: list[str]) -> np.ndarray:
    from amazon_sft.data.near_duplicates import duplicate_labels, signatures

    return duplicate_labels(signatures(texts))


def test_series_twins_that_differ_only_in_quotes_and_dashes_are_one_group():
    titles = ["The Iron Lantern", "The Silver Lantern", "A Steel Kettle"]
    texts = [TWIN_A, TWIN_B, "A stainless steel kettle that boils a litre of water in two minutes."]
    exact = np.array([title_hash(x, key=x) for x in texts], dtype=np.uint64)
    before, after = _groups(titles, exact), _groups(titles, _near(texts))
    assert before[0] != before[1]  # split version 1: the twins could land on both sides
    assert after[0] == after[1] != after[2]
    held = heldout_mask(after, 0.5)
    assert held[0] == held[1]


def test_a_description_with_one_word_changed_joins_its_original_and_templates_do_not_chain():
    rng = random.Random(7)
    vocab = [f"word{i}" for i in range(400)]
    base = " ".join(rng.choice(vocab) for _ in range(120)) + "."
    edited = base.replace(base.split()[60], "changed", 1)  # a few shingles of ~113 differ
    other = " ".join(rng.choice(vocab) for _ in range(120)) + "."  # same words, another text
    assert _near([base, edited, other]).tolist() == [0, 0, 2]
    # descriptions from one template, a different number each (a third of the shingles shared)
    templated = [
        f"Edition text number {i}: a story of ships, harbours and the sea, told anew."
        for i in range(300)
    ]
    sizes = np.unique(_near(templated), return_counts=True)[1]
    assert sizes.max() <= 3  # without the check of candidate pairs, one chain of dozens


def test_signatures_do_not_depend_on_batching_or_batch_mates():
    from amazon_sft.data.near_duplicates import BATCH, NearDuplicateKeys, signatures

    rng = random.Random(3)
    texts = [
        " ".join(rng.choice(["red", "blue", "mug", "lamp", "set", "of", "2"]) for _ in range(n))
        for n in [rng.randrange(0, 30) for _ in range(BATCH + 300)]
    ] + ["!!!", "", "Ünïcode café"]
    streamed = NearDuplicateKeys()
    for t in texts:
        streamed.add(t)
    one_by_one = np.vstack([signatures([t]) for t in texts])
    assert (streamed.signatures() == one_by_one).all()
    assert (signatures(texts[::-1])[::-1] == one_by_one).all()
    assert (one_by_one[-3] != one_by_one[-2]).any()  # no word: a twin only of the same text


def test_the_manifest_records_the_split_version(prepared):
    import json

    from amazon_sft.data.manifest import Manifest, read_manifest, stale_split
    from amazon_sft.data.split import SPLIT_VERSION

    m = read_manifest(prepared)
    assert m.split_version == SPLIT_VERSION and stale_split(m, "d") is None
    raw = json.loads((prepared / "manifest.json").read_text())
    del raw["split_version"]  # as prepare wrote it before split versions
    old = Manifest.from_dict(raw)
    assert old.split_version == 1 and "re-run amazon-sft prepare" in stale_split(old, "d")


def test_rows_between_two_twins_in_a_bucket_do_not_keep_them_apart():
    """Each bucket row was checked only against the next one in row order: for every band two
    near-twins shared, one unlike row in between (a text quoting the four shingles that set
    that band) kept them apart, and one was held out while the other was taught (an outside
    review). A row is checked against the ``BUCKET_LOOKBACK`` rows before it in its bucket."""
    from amazon_sft.data.near_duplicates import (
        BANDS,
        BUCKET_LOOKBACK,
        MATCH,
        PERMUTATIONS,
        ROWS_PER_BAND,
        duplicate_labels,
    )

    a = np.arange(PERMUTATIONS, dtype=np.uint16) + 100
    b = a.copy()
    b[-ROWS_PER_BAND:] = 7  # 28 of 32 agree, bands 0..6 shared
    shared = BANDS - 1
    blockers = []
    for band in range(shared):  # one row a band, equal to a on that band only
        row = np.full(PERMUTATIONS, 5000 + band, dtype=np.uint16)
        row[band * ROWS_PER_BAND : (band + 1) * ROWS_PER_BAND] = a[
            band * ROWS_PER_BAND : (band + 1) * ROWS_PER_BAND
        ]
        blockers += [row] * min(BUCKET_LOOKBACK - 1, 3)
    sig = np.stack([a, *blockers, b])
    assert (sig[0] == sig[-1]).sum() >= MATCH
    labels = duplicate_labels(sig)
    assert labels[-1] == labels[0] == 0 and set(labels[1:-1].tolist()).isdisjoint({0})


def test_a_description_held_inside_a_longer_one_joins_it_and_boilerplate_does_not():
    """Split version 2 joined descriptions whose shingle sets were alike (Jaccard >= 0.5): a
    book whose description is another's author blurb plus a paragraph (the real rows: memoirs
    of one author, books of one series) holds most of its shingles in the other at a Jaccard
    near 0.3, and 9 of 416 held-out real descriptions shared >= 50% of their shingles with one
    training description (bench/near_duplicates.py, held-out fraction 0.4). A description most
    of whose rarer shingles another holds now joins it, across batches too; a blurb that many
    descriptions carry (boilerplate) joins none of them."""
    from amazon_sft.data.near_duplicates import BATCH, NearDuplicateKeys, duplicate_labels

    rng = random.Random(11)
    vocab = [f"word{i}" for i in range(5000)]

    def words(n: int) -> str:
        return " ".join(rng.choice(vocab) for _ in range(n))

    blurb = words(150)
    short, long = f"{blurb} {words(40)}", f"{words(200)} {blurb} {words(150)}"
    assert len(set(_near([short, long]).tolist())) == 2  # version 2 kept them apart
    boilerplate = words(60)
    carriers = [f"{words(50)} {boilerplate}" for _ in range(40)]
    fillers = [words(20) for _ in range(BATCH)]
    texts = [short, *fillers, long, *carriers]
    keys = NearDuplicateKeys()
    for t in texts:
        keys.add(t)
    labels, alike = keys.labels(), duplicate_labels(keys.signatures())  # version 3, 2
    assert labels[0] == labels[BATCH + 1] and alike[0] != alike[BATCH + 1]  # a batch apart
    # the blurb is half of each carrier: containment joins none of them (a few carriers are
    # alike enough for version 2's Jaccard test by chance, and stay joined)
    assert (labels[BATCH + 2 :] == alike[BATCH + 2 :]).all()
    assert len(set(labels.tolist())) == len(set(alike.tolist())) - 1


def test_identical_descriptions_past_a_crowded_bucket_are_one_group_and_version_3_is_stale(
    prepared,
):
    """Two rows of one description were joined only through the bands, each checked against
    the ``BUCKET_LOOKBACK`` rows before it: where more rows than that shared each of their
    bands in between, they stayed two groups and could land on both sides of the split. Rows of
    one signature are joined first now (split version 4), so a folder split by version 3 is
    stale."""
    import json

    from amazon_sft.data.manifest import Manifest, stale_split
    from amazon_sft.data.near_duplicates import (
        BANDS,
        BUCKET_LOOKBACK,
        PERMUTATIONS,
        ROWS_PER_BAND,
        duplicate_labels,
    )

    a = np.arange(PERMUTATIONS, dtype=np.uint16) + 100
    blockers = []
    for band in range(BANDS):  # rows sharing one band with a, no other min-hash
        row = np.full(PERMUTATIONS, 5000 + band, dtype=np.uint16)
        span = slice(band * ROWS_PER_BAND, (band + 1) * ROWS_PER_BAND)
        row[span] = a[span]
        blockers += [row] * (BUCKET_LOOKBACK + 1)
    labels = duplicate_labels(np.stack([a, *blockers, a.copy()]))
    assert labels[-1] == labels[0] == 0 and set(labels[1:-1].tolist()).isdisjoint({0})

    raw = json.loads((prepared / "manifest.json").read_text())
    raw["split_version"] = 3
    assert "re-run amazon-sft prepare" in stale_split(Manifest.from_dict(raw), "d")
