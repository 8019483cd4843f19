"""CPU stand-ins for the CUDA variable-length flash kernels that check their input contract.

The real kernels run on CUDA only, and refuse what they cannot take with a ``RuntimeError`` (or,
for wrong boundaries, silently compute garbage). These stand-ins check everything those kernels
check, plus the boundary values the kernels trust without reading (checking them on a GPU would
cost a host sync), then compute reference attention: causal SDPA per segment, in fp32, returned
in the input dtype, differentiable.

- ``torch_varlen_attn``: torch's ``torch.nn.attention.varlen.varlen_attn`` (2.11+ signature:
  ``window_size=(-1, 0)`` for causal, ``enable_gqa``), including the head checks its Python
  wrapper makes before the kernel.
- ``flash_attn_varlen_func``: flash-attn 2's ``flash_attn_varlen_func``, as transformers calls it.

``install(monkeypatch)`` puts both in place for one test (and makes the product believe a GPU
with both is present); ``install_globally()`` does the same for a whole process (the launcher
``train_on_stand_ins.py``).

What the kernels check (PyTorch ``aten/src/ATen/native/transformers/cuda/flash_attn/flash_api.cpp``
``mha_varlen_fwd``, flash-attn's ``csrc/flash_attn/flash_api.cpp``): q/k/v fp16 or bf16, one dtype;
int32 ``cu_seqlens`` on the tensors' device, contiguous; (total, heads, head_dim) tensors with a
contiguous last dimension; head_dim a multiple of 8 and at most 256; key/value heads dividing the
query heads; ``max_seqlen`` an int.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

HALF = (torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256
CALLS: list[dict] = []
"""One entry per stand-in call (kernel name, dtype, shapes): lets a test prove the kernel ran."""


class KernelContractError(RuntimeError):
    """What the CUDA kernel would have raised (or silently mis-computed)."""


def check_contract(q, k, v, cu_q, cu_k, max_q, max_k) -> None:
    """Raise ``KernelContractError`` for any input the CUDA varlen flash kernels refuse or
    would read wrongly."""
    _require(all(torch.is_tensor(x) for x in (q, k, v)), "q, k, v must be tensors")
    _require(
        q.dtype in HALF, f"FlashAttention only supports fp16 and bf16 data type, got {q.dtype}"
    )
    _require(
        k.dtype == q.dtype and v.dtype == q.dtype,
        f"query and key/value must have the same dtype, got {q.dtype}, {k.dtype}, {v.dtype}",
    )
    _require(q.dim() == 3 and k.dim() == 3 and v.dim() == 3, "q, k, v must be (total, heads, dim)")
    for name, x in (("query", q), ("key", k), ("value", v)):
        _require(x.stride(-1) == 1, f"{name} must have contiguous last dimension")
        _require(x.device == q.device, f"{name} is on {x.device}, query on {q.device}")
    head_dim = q.shape[-1]
    _require(head_dim % 8 == 0, f"head_dim {head_dim} must be a multiple of 8")
    _require(head_dim <= MAX_HEAD_DIM, f"head_dim {head_dim} is over {MAX_HEAD_DIM}")
    _require(k.shape == v.shape, f"key {tuple(k.shape)} and value {tuple(v.shape)} differ")
    _require(k.shape[-1] == head_dim, "key/value head_dim differs from the query's")
    _require(
        q.shape[1] % k.shape[1] == 0,
        "Number of heads in key/value must divide number of heads in query",
    )
    for name, cu, total, max_len in (
        ("q", cu_q, q.shape[0], max_q),
        ("k", cu_k, k.shape[0], max_k),
    ):
        _check_boundaries(name, cu, total, max_len, q.device)


def _check_boundaries(name, cu, total: int, max_len, device) -> None:
    _require(torch.is_tensor(cu), f"cu_seqlens_{name} must be a tensor")
    _require(cu.dtype == torch.int32, f"cu_seqlens_{name} must have dtype int32, got {cu.dtype}")
    _require(cu.device == device, f"cu_seqlens_{name} is on {cu.device}, the tensors on {device}")
    _require(cu.dim() == 1 and cu.is_contiguous(), f"cu_seqlens_{name} must be 1-D, contiguous")
    _require(
        type(max_len) is int,
        f"max_seqlen_{name} must be a Python int, got {type(max_len).__name__}",
    )
    bounds = cu.tolist()
    _require(len(bounds) >= 2 and bounds[0] == 0, f"cu_seqlens_{name} must start at 0")
    _require(
        all(b >= a for a, b in itertools.pairwise(bounds)),
        f"cu_seqlens_{name} must be non-decreasing",
    )
    _require(
        bounds[-1] == total, f"cu_seqlens_{name} ends at {bounds[-1]}, the tensors hold {total}"
    )
    longest = max(b - a for a, b in itertools.pairwise(bounds))
    _require(max_len >= longest, f"max_seqlen_{name}={max_len} < longest segment {longest}")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise KernelContractError(message)


def reference_attention(q, k, v, cu, causal: bool, scale) -> torch.Tensor:
    """Causal SDPA per segment in fp32 (outside autocast), returned in the input dtype."""
    out = []
    bounds = cu if isinstance(cu, list) else cu.tolist()
    with torch.autocast(q.device.type, enabled=False):
        for a, b in itertools.pairwise(bounds):
            qs, ks, vs = (x[a:b].float().transpose(0, 1)[None] for x in (q, k, v))
            o = F.scaled_dot_product_attention(
                qs, ks, vs, is_causal=causal, scale=scale, enable_gqa=ks.shape[1] != qs.shape[1]
            )
            out.append(o[0].transpose(0, 1))
    return torch.cat(out).to(q.dtype).contiguous()


def torch_varlen_attn(
    query,
    key,
    value,
    cu_seq_q,
    cu_seq_k,
    max_q,
    max_k,
    *,
    return_aux=None,
    scale=None,
    window_size=(-1, -1),
    enable_gqa=False,
    seqused_k=None,
    block_table=None,
    num_splits=None,
):
    """``torch.nn.attention.varlen.varlen_attn`` (torch 2.13), on CPU, contract-checked."""
    hq, hk = query.size(1), key.size(1)
    if not enable_gqa and hq != hk:  # the Python wrapper's own checks
        raise ValueError(f"Expect query and key/value to have the same number of heads: {hq}, {hk}")
    if enable_gqa and hq % hk:
        raise ValueError(f"Expect query heads a multiple of key/value heads: {hq}, {hk}")
    assert return_aux is None and seqused_k is None and block_table is None  # not used by training
    _require(tuple(window_size) in ((-1, -1), (-1, 0)), f"unexpected window {window_size}")
    # torch's wrapper reads causality as ``window_size == (-1, 0)``: a list [-1, 0] is not
    # causal there, so it is not here either (a review: the stand-in was laxer)
    causal = window_size == (-1, 0)
    args = (query, key, value, cu_seq_q, cu_seq_k, max_q, max_k)
    return _varlen_op(*args, causal, scale, "varlen_attn")


@torch.library.custom_op("amazon_sft_stand_in::varlen_attn", mutates_args=())
def _varlen_op(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seq_q: torch.Tensor,
    cu_seq_k: torch.Tensor,
    max_q: int,
    max_k: int,
    causal: bool,
    scale: float | None,
    kernel: str,
) -> torch.Tensor:
    """The kernel itself, a custom op as torch's is: a compiled graph calls it without tracing
    into it (its host reads of ``cu_seqlens`` would be graph breaks a real run does not have).
    ``max_q`` arrives as a plain int here even when the compiled graph holds it symbolic."""
    check_contract(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k)
    CALLS.append(_call(kernel, query, causal, scale) | {"segments": cu_seq_q.numel() - 1})
    return reference_attention(query, key, value, cu_seq_q, causal, scale)


@_varlen_op.register_fake
def _varlen_op_fake(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, causal, scale, kernel):
    return torch.empty_like(query)


@torch.library.custom_op("amazon_sft_stand_in::varlen_attn_backward", mutates_args=())
def _varlen_backward_op(
    grad: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seq_q: torch.Tensor,
    causal: bool,
    scale: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel's backward (its contract checked as flash_api.cpp's ``mha_varlen_bwd``
    does: ``dout`` in the query's dtype, contiguous last dimension): the reference attention's
    gradients, recomputed."""
    _require(grad.dtype == query.dtype, "query and dout must have the same dtype")
    _require(grad.stride(-1) == 1, "dout must have contiguous last dimension")
    _require(grad.shape == query.shape, f"dout is {tuple(grad.shape)}, query {tuple(query.shape)}")
    bounds = cu_seq_q.tolist()  # torch.func's vjp runs below the custom op's autograd

    def attend(q, k, v):
        return reference_attention(q, k, v, bounds, causal, scale)

    _, vjp = torch.func.vjp(attend, query, key, value)
    return tuple(g.contiguous() for g in vjp(grad))


