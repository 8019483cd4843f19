"""Lengths and counts capped by what they apply to, checked before the work they size starts.

- ``data.max_seq_len`` by the model's context (``max_position_embeddings``): longer rows would
  use positions the model has no embedding or rotary scaling for; and by its sliding attention
  window, which packed training's attention paths do not apply (a document attends to all of
  its past): rows no longer than the window make the two the same; and by longrope's short
  span (``original_max_position_embeddings``), past which a batch's longest position switches
  every document in it to the long RoPE factors.
- ``data.shard_rows`` by memory: prepare buffers one shard of rows (5 bytes a token) in RAM.
- epochs per optimizer step: a global batch larger than the data repeats every row in one step.
- ``--max-new-tokens`` of eval: an absolute cap, then the model's context.
"""

from __future__ import annotations

import logging
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

from amazon_sft.errors import READ_ERRORS, UserError

log = logging.getLogger(__name__)

ROW_BUFFER_BYTES_PER_TOKEN = 5
"""prepare's shard buffer: an int32 token id and a uint8 loss-mask byte per token."""
ROW_BUFFER_SHARE = 0.25
"""The share of this machine's memory one shard's row buffer may take."""
MAX_EPOCHS_PER_STEP = 8.0
"""Above this many times the data's rows in one optimizer step a run is refused: every step
would be one pass over them and the rest empty padding rows (that many times the compute)."""
MAX_EVAL_NEW_TOKENS = 4096
"""eval's absolute cap on generated tokens, before the model's own context is known: longer
than any product description the data cuts answers to (data.max_answer_tokens)."""


def context_of(config) -> int | None:
    """The positions a transformers config has embeddings for, or None when it does not say."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def window_of(config) -> int | None:
    """The sliding attention window of a transformers config (or ``model.arch`` dict) when a
    layer attends over one, else None.

    >>> window_of({"model_type": "mistral", "sliding_window": 4096})
    4096
    >>> window_of({"sliding_window": 4096, "use_sliding_window": False}) is None  # Qwen2's switch
    True
    >>> window_of({"sliding_window": 512, "layer_types": ["full_attention"]}) is None
    True
    """
    get = (
        config.get
        if isinstance(config, dict)
        else lambda key, default=None: getattr(config, key, default)
    )
    window = get("sliding_window", None)
    if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
        return None
    if get("use_sliding_window", True) is False:
        return None
    layer_types = get("layer_types", None)
    if layer_types and "sliding_attention" not in layer_types:
        return None
    return window


def longrope_span(config) -> int | None:
    """The short span of a longrope model (Phi-3-128k, Phi-3.5-mini, Phi-4-mini): transformers
    picks the short or the long RoPE factors from a batch's longest position against it. None
    for any other rope type (a transformers config, or a ``model.arch`` dict).

    >>> longrope_span({"rope_scaling": {"rope_type": "longrope"},
    ...                "original_max_position_embeddings": 4096})
    4096
    >>> longrope_span({"rope_parameters": {"rope_type": "llama3", "factor": 8.0}}) is None
    True
    """
    get = config.get if isinstance(config, dict) else lambda k: getattr(config, k, None)
    for key in ("rope_parameters", "rope_scaling"):
        rope = get(key)
        if isinstance(rope, dict) and (rope.get("rope_type") or rope.get("type")) == "longrope":
            span = rope.get("original_max_position_embeddings") or get(
                "original_max_position_embeddings"
            )
            return span if isinstance(span, int) and span > 0 else None
    return None


class ModelLimits(NamedTuple):
    """What caps ``data.max_seq_len`` (None: not known, or not there)."""

    context: int | None = None
    """Positions the model has embeddings for."""
    window: int | None = None
    """Its sliding attention window."""
    short_rope: int | None = None
    """longrope's short span (``longrope_span``)."""


def limits_of(config) -> ModelLimits:
    """The limits of a transformers config, or a ``model.arch`` dict."""
    if isinstance(config, dict):
        value = config.get("max_position_embeddings")
        context = value if isinstance(value, int) and value > 0 else None
    else:
        context = context_of(config)
    return ModelLimits(context, window_of(config), longrope_span(config))


