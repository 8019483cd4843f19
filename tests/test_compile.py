"""``train.compile``: torch.compile on each decoder layer (the first H200 run measured 1.21x and 1.32x
tokens/s on varlen_attn, docs/benchmarks.md). Compiled, the step must compute what the eager
step computes; with DeepSpeed (whose ZeRO-3 parameter hooks break compiled graphs) it is refused
before the model loads."""

from __future__ import annotations

import pytest
import torch

from amazon_sft.config import load_run_config
from amazon_sft.errors import UserError
from amazon_sft.modeling import load_model

from .test_kernel_contracts import KERNEL_PATHS, LORA, _run_steps

pytestmark = pytest.mark.e2e


def _compiled_layers(model) -> list:
    return [m for m in model.modules() if getattr(m, "_compiled_call_impl", None) is not None]


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_compiled_step_computes_what_the_eager_step_computes(
    kind, fresh_accelerate, tiny_model_dir, real_shape_data
):
    """bf16 autocast, gradient checkpointing, 1024-token rows, micro-batch 2, as a GPU run
    (on sdpa: varlen_attn runs on CUDA only)."""
    extra = LORA if kind == "lora" else []
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager = _run_steps(tiny_model_dir, real_shape_data, "sdpa", extra, steps=2)
    assert not counters["stats"]["unique_graphs"]
    compiled = _run_steps(
        tiny_model_dir, real_shape_data, "sdpa", [*extra, "train.compile=true"], 2
    )
    assert counters["stats"]["unique_graphs"] >= 1, {
        k: dict(v) for k, v in counters.items()
    }  # it did compile
    assert not counters["graph_break"], dict(counters["graph_break"])  # whole layers
    for a, b in zip(eager, compiled):
        assert b.finite and b.optimizer_stepped
        assert b.loss == pytest.approx(a.loss, rel=1e-3)
        assert b.grad_norm == pytest.approx(a.grad_norm, rel=1e-2)


def test_compile_wraps_each_decoder_layer(tiny_model_dir):
    on = [f"model.path={tiny_model_dir}", "train.compile=true", "train.attention=sdpa"]
    cfg = load_run_config("tiny", on)
    model = load_model(cfg, 2048, 0, "no")
    layers = model.config.num_hidden_layers
    assert len(_compiled_layers(model)) == layers
    assert all(type(m).__name__.endswith("DecoderLayer") for m in _compiled_layers(model))
    lora = load_model(
        load_run_config("tiny", [*on, *LORA]),
        2048,
        0,
        "no",
    )
    assert len(_compiled_layers(lora)) == layers


def test_compile_with_deepspeed_is_refused_before_the_load(tiny_model_dir):
    cfg = load_run_config("tiny", ["model.path=/nonexistent", "train.compile=true"])
    with pytest.raises(UserError, match=r"train\.compile.*DeepSpeed.*train\.compile=false"):
        load_model(cfg, 2048, 0, "bf16", deepspeed=True)


def test_compile_on_the_per_document_loop_is_refused():
    """Its Python loop over documents changes with every batch: a recompile per step (60 tok/s
    against 21,823 eager on the tiny CPU benchmark)."""
    cfg = load_run_config("tiny", ["model.path=/nonexistent", "train.compile=true"])
    with pytest.raises(UserError, match=r"sdpa_per_document.*train\.attention=(sdpa|varlen_attn)"):
        load_model(cfg, 2048, 0, "no")


def test_compile_refusals_name_what_runs_here_and_the_log_says_it_compiles(tiny_model_dir, caplog):
    """A new user on CPU followed the refusal to varlen_attn (CUDA only), then to auto, and back
    to the refusal; a compiled run's log never said it compiled (its slow first steps)."""
    cfg = load_run_config("tiny", ["model.path=/nonexistent", "train.compile=true"])
    with pytest.raises(UserError) as err:
        load_model(cfg, 2048, 0, "no")
    if not torch.cuda.is_available():
        assert "train.attention=sdpa or eager" in str(err.value)
        assert "varlen_attn" not in str(err.value).split("set ")[-1]
    on = [f"model.path={tiny_model_dir}", "train.compile=true", "train.attention=sdpa"]
    with caplog.at_level("INFO", logger="amazon_sft.modeling"):
        load_model(load_run_config("tiny", on), 2048, 0, "no")
    assert "train.compile: 2 decoder layers compiled" in caplog.text


