"""A LoRA run's checkpoints hold what training changes: the adapter (and ``modules_to_save``),
the optimizer, the scheduler, the RNG; not the frozen base, which a resume loads again from
``model.path`` as the run's first launch did.

Why: accelerate's ``save_state`` writes the whole model (a 7B LoRA run: ~14 GB a checkpoint
in bf16, for ~40 MB of adapter) and DeepSpeed's ``save_checkpoint`` the frozen weights too
unless told ``exclude_frozen_parameters``. The frozen base must then be the same at resume:
each checkpoint records a digest of the base's weight files and config (``base_weights``,
lora_base.py), compared at resume like the data's manifest digest (resume_config.py), so a
base replaced between a preemption and its requeue is refused instead of silently trained on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from amazon_sft.distributed import is_deepspeed
from amazon_sft.errors import UserError


def trainable_names(model) -> set[str]:
    """The state-dict names of ``model``'s trainable parameters (tied names included)."""
    return {n for n, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}


def has_frozen(model) -> bool:
    return any(not p.requires_grad for p in model.parameters())


def keep_trainable(weights: dict, names: set[str]) -> dict:
    """``weights`` (a state dict) without what is not trained: frozen parameters and buffers,
    which the resumed run's model already holds from its base.

    >>> keep_trainable({"a.lora_A": 1, "a.weight": 2, "rope.inv_freq": 3}, {"a.lora_A"})
    {'a.lora_A': 1}
    """
    return {k: v for k, v in weights.items() if k in names}


@contextmanager
def trainable_only(accelerator, model) -> Iterator[dict]:
    """While saving ``model`` (the prepared one): when it has frozen weights, accelerate's own
    state files get only the trained ones (a pre-save hook filters its state dicts) and
    DeepSpeed is told ``exclude_frozen_parameters``. Yields ``save_state``'s keyword arguments."""
    if not has_frozen(model):
        yield {}
        return

    def hook(models, weights, output_dir) -> None:
        for i, state in enumerate(weights):
            weights[i] = keep_trainable(state, trainable_names(models[i]))

    handle = accelerator.register_save_state_pre_hook(hook)
    try:
        if not is_deepspeed(accelerator):
            yield {}
            return
        with _deepspeed_module_trained_only(model):
            yield {"exclude_frozen_parameters": True}
    finally:
        handle.remove()


@contextmanager
def _deepspeed_module_trained_only(engine) -> Iterator[None]:
    """DeepSpeed's ``exclude_frozen_parameters`` drops the frozen names ``named_parameters()``
    gives, which lists a tied weight once: the alias (a tied ``lm_head.weight``) stayed in the
    module state, 133 of a ZeRO-2 SmolLM2-135M LoRA checkpoint's 192 MB (a tied Llama-3.2-3B:
    ~0.8 GB in bf16). For the save, the engine's module state keeps the trained names only."""
    original = engine.module_state_dict

    def trained_only(*args, **kwargs):
        return keep_trainable(original(*args, **kwargs), trainable_names(engine.module))

    engine.module_state_dict = trained_only  # this instance, this save only
    try:
        yield
    finally:
        del engine.module_state_dict  # the class's method again


def load_kwargs(accelerator, model, folder: Path) -> dict:
    """``load_state``'s keyword arguments for a checkpoint of this run: with frozen weights
    left out of the checkpoint, the model's are kept, but every trained one must be there
    (else the resumed adapter would silently restart from its initial values)."""
    if not has_frozen(model):
        return {}
    if is_deepspeed(accelerator):
        return {"load_module_strict": False}  # the module state: the trained names only
    # accelerate saves and loads the unwrapped model (DDP's ``module.`` prefix is not in the file)
    model = accelerator.unwrap_model(model)
    saved = folder / "model.safetensors"
    if saved.is_file():
        from safetensors import safe_open

        with safe_open(str(saved), framework="pt") as f:
            keys = set(f.keys())
        missing = sorted(trainable_names(model) - keys)
        if missing:
            raise ValueError(
                f"{saved.name} lacks {len(missing)} trained weights (e.g. {missing[0]})"
            )
    return {"strict": False}


def refuse_undrawable_base(cfg, zero_stage: int | None) -> None:
    """Refuse LoRA on a random base under ZeRO-3: ``zero.Init`` draws the base otherwise than
    one process does from the same seed, and a LoRA run saves the adapter alone, to be put
    back on a base drawn again (an export review: another model, logits 1.04 off, unsaid)."""
    if cfg.lora.enabled and cfg.model.path == "random" and zero_stage == 3:
        raise UserError(
            "lora.enabled with model.path=random under DeepSpeed ZeRO-3: the random base drawn "
            "there cannot be drawn again to put the adapter back on; save a model with "
            "save_pretrained and give its folder as model.path, or train it with ZeRO-2 "
            "(launch/accelerate/zero2.yaml)"
        )
