"""Build the model: from a folder, a hub id, a GGUF file or random init; attention path; LoRA.

Under ZeRO-3 the accelerator's DeepSpeed plugin has already made the DeepSpeed config live
(``zero3_init_flag``), so ``from_pretrained``/``from_config`` build the model inside
``deepspeed.zero.Init``: each rank materialises only its shard, never a full copy in host RAM.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from amazon_sft import attention
from amazon_sft.bounds import check_seq_len, limits_of, model_limits
from amazon_sft.config import LoraConfig, RunConfig
from amazon_sft.errors import READ_ERRORS, UserError, first_line
from amazon_sft.gguf_cache import converted_folder, forget_dequantized_gguf
from amazon_sft.model_support import check_supported
from amazon_sft.random_arch import random_arch_config, refuse_beyond_memory
from amazon_sft.tokenizer import resolve_location

log = logging.getLogger(__name__)


def choose_attention(requested: str, precision: str = "bf16") -> tuple[str, str]:
    """(attn_implementation, why). Every path gets the batch's document boundaries explicitly
    (``amazon_sft.attention``); ``auto`` picks the fastest one this machine can run.
    ``precision`` is accelerate's mixed precision: the flash kernels need bf16/fp16."""
    attention.register()
    half = precision in ("bf16", "fp16")
    has_flash = attention.has_flash_attn()
    if requested == "flash_attention_2" and not has_flash:
        raise UserError(
            "train.attention=flash_attention_2 needs an Ampere-or-newer CUDA GPU and flash-attn 2 "
            "(>= 2.3.3): pip install '.[flash]', or use train.attention=auto"
        )
    if requested == attention.VARLEN and not attention.has_varlen_attn():
        raise UserError(
            f"train.attention={attention.VARLEN} needs an Ampere-or-newer CUDA GPU and torch >= 2.10 "
            f"(this is torch {torch.__version__}); use train.attention=auto"
        )
    if requested in (attention.VARLEN, "flash_attention_2") and not half:
        raise UserError(
            f"train.attention={requested} needs bf16 or fp16 compute; set train.precision=bf16 "
            "or train.attention=sdpa_per_document"
        )
    if requested != "auto":
        return requested, "asked for in train.attention"
    if half and attention.has_varlen_attn():
        return attention.VARLEN, "CUDA and torch's varlen_attn: one flash call per layer, no wheel"
    if half and has_flash:
        return "flash_attention_2", "flash-attn is installed and a GPU is present (varlen)"
    if torch.cuda.is_available():
        # one SDPA call per document is a kernel launch per document per layer: 3,081 tok/s on
        # an H200 against 32,241 for one call with a mask (docs/benchmarks.md)
        why = "fp32 compute" if not half else "no varlen flash kernel on this GPU"
        return "sdpa", f"{why}: SDPA with a block-diagonal mask (no cross-document pairs)"
    return attention.NAME, "CPU: torch SDPA run per document (no cross-document pairs)"


def model_dtype(precision: str, lora: bool, deepspeed: bool = False) -> torch.dtype:
    """Full fine-tuning outside DeepSpeed keeps fp32 master weights (autocast does bf16 compute);
    LoRA's frozen base can sit in bf16 to halve its memory. Under DeepSpeed in bf16 the engine
    casts every weight to bf16 and keeps its own fp32 master copy made from them, so loading in
    fp32 only doubled each rank's host memory and load time (ZeRO-2: 32 GB a rank for 8B) for
    the same bf16 values (weights shipped in bf16 are read as they are; fp32 ones are rounded
    by the same cast); buffers such as RoPE's stay fp32 either way."""
    return torch.bfloat16 if precision == "bf16" and (lora or deepspeed) else torch.float32


