"""Model FLOPs utilisation: the FLOP count of a training step and the device's peak.

FLOPs per step = (6 x N_trainable + 4 x N_frozen) x tokens + 6 x layers x hidden x sum(doc_len^2)

- 6N: forward (2N) + backward (4N) per token for trained weights; frozen (LoRA base) weights
  skip their weight gradient, so 4N.
- attention: causal QK^T and AV per layer cost 2 x len^2 x hidden forward (half of 4 x len^2 x
  hidden), x3 with backward; summed per *document*, since packed documents do not attend across.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from amazon_sft.distributed import global_sum
from amazon_sft.modeling import architecture

PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10G": 70.0}
MFU_FORMULA = (
    "((6*N_trainable + 4*N_frozen)*tokens + 6*layers*hidden*sum(doc_len^2)) / (seconds * peak)"
)


def device_peak_tflops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


@dataclass
class FlopCounter:
    n_trainable: int
    n_frozen: int
    layers: int
    hidden: int
    peak_flops: float | None  # all ranks together

    @classmethod
    def for_model(cls, lm, counts: dict, peak_tflops: float, world_size: int) -> FlopCounter:
        layers, hidden = architecture(lm)
        per_device = peak_tflops or device_peak_tflops()
        peak = per_device * 1e12 * world_size if per_device else None
        return cls(counts["trainable"], counts["frozen"], layers, hidden, peak)

    def flops(self, doc_lens: list[list[int]]) -> float:
        lens = [n for row in doc_lens for n in row]
        tokens = sum(lens)
        attention = 6 * self.layers * self.hidden * sum(n * n for n in lens)
        return (6 * self.n_trainable + 4 * self.n_frozen) * tokens + attention

    def mfu(self, micro: list[dict], seconds: float, accelerator) -> float | None:
        """The step's MFU over all ranks, or None when the peak is unknown (CPU)."""
        local = sum(self.flops(b["doc_lens"]) for b in micro)
        total = global_sum(accelerator, local)
        if self.peak_flops is None or seconds <= 0:
            return None
        return total / (seconds * self.peak_flops)
