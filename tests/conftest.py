"""Shared fixtures: the tiny config and tokenizer, a generated catalogue, one prepared folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from amazon_sft.config import RunConfig, load_run_config
from amazon_sft.data.synthetic import write_catalogue
from amazon_sft.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_cfg() -> RunConfig:
    return load_run_config("tiny")


@pytest.fixture(scope="session")
def tiny_tok(tiny_cfg):
    return load_tokenizer(tiny_cfg.model)


@pytest.fixture()
def chat_tok(tiny_cfg):
    """The tiny tokenizer with a ChatML template and its special tokens, as instruct models have."""
    tok = load_tokenizer(tiny_cfg.model)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    return tok


@pytest.fixture(scope="session")
def catalogue(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("catalogue") / "trn.json.gz"
    write_catalogue(path, 2500, seed=3)
    return path


@pytest.fixture(scope="session")
def prepared(catalogue, tiny_cfg, tmp_path_factory) -> Path:
    from amazon_sft.prepare import prepare

    out = tmp_path_factory.mktemp("prepared") / "data"
    prepare(catalogue, out, tiny_cfg, progress=False)
    return out