def load_model(
    cfg: RunConfig,
    vocab_size: int,
    pad_id: int,
    precision: str,
    deepspeed: bool = False,
    dtype: torch.dtype | None = None,
    bos_eos: tuple[int | None, int | None] = (None, None),
):
    """The causal LM of ``cfg.model`` (LoRA-wrapped when ``cfg.lora.enabled``); ``dtype``: the
    weights' dtype for answering (training's follows ``model_dtype``); ``bos_eos``: the
    tokenizer's BOS and EOS ids, which a random model's config records (``random_arch_config``)."""
    from transformers import AutoModelForCausalLM

    refuse_compile_with_deepspeed(cfg, deepspeed)
    attn, _ = choose_attention(cfg.train.attention, precision)
    if cfg.train.compile and attn == attention.NAME:  # 60 tok/s on CPU: a bench run
        here = "sdpa or eager" if not torch.cuda.is_available() else "varlen_attn or sdpa"
        raise UserError(
            "train.compile with sdpa_per_document (train.attention=auto on CPU) recompiles at "
            "every step, its loop over documents changing with each batch; set "
            f"train.attention={here}, or train.compile=false"
        )
    if cfg.train.compile and (note := attention.compile_note(attn)):
        log.warning(note)
    dtype = dtype or model_dtype(precision, cfg.lora.enabled, deepspeed)
    m = cfg.model
    try:
        if m.path == "random":
            config = random_arch_config(m.arch, vocab_size, pad_id, *bos_eos)
            check_seq_len(cfg.data.max_seq_len, limits_of(config), m.path)
            if not deepspeed:  # ZeRO-3's init partitions the weights over the ranks
                refuse_beyond_memory(config, torch.finfo(dtype).bits // 8)
            model = AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=dtype)
        else:
            check_seq_len(cfg.data.max_seq_len, model_limits(m), m.path)
            kwargs = {
                "attn_implementation": attn,
                "dtype": dtype,
                "trust_remote_code": m.trust_remote_code,
            }
            source = resolve_location(m.path, "model.path")
            cached = converted_folder(source, m.gguf_file, "model") if m.gguf_file else None
            if cached is None and m.gguf_file:
                kwargs["gguf_file"] = m.gguf_file
            model = AutoModelForCausalLM.from_pretrained(str(cached or source), **kwargs)
            if cached is None and m.gguf_file:
                forget_dequantized_gguf(model)
            if cached is not None:  # named by where it came from, as a direct GGUF load is
                model.config._name_or_path = source
            say_arch_unused(m.arch, model.config, m.path)
    except (*READ_ERRORS, ImportError) as err:
        raise UserError(
            f"could not load model {m.path!r} ({first_line(err)}); check model.path / "
            "model.gguf_file, or re-save a truncated model"
        ) from None
    # a GGUF file's window is known only now (its header is read for the context alone)
    check_seq_len(cfg.data.max_seq_len, limits_of(model.config), m.path)
    check_supported(model.config, attn, m.path)
    model.config.pad_token_id = pad_id
    model.config.use_cache = False  # the KV cache would let packed documents see each other
    embeddings = model.get_input_embeddings().weight
    n_embeddings = getattr(embeddings, "ds_shape", embeddings.shape)[
        0
    ]  # ZeRO-3: the unpartitioned shape
    if n_embeddings < vocab_size:
        raise UserError(
            f"the tokenizer has {vocab_size} ids but the model only {n_embeddings} embeddings: "
            "use the model's own tokenizer"
        )
    if cfg.train.gradient_checkpointing:
        # transformers 5 renamed it (the old name warns in every run's log); 4.x has the old only
        # (a remote-code model that overrides the old name keeps its own, old-signature method)
        reentrant_off = {"use_reentrant": False}
        old = getattr(type(model).gradient_checkpointing_enable, "__qualname__", "")
        if hasattr(model, "activation_checkpointing_enable") and old.startswith("PreTrainedModel."):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=reentrant_off)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=reentrant_off)
    if cfg.lora.enabled:
        model = wrap_lora(model, cfg.lora, dtype if deepspeed else torch.float32)
    if cfg.train.compile:
        compile_decoder_layers(model)
    return model


