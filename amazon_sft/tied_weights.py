"""Tied weights in a checkpoint, said once for what they are.

accelerate's ``save_state`` writes one copy of weights that share storage and warns, at every
checkpoint, "Removed shared tensor {...} while saving. This should be OK, but check by verifying
that you don't receive any warning while reloading". For a model that ties its output embedding
to its input embedding (SmolLM2, the default model, and the tiny test model) that is expected:
the model ties them again when it is built, and a resume is bit-exact (tests/test_train_e2e.py,
tests/test_lora_checkpoints.py). So for exactly those names the warning is replaced by one INFO
line a run; any other shared tensor still warns.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)
ACCELERATE_SAVE_LOGGER = "accelerate.utils.other"
_PREFIX = "Removed shared tensor "
DDP_PREFIX = "module."


def tied_names(model: torch.nn.Module) -> dict[str, str]:
    """Each parameter name (as ``model``'s state dict names it: ``module.`` first under DDP)
    whose Parameter is the output embedding a transformers model ties to its input embedding
    because its config says so (``tie_word_embeddings``), mapped to the embedding's name: the
    ties a load makes again. A tensor shared at run time only is not one of them."""
    restored = set()
    for module in model.modules():
        config = getattr(module, "config", None)
        if not getattr(config, "tie_word_embeddings", False):
            continue
        if not hasattr(module, "get_output_embeddings"):
            continue
        head, embedding = module.get_output_embeddings(), module.get_input_embeddings()
        if head is not None and embedding is not None and head.weight is embedding.weight:
            restored.add(id(head.weight))
    first_of: dict[int, str] = {}
    tied = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) not in first_of:
            first_of[id(param)] = name
        elif id(param) in restored:
            tied[name] = first_of[id(param)]
    return tied


def _removed(message: str) -> set[str] | None:
    """The names of accelerate's warning, or None for another message.

    >>> sorted(_removed("[RANK 0] Removed shared tensor {'lm.lm_head.weight'} while saving. ..."))
    ['lm.lm_head.weight']
    >>> _removed("something else") is None
    True
    """
    start, end = message.find(_PREFIX), message.find(" while saving")
    if start < 0 or end < start:  # accelerate's adapter puts "[RANK 0] " before it
        return None
    try:
        names = ast.literal_eval(message[start + len(_PREFIX) : end])
    except (ValueError, SyntaxError):
        return None
    return set(names) if isinstance(names, set) else None


_said: set[str] = set()
"""Names already explained in this process: the INFO line comes once a run, not a save."""


class _TiedFilter(logging.Filter):
    def __init__(self, tied: dict[str, str]):
        super().__init__()
        self.tied = tied

    def filter(self, record: logging.LogRecord) -> bool:
        names = _removed(record.getMessage())
        if names is not None:  # DDP's state dict may say "module.lm...", the model "lm..."
            names = {n.removeprefix(DDP_PREFIX) for n in names}
        if not names or not names <= self.tied.keys():
            return True  # not ours to explain: accelerate's warning stands
        if not names <= _said:
            pairs = ", ".join(f"{n} (tied to {self.tied[n]})" for n in sorted(names))
            log.info("checkpoint: %s saved once; the model ties it again on load", pairs)
            _said.update(names)
        return False


@contextmanager
def tied_weights_said_once(model: torch.nn.Module) -> Iterator[None]:
    """Around ``accelerator.save_state(...)`` of the prepared ``model``: accelerate's warning for
    the model's own ties becomes one INFO line a run (names compared without DDP's ``module.``)."""
    tied = tied_names(model)
    if not tied:
        yield
        return
    filt = _TiedFilter(
        {k.removeprefix(DDP_PREFIX): v.removeprefix(DDP_PREFIX) for k, v in tied.items()}
    )
    target = logging.getLogger(ACCELERATE_SAVE_LOGGER)
    target.addFilter(filt)
    try:
        yield
    finally:
        target.removeFilter(filt)
