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


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_every_schedule_warms_up_then_holds_its_peak_once(schedule):
    factors = [lr_factor(s, 2, 6, 0.1, schedule) for s in range(6)]
    assert factors[:2] == [0.5, 1.0]
    assert all(a >= b for a, b in pairwise(factors[1:]))
    floor = {"cosine": 0.1, "linear": 0.1, "constant": 1.0}[schedule]
    assert factors[-1] == pytest.approx(floor)


def test_linear_decays_in_equal_steps_and_constant_stays():
    linear = [lr_factor(s, 1, 5, 0.2, "linear") for s in range(5)]
    assert linear == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])
    assert [lr_factor(s, 0, 4, 0.2, "constant") for s in range(4)] == [1.0] * 4


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["train.lr_schedule=step"], "train.lr_schedule must be one of cosine, linear, constant"),
        (["train.warmup_ratio=1.0"], r"train.warmup_ratio must be in \[0, 1\)"),
        (["train.warmup_ratio=-0.1"], r"train.warmup_ratio must be in \[0, 1\)"),
    ],
)
def test_schedule_settings_are_checked(overrides, says):
    from amazon_sft.config import load_run_config
    from amazon_sft.errors import UserError

    with pytest.raises(UserError, match=says):
        load_run_config("tiny", overrides)


def test_a_warmup_ratio_is_a_share_of_the_steps_the_run_takes():
    from amazon_sft.config import load_run_config
    from amazon_sft.train import resolve_schedule

    cfg = load_run_config("tiny", ["train.max_steps=200", "train.warmup_ratio=0.03"])
    t = resolve_schedule(cfg).train
    assert (t.warmup_steps, t.warmup_ratio) == (6, 0.0)  # config.yaml records the steps it ran
    assert resolve_schedule(load_run_config("tiny")).train.warmup_steps == 10  # no ratio: as is


@pytest.mark.e2e
def test_the_schedule_asked_is_the_lr_each_step_used(prepared, tiny_model_dir, tmp_path):
    import json
    import subprocess
    from pathlib import Path

    import yaml

    from .conftest import train_command

    out = tmp_path / "run"
    overrides = ["train.max_steps=4", "train.lr_schedule=linear", "train.warmup_ratio=0.5"]
    overrides += ["train.warmup_steps=null"]  # train_overrides gives steps: the ratio sizes it
    cmd = train_command(prepared, tiny_model_dir, out, *overrides, "train.min_lr_ratio=0.25")
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # warmup ceil(0.5 x 4) = 2 steps, then linear from the peak at step 2 to 0.25 x lr at step 4
    assert [r["lr"] for r in rows] == pytest.approx([1.5e-3, 3e-3, 1.875e-3, 0.75e-3])
    saved = yaml.safe_load((out / "config.yaml").read_text())["train"]
    assert (saved["warmup_steps"], saved["warmup_ratio"], saved["lr_schedule"]) == (
        2,
        0.0,
        "linear",
    )


@pytest.mark.parametrize(
    ("ratio", "steps", "warmup"), [(0.07, 100, 7), (0.14, 100, 14), (0.9, 5, 4), (0.5, 1, 0)]
)
def test_a_warmup_ratio_leaves_the_last_step_to_the_decay(ratio, steps, warmup):
    """A review: 0.07 x 100 gave 8 warmup steps (7.000000000000001 rounded up), and 0.9 of 5
    steps made the whole run warmup, ending at the peak the docs say it decays from."""
    from amazon_sft.config import load_run_config
    from amazon_sft.train import resolve_schedule

    cfg = load_run_config("tiny", [f"train.max_steps={steps}", f"train.warmup_ratio={ratio}"])
    assert resolve_schedule(cfg).train.warmup_steps == warmup


def test_the_warmup_warning_says_what_the_lr_does():
    from amazon_sft.train import warmup_warning

    assert warmup_warning(4, 5) is None
    assert "only at the last step" in warmup_warning(5, 5)
    assert "never reaches train.lr" in warmup_warning(6, 5)


def test_warmup_steps_and_a_warmup_ratio_both_given_are_refused():
    """A new user: train.warmup_steps=10 train.warmup_ratio=0.05 trained 1 warmup step, unsaid
    (transformers lets the steps win); like epochs and max_steps, one of the two is given."""
    from amazon_sft.config import load_run_config
    from amazon_sft.errors import UserError

    with pytest.raises(UserError, match=r"train\.warmup_ratio=0\.05 and train\.warmup_steps=10"):
        load_run_config("tiny", ["train.warmup_steps=10", "train.warmup_ratio=0.05"])
    with pytest.raises(UserError, match=r"train\.warmup_steps=null"):  # a config's own steps
        load_run_config("smollm2-135m-grounded", ["train.warmup_ratio=0.05"])
    ratio = ["train.warmup_steps=null", "train.warmup_ratio=0.05"]
    assert load_run_config("smollm2-135m-grounded", ratio).train.warmup_ratio == 0.05
    assert load_run_config("tiny").train.warmup_steps == 10  # neither given: 10
