"""A full fine-tune that cannot fit one GPU without ZeRO is refused before the model loads."""

from __future__ import annotations

import json

import pytest

from amazon_sft.config import load_run_config
from amazon_sft.errors import UserError
from amazon_sft.model_memory import check_fits_unsharded, parameters_of

LLAMA3_8B = {  # Meta-Llama-3-8B-Instruct's config.json, the fields that size it
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": False,
}


def test_an_8b_full_fine_tune_is_refused_on_an_80_gb_gpu_before_any_weight_is_read(tmp_path):
    """NGPU=8 CONFIG=llama3-8b-full launch/train_local.sh ran plain DDP: every rank loaded 32 GB
    of fp32 weights, then ran out of GPU memory (an ML engineer's review). The count comes from
    config.json alone (no weights here), and the refusal names the remedies."""
    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_8B))
    cfg = load_run_config("llama3-8b-full", [f"model.path={tmp_path}"])
    parameters = parameters_of(cfg.model)
    assert parameters == 8_030_261_248  # Llama-3-8B's published count
    with pytest.raises(UserError, match=r"8\.03B parameters .*161 GB.*80 GB: .*ACCEL=zero2 or zero3.*lora\.enabled=true"):  # fmt: skip
        check_fits_unsharded(parameters, 80 * 10**9, "NVIDIA H100 80GB HBM3", processes=1)
    # an outside review: 16 bytes a parameter let 8B through on an H200, whose first step then
    # ran out: AdamW on CUDA (foreach) adds about the parameters' size at its peak, and DDP
    # copies the gradients into its buckets; 3B fits one card, not under DDP on a 40 GB one
    with pytest.raises(UserError, match=r"161 GB"):
        check_fits_unsharded(parameters, 141 * 10**9, "NVIDIA H200", processes=1)
    with pytest.raises(UserError, match=r"193 GB"):
        check_fits_unsharded(parameters, 192 * 10**9, "NVIDIA B200", processes=8)
    check_fits_unsharded(parameters, 192 * 10**9, "NVIDIA B200", processes=1)


def test_the_count_is_the_loaded_models_and_unknown_where_config_json_is_not_here(
    tiny_model_dir, tmp_path
):
    from transformers import AutoModelForCausalLM

    cfg = load_run_config("tiny", [f"model.path={tiny_model_dir}"])
    loaded = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert parameters_of(cfg.model) == sum(p.numel() for p in loaded.parameters())
    assert parameters_of(load_run_config("smollm2-135m", []).model) is None  # a GGUF file
    gone = load_run_config("tiny", [f"model.path={tmp_path / 'gone'}"])
    assert parameters_of(gone.model) is None


def test_only_a_full_fine_tune_outside_deepspeed_on_cuda_is_checked(tmp_path, monkeypatch):
    """The check as train.py calls it, on a stand-in 80 GB card (no GPU here)."""
    from types import SimpleNamespace

    import torch
    from accelerate.utils import DistributedType

    from amazon_sft.model_memory import check_full_fine_tune_fits

    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_8B))
    card = SimpleNamespace(total_memory=80 * 10**9, name="NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: card)
    ddp = SimpleNamespace(distributed_type=DistributedType.MULTI_GPU, device="cuda:0")

    def deepspeed(stage):
        plugin = SimpleNamespace(zero_stage=stage)
        state = SimpleNamespace(deepspeed_plugin=plugin)
        return SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, device="cuda:0", state=state, num_processes=8)  # fmt: skip

    zero = deepspeed(2)
    full = load_run_config("llama3-8b-full", [f"model.path={tmp_path}"])
    with pytest.raises(UserError, match="without ZeRO"):
        check_full_fine_tune_fits(full, ddp)
    check_full_fine_tune_fits(full, zero)  # ZeRO shards the states: its own concern
    with pytest.raises(UserError, match="without ZeRO"):  # stage 0 keeps them all, as DDP does
        check_full_fine_tune_fits(full, deepspeed(0))
    lora = load_run_config("llama3-8b-lora", [f"model.path={tmp_path}"])
    check_full_fine_tune_fits(lora, ddp)  # a frozen bf16 base: 16 GB
    on_cpu = SimpleNamespace(distributed_type=DistributedType.MULTI_CPU, device=torch.device("cpu"))
    check_full_fine_tune_fits(full, on_cpu)  # CPU=1 on a GPU host: no card (a review: it raised)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_full_fine_tune_fits(full, ddp)  # CPU: host memory, no card to compare with


def test_a_full_fine_tune_loads_in_bf16_only_where_deepspeed_keeps_the_fp32_masters():
    """Under DeepSpeed in bf16 the engine casts the weights to bf16 and makes its fp32 masters
    from them: an fp32 load doubled each rank's host memory (ZeRO-2: 32 GB a rank for 8B) for
    the same values (a 1-process CPU run in bf16 gave the same 4 losses either way, ZeRO-2 and
    ZeRO-3). Plain DDP keeps fp32 weights, autocast computing in bf16."""
    import torch

    from amazon_sft.modeling import model_dtype

    assert model_dtype("bf16", lora=False, deepspeed=True) is torch.bfloat16
    assert model_dtype("bf16", lora=False, deepspeed=False) is torch.float32
    assert model_dtype("no", lora=False, deepspeed=True) is torch.float32
    assert model_dtype("bf16", lora=True) is torch.bfloat16
