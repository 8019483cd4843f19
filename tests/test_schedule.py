"""The learning-rate schedule: linear warmup to the peak, then cosine down to the floor; the
AdamW it drives (fused on a single-GPU run)."""

from itertools import pairwise

import pytest
import torch

from amazon_sft.optim import lr_factor


@pytest.mark.parametrize("warmup,max_steps", [(0, 1), (0, 5), (1, 4), (2, 6), (8, 132), (10, 11)])
def test_the_peak_is_held_one_step_and_the_last_step_is_at_the_floor(warmup, max_steps):
    """An audit found the peak at step W-1 (warmup's end) and again at W (cosine's start)."""
    factors = [lr_factor(s, warmup, max_steps, 0.1) for s in range(max_steps)]
    assert factors.count(1.0) == 1, factors
    assert factors.index(1.0) == max(warmup - 1, 0)
    if max_steps - 1 > max(warmup - 1, 0):
        assert factors[-1] == pytest.approx(0.1)
    assert all(a <= b for a, b in pairwise(factors[:warmup]))
    assert all(a >= b for a, b in pairwise(factors[max(warmup - 1, 0) :]))


def test_steps_past_the_end_stay_at_the_floor():
    assert lr_factor(50, 2, 6, 0.1) == pytest.approx(0.1)


def test_a_single_gpu_run_gets_the_fused_adamw():
    """On an H200 (docs/benchmarks.md) the fused AdamW took 17.54 GiB at its peak against
    foreach's 20.63 (1.2B fp32 parameters), at the same tokens/s; under DeepSpeed accelerate
    hands the optimizer to DeepSpeed's own, and on CPU the default stays."""
    from types import SimpleNamespace as NS

    from amazon_sft.optim import fused_adamw_here

    def accelerator(device: str, deepspeed: bool):
        plugin = object() if deepspeed else None
        return NS(device=torch.device(device), state=NS(deepspeed_plugin=plugin))

    assert fused_adamw_here(accelerator("cuda", deepspeed=False))
    assert not fused_adamw_here(accelerator("cuda", deepspeed=True))
    assert not fused_adamw_here(accelerator("cpu", deepspeed=False))


def test_the_fused_adamw_steps_as_the_default_one():
    from amazon_sft.config import load_run_config
    from amazon_sft.optim import build_optimizer

    cfg = load_run_config("tiny", ["train.warmup_steps=0", "train.weight_decay=0.1"])
    results = []
    for fused in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
        optimizer, scheduler = build_optimizer(cfg, model, fused=fused)
        assert bool(optimizer.defaults.get("fused")) is fused
        for _ in range(3):
            model(torch.ones(2, 8)).pow(2).sum().backward()
            optimizer.step(), scheduler.step(), optimizer.zero_grad()
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(results[0], results[1], rtol=1e-5, atol=1e-6)