def refuse_compile_with_deepspeed(cfg: RunConfig, deepspeed: bool) -> None:
    """Untested under DeepSpeed here, and ZeRO-3 gathers parameters in hooks a compiled graph
    skips. Also checked by ``train.py --check-world`` before any rank starts."""
    if cfg.train.compile and deepspeed:
        raise UserError(
            "train.compile is not supported with DeepSpeed (untested with ZeRO, whose stage 3 "
            "gathers parameters in hooks a compiled graph skips); set train.compile=false"
        )


def compile_decoder_layers(model) -> int:
    """``torch.compile`` each decoder layer in place (transformers names their class in
    ``_no_split_modules``); a layer-wise compile keeps one small graph that every layer reuses,
    inside gradient checkpointing, and leaves the attention inputs (document boundaries) as
    inputs. Returns how many were compiled; none found is said, not silent."""
    # transformers >= 5.2x checkpoints inside forward, so the checkpoint sits in the compiled
    # frame, and its output-capture hooks touch a context variable there: dynamo refuses to
    # replay that in the recompute and ran the whole layer eager (0 graphs). Nothing is captured
    # in training, so the recompute need not replay it.
    torch._dynamo.config.skip_fwd_side_effects_in_bwd_under_checkpoint = True
    # flash_attention_2 over fp32 master weights logs "Casting fp32 inputs back to bf16" with
    # transformers' warning_once inside the layer: a graph break in a checkpointed region runs
    # the whole layer eager (0 graphs, compile silently a no-op). It is a no-op when compiled.
    warning_once = getattr(logging.Logger, "warning_once", None)  # transformers adds it
    if warning_once is not None:
        torch._dynamo.config.ignore_logging_functions.add(warning_once)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "_attn_implementation", None) == "flash_attention_2":
        # transformers hands each layer's layer_idx to the flash call: read as a constant, it
        # made one graph per layer, and past dynamo's recompile limit (8) the rest ran eager
        torch._dynamo.config.allow_unspec_int_on_nn_module = True
    names = set(getattr(base, "_no_split_modules", None) or ())
    layers = [m for m in base.modules() if type(m).__name__ in names]
    for layer in layers:
        layer.compile()
    if layers:
        log.info(
            "train.compile: %d decoder layers compiled (one graph; the first steps compile it, "
            "so they run slower)",
            len(layers),
        )
    else:
        log.warning(
            "train.compile: no decoder layers found in %s (transformers lists none in "
            "_no_split_modules); the model runs uncompiled",
            type(base).__name__,
        )
    return len(layers)


def say_arch_unused(arch: dict, config, path: str) -> list[str]:
    """Warn of ``model.arch`` settings a saved model's own config contradicts (a copy of
    tiny.yaml with ``path:`` set and ``num_hidden_layers: 1`` trained the model's 2 layers, the
    run's config.yaml saying 1, silently: an outside review); returns them. A run's resolved
    config keeps the arch of the config it came from, so agreeing settings are not named.

    >>> from types import SimpleNamespace as NS
    >>> say_arch_unused({"model_type": "llama", "num_hidden_layers": 1},
    ...                 NS(model_type="llama", num_hidden_layers=2), "m")
    ['num_hidden_layers: 1 (the model has 2)']
    """
    differ = [
        f"{key}: {value!r} (the model has {getattr(config, key)!r})"
        for key, value in arch.items()
        if hasattr(config, key) and getattr(config, key) != value
    ]
    if differ:
        log.warning(
            "model.arch is not used for the saved model at %s, which keeps its own "
            "architecture (model.arch shapes only model.path=random): %s; remove model.arch",
            path,
            ", ".join(differ),
        )
    return differ


