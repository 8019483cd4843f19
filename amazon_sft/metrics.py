"""Model FLOPs utilisation: the FLOP count of a training step and the device's peak.

FLOPs per step = (6 N_trained + 4 N_frozen) x tokens + (6 | 4) x N_head x answer_tokens
                 + 6 x layers x hidden x sum(doc_len^2)

The PaLM appendix B / torchtitan convention (model FLOPs, not hardware FLOPs):
- N_trained / N_frozen: the weights every token goes through, *without* the input embedding (a
  table lookup, no matmul) and without the LM head. 6N = forward 2N + backward 4N; a frozen
  weight (LoRA's base) skips its weight gradient, so 4N.
- the LM head runs only on answer positions (``amazon_sft.loss``), so it is charged for those,
  6 or 4 per weight as above.
- attention: QK^T and AV cost 4 x len^2 x hidden per layer forward for full attention; causal
  halves it (2 x len^2 x hidden), x3 with backward. Summed per *document*: packed documents do
  not attend to each other.
- gradient checkpointing's recomputation is not counted (it is work, not model FLOPs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from amazon_sft.modeling import architecture

PEAK_BF16_TFLOPS = (
    # dense bf16 tensor-core peaks from NVIDIA's data sheets, most specific name first: the
    # same chip is sold as SXM, PCIe and NVL cards with different clocks and power
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.5),
    ("H100", 989.4),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200 NVL", 835.5),
    ("H200", 989.4),  # SXM, and GH200
    ("GB200", 2500.0),  # NVL72: 360 PFLOPS bf16 with sparsity over 72 GPUs; before "B200"
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("A10G", 70.0),
)
MFU_FORMULA = (
    "((6*N_trained + 4*N_frozen)*tokens + (6|4)*N_head*answer_tokens"
    " + 6*layers*hidden*sum(doc_len^2)) / (seconds * peak); N without the input embedding;"
    " peak: the card's dense bf16 peak, whatever the run's precision"
)


def peak_bf16_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of one card from its CUDA name, None when unknown (MFU is then n/a).

    >>> peak_bf16_tflops("NVIDIA H100 PCIe"), peak_bf16_tflops("NVIDIA H100 80GB HBM3")
    (756.0, 989.4)
    >>> peak_bf16_tflops("NVIDIA GB200"), peak_bf16_tflops("NVIDIA B200")
    (2500.0, 2250.0)
    """
    return next((v for k, v in PEAK_BF16_TFLOPS if k in device_name), None)


def device_peak_tflops() -> float | None:
    if not torch.cuda.is_available():
        return None
    return peak_bf16_tflops(torch.cuda.get_device_name())


def _numel(p: torch.nn.Parameter) -> int:
    return getattr(p, "ds_numel", p.numel())  # ZeRO-3 shards report their full size here


@dataclass(frozen=True)
class FlopCounter:
    n_trained: int
    """Trained weights that every token goes through (no input embedding, no LM head)."""
    n_frozen: int
    """Frozen weights that every token goes through (LoRA's base model)."""
    n_head: int
    """LM head weights, run on answer positions only."""
    head_trained: bool
    n_head_adapters: int
    """LoRA adapters on the LM head (trained), run where it runs."""
    layers: int
    hidden: int
    """The attention's width, heads x head size (``modeling.architecture``): the hidden size
    for most models, not all (Mistral-Nemo)."""
    peak_flops: float | None  # all ranks together

    @classmethod
    def for_model(cls, lm, peak_tflops: float, world_size: int) -> FlopCounter:
        """Counts read from the model itself; tied input/output embeddings are charged once, as
        the head (the lookup costs no FLOPs)."""
        base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
        # LoRA's modules_to_save wraps the embedding: its frozen original and trained copy
        embedding = {id(p) for p in base.get_input_embeddings().parameters()}
        head = base.get_output_embeddings().weight
        trained = frozen = on_head = 0
        head_trained = False
        for name, p in lm.named_parameters():
            if "lm_head" in name and "lora_" in name:  # adapters, not the head being trained
                on_head += _numel(p) if p.requires_grad else 0
            elif p is head or "lm_head" in name:  # LoRA's modules_to_save keeps a trained copy
                head_trained = head_trained or p.requires_grad
            elif id(p) in embedding:
                continue
            elif p.requires_grad:
                trained += _numel(p)
            else:
                frozen += _numel(p)
        layers, hidden = architecture(lm)
        per_device = peak_tflops or device_peak_tflops()
        peak = per_device * 1e12 * world_size if per_device else None
        return cls(trained, frozen, _numel(head), head_trained, on_head, layers, hidden, peak)

    def flops(self, doc_lens: list[list[int]], answer_tokens: int) -> float:
        """Model FLOPs of one micro-batch (its documents' lengths and its labelled positions)."""
        lens = [n for row in doc_lens for n in row]
        body = (6 * self.n_trained + 4 * self.n_frozen) * sum(lens)
        head = ((6 if self.head_trained else 4) * self.n_head + 6 * self.n_head_adapters) * (
            answer_tokens
        )
        attention = 6 * self.layers * self.hidden * sum(n * n for n in lens)
        return body + head + attention

    def mfu(self, step_flops: float, seconds: float) -> float | None:
        """The step's MFU over all ranks, or None when the peak is unknown (CPU)."""
        if self.peak_flops is None or seconds <= 0:
            return None
        return step_flops / (seconds * self.peak_flops)
