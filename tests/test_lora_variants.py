"""LoRA variants an engineer reaches for: rank-stabilised scaling (``lora.rslora``), DoRA
(``lora.dora``) and a fractional ``lora.alpha``; trained, saved, loaded and exported as plain
LoRA is (2 ranks under ZeRO-3: tests/test_multiproc.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from amazon_sft.config import LoraConfig, load_run_config
from amazon_sft.errors import UserError

from .conftest import train_overrides

REPO = Path(__file__).resolve().parents[1]


def _scalings(model) -> set[float]:
    return {
        m.scaling["default"]
        for m in model.modules()
        if isinstance(getattr(m, "scaling", None), dict)
    }


@pytest.mark.unit
def test_rslora_scales_by_the_root_of_the_rank_and_alpha_may_be_fractional(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from amazon_sft.modeling import wrap_lora

    def wrapped(**kw):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        return wrap_lora(model, LoraConfig(enabled=True, r=16, **kw))

    assert _scalings(wrapped(alpha=32)) == {2.0}
    assert _scalings(wrapped(alpha=32, rslora=True)) == {8.0}
    assert _scalings(wrapped(alpha=12.5)) == {12.5 / 16}


@pytest.mark.unit
def test_dora_trains_a_magnitude_per_output_in_fp32_on_a_bf16_base(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from amazon_sft.modeling import wrap_lora

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    trained = {
        n: p.dtype
        for n, p in wrap_lora(model, LoraConfig(enabled=True, dora=True)).named_parameters()
        if p.requires_grad
    }
    assert any("lora_magnitude_vector" in n for n in trained)
    assert set(trained.values()) == {torch.float32}


@pytest.mark.unit
@pytest.mark.parametrize("alpha", ["0", "-4"])
def test_a_scale_of_zero_or_less_is_refused(alpha):
    with pytest.raises(UserError, match=r"lora\.alpha must be > 0"):
        load_run_config("tiny", [f"lora.alpha={alpha}"])


@pytest.mark.e2e
def test_a_dora_run_saves_loads_and_exports_its_adapters(prepared, tiny_model_dir, tmp_path):
    """The adapter_config.json peft writes carries use_dora, so every command that loads the
    run rebuilds DoRA layers; export merges them and checks the merge against the adapters."""
    from safetensors.torch import load_file

    from amazon_sft.answering.export import export_model
    from amazon_sft.evaluation.loading import load_for_eval

    run = tmp_path / "run"
    lora = ["lora.enabled=true", "lora.dora=true", "lora.rslora=true", "lora.alpha=6.5"]
    cmd = [sys.executable, str(REPO / "amazon_sft" / "train.py"), "--config", "tiny",
           *train_overrides(prepared, tiny_model_dir, run, "train.max_steps=3", *lora)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((run / "final" / "adapter_config.json").read_text())
    assert (saved["use_dora"], saved["use_rslora"], saved["lora_alpha"]) == (True, True, 6.5)
    weights = load_file(str(run / "final" / "adapter_model.safetensors"))
    assert any("lora_magnitude_vector" in k for k in weights)
    model, _, cfg, _ = load_for_eval(str(run), [], "cpu", merge=False)
    assert cfg.lora.dora and any("lora_magnitude_vector" in n for n, _ in model.named_parameters())
    export_model(str(run), tmp_path / "exported")  # raises when the merge answers otherwise
    assert (tmp_path / "exported" / "model.safetensors").is_file()
