"""The small GPU-path contracts: the peak FLOP/s of each card (MFU's denominator), no host read
per layer on the per-document path, and the DeepSpeed gradient norm kept on the device."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from amazon_sft.metrics import peak_bf16_tflops


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.4),  # SXM
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.5),
        ("NVIDIA H200", 989.4),
        ("NVIDIA H200 NVL", 835.5),
        ("NVIDIA GH200 480GB", 989.4),
        ("NVIDIA B200", 2250.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L40S", 362.1),
        ("Tesla T4", None),  # unknown: MFU is reported as n/a, not guessed
    ],
)
def test_peak_flops_follow_the_exact_card(name, tflops):
    assert peak_bf16_tflops(name) == tflops


def test_sdpa_per_document_reads_no_boundaries_from_the_device_per_layer(monkeypatch):
    """On CUDA ``cu.tolist()`` is a host sync; the boundaries come with the batch instead (its
    document lengths are host lists already), so a forward makes no such read at all."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from amazon_sft.attention import NAME, packed_attention_inputs, register
    from amazon_sft.data.batch import PackedBatch

    register()
    config = AutoConfig.for_model(
        "llama",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
    )
    lm = AutoModelForCausalLM.from_config(config, attn_implementation=NAME).eval()
    ids = np.arange(24, dtype=np.int64).reshape(2, 12) % 100
    pos = np.array([list(range(5)) + list(range(7)), list(range(12))])
    batch = PackedBatch.from_rows(ids, ids.copy(), pos, [[5, 7], [9]], np.arange(2))
    reads = []
    real = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: reads.append(t.shape) or real(t))
    with torch.no_grad():
        lm(
            input_ids=batch.input_ids,
            position_ids=batch.position_ids,
            **packed_attention_inputs(batch, NAME),
        )
    assert reads == []


def test_the_deepspeed_gradient_norm_stays_on_the_device():
    """accelerate's ``clip_grad_norm_`` under DeepSpeed calls ``.item()`` (a host sync of its
    own); the step reads the engine's norm tensor with its other numbers, in one sync."""
    from amazon_sft.distributed import global_grad_norm

    norm = torch.tensor(3.0)
    accelerator = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=object()))
    engine = SimpleNamespace(get_global_grad_norm=lambda: norm)
    assert global_grad_norm(accelerator, engine, max_norm=1.0) is norm


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_loss_and_the_steps_small_copies_make_the_host_wait_for_nothing():
    """A kernel-contract review: the loss's boolean mask (aten::nonzero) and the step's blocking
    copies of its small host vectors each made the host wait for the GPU; torch's sync debug
    mode raises on any synchronising call."""
    from amazon_sft.data.batch import PackedBatch
    from amazon_sft.distributed import to_device
    from amazon_sft.loss import chunked_cross_entropy

    ids = np.arange(24, dtype=np.int64).reshape(2, 12) % 100
    labels = ids.copy()
    labels[0, :5] = -100
    pos = np.array([list(range(5)) + list(range(7)), list(range(12))])
    batch = PackedBatch.from_rows(ids, labels, pos, [[5, 7], [12]], np.arange(2)).to("cuda")
    head = torch.nn.Linear(16, 100, bias=False).cuda()
    hidden = torch.randn(2, 12, 16, device="cuda", requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        total, _ = chunked_cross_entropy(head, hidden, batch.labels, 8, batch.label_positions)
        total.backward()
        flags = to_device(torch.tensor([1.0, 0.0], dtype=torch.float64), "cuda")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(total).item() and flags.tolist() == [1.0, 0.0]


def test_a_vector_already_on_the_device_is_not_pinned(monkeypatch):
    """A review of the pinned copies: the step's flags are on the GPU already when reduce_sum
    takes them, and ``pin_memory`` of a CUDA tensor raises ("only dense CPU tensors can be
    pinned"): every GPU step would have crashed. Stand-ins: a meta tensor, a recorded pin."""
    from amazon_sft.distributed import to_device

    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: pinned.append(t.device) or t)
    monkeypatch.setattr(torch.Tensor, "to", lambda t, *a, **k: t)
    to_device(torch.zeros(2, device="meta"), "cuda:0")
    assert pinned == []
    to_device(torch.zeros(2), "cuda:0")  # a host vector: pinned, then copied non-blocking
    assert pinned == [torch.device("cpu")]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_reduce_sum_takes_host_and_device_vectors_on_cuda():
    from types import SimpleNamespace

    from amazon_sft.distributed import reduce_sum

    acc = SimpleNamespace(device=torch.device("cuda"), reduce=lambda v, reduction: v)
    for values in (torch.ones(3), torch.ones(3, device="cuda")):
        assert reduce_sum(acc, values).tolist() == [1.0, 1.0, 1.0]