def model_limits(model_cfg) -> ModelLimits:
    """The limits of the model a config names, read from its ``config.json``, its GGUF file's
    header (context only: the load checks the rest) or ``arch``, without loading weights;
    None where one cannot be read here (a hub id offline, a damaged file: the model's load
    says why)."""
    if model_cfg.path == "random":
        return limits_of(model_cfg.arch)
    from amazon_sft.tokenizer import resolve_location

    if model_cfg.gguf_file:
        from amazon_sft.gguf_header import context_length

        try:
            path = Path(resolve_location(model_cfg.path)) / model_cfg.gguf_file
            return ModelLimits(context=context_length(path))
        except UserError:
            return ModelLimits()
    from transformers import AutoConfig

    try:
        location = resolve_location(model_cfg.path)
        config = AutoConfig.from_pretrained(location, trust_remote_code=False)
    except (*READ_ERRORS, ImportError, UserError):
        return ModelLimits()  # the model load itself reports why, with its own one line
    return limits_of(config)


def check_seq_len(max_seq_len: int, limits: ModelLimits, model: str) -> None:
    """Refuse rows longer than the model's context, its sliding attention window, or its
    longrope short span.

    >>> check_seq_len(2048, ModelLimits(context=1024), "random")
    Traceback (most recent call last):
    amazon_sft.errors.UserError: data.max_seq_len=2048 is over the context of model 'random' (1024 tokens): use data.max_seq_len <= 1024
    >>> check_seq_len(4096, ModelLimits(32768, window=4096), "mistral-7b-v0.1")  # none outgrows it
    """
    context, window, short_rope = limits
    if context is not None and max_seq_len > context:
        raise UserError(
            f"data.max_seq_len={max_seq_len} is over the context of model {model!r} "
            f"({context} tokens): use data.max_seq_len <= {context}"
        )
    if window is not None and max_seq_len > window:
        raise UserError(
            f"data.max_seq_len={max_seq_len} is over the sliding attention window of model "
            f"{model!r} ({window} tokens), which packed training does not apply (a document "
            f"attends to all of its past): use data.max_seq_len <= {window}"
        )
    if short_rope is not None and max_seq_len > short_rope:
        raise UserError(
            f"data.max_seq_len={max_seq_len} is over model {model!r}'s longrope short span "
            f"(original_max_position_embeddings {short_rope}): its RoPE factors are chosen by a "
            "batch's longest position, and a packed row's tail runs to the row's end, so short "
            "documents would train under the long factors, unlike when answered alone: use "
            f"data.max_seq_len <= {short_rope}"
        )


def memory_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_row_buffer(shard_rows: int, max_seq_len: int, memory: int | None = None) -> None:
    """Refuse a shard whose row buffer would not fit in ``ROW_BUFFER_SHARE`` of memory.

    >>> check_row_buffer(4096, 2048, memory=64 << 30)
    >>> check_row_buffer(10**9, 256, memory=16 << 30)
    Traceback (most recent call last):
    amazon_sft.errors.UserError: data.shard_rows=1000000000 x data.max_seq_len=256 needs a 1192.1 GiB row buffer (5 bytes a token), over 4.0 GiB (25% of this machine's 16.0 GiB): use data.shard_rows <= 3355443
    """
    memory = memory_bytes() if memory is None else memory
    need = shard_rows * max_seq_len * ROW_BUFFER_BYTES_PER_TOKEN
    budget = int(memory * ROW_BUFFER_SHARE)
    if need > budget:
        most = budget // (max_seq_len * ROW_BUFFER_BYTES_PER_TOKEN)
        fix = (
            f"use data.shard_rows <= {most}"
            if most >= 1
            else "lower data.max_seq_len (one row alone does not fit)"
        )
        raise UserError(
            f"data.shard_rows={shard_rows} x data.max_seq_len={max_seq_len} needs a "
            f"{need / 2**30:.1f} GiB row buffer ({ROW_BUFFER_BYTES_PER_TOKEN} bytes a token), "
            f"over {budget / 2**30:.1f} GiB ({ROW_BUFFER_SHARE:.0%} of this machine's "
            f"{memory / 2**30:.1f} GiB): {fix}"
        )


def check_prepare_bounds(cfg) -> None:
    """What prepare checks before reading a line: rows fit the model and a shard fits memory."""
    check_seq_len(cfg.data.max_seq_len, model_limits(cfg.model), cfg.model.path)
    check_row_buffer(cfg.data.shard_rows, cfg.data.max_seq_len)


