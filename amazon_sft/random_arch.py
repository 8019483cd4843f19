"""A random model's transformers config from ``model.arch`` (the ``tiny`` and test configs,
``model.path=random``), each setting checked by name: a typo or a shape transformers builds but
cannot run is one line naming the key, not a traceback at the first step, or a run that trains
and then fails its save (an ML engineer's trial: ``num_key_value_heads=3`` of 4 heads,
``num_attention_heads=0``, ``intermediate_size=0``, ``hidden_act=foo``)."""

from __future__ import annotations

import difflib
import inspect

from amazon_sft.errors import UserError, first_line

COUNTS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
          "num_key_value_heads", "head_dim")  # fmt: skip
"""Settings that count something a model needs at least one of, where given."""


def _setting(config, key: str):
    """A built config's ``key``, None where it has none (or one per layer: gemma4's configs
    raise their own error for a setting that differs by layer)."""
    try:
        return getattr(config, key, None)
    except Exception:
        return None


def _shape_problem(arch) -> str | None:
    """What makes ``arch`` (a dict, or a built config) a shape no model can run; None if nothing.

    >>> _shape_problem({"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2})
    >>> _shape_problem({"num_attention_heads": 4, "num_key_value_heads": 3})
    'model.arch.num_key_value_heads=3 does not divide num_attention_heads=4'
    """
    get = arch.get if isinstance(arch, dict) else lambda k: _setting(arch, k)
    for key in COUNTS:
        value = get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return None  # not a number: transformers' own check names it
        if value is not None and value < 1:
            return f"model.arch.{key}={value} is not a count of at least 1"
    heads, kv = get("num_attention_heads"), get("num_key_value_heads")
    if heads and kv and heads % kv:
        return f"model.arch.num_key_value_heads={kv} does not divide num_attention_heads={heads}"
    act = get("hidden_act")
    if act is not None:
        from transformers.activations import ACT2FN

        if not isinstance(act, str) or act not in ACT2FN:
            close = difflib.get_close_matches(str(act), list(ACT2FN), n=1)
            return f"model.arch.hidden_act={act!r} is not an activation transformers knows" + (
                f" ({close[0]}?)" if close else " (silu, gelu, relu, ...)"
            )
    return None


def random_arch_config(
    arch: dict, vocab_size: int, pad_id: int, bos_id: int | None = None, eos_id: int | None = None
):
    """The transformers config ``model.arch`` describes, or one line saying what is wrong. It
    records the tokenizer's BOS and EOS (given): transformers' defaults, 1 and 2, are ordinary
    tokens of most vocabularies ("#" in Llama 3's), and answering stops at the saved EOS too
    (``stop_ids``)."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = arch.get("model_type")
    if not isinstance(model_type, str) or model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise UserError(
            f"model.arch.model_type={model_type!r} is not a causal LM type transformers knows: "
            "use llama or mistral (or another of transformers' causal LM types)"
        )
    known = _settings_of(model_type)
    for key in arch:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" ({close[0]}?)" if close else ""
            raise UserError(
                f"model.arch.{key} is not a {model_type} setting{hint}: fix or remove it "
                "(transformers would keep it unused and train the default shape)"
            )
    if problem := _shape_problem(arch):  # before transformers divides by a count of 0
        raise UserError(f"{problem}: fix model.arch")
    try:
        ends = {
            k: v for k, v in (("bos_token_id", bos_id), ("eos_token_id", eos_id)) if v is not None
        }
        config = AutoConfig.for_model(
            **{**arch, "vocab_size": vocab_size, "pad_token_id": pad_id, **ends}
        )
    except (ValueError, TypeError, ArithmeticError, StrictDataclassError) as err:
        cause = err.__cause__ or err  # a strict-dataclass error's own first line names no field
        raise UserError(
            f"model.arch is not a valid {model_type} architecture ({first_line(cause)[:300]}): "
            "fix model.arch"
        ) from None
    if problem := _shape_problem(config):
        raise UserError(f"{problem}: fix model.arch")
    return config


def estimated_parameters(config) -> int:
    """A decoder-only transformer's parameters from its shape: attention (query and output of
    every head, key and value of the key-value heads), a gated MLP, two norms a layer, the
    embedding and, untied, the head. Exact for Llama and Mistral:

    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> c = LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
    ...                 num_attention_heads=4, num_key_value_heads=2, vocab_size=100)
    >>> estimated_parameters(c) == LlamaForCausalLM(c).num_parameters()
    True
    """
    hidden, layers = config.hidden_size, config.num_hidden_layers
    heads = config.num_attention_heads
    kv_heads = _setting(config, "num_key_value_heads") or heads
    head_dim = _setting(config, "head_dim") or hidden // heads
    inner = _setting(config, "intermediate_size") or 4 * hidden
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    per_layer = attention + 3 * hidden * inner + 2 * hidden
    tied = bool(_setting(config, "tie_word_embeddings"))
    return layers * per_layer + (1 if tied else 2) * config.vocab_size * hidden + hidden


def _available_bytes() -> int | None:
    """The memory this machine can give now (Linux's MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def refuse_beyond_memory(config, bytes_per_parameter: int) -> None:
    """One line when a random model's weights alone (built in this process's memory, whatever
    the device; not under ZeRO-3, whose init partitions them) exceed the memory this machine
    has free: ``hidden_size=100000000`` was a 13-frame allocation traceback,
    ``num_hidden_layers=100000`` four minutes of building, then the kernel's OOM kill with no
    word (an ML engineer's trial)."""
    try:
        needed = estimated_parameters(config) * bytes_per_parameter
    except (AttributeError, TypeError, ZeroDivisionError):
        return  # not a decoder this estimates: transformers builds it as it is
    free = _available_bytes()
    if free is not None and needed > free:
        raise UserError(
            f"model.arch makes a model of {needed / 2**30:,.1f} GiB, more than the "
            f"{free / 2**30:,.1f} GiB this machine has free: shrink model.arch (hidden_size, "
            "num_hidden_layers, intermediate_size)"
        )


def _settings_of(model_type: str) -> set[str]:
    """The keys a ``model_type`` config knows: its defaults and its constructor's parameters."""
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type)
    params = inspect.signature(type(config).__init__).parameters
    return {*config.to_dict(), *params, *getattr(config, "attribute_map", {})} - {"self", "kwargs"}
