"""Attention for packed rows: explicit document boundaries on every path, no extra wheel needed.

Every training batch carries ``cu_seqlens`` (``PackedBatch``): the boundaries of its documents
over the flattened rows. Nothing here infers documents from position ids (transformers does that
for flash-attn only at batch size 1, so a micro-batch of 2 rows would attend across documents).

- ``varlen_attn``: torch's own variable-length flash kernel (torch >= 2.10, CUDA): one call per
  layer for the whole micro-batch, grouped-query attention without copying key/value heads.
- ``flash_attention_2``: transformers' flash-attn integration, handed the same ``cu_seq_lens_*``.
- ``sdpa_per_document``: one causal SDPA call per document (CPU, or a GPU without either of the
  above): the cost is sum(len^2) instead of rows x row_len^2.
- ``sdpa`` / ``eager``: transformers' own paths, given a block-diagonal causal mask built from
  the same boundaries (every pair of the row is computed; kept for comparison and debugging).

The two functions defined here are registered with transformers under their names; outside
training (generation with a padding mask and a KV cache) they run masked SDPA.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from amazon_sft.data.batch import PackedBatch, cumulative_lengths, segment_lengths

NAME = "sdpa_per_document"
VARLEN = "varlen_attn"
BOUNDARY_PATHS = (VARLEN, "flash_attention_2", NAME)
"""Implementations that take ``cu_seq_lens_*`` / ``max_length_*`` keyword arguments."""
BOUNDS = "document_bounds"
"""Keyword argument of ``sdpa_per_document``: the segment boundaries as a tuple of host ints."""
MASK_PATHS = ("sdpa", "eager")
"""Implementations that take an explicit 4-D block-diagonal causal mask."""


def packed_attention_inputs(batch: PackedBatch, implementation: str) -> dict:
    """Keyword arguments for the decoder's forward that keep the batch's documents apart."""
    if implementation in BOUNDARY_PATHS:
        cu = batch.cu_seqlens
        n = batch.max_segment_len
        out = {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": n, "max_length_k": n}
        if implementation == NAME:  # the same boundaries as host ints, for slicing
            out[BOUNDS] = document_bounds(batch)
        return out
    if implementation in MASK_PATHS:
        mask = block_causal_mask(batch.cu_seqlens, batch.input_ids.shape)
        if implementation == "eager":  # eager adds the mask to the scores
            mask = torch.zeros(mask.shape, device=mask.device).masked_fill(
                ~mask, torch.finfo(torch.float32).min
            )
        return {"attention_mask": mask}
    raise ValueError(f"no packed-row attention for {implementation!r}")


def document_bounds(batch: PackedBatch) -> tuple[int, ...]:
    """``batch.cu_seqlens`` computed from the batch's host-side document lengths: reading the
    device tensor back would be a host sync in every layer of a CUDA forward.

    >>> import numpy as np
    >>> ids = np.zeros((2, 4), dtype=np.int64)
    >>> document_bounds(PackedBatch.from_rows(ids, ids, ids, [[3], [2, 2]], np.arange(2)))
    (0, 3, 4, 6, 8)
    """
    seq = batch.input_ids.shape[1]
    return tuple(int(x) for x in cumulative_lengths(segment_lengths(batch.doc_lens, seq)))


def block_causal_mask(cu_seqlens: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """bool [rows, 1, seq, seq]: True where a query may see a key (same segment, not later).

    >>> block_causal_mask(torch.tensor([0, 2, 3, 4]), torch.Size([2, 2]))[:, 0].int().tolist()
    [[[1, 0], [1, 1]], [[1, 0], [0, 1]]]
    """
    rows, seq = shape
    segment = torch.repeat_interleave(  # output_size: the host need not read the lengths back
        torch.arange(len(cu_seqlens) - 1, device=cu_seqlens.device),
        cu_seqlens.diff(),
        output_size=rows * seq,
    ).view(rows, seq)
    same = segment[:, :, None] == segment[:, None, :]
    causal = torch.ones(seq, seq, dtype=torch.bool, device=cu_seqlens.device).tril()
    return (same & causal)[:, None]


def per_document_sdpa(
    module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs
):
    """The attention interface transformers calls: q [B, H, T, D], k/v [B, Hkv, T, D]."""
    p = dropout if module.training else 0.0
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None or attention_mask is not None:
        return _masked_sdpa(query, key, value, attention_mask, scaling, p), None
    b, h, t, d = query.shape
    flat = [
        x.transpose(1, 2).reshape(1, b * t, x.shape[1], d).transpose(1, 2)
        for x in (query, key, value)
    ]
    bounds = kwargs.get(BOUNDS) or cu.tolist()  # tolist: a caller without the host copy
    pieces = [
        F.scaled_dot_product_attention(
            flat[0][:, :, s:e],
            flat[1][:, :, s:e],
            flat[2][:, :, s:e],
            is_causal=True,
            scale=scaling,
            dropout_p=p,
            enable_gqa=key.shape[1] != h,
        )
        for s, e in itertools.pairwise(bounds)
    ]
    out = torch.cat(pieces, dim=2)  # [1, H, B*T, D]
    return out.transpose(1, 2).reshape(b, t, h, d), None


_KERNELS: dict[str, Callable] = {}
"""The varlen call built once per process. A dict, not ``functools.cache``: under
``train.compile`` dynamo traces through a cache wrapper and warns the user that it did."""


def _varlen_call() -> Callable:
    """torch's varlen_attn with causal masking and GQA (built once; ``.cache_clear()`` forgets
    it, for tests that swap the kernel)."""
    if VARLEN not in _KERNELS:
        _KERNELS[VARLEN] = _build_varlen_call()
    return _KERNELS[VARLEN]


_varlen_call.cache_clear = _KERNELS.clear  # type: ignore[attr-defined]


def _build_varlen_call() -> Callable:
    """Across the torch versions that have varlen_attn: 2.10 takes ``is_causal`` and no
    ``scale`` (its kernel's own 1/sqrt(head_dim)), later ones ``window_size=(-1, 0)`` and
    ``scale``; ``enable_gqa`` came later."""
    from torch.nn.attention.varlen import varlen_attn

    params = inspect.signature(varlen_attn).parameters
    causal = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    has_gqa, has_scale = "enable_gqa" in params, "scale" in params

    def call(q, k, v, cu, max_len, scale):
        extra = dict(causal)
        if has_scale:
            extra["scale"] = scale
        elif scale is not None and scale != q.shape[-1] ** -0.5:
            q = q * (scale * q.shape[-1] ** 0.5)  # the kernel multiplies by 1/sqrt(head_dim)
        if q.shape[1] != k.shape[1]:
            if has_gqa:
                extra["enable_gqa"] = True
            else:  # older torch: share each key/value head by copying it
                groups = q.shape[1] // k.shape[1]
                k, v = (x.repeat_interleave(groups, dim=1) for x in (k, v))
        return varlen_attn(q, k, v, cu, cu, max_len, max_len, **extra)

    return call


def varlen_attention(
    module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs
):
    """torch ``varlen_attn`` over the flattened micro-batch, one call per layer."""
    cu, max_len = kwargs.get("cu_seq_lens_q"), kwargs.get("max_length_q")
    if cu is None or attention_mask is not None:
        p = dropout if module.training else 0.0
        return _masked_sdpa(query, key, value, attention_mask, scaling, p), None
    if module.training and dropout > 0:
        raise ValueError("varlen_attn has no attention dropout; set attention_dropout=0")
    b, h, t, d = query.shape
    dtype = kernel_dtype(query, key, value)
    q, k, v = (
        x.transpose(1, 2).reshape(b * t, x.shape[1], d).to(dtype) for x in (query, key, value)
    )
    out = _varlen_call()(q, k, v, cu.to(torch.int32), int(max_len), scaling)
    return out.view(b, t, h, d), None


def kernel_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The one half-precision dtype the flash kernels take for q, k and v together.

    ``varlen_attn`` is a custom op that autocast does not cast (only the SDPA ops are on its
    list), and under autocast over fp32 master weights RoPE promotes q and k to fp32 while v
    stays bf16; the kernel refuses fp32 and mixed dtypes. As transformers' flash path does
    (``get_target_dtype``): autocast's dtype when autocast is on, else the inputs' own dtype if
    they share a half one.

    >>> kernel_dtype(torch.ones(1, dtype=torch.bfloat16), torch.ones(1, dtype=torch.bfloat16))
    torch.bfloat16
    >>> with torch.autocast("cpu", dtype=torch.bfloat16):
    ...     kernel_dtype(torch.ones(1), torch.ones(1, dtype=torch.bfloat16))
    torch.bfloat16
    """
    device = tensors[0].device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    dtypes = {x.dtype for x in tensors}
    if len(dtypes) == 1 and dtypes <= {torch.float16, torch.bfloat16}:
        return dtypes.pop()
    raise ValueError(
        f"varlen_attn takes fp16/bf16 q, k, v of one dtype, got {sorted(map(str, dtypes))}: "
        "train with train.precision=bf16 (autocast) or load the model in bf16"
    )


def _masked_sdpa(query, key, value, attention_mask, scaling, p):
    """Padded batches and cached decoding (generation): causal attention limited by the 2-D
    padding mask that the flash mask function hands over. A query row with no visible key (a
    left-padding position) is let see everything, so it stays finite; nothing reads it."""
    q_len, k_len = query.shape[2], key.shape[2]
    mask = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(
        diagonal=k_len - q_len
    )
    if attention_mask is not None:
        if attention_mask.dim() == 4:
            mask = mask & attention_mask.bool()
        else:
            mask = mask & attention_mask[:, None, None, -k_len:].bool()
        mask = mask | ~mask.any(dim=-1, keepdim=True)
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # CUDA's fused kernels take enable_gqa only without a mask (else: math)
        key, value = (x.repeat_interleave(groups, dim=1) for x in (key, value))
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, scale=scaling, dropout_p=p
    )
    return out.transpose(1, 2).contiguous()


