"""AdamW with linear warmup, then a cosine or linear decay to ``min_lr_ratio x lr``, or a
constant lr (``train.lr_schedule``)."""

from __future__ import annotations

import math

import torch

from amazon_sft.config import RunConfig


def lr_factor(
    step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float, schedule: str = "cosine"
) -> float:
    """Multiplier of the peak lr at ``step`` (0-based count of steps already taken).

    Warmup's last step is the peak and the decay starts there, so the peak is used once and
    the run's last step (``max_steps - 1``) is at the floor (``constant``: stays at the peak).

    >>> [round(lr_factor(s, 2, 6, 0.1), 3) for s in range(7)]
    [0.5, 1.0, 0.868, 0.55, 0.232, 0.1, 0.1]
    >>> [round(lr_factor(s, 2, 6, 0.1, "linear"), 3) for s in range(6)]
    [0.5, 1.0, 0.775, 0.55, 0.325, 0.1]
    >>> [lr_factor(s, 2, 6, 0.1, "constant") for s in range(6)]
    [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    peak_step = max(warmup_steps - 1, 0)
    progress = min(1.0, (step - peak_step) / max(1, max_steps - 1 - peak_step))
    if schedule == "linear":
        return 1.0 - (1 - min_lr_ratio) * progress
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def fused_adamw_here(accelerator) -> bool:
    """Fused AdamW on a GPU run without DeepSpeed: on an H200 it peaked at 17.54 GiB against the
    default foreach's 20.63 (1.2B fp32 parameters) at the same tokens/s (docs/benchmarks.md).
    Under DeepSpeed accelerate hands the optimizer to DeepSpeed's own; on CPU the default stays."""
    from amazon_sft.distributed import is_deepspeed

    return accelerator.device.type == "cuda" and not is_deepspeed(accelerator)


def build_optimizer(cfg: RunConfig, model: torch.nn.Module, fused: bool = False):
    """AdamW over trainable parameters; no weight decay on biases and norm weights (1-D).

    Always a ``torch.optim.AdamW``, also when DeepSpeed offloads optimizer states to host memory:
    accelerate then maps it to ``DeepSpeedCPUAdam(adamw_mode=True)``. Handing accelerate a
    DeepSpeedCPUAdam instead makes it rebuild one with ``adamw_mode=False`` (Adam + L2)."""
    t = cfg.train
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            shape = getattr(p, "ds_shape", p.shape)  # ZeRO-3 shards look 1-D; ds_shape is real
            (no_decay if len(shape) < 2 else decay).append(p)
    groups = [
        {"params": params, "weight_decay": wd}
        for params, wd in ((decay, t.weight_decay), (no_decay, 0.0))
        if params  # DeepSpeed drops empty groups (LoRA has no 1-D parameters)
    ]
    # fused=None leaves torch its default (foreach on CUDA); the parameters may still be on the
    # host here (accelerate moves them in prepare): fused AdamW takes either, its state is made
    # at the first step, on the parameters' device
    optimizer = torch.optim.AdamW(
        groups, lr=t.lr, betas=tuple(t.adam_betas), fused=True if fused else None
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, t.warmup_steps, t.max_steps, t.min_lr_ratio, t.lr_schedule),
    )
    return optimizer, scheduler


def describe_optimizer(optimizer) -> str:
    """The optimizer that really runs, through accelerate's and DeepSpeed's wrappers."""
    inner = optimizer
    while hasattr(inner, "optimizer") and inner.optimizer is not inner:
        inner = inner.optimizer
    adamw = getattr(inner, "adam_w_mode", isinstance(inner, torch.optim.AdamW))
    rule = "AdamW: decoupled weight decay" if adamw else "Adam: L2 weight decay"
    return f"{type(inner).__name__} ({rule})"