@pytest.mark.parametrize("engine", ["zero2", "zero3"])
def test_check_world_refuses_compile_with_deepspeed(prepared, engine):
    """``--check-world`` (the SLURM job's check before it prepares) passed a config that every
    rank then refused."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [
            sys.executable,
            "amazon_sft/train.py",
            "--config",
            "tiny",
            f"data.path={prepared}",
            "train.compile=true",
            "--check-world",
            "2",
            "--accelerate-config",
            f"launch/accelerate/{engine}.yaml",
        ],
        capture_output=True,
        text=True,
        cwd=repo,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "train.compile is not supported with DeepSpeed" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    # a review: LoRA on a random base under ZeRO-3, which every rank refuses, passed too
    argv = [a if a != "train.compile=true" else "lora.enabled=true" for a in proc.args]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=repo, timeout=300)
    if engine == "zero3":
        assert proc.returncode == 2 and "model.path=random under DeepSpeed ZeRO-3" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("kernel", ["varlen_attn", "flash_attention_2"])
def test_compiled_step_on_the_varlen_kernel_computes_what_the_eager_step_computes(
    kernel, stand_ins, fresh_accelerate, tiny_model_dir, real_shape_data, recwarn
):
    """The path the H200 measured (varlen_attn + compile, docs/benchmarks.md), on the kernels'
    CPU stand-ins, which like the real kernels are custom ops that compiled graphs call without
    tracing into: whole layers (no graph break), the kernel reached in bf16 through the compiled
    layers, and the eager step's loss and gradient norm. Four batches that hold other document
    counts must not recompile each step (a graph per batch would be slower than eager on a GPU),
    nor warn the user that dynamo traced through a cache."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager = _run_steps(tiny_model_dir, real_shape_data, kernel, [], steps=4)
    assert not counters["stats"]["unique_graphs"]
    stand_ins.clear()
    compiled = _run_steps(tiny_model_dir, real_shape_data, kernel, ["train.compile=true"], 4)
    assert counters["stats"]["unique_graphs"] >= 1, {k: dict(v) for k, v in counters.items()}
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert stand_ins and all(c["dtype"] == torch.bfloat16 for c in stand_ins)
    assert {c["kernel"] for c in stand_ins} == {KERNEL_PATHS[kernel]}
    assert len({c["segments"] for c in stand_ins}) > 1  # the batches' shapes differ
    assert counters["stats"]["unique_graphs"] <= 3, dict(counters["stats"])
    assert not [w for w in recwarn if "lru_cache" in str(w.message)], [
        str(w.message) for w in recwarn
    ]
    for a, b in zip(eager, compiled):
        assert b.finite and b.optimizer_stepped
        assert b.loss == pytest.approx(a.loss, rel=1e-3)
        assert b.grad_norm == pytest.approx(a.grad_norm, rel=1e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["full", "lora"])
@pytest.mark.parametrize("kernel", ["varlen_attn", "flash_attention_2"])
def test_compiled_step_on_the_real_kernel_computes_what_the_eager_step_computes(
    kernel, kind, fresh_accelerate, tiny_model_dir, real_shape_data
):
    """The CPU test above on the card's own kernels (run by ``make gpu-check``): the H200 run
    measured compile's speed, not that its steps equal the eager ones."""
    import importlib.util

    from torch._dynamo.utils import counters

    from amazon_sft.attention import has_varlen_attn

    if kernel == "flash_attention_2" and not importlib.util.find_spec("flash_attn"):
        pytest.skip("flash-attn is not installed")
    if kernel == "varlen_attn" and not has_varlen_attn():
        pytest.skip("this torch has no torch.nn.attention.varlen for this card")
    extra = LORA if kind == "lora" else []
    torch._dynamo.reset()
    counters.clear()
    eager = _run_steps(tiny_model_dir, real_shape_data, kernel, extra, steps=4, cpu=False)
    compiled = _run_steps(
        tiny_model_dir, real_shape_data, kernel, [*extra, "train.compile=true"], 4, cpu=False
    )
    assert 1 <= counters["stats"]["unique_graphs"] <= 3, dict(counters["stats"])
    assert not counters["graph_break"], dict(counters["graph_break"])
    for a, b in zip(eager, compiled):
        assert b.finite and b.optimizer_stepped
        assert b.loss == pytest.approx(a.loss, rel=1e-2)
        assert b.grad_norm == pytest.approx(a.grad_norm, rel=5e-2)