def _flash_capable_gpu() -> bool:
    """A CUDA device the flash kernels run on: Ampere (compute capability 8.0) or newer; on a
    T4 or V100 they refuse at the first step ("FlashAttention only supports Ampere GPUs")."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


def has_varlen_attn() -> bool:
    """torch ships ``torch.nn.attention.varlen`` (2.10+) and an Ampere-or-newer GPU is present."""
    import importlib.util

    return (
        _flash_capable_gpu() and importlib.util.find_spec("torch.nn.attention.varlen") is not None
    )


def has_flash_attn() -> bool:
    """flash-attn 2 is installed as transformers takes it for ``flash_attention_2`` (the
    ``flash-attn`` package, >= 2.3.3) and an Ampere-or-newer GPU is present. Asked of transformers,
    not of ``find_spec("flash_attn")``: flash-attn 4 ships that module too, and transformers (5.25+,
    which installs ``kernels``) then runs ``flash_attention_2`` as a kernel fetched from the hub."""
    from transformers.utils import is_flash_attn_2_available

    return _flash_capable_gpu() and is_flash_attn_2_available()


FLASH_ATTN_CUSTOM_OP = (2, 6)
"""flash-attn's first version whose varlen function is a torch custom op: before it, the call
into its C extension breaks ``torch.compile``'s graph inside each decoder layer, and (the
checkpointed layer compiled whole, modeling.compile_decoder_layers) the layer runs eager."""


def compile_note(attn: str) -> str | None:
    """What ``train.compile`` does with this attention path, when it is not what it says: with
    flash-attn older than ``FLASH_ATTN_CUSTOM_OP``, nothing (a kernel audit).

    >>> compile_note("sdpa") is None
    True
    """
    from importlib.metadata import PackageNotFoundError, version

    if attn != "flash_attention_2":
        return None
    try:
        found = version("flash-attn")
    except PackageNotFoundError:
        return None
    parts = tuple(int(p) for p in found.split(".")[:2] if p.isdigit())
    if parts >= FLASH_ATTN_CUSTOM_OP:
        return None
    return (
        f"train.compile with flash-attn {found}: its kernel is no torch custom op before 2.6, so "
        "the graph breaks in every decoder layer and the layers run uncompiled; set "
        "train.attention=varlen_attn (torch's own, no wheel), or install flash-attn >= 2.6"
    )


def register() -> None:
    """Make ``sdpa_per_document`` and ``varlen_attn`` known to transformers (idempotent). Their
    mask function is flash-attn's, which passes no mask for unpadded packed rows."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    for name, fn in ((NAME, per_document_sdpa), (VARLEN, varlen_attention)):
        AttentionInterface.register(name, fn)
        AttentionMaskInterface.register(name, flash_attention_mask)


@contextmanager
def no_mask_preparation(implementation: str) -> Iterator[None]:
    """A training forward on a boundary path, without transformers' mask preparation.

    ``create_causal_mask`` looks for packed rows in the position ids of every forward given no
    mask (``find_packed_sequence_indices``), and tests its result with ``.all()`` in an ``if``:
    a host synchronisation per micro-batch, for a mask these paths do not use (the batch's
    ``cu_seq_lens_*`` carry the boundaries). With the implementation's name out of the mask
    table, transformers returns no mask at once (an attention it has no mask function for).
    Generation keeps the table: its padding mask is flash-attn's 2-D one. The table is
    transformers' private ``_global_mapping``: where a version lacks it, nothing changes but
    that one synchronisation."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    table = getattr(ALL_MASK_ATTENTION_FUNCTIONS, "_global_mapping", None)
    if implementation not in BOUNDARY_PATHS or not isinstance(table, dict):
        yield
        return
    mask_function = table.pop(implementation, None)
    try:
        yield
    finally:
        if mask_function is not None:
            table[implementation] = mask_function
