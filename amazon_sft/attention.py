"""Per-document causal attention for packed rows, on torch SDPA: no extra wheel, no wasted pairs.

transformers' own ``sdpa`` path keeps packed documents apart with a block-diagonal mask, but
still computes every (query, key) pair of the row and, with a mask, cannot use SDPA's flash
kernel. This path cuts each row at the positions where ``position_ids`` restart and runs causal
SDPA per document: the cost is sum(len^2) instead of row_len^2, and with ``is_causal`` and no mask
torch picks its built-in flash / memory-efficient kernels on GPUs. flash-attn's varlen kernel,
when installed, is still preferred (one launch per layer instead of one per document).

Registered with transformers as ``sdpa_per_document``; the mask function is the flash one, which
returns no mask for causal packed rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "sdpa_per_document"


def document_spans(position_ids: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each document of one row: a new document wherever the position is 0.

    >>> document_spans(torch.tensor([0, 1, 2, 0, 1, 0]))
    [(0, 3), (3, 5), (5, 6)]
    """
    starts = torch.nonzero(position_ids == 0).flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    ends = [*starts[1:], position_ids.shape[-1]]
    return list(zip(starts, ends))


def per_document_sdpa(
    module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs
):
    """The attention interface transformers calls: q [B, H, T, D], k/v [B, Hkv, T, D]."""
    position_ids = kwargs.get("position_ids")
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: share each key/value head across its query heads
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    p = dropout if module.training else 0.0
    if attention_mask is not None or position_ids is None or query.shape[2] != key.shape[2]:
        return _masked_sdpa(query, key, value, attention_mask, scaling, p), None
    rows = []
    for b in range(query.shape[0]):
        pieces = [
            F.scaled_dot_product_attention(
                query[b : b + 1, :, s:e],
                key[b : b + 1, :, s:e],
                value[b : b + 1, :, s:e],
                is_causal=True,
                scale=scaling,
                dropout_p=p,
            )
            for s, e in document_spans(position_ids[b])
        ]
        rows.append(torch.cat(pieces, dim=2))
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


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
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, scale=scaling, dropout_p=p
    )
    return out.transpose(1, 2).contiguous()


def register() -> None:
    """Make ``attn_implementation="sdpa_per_document"`` known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(NAME, per_document_sdpa)
    AttentionMaskInterface.register(NAME, flash_attention_mask)
