"""Opt-in: prepare the real AmazonTitles rows of ../shared/data when the folder is present."""

import json
from pathlib import Path

import orjson
import pytest

from amazon_sft.config import load_run_config
from amazon_sft.data.shards import PackedShards
from amazon_sft.prepare import prepare

REAL = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "amazontitles_real_head_sample.jsonl"
)
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not REAL.is_file(), reason=f"{REAL} not present"),
]


def test_real_rows_clean_split_and_pack(tmp_path):
    cfg = load_run_config("tiny", ["data.max_seq_len=1024", "data.max_answer_tokens=512"])
    m = prepare(REAL, tmp_path / "out", cfg, progress=False)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert m.lines_read == 1000
    assert report["modified"]["html_unescaped_content"] > 50  # "&#8217;" and friends are common
    assert report["modified"]["edition_note_stripped_content"] > 100
    assert m.fill_ratio > 0.99
    catalogue = [
        orjson.loads(x) for x in (tmp_path / "out" / "catalogue.jsonl").read_bytes().splitlines()
    ]
    assert not any(
        "&#8217;" in r["content"] or "This text refers to" in r["content"] for r in catalogue
    )
    assert not any(r["content"].endswith(" of this title.") for r in catalogue)  # the note's tail
    assert len(PackedShards(tmp_path / "out")) == m.rows


def test_the_real_near_duplicate_pairs_stay_on_one_side_of_the_split():
    """Issue 22's pairs: split by the exact hash of the cleaned description, 13 of the 134
    held-out real descriptions shared >= 50% of their 8-word shingles with one training
    description, 3 of them whole ("The Poisoned Crown" held out, "The Strangled Queen" in
    training: ' against ’, - against –). prepare's split (near_duplicates.NearDuplicateKeys)
    keeps those two in one group and leaves at most 1 such leak at the same held-out share."""
    import numpy as np

    from amazon_sft.config import CleanConfig
    from amazon_sft.data.cleaning import Cleaner
    from amazon_sft.data.near_duplicates import SHINGLE_WORDS, NearDuplicateKeys, normalise_text
    from amazon_sft.data.reading import ReadStats, read_records
    from amazon_sft.data.split import heldout_mask, split_groups, title_hash

    cleaner = Cleaner(CleanConfig())
    kept = [cleaner(r.title, r.content) for r in read_records(REAL, ReadStats())]
    titles, contents = zip(*[p for p in kept if p is not None])

    def shingles(text: str) -> set[str]:
        words = normalise_text(text).split()
        n = SHINGLE_WORDS
        return {" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}

    def leaking(labels: np.ndarray) -> int:
        held = heldout_mask(split_groups(t, labels), 0.1)
        train = [shingles(c) for c, h in zip(contents, held) if not h]
        mine = [shingles(c) for c, h in zip(contents, held) if h]
        return sum(any(len(m & x) >= 0.5 * len(m) for x in train) for m in mine)

    t = np.array([title_hash(x) for x in titles], dtype=np.uint64)
    exact = np.array([title_hash(c, key=c) for c in contents], dtype=np.uint64)
    keys = NearDuplicateKeys()
    for c in contents:
        keys.add(c)
    near = keys.labels()
    assert leaking(exact) == 13  # the count, by the exact hash
    assert leaking(near) <= 1
    groups = split_groups(t, near)
    crown, queen = (
        next(i for i, title in enumerate(titles) if title.startswith(name))
        for name in ("The Poisoned Crown", "The Strangled Queen")
    )
    assert groups[crown] == groups[queen]