def test_a_batch_goes_to_the_gpu_from_pinned_memory(monkeypatch):
    """A CUDA-contract audit: ``PackedBatch.to`` copied with ``non_blocking=True`` from pageable
    memory, where the flag has no effect (torch's ``Tensor.to`` docs): each micro-batch's copy
    waited for the GPU's queued backward. Every host tensor is pinned first, as ``to_device``
    does for the step's small vectors."""
    from amazon_sft.data.batch import PackedBatch

    ids = np.arange(24, dtype=np.int64).reshape(2, 12) % 100
    pos = np.tile(np.arange(12), (2, 1))
    batch = PackedBatch.from_rows(ids, ids.copy(), pos, [[5, 7], [12]], np.arange(2))
    pinned, copied = [], []

    def pin(t):  # a stand-in "pinned" copy: a new tensor whose identity the copy must show
        out = t.clone()
        pinned.append(id(out))
        return out

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin)
    monkeypatch.setattr(torch.Tensor, "to", lambda t, *a, **k: copied.append((id(t), k)) or t)
    batch.to("cuda:0")
    assert len(pinned) == len(copied) == 5, (pinned, copied)
    assert [i for i, _ in copied] == pinned  # what is copied is the pinned tensor
    assert all(k.get("non_blocking") for _, k in copied)
    pinned.clear()
    batch.to("cpu")  # nothing to pin for a CPU run
    assert pinned == []


def test_the_block_mask_reads_nothing_back_from_the_device(monkeypatch):
    """A CUDA-contract audit: the sdpa path's block mask called ``repeat_interleave`` with
    device ``repeats`` and no ``output_size``, which makes the host wait for the GPU to learn
    the output's length (torch's docs): one sync per micro-batch on ``auto``'s GPU fallback."""
    from amazon_sft.attention import block_causal_mask

    real = torch.repeat_interleave
    seen = []

    def strict(input, repeats=None, dim=None, *, output_size=None):
        if torch.is_tensor(repeats) and output_size is None:
            raise AssertionError("repeat_interleave with tensor repeats needs output_size")
        seen.append(output_size)
        return real(input, repeats, dim, output_size=output_size)

    monkeypatch.setattr(torch, "repeat_interleave", strict)
    mask = block_causal_mask(torch.tensor([0, 2, 3, 4]), torch.Size([2, 2]))
    assert seen == [4] and mask[:, 0].int().tolist() == [[[1, 0], [1, 1]], [[1, 0], [0, 1]]]


def test_masked_sdpa_never_asks_for_gqa_with_a_mask(monkeypatch):
    """A CUDA-contract audit: CUDA's flash and memory-efficient SDPA kernels take
    ``enable_gqa`` only without a mask (transformers' sdpa integration repeats key/value heads
    instead); with both, SDPA falls back to the math kernel, slow and memory-hungry. The CPU
    kernel takes both, so no CPU run showed it."""
    import torch.nn.functional as F

    from amazon_sft.attention import _masked_sdpa

    real, calls = F.scaled_dot_product_attention, []

    def spy(q, k, v, attn_mask=None, **kw):
        calls.append((attn_mask is not None, kw.get("enable_gqa", False), k.shape[1]))
        return real(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    q, k, v = torch.randn(1, 4, 5, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    out = _masked_sdpa(q, k, v, torch.ones(1, 5, dtype=torch.bool), None, 0.0)
    assert calls == [(True, False, 4)], calls
    expected = real(q, k, v, is_causal=True, enable_gqa=True).transpose(1, 2)
    torch.testing.assert_close(out, expected)


def test_answering_on_a_gpu_loads_the_model_in_bf16(monkeypatch, tiny_model_dir):
    """A CUDA-contract audit: eval, ask and serve loaded every model in fp32 on a GPU too (the
    training path's fp32 master weights): an 8B model took 32 GB of weights, not 16, and
    generated about 2x slower. On a bf16-capable GPU the answering model is bf16; on CPU it
    stays fp32."""
    from amazon_sft import attention
    from amazon_sft.evaluation import loading

    monkeypatch.setattr(loading, "_ready", lambda model, device: model)
    overrides = [f"model.path={tiny_model_dir}", "model.tokenizer=builtin:tiny"]
    model, *_ = loading.load_for_eval("config:tiny", overrides, "cpu")
    assert next(model.parameters()).dtype == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(attention, "_flash_capable_gpu", lambda: False)  # no card to ask
    for native in (True, False):  # a T4 or V100 emulates bf16: fp32 there, as training
        monkeypatch.setattr(
            torch.cuda,
            "is_bf16_supported",
            lambda including_emulation=True, native=native: native or including_emulation,
        )
        model, *_ = loading.load_for_eval("config:tiny", overrides, "cuda")
        want = torch.bfloat16 if native else torch.float32
        assert next(model.parameters()).dtype == want
