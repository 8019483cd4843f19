"""Whether a full fine-tune's model states fit one GPU without ZeRO, known before the load.

Under plain DDP every GPU holds the whole model's fp32 weights, their gradients and AdamW's two
moments: 16 bytes a parameter (a 7-8B model: 116-128 GB, more than an 80 GB card), and at the
optimizer step AdamW's temporaries and DDP's gradient buckets (``FULL_FINE_TUNE_BYTES_PER_PARAMETER``,
``DDP_BUCKET_BYTES_PER_PARAMETER``). Launched so
(``launch/train_local.sh`` picks DDP for several GPUs unless ``ACCEL`` names a DeepSpeed
config), each rank loaded the whole model (32 GB of host memory each for 8B) and then ran out of
GPU memory in ``accelerator.prepare`` or at the first step. The count comes from ``config.json``
alone, on meta tensors: no weight is read.
"""

from __future__ import annotations

import torch

from amazon_sft.errors import READ_ERRORS, UserError

FULL_FINE_TUNE_BYTES_PER_PARAMETER = 20
"""fp32 weights, fp32 gradients and AdamW's two fp32 moments (bf16 compute is autocast's), and
AdamW's step on CUDA (torch's foreach version, the default: "~ sizeof(params) more peak memory"
in its docstring). 16 let an 8B model through on an H200 (141 GB), and its first step ran out."""
DDP_BUCKET_BYTES_PER_PARAMETER = 4
"""DDP's copy of the fp32 gradients in its all-reduce buckets (accelerate's default
``gradient_as_bucket_view=False``), with more than one process."""


def meta_model(model_cfg):
    """The model ``model_cfg`` names, built from its ``config.json`` alone on meta tensors (no
    weight read); None where that cannot be done here (a GGUF file, a random or remote-code
    model, a hub id offline): a check on it is then left out and the load says what it says."""
    if model_cfg.gguf_file or model_cfg.path == "random" or model_cfg.trust_remote_code:
        return None
    from transformers import AutoConfig, AutoModelForCausalLM

    from amazon_sft.tokenizer import resolve_location

    try:
        # never remote code here (a run that needs it says so above): no "[y/N]" prompt
        config = AutoConfig.from_pretrained(
            resolve_location(model_cfg.path), trust_remote_code=False
        )
    except (*READ_ERRORS, ImportError, UserError):
        return None
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():  # its init hooks copy into the weights: none on meta
        return None
    try:  # a model type no causal LM class takes (T5, Mistral3): the load says so in one line
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except (*READ_ERRORS, ImportError, UserError):
        return None


def parameters_of(model_cfg) -> int | None:
    """The parameter count of the model ``model_cfg`` names, from its ``config.json`` alone
    (``meta_model``); None where that cannot be read here."""
    model = meta_model(model_cfg)
    if model is None:
        return None
    return sum(p.numel() for p in model.parameters())  # a tied head is counted once


def check_lora_names_before_load(cfg) -> None:
    """A LoRA run's target and saved module names, checked on the meta-device model before any
    weight loads (``modeling.check_lora_names``); left to the load where no meta model can be
    built here."""
    if not cfg.lora.enabled:
        return
    model = meta_model(cfg.model)
    if model is not None:
        from amazon_sft.modeling import check_lora_names

        check_lora_names(model, cfg.lora)


def check_fits_unsharded(
    parameters: int, gpu_bytes: int, gpu_name: str, processes: int = 1
) -> None:
    """Refuse a full fine-tune whose model states alone exceed the GPU at the optimizer step's
    peak (``processes`` > 1: DDP's gradient buckets too), naming the remedies."""
    per = FULL_FINE_TUNE_BYTES_PER_PARAMETER + (
        DDP_BUCKET_BYTES_PER_PARAMETER if processes > 1 else 0
    )
    need = parameters * per
    if need <= gpu_bytes:
        return
    raise UserError(
        f"a full fine-tune of {parameters / 1e9:.2f}B parameters without ZeRO sharding (DDP, or ZeRO stage 0) needs "
        f"{need / 1e9:.0f} GB for fp32 weights, gradients, AdamW states and its step"
        f"{' and DDP buckets' if processes > 1 else ''} on every GPU, more than "
        f"this {gpu_name}'s {gpu_bytes / 1e9:.0f} GB: launch with DeepSpeed (ACCEL=zero2 or zero3 "
        "with launch/train_local.sh, or accelerate launch --config_file "
        "launch/accelerate/zero3.yaml), or train LoRA (lora.enabled=true)"
    )


def check_full_fine_tune_fits(cfg, accelerator) -> None:
    """On CUDA, a full fine-tune without ZeRO sharding (plain DDP, or DeepSpeed at stage 0,
    which keeps every state on every GPU as DDP does) whose model states cannot fit one GPU is
    refused before anything loads (every rank alike: they read the same config and cards)."""
    from accelerate.utils import DistributedType

    from amazon_sft.distributed import running_engine

    if cfg.lora.enabled or not torch.cuda.is_available():
        return
    if torch.device(accelerator.device).type != "cuda":  # put on CPU on a host with GPUs
        return
    if (
        accelerator.distributed_type == DistributedType.DEEPSPEED
        and running_engine(accelerator).zero_stage
    ):
        return  # ZeRO-1/2/3 shard the states: the sharded share is DeepSpeed's own concern
    parameters = parameters_of(cfg.model)
    if parameters is None:
        return
    props = torch.cuda.get_device_properties(accelerator.device)
    processes = getattr(accelerator, "num_processes", 1)
    check_fits_unsharded(parameters, props.total_memory, props.name, processes)