@contextmanager
def peft_quietly() -> Iterator[None]:
    """peft reads transformers' deprecated ``is_gradient_checkpointing`` when it wraps a model
    (transformers 5: a FutureWarning in every LoRA run's log and every answer from a LoRA run,
    about code neither the user nor this package can change); other warnings still show."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


ALL_LINEAR = "all-linear"
"""``lora.target_modules=[all-linear]``: peft's shorthand, every linear layer but the output
head."""


def check_lora_names(model, lora: LoraConfig) -> None:
    """Every name of ``lora.target_modules`` and ``lora.modules_to_save`` is a module of
    ``model`` (a meta-device copy will do: ``train`` checks before the weights load, as a typo
    found after an 8B load cost the load and a queue slot)."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [] if lora.target_modules == [ALL_LINEAR] else lora.target_modules
    missing = [t for t in targets if t not in names]
    if missing:
        linear = sorted(
            {
                n.rsplit(".", 1)[-1]
                for n, mod in model.named_modules()
                if type(mod) is torch.nn.Linear
            }
            - {"lm_head"}
        )
        raise UserError(
            f"lora.target_modules {missing} are not modules of this model; its linear layers "
            f"are {', '.join(linear)}: set lora.target_modules to some of those, or "
            f"[{ALL_LINEAR}]"
        )
    # peft skips a name of modules_to_save that matches nothing: a typo trained no extra module
    # while the config and model card named it. A name matches a module's whole name or its
    # last dotted parts (peft 0.22: "head" no longer matches lm_head, which 0.21's str.endswith
    # did; this rule holds for both, and a fresh install took 0.22 unasked)
    full = [name for name, _ in model.named_modules()]
    unknown = [
        t for t in lora.modules_to_save if not any(n == t or n.endswith(f".{t}") for n in full)
    ]
    if unknown:
        raise UserError(
            f"lora.modules_to_save {unknown} are not modules of this model (it has e.g. lm_head, "
            "embed_tokens)"
        )


def wrap_lora(model, lora: LoraConfig, trainable_dtype: torch.dtype = torch.float32):
    """``model`` with ``lora``'s adapters; every trainable parameter in ``trainable_dtype``:
    fp32 where autocast computes and the optimizer updates them (its master copy), the base's
    dtype under DeepSpeed, which runs without autocast and keeps its own fp32 masters."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    check_lora_names(model, lora)
    peft_cfg = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        use_rslora=lora.rslora,
        use_dora=lora.dora,
        # peft's own shorthand: every linear layer but the output head
        target_modules=ALL_LINEAR
        if lora.target_modules == [ALL_LINEAR]
        else list(lora.target_modules),
        modules_to_save=list(lora.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )
    with peft_quietly():
        model = get_peft_model(model, peft_cfg)
    # peft upcasts its adapters to fp32 on a bf16 base but leaves the modules_to_save copies in
    # the base's dtype: plain AdamW then updated them with no fp32 master (a step under bf16's
    # resolution is lost), and ZeRO-3 refused one parameter group of two dtypes (fp32 copies
    # would then meet bf16 activations: DeepSpeed runs no autocast). peft copies them whole
    # (gathered under ZeRO-3), and adapters are made after the load: ordinary tensors to cast.
    for param in model.parameters():
        if param.requires_grad and param.dtype != trainable_dtype:
            param.data = param.data.to(trainable_dtype)
    return model


def parameter_counts(model) -> dict[str, int]:
    """Trainable and frozen parameter counts (ZeRO-3 shards report their full size via ds_numel)."""
    trainable = frozen = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", p.numel())
        if p.requires_grad:
            trainable += n
        else:
            frozen += n
    return {"trainable": trainable, "frozen": frozen, "total": trainable + frozen}


def decoder_and_head(model):
    """(the decoder stack, the lm_head) of a causal LM, through a peft wrapper if there is one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else base.model
    return decoder, base.get_output_embeddings()


def architecture(model) -> tuple[int, int]:
    """(layers, attention width: heads x head size), for the attention term of the FLOP count.
    The width is not always the hidden size (Mistral-Nemo: 32 x 128 = 4096 against 5120)."""
    cfg = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
    heads = int(cfg.num_attention_heads)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return int(cfg.num_hidden_layers), heads * int(head_dim)
