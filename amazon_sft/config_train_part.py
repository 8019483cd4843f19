"""The ``train`` section of the run config: optimisation, schedule, precision, attention,
logging and validation, one docstring under each field (``amazon-sft train --help`` lists them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from amazon_sft.config_run_parts import check_ranges
from amazon_sft.errors import UserError

MAX_LR = 1e30
"""Above it Adam's step (lr / (1 - beta1**t)) overflows the float32 it is applied in."""
DEFAULT_MAX_STEPS = 100
DEFAULT_WARMUP_STEPS = 10


@dataclass
class TrainConfig:
    micro_batch_size: int = 1
    """Packed rows per rank per forward/backward."""
    global_batch_size: int = 8
    """Packed rows per optimizer step over all ranks; must equal micro x accumulation x world.
    Above the prepared data's rows a step is one pass over them and empty padding rows (warned);
    above 8 times them, refused."""
    max_steps: int = 0
    """Optimizer steps to run (the run stops there, whatever the epoch); 0, not given: 100,
    unless ``epochs`` sizes the run."""
    epochs: float = 0.0
    """Passes over the prepared rows to train for, instead of ``max_steps``: ceil(epochs x
    steps of one pass), a pass being ceil(rows / global_batch_size) steps (the log says how
    many; the run's config.yaml has them as ``max_steps``, epochs 0). 0: ``max_steps``."""
    lr: float = 2e-4
    """Peak learning rate (AdamW), reached after warmup."""
    min_lr_ratio: float = 0.1
    """The decay (cosine or linear) ends at lr x this."""
    lr_schedule: str = "cosine"
    """After warmup: cosine or linear decay to lr x min_lr_ratio at the last step, or constant
    (lr to the end)."""
    warmup_steps: int | None = None
    """Linear warmup steps from 0 to lr; not given (null): 10, unless ``warmup_ratio`` sizes
    the warmup (giving both is refused)."""
    warmup_ratio: float = 0.0
    """Warmup as a share of the run's steps, in [0, 1): warmup_steps = ceil(ratio x max_steps),
    at most max_steps - 1, known once ``epochs`` has sized the run (config.yaml records the
    steps, ratio 0). 0: ``warmup_steps``."""
    weight_decay: float = 0.0
    """AdamW weight decay (not applied to biases and norms)."""
    adam_betas: list = field(default_factory=lambda: [0.9, 0.95])
    """AdamW betas."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward: less memory, ~30% more compute."""
    precision: str = "auto"
    """auto (bf16 where the GPU has it, fp32 on CPU), bf16 or fp32."""
    attention: str = "auto"
    """auto (on CUDA: torch's varlen_attn when torch has it, else flash_attention_2 when
    flash-attn imports, else sdpa; on CPU: sdpa_per_document, torch SDPA per packed document), or force one
    of varlen_attn, flash_attention_2, sdpa_per_document, sdpa or eager (block-diagonal mask).
    Every path is given the batch's document boundaries; none infers them from position ids."""
    compile: bool = False
    """torch.compile each decoder layer (fuses the norm, RoPE and activation kernels): 1.21-1.32x
    tokens/s on an H200 (docs/benchmarks.md); the first steps compile. Refused with DeepSpeed and
    on sdpa_per_document (auto on CPU: set train.attention=sdpa there)."""
    loss_chunk_tokens: int = 1024
    """Answer tokens per chunk of the cross-entropy; the (tokens x vocab) logits never exist whole."""
    max_bad_steps: int = 5
    """Abort after this many optimizer steps in a row with a non-finite loss or gradient norm."""
    log_every: int = 1
    """Log a line (and TensorBoard scalars) every N optimizer steps."""
    peak_tflops: float = 0.0
    """Peak dense TFLOPS of one device for MFU; 0 = look up the GPU (H100/H200/A100) or skip."""
    trackers: list = field(default_factory=lambda: ["tensorboard"])
    """accelerate trackers: tensorboard, wandb (optional), or [] for none."""
    validation_rows: int = 0
    """Packed rows held back from training and scored for a validation loss (``val_loss`` in
    metrics.jsonl, the log and the trackers; ``run_summary.json`` keeps the last). The same rows
    whatever the seed, world size or batch shape (a fixed draw over the row count); their
    documents are not trained on, their products may be by others (``amazon-sft eval`` scores
    held-out products). 0: none, every row is trained on."""
    validation_every: int = 0
    """Score the held-back rows every N optimizer steps; 0: after the last step only."""

    def __post_init__(self) -> None:
        for key in (
            "micro_batch_size",
            "global_batch_size",
            "loss_chunk_tokens",
            "max_bad_steps",
            "log_every",
        ):
            if getattr(self, key) < 1:
                raise UserError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("validation_rows", "validation_every"):
            if getattr(self, key) < 0:
                raise UserError(f"train.{key} must be >= 0, got {getattr(self, key)}")
        if self.validation_every and not self.validation_rows:
            raise UserError(
                f"train.validation_every={self.validation_every} scores no rows: hold some "
                "back with train.validation_rows (e.g. 5% of the prepared rows; resuming, the "
                "validation_rows the run started with)"
            )
        if not self.epochs >= 0 or self.epochs == float("inf"):
            raise UserError(f"train.epochs must be a number >= 0 (0: max_steps), got {self.epochs}")
        if self.max_steps < 0:
            raise UserError(f"train.max_steps must be >= 1 (0: not given), got {self.max_steps}")
        if self.peak_tflops < 0:  # logged a negative MFU
            raise UserError(
                f"train.peak_tflops must be >= 0 (0: look the GPU up), got {self.peak_tflops}"
            )
        if self.epochs and self.max_steps:
            raise UserError(
                f"train.epochs={self.epochs:g} and train.max_steps={self.max_steps} both size the "
                "run: give one (train.epochs=0 to count steps, train.max_steps=0 to count epochs)"
            )
        if not self.epochs and not self.max_steps:
            self.max_steps = DEFAULT_MAX_STEPS
        if self.warmup_ratio and self.warmup_steps is not None:
            raise UserError(
                f"train.warmup_ratio={self.warmup_ratio:g} and train.warmup_steps="
                f"{self.warmup_steps} both size the warmup: give one (train.warmup_steps=null "
                "to size it by the ratio, train.warmup_ratio=0 to count steps)"
            )
        if self.warmup_steps is None and not self.warmup_ratio:
            self.warmup_steps = DEFAULT_WARMUP_STEPS
        check_ranges(
            ("train.lr", self.lr, self.lr > 0, "> 0"),
            ("train.min_lr_ratio", self.min_lr_ratio, 0 <= self.min_lr_ratio <= 1, "in [0, 1]"),
            ("train.warmup_steps", self.warmup_steps, (self.warmup_steps or 0) >= 0, ">= 0"),
            ("train.warmup_ratio", self.warmup_ratio, 0 <= self.warmup_ratio < 1, "in [0, 1)"),
        )
        if self.lr_schedule not in ("cosine", "linear", "constant"):
            raise UserError(
                "train.lr_schedule must be one of cosine, linear, constant, got "
                f"{self.lr_schedule!r}"
            )
        if self.lr > MAX_LR:
            raise UserError(
                f"train.lr={self.lr:g} is over {MAX_LR:g}: the optimizer's float32 step overflows"
            )
        check_ranges(
            ("train.weight_decay", self.weight_decay, self.weight_decay >= 0, ">= 0"),
            ("train.max_grad_norm", self.max_grad_norm, self.max_grad_norm >= 0, ">= 0"),
        )
        betas = self.adam_betas
        if not (
            len(betas) == 2
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in betas)
            and all(0 <= b < 1 for b in betas)
        ):
            raise UserError(
                f"train.adam_betas must be two numbers in [0, 1), e.g. [0.9, 0.95]; got {betas}"
            )
        if self.precision not in ("auto", "bf16", "fp32"):
            raise UserError(f"train.precision must be auto, bf16 or fp32, got {self.precision!r}")
        attention = (
            "auto",
            "varlen_attn",
            "flash_attention_2",
            "sdpa_per_document",
            "sdpa",
            "eager",
        )
        if self.attention not in attention:
            raise UserError(
                f"train.attention must be one of {', '.join(attention)}, got {self.attention!r}"
            )
