"""``amazon_sft/train.py`` with one non-finite micro-batch loss injected, for ``accelerate
launch`` tests of non-finite steps. ``$BAD_CALL`` (1-based forward call of the loss module) on
rank ``$BAD_RANK`` returns ``loss + inf``: non-finite, yet with the gradient of a finite loss,
the case where cleaning the loss to 0 lets the step's other gradients through."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from amazon_sft.loss import SummedAnswerLoss
from amazon_sft.train import cli

_forward = SummedAnswerLoss.forward
_calls = [0]


def forward_with_one_bad_loss(self, batch):
    summed, n = _forward(self, batch)
    _calls[0] += 1
    here = os.environ.get("RANK", "0") == os.environ.get("BAD_RANK", "0")
    if here and _calls[0] == int(os.environ["BAD_CALL"]):
        summed = summed + float("inf")
    return summed, n


if __name__ == "__main__":
    SummedAnswerLoss.forward = forward_with_one_bad_loss
    cli()
