"""Non-finite steps, handled the same on every path (one process, DDP, DeepSpeed ZeRO-1/2/3).

A step is non-finite when a micro-batch loss on any rank, or the global gradient norm, is NaN
or infinite. Such a step never changes the weights, never advances the learning-rate schedule,
and its state is never checkpointed (``resume=auto`` would pick it up):

- ``poisoned_loss``: a non-finite micro-batch loss is back-propagated multiplied by NaN, so every
  gradient of the step is NaN on every rank, whatever the loss's own gradient was (an infinite
  loss can have finite gradients; replacing it by 0 would let the other micro-batches' gradients
  through). DDP averages the NaN into every rank; DeepSpeed's overflow check (on for bf16 by
  default, and for any invalid gradient norm in fp32) then skips the step inside its
  ``step()``, which runs in the last backward, before the step's flags reach the host.
- ``apply_step``: without DeepSpeed, the optimizer steps only on a finite step; with it,
  DeepSpeed has already decided and ``engine.was_step_applied()`` says what it did. Either way
  the scheduler steps exactly when the optimizer did.
- the training loop writes a checkpoint only after a finite step.
"""

from __future__ import annotations

import torch


def poisoned_loss(summed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(the loss to back-propagate, the loss to report, 1.0 when non-finite else 0.0).

    The reported loss of a non-finite micro-batch is 0 (the step is flagged; NaN is not JSON).

    >>> back, shown, bad = poisoned_loss(torch.tensor(float("inf")))
    >>> back.isnan().item(), shown.item(), bad.item()
    (True, 0.0, 1.0)
    >>> [x.item() for x in poisoned_loss(torch.tensor(2.5))]
    [2.5, 2.5, 0.0]
    """
    finite = torch.isfinite(summed)
    poison = torch.where(finite, 1.0, float("nan")).to(summed.dtype)
    shown = torch.where(finite, summed, torch.zeros_like(summed)).detach()
    return summed * poison, shown, (~finite).float()


def apply_step(accelerator, model, optimizer, scheduler, finite: bool) -> bool:
    """Step the optimizer (and then the scheduler) unless the step was non-finite; True when
    the weights changed. Gradients are cleared either way."""
    from amazon_sft.distributed import is_deepspeed

    if is_deepspeed(accelerator):
        optimizer.step()  # accelerate's wrapper: DeepSpeed stepped inside the last backward
        stepped = bool(model.was_step_applied())
    else:
        if finite:
            optimizer.step()
        stepped = finite
    if stepped:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return stepped


def what_to_check(bad_in_row: int, step: int) -> str:
    """The remedy a run stopped by non-finite steps is given. When every step since the run's
    first was non-finite, the weights it starts from or its data hold NaN or inf more likely
    than its learning rate is too high (a base with one NaN weight was told "lower train.lr":
    an ML engineer's trial).

    >>> what_to_check(3, 3)[:41]
    'every step since the first was non-finite'
    >>> what_to_check(2, 40)
    'lower train.lr or check the data'
    """
    if bad_in_row < step:
        return "lower train.lr or check the data"
    return (
        "every step since the first was non-finite: the weights it starts from (model.path) or "
        "the data may hold NaN or inf, which no learning rate mends; check them (lower train.lr "
        "if they are sound)"
    )
