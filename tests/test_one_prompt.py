"""One prompt for training and answering: what prepare teaches for a question and its records is
what ``ask``, ``chat``, ``serve`` and end-to-end eval render for the same question and records.
Two code paths build it (prepare cuts a batch of records at once; answering also scrubs text an
index may hold for another tokenizer), so this checks they agree on real product text, with a
chat template and without."""

from __future__ import annotations

import pytest

from amazon_sft.answering.index import CatalogueIndex, Source
from amazon_sft.answering.record_prompts import build_prompt
from amazon_sft.config import load_run_config
from amazon_sft.data.grounded import GroundedBuilder
from amazon_sft.prepare import prepare
from amazon_sft.prompts import build_prompt_format

from .conftest import GROUNDED, REAL_ROWS

pytestmark = pytest.mark.unit


def _taught_and_answered(catalogue, tok, tmp_path) -> tuple[int, list[tuple[str, str]]]:
    cfg = load_run_config(
        "tiny", [*GROUNDED, "data.context_record_tokens=96", "data.max_seq_len=1024"]
    )
    prepare(catalogue, tmp_path / "data", cfg, progress=False)
    index = CatalogueIndex(tmp_path / "data")
    fmt = build_prompt_format(tok, cfg.data)
    products = [index.record(i) for i in range(min(len(index), 300))]
    by_uid = {str(p["uid"]): p for p in products}
    examples = GroundedBuilder(index, fmt, tok, cfg.data).build(products)
    differ = []
    for ex in examples:
        full = [by_uid.get(r.uid) or _find(index, r.uid) for r in ex.records]
        sources = [Source(p["uid"], p["title"], p["content"], 1.0) for p in full]
        answered = build_prompt(fmt, tok, cfg.data, ex.question, sources, "grounded")
        if answered != ex.prompt:
            differ.append((ex.prompt, answered))
    return len(examples), differ


def _find(index: CatalogueIndex, uid: str) -> dict:
    return next(r for r in map(index.record, range(len(index))) if r["uid"] == uid)


@pytest.mark.parametrize("tokenizer", ["tiny_tok", "chat_tok"])
def test_a_taught_prompt_is_the_prompt_answering_renders(catalogue, tokenizer, request, tmp_path):
    n, differ = _taught_and_answered(catalogue, request.getfixturevalue(tokenizer), tmp_path)
    assert n > 100 and not differ, differ[:1]


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_ROWS.is_file(), reason="needs ../shared/data")
def test_a_taught_prompt_of_the_real_rows_is_the_prompt_answering_renders(chat_tok, tmp_path):
    n, differ = _taught_and_answered(REAL_ROWS, chat_tok, tmp_path)
    assert n > 100 and not differ, differ[:1]
