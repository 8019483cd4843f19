"""A LoRA run's record of its base (``lora_base.base_weights_digest``), which ask, eval,
export (``lora_base.check_lora_base``) and a resume (``resume_config.base_change``)
compare with the base ``model.path`` holds now. A review found two ways past it: the base's
config.json was not recorded (the same weights read with 2 of their 4 layers passed), and a
hub name's weights, not downloaded when the check ran, were never checked after the load."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from amazon_sft.errors import UserError
from amazon_sft.lora_base import BASE_CONFIG, base_weights_digest, check_lora_base
from amazon_sft.resume_config import base_change, changes_on_resume
from amazon_sft.saving import LORA_BASE

pytestmark = pytest.mark.unit


def _base(folder: Path) -> Path:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def _run(folder: Path, record: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / LORA_BASE).write_text(json.dumps(record))
    return folder


def _edit_config(base: Path, **changes) -> None:
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, **changes}, indent=2))


def _cfg(base: Path):
    return SimpleNamespace(model=SimpleNamespace(path=str(base), gguf_file=None))


def test_a_base_whose_config_changed_since_training_is_another_base(tmp_path):
    """Same weight files, 2 layers read of 4: ask, eval and export refuse it, as a resume does."""
    base = _base(tmp_path / "base")
    then = base_weights_digest(str(base), None)
    assert BASE_CONFIG in then and "model.safetensors" in then
    run = _run(tmp_path / "run", then)
    assert check_lora_base(run, _cfg(base), "--model", str(run))
    _edit_config(base, num_hidden_layers=2)
    now = base_weights_digest(str(base), None)
    assert now["model.safetensors"] == then["model.safetensors"] and now != then
    with pytest.raises(UserError, match=r"another base than model\.path .* \(config\.json differ"):
        check_lora_base(run, _cfg(base), "--model", str(run))
    assert "config.json" in base_change({"base_weights": then}, now).describe()
    with pytest.raises(ValueError, match=r"config\.json"):
        changes_on_resume({"config": {}, "base_weights": then}, {}, _no_data(), now)


def test_a_base_saved_again_by_another_transformers_is_the_same_base(tmp_path):
    base = _base(tmp_path / "base")
    then = base_weights_digest(str(base), None)
    _edit_config(base, transformers_version="9.9.9")  # and re-indented: the bytes differ
    assert base_weights_digest(str(base), None) == then


def test_a_run_recorded_before_the_config_was_is_compared_on_its_weights(tmp_path):
    """Runs saved before this change hold the weight files only: they still load, and a
    changed weight file is still refused."""
    base = _base(tmp_path / "base")
    weights_only = {
        k: v for k, v in base_weights_digest(str(base), None).items() if k != BASE_CONFIG
    }
    run = _run(tmp_path / "run", weights_only)
    assert check_lora_base(run, _cfg(base), "--model", str(run))
    assert base_change({"base_weights": weights_only}, base_weights_digest(str(base), None)) is None
    other = _run(tmp_path / "other", {**weights_only, "model.safetensors": "0" * 64})
    with pytest.raises(UserError, match=r"model\.safetensors differ"):
        check_lora_base(other, _cfg(base), "--model", str(other))


def test_a_hub_base_not_here_before_its_load_is_checked_after_it(tmp_path, monkeypatch, caplog):
    """The first check cannot read a hub name's weights (not downloaded yet): it says so, and
    the one after the load, which downloaded them, refuses a base the adapter was not trained
    on. A base still unreadable after its load is said, not taken silently."""
    from amazon_sft import lora_base

    run = _run(tmp_path / "run", {"model.safetensors": "a" * 64})
    cfg = SimpleNamespace(model=SimpleNamespace(path="org/base", gguf_file=None))
    monkeypatch.setattr(lora_base, "base_weights_digest", lambda path, gguf: None)
    assert check_lora_base(run, cfg, "--model", str(run)) is False
    with caplog.at_level("WARNING"):
        assert check_lora_base(run, cfg, "--model", str(run), loaded=True) is False
    assert "org/base loaded, but its files are not here" in caplog.text
    downloaded = {"model.safetensors": "b" * 64}
    monkeypatch.setattr(lora_base, "base_weights_digest", lambda path, gguf: downloaded)
    with pytest.raises(UserError, match=r"model\.safetensors differ"):
        check_lora_base(run, cfg, "--model", str(run), loaded=True)
    # cached at the trained revision: it matches before the load, which may fetch a newer one,
    # so it is checked after it too (a review); a folder here is checked once
    cached = {"model.safetensors": "a" * 64}
    monkeypatch.setattr(lora_base, "base_weights_digest", lambda path, gguf: cached)
    assert check_lora_base(run, cfg, "--model", str(run)) is False
    local = SimpleNamespace(model=SimpleNamespace(path=str(tmp_path), gguf_file=None))
    assert check_lora_base(run, local, "--model", str(run)) is True


def _no_data():
    from amazon_sft.data.manifest import DataIdentity

    return DataIdentity(digest="d", integrity="i")
