"""The GPU attention paths against their kernels' contracts, on CPU.

torch's ``varlen_attn`` and flash-attn's ``flash_attn_varlen_func`` run on CUDA only. The
stand-ins of ``tests/stand_ins/flash_kernels.py`` refuse what those kernels refuse (dtype, int32
boundaries, layout, head sizes, ...) and then compute reference attention, so the product's real
``Trainer.train_step`` can run here under the precision a GPU run uses: bf16 autocast over fp32
master weights (full fine-tune) and a bf16 base (LoRA), at the real-shape tier's sizes (1024-token
rows of product text, micro-batch 2, gradient checkpointing)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from amazon_sft.config import load_run_config
from amazon_sft.data.loader import PackedLoader
from amazon_sft.data.shards import PackedShards
from amazon_sft.distributed import BatchPlan
from amazon_sft.optim import build_optimizer
from amazon_sft.tokenizer import load_tokenizer

from .conftest import REAL_SHAPE_SEQ
from .stand_ins import flash_kernels
from .stand_ins.flash_kernels import KernelContractError, check_contract

KERNEL_PATHS = {"varlen_attn": "varlen_attn", "flash_attention_2": "flash_attn_varlen_func"}
LORA = ["lora.enabled=true", "lora.r=4", "lora.alpha=8", "lora.dropout=0"]
BF16_REL_TOL = 1e-4
"""The same first-step loss on the stand-in kernel and on ``sdpa_per_document`` (both bf16
autocast): bf16 rounding moved it by 1.7e-7 relative on the tiny model, a kernel audit
measured; but attention that is not causal moved it by only 5.1e-4 and documents that see each
other by 2.7e-4 (a random model's loss is flat): the gradient norm is the sharper check."""
GRAD_REL_TOL = 1e-2
"""The first step's gradient norm on both: bf16 rounding moved it by at most 5.5e-4 relative;
attention that is not causal by 9.8e-2, documents that see each other by 4.5e-2 (the same
audit). A wrong scale moved it by 2.6e-4 only: the stand-ins record the scale, checked above."""


def _good(dtype=torch.bfloat16):
    """A valid varlen call: 2 segments (5 + 3 tokens), 4 query heads, 2 key/value heads."""
    q = torch.randn(8, 4, 16, dtype=dtype)
    k, v = torch.randn(8, 2, 16, dtype=dtype), torch.randn(8, 2, 16, dtype=dtype)
    cu = torch.tensor([0, 5, 8], dtype=torch.int32)
    return {"q": q, "k": k, "v": v, "cu_q": cu, "cu_k": cu, "max_q": 5, "max_k": 5}


BAD_CALLS = {
    "fp32": (lambda a: a | {"q": a["q"].float(), "k": a["k"].float(), "v": a["v"].float()}),
    "mixed dtypes": (lambda a: a | {"q": a["q"].float(), "k": a["k"].float()}),
    "int64 boundaries": (lambda a: a | {"cu_q": a["cu_q"].long(), "cu_k": a["cu_k"].long()}),
    "not from 0": (lambda a: a | {"cu_q": torch.tensor([1, 5, 8], dtype=torch.int32)}),
    "decreasing": (lambda a: a | {"cu_q": torch.tensor([0, 6, 5, 8], dtype=torch.int32)}),
    "short total": (lambda a: a | {"cu_q": torch.tensor([0, 5, 7], dtype=torch.int32)}),
    "max_seqlen tensor": (lambda a: a | {"max_q": torch.tensor(5)}),
    "max_seqlen short": (lambda a: a | {"max_q": 4}),
    "head_dim 12": (lambda a: a | {x: a[x][..., :12] for x in ("q", "k", "v")}),
    "head_dim 264": (lambda a: a | {x: a[x].repeat(1, 1, 17)[..., :264] for x in "qkv"}),
    "strided last dim": (lambda a: a | {"q": torch.randn(8, 4, 32, dtype=a["q"].dtype)[..., ::2]}),
    "3 kv heads for 4": (lambda a: a | {x: a[x][:, :1].repeat(1, 3, 1) for x in "kv"}),
    "(B, T, H, D)": (lambda a: a | {"q": a["q"][None]}),
}


@pytest.mark.parametrize("bad", list(BAD_CALLS))
def test_the_stand_in_refuses_what_the_cuda_kernels_refuse(bad):
    args = BAD_CALLS[bad](_good())
    with pytest.raises(KernelContractError):
        check_contract(*args.values())


def test_the_stand_ins_compute_causal_attention_per_segment():
    a = _good()
    check_contract(*a.values())  # the valid call passes
    out = flash_kernels.torch_varlen_attn(
        a["q"], a["k"], a["v"], a["cu_q"], a["cu_k"], 5, 5, window_size=(-1, 0), enable_gqa=True
    )
    # the second segment's first token sees only itself: its output is its own value
    torch.testing.assert_close(out[5], a["v"][5].repeat_interleave(2, dim=0))
    with pytest.raises(ValueError, match="same number of heads"):
        flash_kernels.torch_varlen_attn(a["q"], a["k"], a["v"], a["cu_q"], a["cu_k"], 5, 5)


def _run_steps(
    model_dir, data_dir, attention: str, extra: list[str], steps: int = 1, cpu: bool = True
):
    """The product's own step (``Trainer.train_step``) under accelerate's bf16 autocast, on CPU
    (or, ``cpu=False``, the GPU): the losses and whether the optimizer stepped."""
    from accelerate import Accelerator

    from amazon_sft.train import build_model
    from amazon_sft.trainer import Trainer

    cfg = load_run_config(
        "tiny",
        [
            f"model.path={model_dir}",
            "model.tokenizer=builtin:tiny",
            f"data.path={data_dir}",
            f"data.max_seq_len={REAL_SHAPE_SEQ}",
            f"train.attention={attention}",
            "train.micro_batch_size=2",
            "train.global_batch_size=2",
            "train.loss_chunk_tokens=256",
            "train.gradient_checkpointing=true",
            "train.trackers=[]",
            *extra,
        ],
    )
    accelerator = Accelerator(cpu=cpu, mixed_precision="bf16")
    model = build_model(cfg, load_tokenizer(cfg.model), accelerator)
    optimizer, scheduler = build_optimizer(cfg, model)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    loader = PackedLoader(PackedShards(data_dir), 2)
    plan = BatchPlan(2, 1, 1, 2, REAL_SHAPE_SEQ)
    trainer = Trainer(cfg, accelerator, plan, model, optimizer, scheduler, loader, None)
    batches = iter(loader)
    return [trainer.train_step([next(batches)]) for _ in range(steps)]


def test_the_stand_in_backward_refuses_what_the_kernel_refuses():
    """flash_api.cpp's ``mha_varlen_bwd`` refuses a ``dout`` of another dtype than the query's,
    or with a last dimension that is not contiguous: the stand-in's backward checked nothing
    (a kernel audit), so a change to the output's handling would have passed on CPU."""
    q = torch.randn(8, 2, 16, dtype=torch.bfloat16)
    cu = torch.tensor([0, 5, 8], dtype=torch.int32)
    backward = torch.ops.amazon_sft_stand_in.varlen_attn_backward
    for dout in (torch.randn(8, 2, 16), torch.randn(8, 2, 32, dtype=torch.bfloat16)[..., ::2]):
        with pytest.raises(KernelContractError, match="dout"):
            backward(dout, q, q, q, cu, True, None)
    dq, _, _ = backward(torch.randn_like(q), q, q, q, cu, True, None)
    assert dq.shape == q.shape and dq.dtype == q.dtype


@pytest.mark.parametrize("kind", ["full", "lora"])
@pytest.mark.parametrize("attention", list(KERNEL_PATHS))
def test_train_step_meets_the_kernel_contract_under_bf16_autocast(
    attention, kind, stand_ins, fresh_accelerate, tiny_model_dir, real_shape_data
):
    """Full fine-tune: fp32 master weights, so RoPE hands the kernel fp32 q/k next to a bf16 v
    unless the product casts them. LoRA: a bf16 base."""
    extra = LORA if kind == "lora" else []
    results = _run_steps(tiny_model_dir, real_shape_data, attention, extra)
    calls = [c for c in stand_ins if c["kernel"] == KERNEL_PATHS[attention]]
    assert calls and all(c["dtype"] == torch.bfloat16 for c in calls)
    head_dim = calls[0]["q"][-1]
    assert all(c["causal"] and c["scale"] in (None, pytest.approx(head_dim**-0.5)) for c in calls)
    assert all(r.finite and r.optimizer_stepped for r in results)
    reference = _run_steps(tiny_model_dir, real_shape_data, "sdpa_per_document", extra, steps=1)
    assert results[0].loss == pytest.approx(reference[0].loss, rel=BF16_REL_TOL)
    assert results[0].grad_norm == pytest.approx(reference[0].grad_norm, rel=GRAD_REL_TOL)


REAL_SHAPE = (f"data.max_seq_len={REAL_SHAPE_SEQ}", "train.gradient_checkpointing=true")
MULTIPROC_LAUNCH = {
    "ddp": (["--multi_gpu"], {"ACCELERATE_USE_CPU": "true"}, REAL_SHAPE),
    "zero3": (["--config_file", "launch/accelerate/zero3.yaml"], {}, ()),
}
"""DDP at the real-shape tier's sizes; ZeRO-3 on the 256-token rows of the tiny config (38 s
here; at 1024-token rows it took ~300 s on the 2 shared cores). DeepSpeed keeps the whole model
in bf16 (no autocast), so what ZeRO-3 adds is its partitioned parameters reaching the kernel."""
MULTIPROC_TIMEOUT_S = 300


@pytest.mark.multiproc
@pytest.mark.parametrize("launch", list(MULTIPROC_LAUNCH))
def test_two_processes_train_through_the_varlen_kernel_contract(
    launch, tiny_model_dir, real_shape_data, prepared, tmp_path
):
    """2 ranks over gloo, ``train.precision=bf16`` and ``train.attention=varlen_attn`` as on a
    GPU (DDP: bf16 autocast over fp32 master weights), every rank through the kernel contract."""
    import json
    import os
    import subprocess
    import sys

    from .conftest import REPO, free_port, train_overrides

    flags, env, shape = MULTIPROC_LAUNCH[launch]
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    log = tmp_path / "kernel_calls.jsonl"
    cmd = [accelerate, "launch", *flags, "--num_processes", "2"]
    cmd += ["--main_process_port", str(free_port())]
    cmd += [str(REPO / "tests" / "stand_ins" / "train_on_stand_ins.py"), "--config", "tiny"]
    cmd += train_overrides(
        real_shape_data if shape else prepared,
        tiny_model_dir,
        tmp_path / "run",
        *("train.precision=bf16", "train.attention=varlen_attn", "train.max_steps=1"),
        *("train.global_batch_size=4", "train.micro_batch_size=2", "train.loss_chunk_tokens=256"),
        "train.validation_rows=3",  # the validation forwards (eval mode, no grad) go through too
        *shape,
    )
    env = {**os.environ, **env, "STAND_IN_LOG": str(log)}
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=MULTIPROC_TIMEOUT_S
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "attention: varlen_attn" in proc.stderr
    ranks = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(ranks) == 2
    for rank in ranks:
        assert rank["calls"] == [
            {"kernel": "varlen_attn", "dtype": "torch.bfloat16", "calls": rank["calls"][0]["calls"]}
        ]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(r["optimizer_stepped"] and not r["non_finite"] for r in rows)
    assert rows[-1]["val_loss"] is not None and rows[-1]["val_tokens"] > 0


@pytest.mark.parametrize(
    ("installed", "said"), [("2.5.8", True), ("2.6.3", False), ("2.8.0.post2", False)]
)
def test_compile_with_a_flash_attn_older_than_its_custom_op_is_said(installed, said, monkeypatch):
    """A kernel audit: before flash-attn 2.6 its varlen function calls the C extension directly,
    so ``train.compile`` breaks the graph in every checkpointed layer and the layers run eager:
    compile on, nothing compiled, nothing said. It is said now, with the remedy."""
    import importlib.metadata

    from amazon_sft import attention

    monkeypatch.setattr(importlib.metadata, "version", lambda name: installed)
    note = attention.compile_note("flash_attention_2")
    assert (note is not None) is said and (not said or "varlen_attn" in note)
    assert attention.compile_note("varlen_attn") is None
