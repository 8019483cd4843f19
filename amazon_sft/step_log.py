"""Each optimizer step's figures: a line of metrics.jsonl (loss, learning rate, gradient norm,
tokens/s, MFU), the progress bar, a log line every ``train.log_every`` steps, and the trackers.
Only the main process writes."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

from amazon_sft.metrics import FlopCounter

if TYPE_CHECKING:
    from amazon_sft.trainer_state import StepResult
    from amazon_sft.validation import ValidationResult

log = logging.getLogger("amazon_sft.train")  # the loop's own logger: its lines read as one


def metrics_row(
    step: int,
    result: StepResult,
    seconds: float,
    flops: FlopCounter,
    val: ValidationResult | None = None,
) -> dict:
    """The step's line of metrics.jsonl; ``val_loss``, ``val_tokens`` and ``val_seconds`` only
    on the steps the held-back rows were scored after."""
    scored = {}
    if val is not None:
        scored = {"val_loss": val.loss, "val_tokens": val.label_tokens, "val_seconds": val.seconds}
    return {
        "step": step,
        "loss": result.loss,
        "lr": result.lr,
        # a skipped step's norm is NaN, which is no JSON (jq and JSON.parse refuse the line)
        "grad_norm": result.grad_norm if math.isfinite(result.grad_norm) else None,
        "tokens_per_sec": result.real_tokens / seconds,
        "real_tokens": result.real_tokens,  # with seconds (and flops): tokens/s and MFU again
        "seconds": seconds,
        "label_tokens": result.label_tokens,
        "non_finite": not result.finite,
        "optimizer_stepped": result.optimizer_stepped,
        "flops": result.flops,  # the step's, over all ranks: MFU is flops / (seconds x peak)
        "mfu": flops.mfu(result.flops, seconds),
        **scored,
    }


def report_step(accelerator, cfg, row: dict, metrics_file: Path, bar) -> None:
    bar.update(1)
    if not accelerator.is_main_process:
        return
    with open(metrics_file, "a") as fh:
        fh.write(json.dumps(row) + "\n")
    if row["step"] % cfg.train.log_every == 0 or "val_loss" in row:  # a validation: always
        mfu = "n/a" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%"
        note = ""
        if row["non_finite"]:
            note = " (non-finite: " + (
                "stepped anyway by DeepSpeed)" if row["optimizer_stepped"] else "skipped)"
            )
        norm = "n/a" if row["grad_norm"] is None else f"{row['grad_norm']:.3f}"
        loss = "n/a" if row["loss"] is None else f"{row['loss']:.4f}"
        if "val_loss" in row:
            val = row["val_loss"]
            note += " val_loss " + ("n/a" if val is None else f"{val:.4f}")
        log.info(
            "step %d loss %s lr %.3e grad_norm %s tokens/s %.0f MFU %s%s",
            row["step"],
            loss,
            row["lr"],
            norm,
            row["tokens_per_sec"],
            mfu,
            note,
        )
        if cfg.train.trackers:
            accelerator.log(
                {k: v for k, v in row.items() if isinstance(v, (int, float)) and v is not None},
                step=row["step"],
            )
