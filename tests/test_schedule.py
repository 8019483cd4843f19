"""The learning-rate schedule: linear warmup to the peak, then cosine down to the floor."""

from itertools import pairwise

import pytest

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
