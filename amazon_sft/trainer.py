"""The training loop and one optimizer step (torchtitan's ``Trainer.train`` / ``train_step``).

``Trainer.train`` runs steps, keeps the small typed ``TrainerState``, writes metrics and
checkpoints; ``Trainer.train_step`` runs the micro-batches of one step and the optimizer, and
reads the step's numbers from the device once.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from amazon_sft.checkpointing import StopFlag, TrainerState, save_checkpoint
from amazon_sft.config import RunConfig
from amazon_sft.data.batch import PackedBatch
from amazon_sft.data.loader import PackedLoader
from amazon_sft.distributed import BatchPlan, global_grad_norm, reduce_sum
from amazon_sft.errors import UserError
from amazon_sft.loss import micro_loss_scale
from amazon_sft.metrics import FlopCounter
from amazon_sft.nonfinite import apply_step, poisoned_loss

log = logging.getLogger("amazon_sft.train")


def batches_forever(loader: PackedLoader):
    while True:
        yield from loader  # each pass is the rest of the current epoch


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step did, over all ranks (read from the device once)."""

    loss: float
    """Summed answer cross-entropy / answer tokens of the step."""
    grad_norm: float
    """Global gradient norm before clipping."""
    lr: float
    """The learning rate this step used."""
    label_tokens: int
    real_tokens: int
    flops: float
    finite: bool
    """Loss and gradient norm were finite on every rank."""
    optimizer_stepped: bool
    """The weights changed (False for a skipped non-finite step, or one DeepSpeed skipped)."""
    stop_requested: bool
    """SIGTERM / SIGUSR1 arrived on some rank."""


