"""The run config's LoRA and checkpoint sections (``lora``, ``checkpoint``), apart so that
config.py stays one screenful a section; amazon_sft.config re-exports both."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from amazon_sft.errors import UserError


def check_ranges(*checks: tuple[str, object, bool, str]) -> None:
    """Refuse the first (key, value, ok, rule) that is not ok, naming that key alone with its
    value: one message listing every key of a check ("train.lr must be > 0, train.min_lr_ratio
    in [0, 1], warmup_steps >= 0") left the user to find which.

    >>> check_ranges(("train.lr", 0.1, True, "> 0"), ("train.warmup_steps", -1, False, ">= 0"))
    Traceback (most recent call last):
    amazon_sft.errors.UserError: train.warmup_steps must be >= 0, got -1
    """
    for key, value, ok, rule in checks:
        if not ok:
            raise UserError(f"{key} must be {rule}, got {value!r}")


@dataclass
class LoraConfig:
    enabled: bool = False
    """Train low-rank adapters (peft) instead of all weights."""
    r: int = 16
    """Adapter rank."""
    alpha: float = 32
    """Adapter scale numerator (scale = alpha / r; alpha / sqrt(r) with ``rslora``)."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    rslora: bool = False
    """Rank-stabilised LoRA (peft ``use_rslora``): scale alpha / sqrt(r), so a higher r does
    not shrink the adapters' update."""
    dora: bool = False
    """Weight-decomposed LoRA (peft ``use_dora``): a trained magnitude per output beside the
    low-rank direction; more compute a step (2-rank ZeRO-3 matches one process:
    tests/test_multiproc.py)."""
    target_modules: list = field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )
    """Module names that get adapters (Llama/Mistral projection names)."""
    modules_to_save: list = field(default_factory=list)
    """Modules trained in full beside the adapters (e.g. lm_head, embed_tokens)."""

    def __post_init__(self) -> None:
        check_ranges(
            ("lora.r", self.r, self.r >= 1, ">= 1"),
            ("lora.alpha", self.alpha, self.alpha > 0, "> 0"),
            ("lora.dropout", self.dropout, 0 <= self.dropout < 1, "in [0, 1)"),
        )
        for key, names in (
            ("target_modules", self.target_modules),
            ("modules_to_save", self.modules_to_save),
        ):
            if not all(isinstance(n, str) and n.strip() for n in names):
                raise UserError(
                    f"lora.{key} must list module names (e.g. [q_proj, v_proj]), got {names!r}"
                )
        if self.enabled and not self.target_modules:  # peft failed after the model loaded
            raise UserError(
                "lora.target_modules is empty: name the layers that get adapters, e.g. [q_proj, v_proj]"
            )

    @property
    def kind(self) -> str:
        """DoRA or LoRA, as the model card and eval's labels name the adapters."""
        return "DoRA" if self.dora else "LoRA"

    def describe(self) -> str:
        """The adapters in a model card's words.

        >>> LoraConfig(alpha=32.0).describe(), LoraConfig(r=8, alpha=6.5, dora=True).describe()
        ('LoRA r=16 alpha=32', 'DoRA r=8 alpha=6.5')
        """
        return f"{self.kind} r={self.r} alpha={self.alpha:g}" + (
            " (rsLoRA scale)" if self.rslora else ""
        )

    def unused(self) -> list[str]:
        """The settings changed from their defaults while ``enabled`` is false: the run trains
        every weight and they do nothing (train warns of them).

        >>> LoraConfig(r=8).unused(), LoraConfig(enabled=True, r=8).unused()
        (['lora.r=8'], [])
        """
        if self.enabled:
            return []
        default = LoraConfig()
        return [
            f"lora.{f.name}={getattr(self, f.name)}"
            for f in fields(self)
            if f.name != "enabled" and getattr(self, f.name) != getattr(default, f.name)
        ]


@dataclass
class CheckpointConfig:
    every_steps: int = 50
    """Save a resumable checkpoint every N optimizer steps (and at the end, and on a stop
    signal); 0: by ``every_minutes`` only."""
    every_minutes: float = 0.0
    """Also save when this many minutes have passed since this launch's last checkpoint (or its
    start), checked after each optimizer step: a cadence in time, whatever a step costs on the
    cards at hand (a full 7-8B checkpoint is ~100 GB). 0: by ``every_steps`` only. Any rank's
    clock decides for all (in the step's one all-reduce)."""
    keep_last: int = 2
    """Complete checkpoints to keep; older ones are deleted."""

    def __post_init__(self) -> None:
        if self.every_steps < 0 or self.keep_last < 1:
            raise UserError(
                "checkpoint.every_steps must be >= 0 (0: by checkpoint.every_minutes only) and "
                "checkpoint.keep_last >= 1"
            )
        if not 0 <= self.every_minutes < float("inf"):
            raise UserError(
                f"checkpoint.every_minutes must be a number of minutes >= 0 (0: by steps only), "
                f"got {self.every_minutes}"
            )
        if self.every_steps == 0 and self.every_minutes == 0:
            raise UserError(
                "checkpoint.every_steps=0 needs checkpoint.every_minutes > 0: with neither, only "
                "the end and a stop save (set checkpoint.every_steps to a large number for that)"
            )