def steps_for_epochs(epochs: float, data_rows: int, global_batch_rows: int) -> int:
    """Optimizer steps that make ``epochs`` passes over ``data_rows`` packed rows, a pass being
    ceil(rows / rows a step) steps (the loader pads a pass to whole steps).

    The product is taken in decimal (``Fraction(str(epochs))``): in binary 1.1 x 100 is
    110.00000000000001, and its ceiling ran a step more than asked (a numerics review).

    >>> steps_for_epochs(1, 395, 8), steps_for_epochs(1.5, 395, 4), steps_for_epochs(0.01, 10, 8)
    (50, 149, 1)
    >>> steps_for_epochs(1.1, 1000, 10), steps_for_epochs(2.2, 450, 18)
    (110, 55)
    """
    per_pass = math.ceil(data_rows / global_batch_rows)
    return max(1, math.ceil(Fraction(str(epochs)) * per_pass))


def check_epochs_per_step(global_batch_rows: int, data_rows: int, data: str) -> float:
    """Passes over the data one optimizer step would make: above 1 a step is one pass over the
    rows and the rest of it empty padding rows, computed for nothing (``loader.epoch_order``):
    warned; above ``MAX_EPOCHS_PER_STEP``, refused.

    >>> check_epochs_per_step(8, 100, "d")
    0.08
    >>> check_epochs_per_step(100000, 100, "d")
    Traceback (most recent call last):
    amazon_sft.errors.UserError: train.global_batch_size=100000 is 1000 times the 100 rows of d (at most 8 allowed): every optimizer step would be one pass over them and 99900 empty padding rows; lower train.global_batch_size to <= 100, or prepare more data
    """
    epochs = global_batch_rows / max(data_rows, 1)
    padding = global_batch_rows - data_rows
    if epochs > MAX_EPOCHS_PER_STEP:
        raise UserError(
            f"train.global_batch_size={global_batch_rows} is {epochs:g} times the {data_rows} "
            f"rows of {data} (at most {MAX_EPOCHS_PER_STEP:g} allowed): every optimizer step "
            f"would be one pass over them and {padding} empty padding rows; lower "
            f"train.global_batch_size to <= {data_rows}, or prepare more data"
        )
    if epochs > 1:
        log.warning(
            "train.global_batch_size=%d is more than the %d rows of %s: each optimizer step is "
            "one pass over them and %d empty padding rows (%.0f%% of its compute for nothing); "
            "lower train.global_batch_size to <= %d",
            global_batch_rows,
            data_rows,
            data,
            padding,
            100 * padding / global_batch_rows,
            data_rows,
        )
    return epochs


def check_new_tokens(max_new_tokens: int, flag: str = "--max-new-tokens") -> None:
    """eval's absolute cap, before any model is loaded."""
    if not 1 <= max_new_tokens <= MAX_EVAL_NEW_TOKENS:
        raise UserError(f"{flag} must be in [1, {MAX_EVAL_NEW_TOKENS}], got {max_new_tokens}")


def check_prompt_fits(longest_prompt: int, max_new_tokens: int, context: int | None) -> None:
    """The longest prompt plus the tokens to generate must fit the model's context."""
    if context is not None and longest_prompt + max_new_tokens > context:
        raise UserError(
            f"--max-new-tokens={max_new_tokens} does not fit: the model's context is {context} "
            f"tokens and the longest prompt takes {longest_prompt}; use --max-new-tokens <= "
            f"{max(context - longest_prompt, 0)}"
        )


def last_step(cfg, prepared_rows: int) -> int:
    """The step a run of ``cfg`` ends at on ``prepared_rows`` rows, as train decides it:
    ``train.epochs``' steps over the rows left after ``train.validation_rows``, else
    ``train.max_steps`` (launch/train_slurm.sbatch asks it whether a run finished, inside
    SLURM's warning: this module imports no torch). ``cfg``: a ``RunConfig``.

    >>> from amazon_sft.config import load_run_config
    >>> last_step(load_run_config("tiny", ["train.epochs=1", "train.global_batch_size=4"]), 40)
    10
    >>> last_step(load_run_config("tiny", ["train.epochs=1", "train.global_batch_size=4",
    ...                                    "train.validation_rows=8"]), 40)
    8
    """
    t = cfg.train
    if not t.epochs:
        return t.max_steps
    return steps_for_epochs(t.epochs, prepared_rows - t.validation_rows, t.global_batch_size)