@dataclass
class Trainer:
    """The loop (``train``) and one optimizer step (``train_step``) over prepared objects."""

    cfg: RunConfig
    accelerator: object
    plan: BatchPlan
    model: torch.nn.Module
    optimizer: object
    scheduler: object
    loader: PackedLoader

    def __post_init__(self) -> None:
        lm = self.accelerator.unwrap_model(self.model).lm
        self.flops = FlopCounter.for_model(lm, self.cfg.train.peak_tflops, self.plan.world_size)
        self.stop = StopFlag()

    def train(self, state: TrainerState) -> dict:
        """Optimizer steps until ``train.max_steps`` or a stop signal; checkpoints on the way."""
        cfg, acc = self.cfg, self.accelerator
        metrics_file = Path(cfg.out_dir) / "metrics.jsonl"
        batches = batches_forever(self.loader)
        bar = tqdm(
            total=cfg.train.max_steps,
            initial=state.step,
            disable=not acc.is_main_process,
            desc="train",
        )
        self.model.train()
        started, stopped_by, loss = time.perf_counter(), None, float("nan")
        while state.step < cfg.train.max_steps:
            t0 = time.perf_counter()
            micro = [next(batches) for _ in range(self.plan.accumulation_steps)]
            result = self.train_step(micro)
            seconds = time.perf_counter() - t0
            state.step += 1
            state.tokens_seen += result.real_tokens
            state.bad_in_row = 0 if result.finite else state.bad_in_row + 1
            state.loader = self.loader.state_dict()
            loss = result.loss
            report_step(
                acc, cfg, metrics_row(state.step, result, seconds, self.flops), metrics_file, bar
            )
            if state.bad_in_row >= cfg.train.max_bad_steps:
                raise UserError(
                    f"{state.bad_in_row} optimizer steps in a row had a non-finite loss or "
                    f"gradient norm (last at step {state.step}); lower train.lr or check the data"
                )
            if result.stop_requested:
                stopped_by = self.stop.signal_name or "signal on another rank"
            last = state.step == cfg.train.max_steps
            if state.step % cfg.checkpoint.every_steps == 0 or last or stopped_by:
                if result.finite:  # never a state whose last step was non-finite
                    save_checkpoint(acc, Path(cfg.out_dir), state, cfg.checkpoint.keep_last)
                else:
                    log.warning("step %d was non-finite: no checkpoint of it", state.step)
            if stopped_by:
                log.info(
                    "stopping at step %d on %s: checkpoint saved, resume with resume=auto",
                    state.step,
                    stopped_by,
                )
                break
        bar.close()
        if state.bad_in_row and not stopped_by:
            raise UserError(
                f"the last step ({state.step}) had a non-finite loss or gradient norm, so the run "
                "did not end on a usable model and no final model was saved; lower train.lr"
            )
        return {
            "steps": state.step,
            # None when this process ran no step (a finished or stopped run finalised by
            # resume=auto at its own step): NaN is not JSON
            "final_loss": loss if math.isfinite(loss) else None,
            "tokens_seen": state.tokens_seen,
            "stopped_by": stopped_by,
            "train_seconds": round(time.perf_counter() - started, 1),
        }

    def train_step(self, micro: list[PackedBatch]) -> StepResult:
        """``plan.accumulation_steps`` micro-batches, then one optimizer step.

        The loss of a step is the sum of cross-entropy over every answer token of the step on
        every rank, divided by the number of those tokens: each micro-batch's summed loss is
        scaled by ``accumulation x world / total_tokens`` (accelerate/DeepSpeed divide by
        accumulation and average over ranks), which gives exactly the gradient of one big batch.

        Step numbers stay on the device: one all-reduce before the first backward (the token
        count that normalises the loss), one after the last (loss, non-finite flag, stop flag),
        and a single host read of all of them before the optimizer decides.
        """
        acc, plan, device = self.accelerator, self.plan, self.accelerator.device
        known = torch.tensor(
            [
                sum(b.label_tokens for b in micro),
                sum(b.real_tokens for b in micro),
                sum(self.flops.flops(b.doc_lens, b.label_tokens) for b in micro),
            ],
            dtype=torch.float64,
        )
        before = reduce_sum(acc, known)
        scale = micro_loss_scale(plan.accumulation_steps, plan.world_size, before[0]).float()
        loss_sum = torch.zeros((), dtype=torch.float32, device=device)
        bad = torch.zeros((), dtype=torch.float32, device=device)
        for batch in micro:
            with acc.accumulate(self.model):
                summed, _ = self.model(batch.to(device))
                summed, shown, is_bad = poisoned_loss(summed)  # NaN gradients if non-finite
                bad = bad + is_bad
                acc.backward(summed * scale)
                loss_sum = loss_sum + shown
        grad_norm = self.clip_gradients()
        flags = torch.stack(
            [loss_sum, bad, torch.tensor(float(self.stop.requested), device=device)]
        )
        after = reduce_sum(acc, flags)
        labels, tokens, flops, loss, n_bad, stops, norm = torch.cat(
            [before, after, grad_norm.to(device, torch.float64).reshape(1)]
        ).tolist()  # the step's one host synchronisation
        finite = n_bad == 0 and math.isfinite(norm)
        lr = self.scheduler.get_last_lr()[0]  # read before scheduler.step(): the lr just used
        stepped = apply_step(acc, self.model, self.optimizer, self.scheduler, finite)
        return StepResult(
            loss=loss / max(labels, 1.0),
            grad_norm=norm,
            lr=lr,
            label_tokens=int(labels),
            real_tokens=int(tokens),
            flops=flops,
            finite=finite,
            optimizer_stepped=stepped,
            stop_requested=stops > 0,
        )

    def clip_gradients(self) -> torch.Tensor:
        """The global gradient norm before clipping (DeepSpeed clips inside its step)."""
        return global_grad_norm(self.accelerator, self.model, self.cfg.train.max_grad_norm)


def metrics_row(step: int, result: StepResult, seconds: float, flops: FlopCounter) -> dict:
    return {
        "step": step,
        "loss": result.loss,
        "lr": result.lr,
        "grad_norm": result.grad_norm,
        "tokens_per_sec": result.real_tokens / seconds,
        "label_tokens": result.label_tokens,
        "non_finite": not result.finite,
        "optimizer_stepped": result.optimizer_stepped,
        "mfu": flops.mfu(result.flops, seconds),
    }


def report_step(accelerator, cfg, row: dict, metrics_file: Path, bar) -> None:
    bar.update(1)
    if not accelerator.is_main_process:
        return
    with open(metrics_file, "a") as fh:
        fh.write(json.dumps(row) + "\n")
    if row["step"] % cfg.train.log_every == 0:
        mfu = "n/a" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%"
        note = ""
        if row["non_finite"]:
            note = " (non-finite: " + (
                "stepped anyway by DeepSpeed)" if row["optimizer_stepped"] else "skipped)"
            )
        log.info(
            "step %d loss %.4f lr %.3e grad_norm %.3f tokens/s %.0f MFU %s%s",
            row["step"],
            row["loss"],
            row["lr"],
            row["grad_norm"],
            row["tokens_per_sec"],
            mfu,
            note,
        )
        if cfg.train.trackers:
            accelerator.log(
                {k: v for k, v in row.items() if isinstance(v, (int, float)) and v is not None},
                step=row["step"],
            )
