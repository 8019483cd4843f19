"""Knobs on a variant of ``bench/gpu_train.py``, to find what holds MFU back: ``varlen+fused+m8``.

The first H200 run (docs/benchmarks.md) gave 23% MFU on ``varlen_attn``; each knob changes one
thing about the same train step, so its tokens/s says what that thing costs:

  fused      ``build_optimizer(..., fused=True)`` (the first H200 run measured it against
             torch's default, ``foreach``; train has used it on a single GPU since:
             ``amazon_sft.optim.fused_adamw_here``, so there the knob changes nothing)
  m<N>       N packed rows per step instead of ``--micro``
  chunk<N>   ``train.loss_chunk_tokens=N`` (the LM head + cross-entropy in chunks of N tokens)
  compile    ``train.compile=true``: the product's torch.compile of each decoder layer
  lora       ``lora.enabled=true`` (the config's rank and targets): what the demo trains
  prof       ``torch.profiler`` over 2 more steps after the timed ones (not timed): the top
             operators by device time, written to ``$GPU_TRAIN_PROFILE_DIR/<variant>.txt``

>>> split_knobs("varlen+fused+m8")
('varlen', ['fused', 'm8'])
>>> micro_rows(["chunk4096", "m8"], 4), cfg_overrides(["chunk4096", "m8", "compile"])
(8, ['train.loss_chunk_tokens=4096', 'train.compile=true'])
>>> cfg_overrides(["lora", "m1"])
['lora.enabled=true']
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import torch

KNOB = re.compile(r"^(fused|compile|lora|prof|m\d+|chunk\d+)$")


def split_knobs(name: str) -> tuple[str, list[str]]:
    """The base variant and its knobs; an unknown knob is refused by name."""
    base, *knobs = name.split("+")
    bad = [k for k in knobs if not KNOB.match(k)]
    if bad:
        raise ValueError(f"unknown knob(s) {bad} in variant {name!r}; see bench/gpu_train_knobs.py")
    return base, knobs


def micro_rows(knobs: list[str], default: int) -> int:
    sizes = [int(k[1:]) for k in knobs if k.startswith("m")]
    return sizes[-1] if sizes else default


def cfg_overrides(knobs: list[str]) -> list[str]:
    out = [f"train.loss_chunk_tokens={k[5:]}" for k in knobs if k.startswith("chunk")]
    out += ["train.compile=true"] if "compile" in knobs else []
    return out + (["lora.enabled=true"] if "lora" in knobs else [])


def profile_steps(name: str, step, n_steps: int = 2) -> dict:
    """Run ``step()`` n times under torch.profiler; the table goes to $GPU_TRAIN_PROFILE_DIR.
    Returns the device-busy share of the wall time (kernels' self time over wall)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(n_steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    table = events.table(sort_by=key, row_limit=30, max_name_column_width=60)
    # kernels only: an operator's self device time is its kernels' again (the first H200
    # profile summed both and printed a busy share of 0.896 for a true 0.425)
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    busy_us = sum(e.self_device_time_total for e in kernels) if cuda else None
    folder = os.environ.get("GPU_TRAIN_PROFILE_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name.replace('+', '_')}.txt").write_text(
            f"# {name}: {n_steps} steps in {wall:.3f} s (profiler on)\n{table}\n"
        )
    return {
        "profiled_wall_s": round(wall, 4),
        "device_busy_share": None if busy_us is None else round(busy_us / 1e6 / wall, 4),
    }