@_varlen_backward_op.register_fake
def _varlen_backward_fake(grad, query, key, value, cu_seq_q, causal, scale):
    return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)


def _varlen_setup_context(ctx, inputs, output) -> None:
    query, key, value, cu_seq_q, _cu_k, _max_q, _max_k, causal, scale, _kernel = inputs
    ctx.save_for_backward(query, key, value, cu_seq_q)
    ctx.causal, ctx.scale = causal, scale


def _varlen_backward(ctx, grad):
    query, key, value, cu_seq_q = ctx.saved_tensors
    dq, dk, dv = _varlen_backward_op(grad, query, key, value, cu_seq_q, ctx.causal, ctx.scale)
    return dq, dk, dv, None, None, None, None, None, None, None


_varlen_op.register_autograd(_varlen_backward, setup_context=_varlen_setup_context)


def _call(kernel: str, q, causal: bool, scale) -> dict:
    """What a test reads of a call: the kernel ran, in which dtype and shape, causal or not, and
    at which scale (None: the kernel's own 1/sqrt(head_dim)); a non-causal or wrongly scaled
    call moves a step's loss too little to be told from bf16 rounding (a kernel audit)."""
    return {
        "kernel": kernel,
        "dtype": q.dtype,
        "q": tuple(q.shape),
        "causal": causal,
        "scale": scale,
    }


