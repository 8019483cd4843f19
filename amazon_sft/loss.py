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

from amazon_sft.data.loader import IGNORE_INDEX
from amazon_sft.modeling import decoder_and_head


def _chunk_loss(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return F.cross_entropy(logits, targets, reduction="sum")


def chunked_cross_entropy(
    head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor, chunk_tokens: int
):
    """(sum of next-token cross-entropy over labelled positions, number of labelled positions)."""
    first = hidden[:, 0]
    targets = labels[:, 1:]
    selected = targets != IGNORE_INDEX
    hidden, targets = hidden[:, :-1][selected], targets[selected]
    n_tokens = targets.numel()
    if (
        n_tokens == 0
    ):  # a padding-only batch: a zero that still reaches every parameter (DDP needs it)
        return head(first).float().sum() * 0.0, 0
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, n_tokens, chunk_tokens):
        h, t = hidden[start : start + chunk_tokens], targets[start : start + chunk_tokens]
        total = total + checkpoint(_chunk_loss, head, h, t, use_reentrant=False)
    return total, n_tokens


def micro_loss_scale(accumulation_steps: int, world_size: int, step_label_tokens: float) -> float:
    """Factor for a micro-batch's *summed* loss so that, after accelerate/DeepSpeed divide by the
    accumulation steps and average over ranks, the gradient is that of the step's summed loss
    over all ranks divided by all its label tokens.

    >>> micro_loss_scale(accumulation_steps=4, world_size=2, step_label_tokens=1000)
    0.008
    """
    return accumulation_steps * world_size / max(step_label_tokens, 1.0)


class SummedAnswerLoss(nn.Module):
    """Wraps a causal LM so that its forward returns the summed answer loss of a packed batch.

    DeepSpeed/DDP wrap this module; its parameters are the LM's, its ``lm`` is what gets saved.
    """

    def __init__(self, lm: nn.Module, chunk_tokens: int) -> None:
        super().__init__()
        self.lm = lm
        self.chunk_tokens = chunk_tokens

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, labels: torch.Tensor):
        decoder, head = decoder_and_head(self.lm)
        # No attention mask: position ids restarting at 0 keep packed documents apart.
        out = decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False)
        return chunked_cross_entropy(head, out.last_hidden_state, labels, self.chunk_tokens)
