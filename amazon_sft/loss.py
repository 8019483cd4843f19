"""Cross-entropy over answer tokens only, in chunks, summed (the caller divides by the step's count).

Only the hidden states of positions whose next token is a label go through the LM head, a chunk
at a time, and each chunk's logits are recomputed in backward instead of stored, so the
(tokens x vocab) logits tensor never exists: at a 32k-152k vocabulary that tensor is usually the
largest activation of a fine-tuning step.

The loss is a *sum*: dividing by the number of label tokens of the whole optimizer step (over
accumulation micro-batches and ranks) happens in the training step, which is what makes
accumulation give the same gradient as one big batch (transformers #34191 is the mean-of-means
bug this avoids).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from amazon_sft.attention import no_mask_preparation, packed_attention_inputs
from amazon_sft.data.batch import IGNORE_INDEX, PackedBatch
from amazon_sft.modeling import decoder_and_head


def _chunk_loss(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return F.cross_entropy(logits, targets, reduction="sum")


def head_calls(label_slots: int, chunk_tokens: int) -> int:
    """LM-head calls per micro-batch: fixed by the batch *shape*, never by its data.

    Under ZeRO-3 every call of the head gathers its weight with a collective, so every rank must
    make the same calls in the same order; a data-dependent count (1 chunk here, 2 on the other
    rank, 1 for a padding-only batch) leaves ranks waiting on each other forever. ``label_slots``
    is rows x (seq_len - 1), the most labels a micro-batch of that shape can hold.

    >>> head_calls(label_slots=2 * 2047, chunk_tokens=1024)
    4
    """
    return max(1, -(-label_slots // chunk_tokens))


def chunked_cross_entropy(
    head: nn.Module,
    hidden: torch.Tensor,
    labels: torch.Tensor,
    chunk_tokens: int,
    label_positions: torch.Tensor | None = None,
):
    """(sum of next-token cross-entropy over labelled positions, number of labelled positions).

    The labelled positions are split evenly over ``head_calls(...)`` chunks, so no chunk holds
    more than ``chunk_tokens`` and the number of head calls (and of their recomputations in
    backward) is the same on every rank, padding-only batches included (their chunks are empty
    and still reach every parameter with a zero gradient, as DDP needs). ``label_positions``
    (``PackedBatch.label_positions``, found on the host) selects them without a boolean mask,
    whose ``nonzero`` makes the host wait for the whole forward on CUDA; without them they are
    found here.
    """
    targets = labels[:, 1:]
    slots = targets.numel()
    if label_positions is None:
        label_positions = (targets != IGNORE_INDEX).reshape(-1).nonzero().squeeze(1)
    # from the [rows, seq - 1] grid to the [rows, seq] one: views of the whole tensors, no copy
    seq = labels.shape[1]
    at = label_positions // (seq - 1) * seq + label_positions % (seq - 1)
    hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, at)
    targets = labels.reshape(-1).index_select(0, at + 1)
    n_calls = head_calls(slots, chunk_tokens)
    total = hidden.new_zeros((), dtype=torch.float32)
    for h, t in zip(hidden.tensor_split(n_calls), targets.tensor_split(n_calls)):
        total = total + checkpoint(_chunk_loss, head, h, t, use_reentrant=False)
    return total, targets.numel()


def micro_loss_scale(accumulation_steps: int, world_size: int, step_label_tokens):
    """Factor for a micro-batch's *summed* loss so that, after accelerate/DeepSpeed divide by the
    accumulation steps and average over ranks, the gradient is that of the step's summed loss
    over all ranks divided by all its label tokens. ``step_label_tokens`` may be a device
    tensor (the training step keeps it there: no host sync).

    >>> micro_loss_scale(accumulation_steps=4, world_size=2, step_label_tokens=1000)
    0.008
    """
    if torch.is_tensor(step_label_tokens):
        return accumulation_steps * world_size / step_label_tokens.clamp(min=1.0)
    return accumulation_steps * world_size / max(step_label_tokens, 1.0)


class SummedAnswerLoss(nn.Module):
    """Wraps a causal LM so that its forward returns the summed answer loss of a packed batch.

    DeepSpeed/DDP wrap this module; its parameters are the LM's, its ``lm`` is what gets saved.
    """

    def __init__(self, lm: nn.Module, chunk_tokens: int) -> None:
        super().__init__()
        self.lm = lm
        self.chunk_tokens = chunk_tokens

    def forward(self, batch: PackedBatch):
        decoder, head = decoder_and_head(self.lm)
        # the batch's own document boundaries keep packed documents apart on every attention path
        implementation = self.lm.config._attn_implementation
        boundaries = packed_attention_inputs(batch, implementation)
        with no_mask_preparation(implementation):  # no host read per micro-batch
            out = decoder(
                input_ids=batch.input_ids,
                position_ids=batch.position_ids,
                use_cache=False,
                **boundaries,
            )
        return chunked_cross_entropy(
            head, out.last_hidden_state, batch.labels, self.chunk_tokens, batch.label_positions
        )
