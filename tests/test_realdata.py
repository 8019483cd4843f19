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
