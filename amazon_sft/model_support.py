"""Which models the training path computes right: what it refuses, and why (one line each).

The attention paths and the chunked loss are written for dense Llama/Mistral-class decoders;
a model that caps or scales its logits, keeps attention sinks or routes tokens to experts would
train on another objective than generation uses, or be counted wrong, so it is refused at load.
"""

from __future__ import annotations

from amazon_sft import attention
from amazon_sft.errors import UserError, first_line

FLASH_MAX_HEAD_DIM = 256


def check_supported(config, attn: str, name: str) -> None:
    """Refuse a model the training path would compute wrongly or the kernel would refuse: logit
    softcapping (Gemma 2: no attention path here applies the attention cap, and the chunked
    loss calls the LM head without the final one), logits scaled after the head (Granite,
    Cohere: the same), attention sinks (gpt-oss), mixtures of experts and, on the flash paths,
    a head size they do not take (a multiple of 8, at most 256)."""
    try:  # a config whose shape differs by layer (Gemma 4) refuses to say one
        getattr(config, "head_dim", None)
    except Exception as err:
        raise UserError(
            f"model {name} sets its shape per layer ({first_line(err)[:120]}): amazon_sft's "
            "attention paths and FLOP count take one shape for every layer; choose a "
            "Llama/Mistral-class model"
        ) from None
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if getattr(config, key, None):
            raise UserError(
                f"model {name} uses {key} (logit softcapping), which amazon_sft's attention "
                "paths and chunked loss do not apply: choose a Llama/Mistral-class model"
            )
    for key in ("logits_scaling", "logit_scale"):  # Granite divides, Cohere multiplies
        if getattr(config, key, 1) not in (None, 1):
            raise UserError(
                f"model {name} scales its logits ({key}={getattr(config, key)}), which the "
                "chunked loss (it calls the LM head itself) does not apply: training would fit "
                "another objective than generation uses; choose a Llama/Mistral-class model"
            )
    if getattr(config, "model_type", None) == "gpt_oss":
        raise UserError(
            f"model {name} uses attention sinks (gpt-oss), which amazon_sft's packed attention "
            "paths drop: choose a Llama/Mistral-class model"
        )
    keys = ("num_local_experts", "num_experts", "n_routed_experts")  # Mixtral, Qwen-MoE, DeepSeek
    experts = max(
        (getattr(config, k) for k in keys if isinstance(getattr(config, k, None), int)), default=0
    )
    if experts > 1:  # (a review: a tiny Mixtral trained, its MFU 3.6x, then its final save failed)
        raise UserError(
            f"model {name} is a mixture of experts ({experts} a layer): amazon_sft trains dense "
            "models (its MFU would count every expert for every token, and the final save "
            "checks a dense model's weights); choose a dense Llama/Mistral-class model"
        )
    if attn not in (attention.VARLEN, "flash_attention_2"):
        return
    head_dim = getattr(config, "head_dim", None) or (
        config.hidden_size // config.num_attention_heads
    )
    if head_dim % 8 or head_dim > FLASH_MAX_HEAD_DIM:
        raise UserError(
            f"model {name} has head_dim {head_dim}; train.attention={attn} takes a multiple of 8 "
            f"up to {FLASH_MAX_HEAD_DIM}: set train.attention=sdpa_per_document"
        )