def flash_attn_varlen_func(
    q,
    k,
    v,
    cu_seqlens_q,
    cu_seqlens_k,
    max_seqlen_q,
    max_seqlen_k,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
    block_table=None,
):
    """flash-attn 2's ``flash_attn_varlen_func``, on CPU, contract-checked (2.6+ runs its
    kernel as a custom op, as this stand-in does)."""
    _require(dropout_p == 0.0 and softcap == 0.0 and alibi_slopes is None, "unexpected options")
    _require(tuple(window_size) == (-1, -1), f"unexpected window {window_size}")
    args = (q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    return _varlen_op(*args, causal, softmax_scale, "flash_attn_varlen_func")


def _flash_imports(*_args, **_kwargs):
    """What transformers' ``_lazy_imports`` returns for flash-attn 2: the varlen function is the
    only one a packed training batch reaches."""
    from transformers import modeling_flash_attention_utils as fa

    def no_dense(*a, **k):
        raise KernelContractError(
            "packed training must call the varlen function, not the dense one"
        )

    return no_dense, flash_attn_varlen_func, None, fa._pad_input, fa._unpad_input


def _patches():
    """(object, attribute, value) for every switch the stand-ins need."""
    import torch.nn.attention.varlen as varlen
    from transformers import PreTrainedModel
    from transformers import modeling_flash_attention_utils as fa

    from amazon_sft import attention

    return [
        (varlen, "varlen_attn", torch_varlen_attn),
        (attention, "has_varlen_attn", lambda: True),
        (attention, "has_flash_attn", lambda: True),
        (fa, "_lazy_imports", _flash_imports),
        (fa, "_loaded_implementation", None),  # forget a previous import
        (PreTrainedModel, "_flash_attn_can_dispatch", lambda self, *a, **k: True),
    ]


def install(monkeypatch) -> None:
    """The stand-ins in place for one test (undone by pytest's ``monkeypatch``)."""
    from amazon_sft import attention

    for obj, name, value in _patches():
        monkeypatch.setattr(obj, name, value)
    for table, key, value in _table_patches():
        monkeypatch.setitem(table, key, value)
    attention._varlen_call.cache_clear()  # the caller clears it again after the test


def install_globally() -> None:
    """The stand-ins in place for this whole process."""
    from amazon_sft import attention

    for obj, name, value in _patches():
        setattr(obj, name, value)
    for table, key, value in _table_patches():
        table[key] = value
    attention._varlen_call.cache_clear()


def _table_patches():
    """(dict, key, value): transformers' own view that flash-attn 2 is installed. Without it,
    transformers 5.25+ (which installs ``kernels``) runs ``flash_attention_2`` as the hub kernel
    ``kernels-community/flash-attn2`` instead of flash-attn's functions, stand-ins included."""
    from transformers import modeling_flash_attention_utils as fa

    matrix = getattr(fa, "FLASH_ATTENTION_COMPATIBILITY_MATRIX", None)
    if matrix is None or 2 not in matrix:  # transformers before the matrix: no hub fallback
        return []
    return [(matrix[2], "general_availability_check", lambda *a, **k: True)]
