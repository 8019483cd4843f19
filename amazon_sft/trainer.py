"""The training loop and one optimizer step (torchtitan's ``Trainer.train`` / ``train_step``).

``Trainer.train`` runs steps, keeps the small typed ``TrainerState``, writes metrics and
checkpoints; ``Trainer.train_step`` runs the micro-batches of one step and the optimizer, and
reads the step's numbers from the device once.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from amazon_sft import stop_signal
from amazon_sft.checkpointing import (
    TrainerState,
    capture_rng,
    complete_checkpoints,
    restore_rng,
    save_checkpoint,
)
from amazon_sft.config import RunConfig
from amazon_sft.config_loader import to_dict
from amazon_sft.data.batch import PackedBatch
from amazon_sft.data.loader import PackedLoader
from amazon_sft.distributed import (
    BatchPlan,
    global_grad_norm,
    is_deepspeed,
    raise_if_any_rank,
    reduce_sum,
    to_device,
)
from amazon_sft.errors import UserError
from amazon_sft.loss import micro_loss_scale
from amazon_sft.metrics import FlopCounter
from amazon_sft.nonfinite import apply_step, poisoned_loss, what_to_check
from amazon_sft.resume_config import run_record
from amazon_sft.run_files import RunSummary
from amazon_sft.saving import logged_loss
from amazon_sft.step_log import metrics_row, report_step
from amazon_sft.trainer_state import StepResult, StepStart
from amazon_sft.validation import RowView, ValidationResult, validation_due, validation_loss

log = logging.getLogger("amazon_sft.train")


def batches_forever(loader: PackedLoader):
    while True:
        yield from loader  # each pass is the rest of the current epoch


STOP_CHECK_MICRO_BATCHES = 8
"""A step of more micro-batches than this checks for a stop signal every this many of them (one
all-reduce and host read each time); shorter steps check once, at their end."""


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
    base_weights: dict | None
    """A LoRA run's ``frozen_base_of`` (read once a launch), recorded in each checkpoint."""
    branched_from: str | None = None
    """The other run's checkpoint this run branched from (``resuming.branch_origin``),
    recorded in each checkpoint."""
    held: RowView | None = None
    """The rows held back for the validation loss (``train.validation_rows``), or None."""

    def __post_init__(self) -> None:
        lm = self.accelerator.unwrap_model(self.model).lm
        self.flops = FlopCounter.for_model(lm, self.cfg.train.peak_tflops, self.plan.world_size)
        # done with Ctrl-C where train.py / amazon-sft train began; in-process callers keep theirs
        stop_signal.install(ctrl_c=False)
        self.last_save = time.monotonic()  # checkpoint.every_minutes counts from here
        self.val_loss: float | None = None  # the last validation's, for run_summary.json
        self.log_failure: Exception | None = None  # rank 0's write of a step's metrics
        self.run_record = run_record(
            to_dict(self.cfg),
            self.loader.shards.manifest.identity.digest,
            self.base_weights,
            self.accelerator.mixed_precision,
            self.branched_from,
        )

    def train(self, state: TrainerState) -> RunSummary:
        """Optimizer steps until ``train.max_steps`` or a stop signal; checkpoints on the way."""
        cfg, acc = self.cfg, self.accelerator
        metrics_file = Path(cfg.out_dir) / "metrics.jsonl"
        batches = batches_forever(self.loader)
        started, stopped_by, loss = time.perf_counter(), None, float("nan")
        if state.step < cfg.train.max_steps and self.stop_agreed():
            # signalled during start-up: nothing was trained in this launch, so nothing new to
            # save (a pre-emption warning leaves too little time for a step and a checkpoint)
            stopped_by = stop_signal.received() or "signal on another rank"
            log.info(
                "stopping before the first step of this launch on %s: nothing new to save; "
                "resume with resume=auto (from step %d)",
                stopped_by,
                state.step,
            )
        with tqdm(  # shown once the loop starts (a stop before it is honoured above)
            total=cfg.train.max_steps,
            initial=state.step,
            disable=not acc.is_main_process or bool(stopped_by),
            desc="train",
        ) as bar:
            self.model.train()
            while state.step < cfg.train.max_steps and not stopped_by:
                t0 = time.perf_counter()
                at_start = self.step_start()
                micro = [next(batches) for _ in range(self.plan.accumulation_steps)]
                result = self.train_step(micro, droppable=state.step + 1 < cfg.train.max_steps)
                if result is None:  # a stop signal between micro-batches: the step is dropped
                    stopped_by = stop_signal.received() or "signal on another rank"
                    self.stop_mid_step(state, at_start, stopped_by)
                    break
                seconds = time.perf_counter() - t0  # the step's, not its validation's
                last = state.step + 1 == cfg.train.max_steps
                val = self.validate(state.step + 1, last, result.stop_requested)
                self.count_step(state, result, seconds, metrics_file, bar, val)
                loss = float("nan") if result.loss is None else result.loss
                if result.stop_requested and not (last and result.finite):
                    stopped_by = stop_signal.received() or "signal on another rank"
                elif result.stop_requested:  # the run is done: final/ beats a requeue to write it
                    log.info(
                        "a stop (%s) came during the last step: the run is finished, final/ is "
                        "written now",
                        stop_signal.received() or "signal on another rank",
                    )
                every = cfg.checkpoint.every_steps
                if (every and state.step % every == 0) or last or stopped_by or result.save_due:
                    if result.finite:  # never a state whose last step was non-finite
                        self.save(state)
                    else:
                        log.warning("step %d was non-finite: no checkpoint of it", state.step)
                if stopped_by:
                    log.info(
                        "stopping at step %d on %s: %s, resume with resume=auto",
                        state.step,
                        stopped_by,
                        "checkpoint saved" if result.finite else self.kept_before(),
                    )
                    break
        raise_if_any_rank(acc, self.log_failure, "writing metrics.jsonl")  # the last step's
        if state.bad_in_row and not stopped_by:
            raise UserError(
                f"the last step ({state.step}) had a non-finite loss or gradient norm, so the run "
                "did not end on a usable model and no final model was saved; "
                + what_to_check(state.bad_in_row, state.step)
            )
        return RunSummary(
            steps=state.step,
            # None when this process ran no step (a finished or stopped run finalised by
            # resume=auto at its own step): NaN is not JSON
            final_loss=loss if math.isfinite(loss) else None,
            tokens_seen=state.tokens_seen,
            stopped_by=stopped_by,
            train_seconds=round(state.train_seconds, 1),
            train_seconds_this_launch=round(time.perf_counter() - started, 1),
            val_loss=self.val_loss,
        )

    def validate(self, step: int, last: bool, stopping: bool) -> ValidationResult | None:
        """The validation loss after ``step`` when it is due, not when a stop cuts the run
        short (a pre-emption warning leaves time for a checkpoint, not for scoring)."""
        t = self.cfg.train
        if self.held is None or not validation_due(step, t.validation_every, last):
            return None
        if stopping and not last:
            return None
        result = validation_loss(
            self.accelerator, self.model, self.held, self.plan.micro_batch_size
        )
        self.val_loss = result.loss
        return result

    def score_unscored(self, step: int) -> float | None:
        """The validation loss of a run about to save ``final/`` at ``step`` when this launch
        ran no step (a resume with ``train.max_steps`` lowered to the step reached):
        ``metrics.jsonl``'s, else scored now (logged and sent to the trackers; that step's
        line of metrics.jsonl was written before). Every rank reads the same shared file, so
        all score or none does."""
        logged = logged_loss(Path(self.cfg.out_dir) / "metrics.jsonl", step, "val_loss")
        if logged is not None:
            return logged
        result = validation_loss(
            self.accelerator, self.model, self.held, self.plan.micro_batch_size
        )
        log.info(
            "validation loss at step %d (the run's last, not scored when it ran): %s",
            step,
            "n/a" if result.loss is None else f"{result.loss:.4f}",
        )
        if result.loss is not None and self.cfg.train.trackers:
            self.accelerator.log({"val_loss": result.loss}, step=step)
        return result.loss

    def count_step(
        self, state: TrainerState, result, seconds: float, metrics_file: Path, bar, val=None
    ) -> None:
        """A finished optimizer step (and its validation loss, if scored after it) into the
        state and the logs; too many non-finite steps in a row stop the run."""
        state.step += 1
        state.train_seconds += seconds
        state.tokens_seen += result.real_tokens
        state.bad_in_row = 0 if result.finite else state.bad_in_row + 1
        state.loader = self.loader.state_dict()
        row = metrics_row(state.step, result, seconds, self.flops, val)
        try:
            report_step(self.accelerator, self.cfg, row, metrics_file, bar)
        except Exception as err:  # a full disk, a tracker's own error (mlflow's REST call):
            self.log_failure = err  # every rank hears of it at the next step's first all-reduce
        if state.bad_in_row >= self.cfg.train.max_bad_steps:
            raise UserError(
                f"{state.bad_in_row} optimizer steps in a row had a non-finite loss or "
                f"gradient norm (last at step {state.step}); "
                + what_to_check(state.bad_in_row, state.step)
            )

    def save(self, state: TrainerState) -> None:
        """A checkpoint of ``state`` (the caller has checked its last step was finite)."""
        cfg = self.cfg
        save_checkpoint(
            self.accelerator, self.model, Path(cfg.out_dir), state, cfg.checkpoint.keep_last,
            self.run_record,
        )  # fmt: skip
        self.last_save = time.monotonic()

    def stop_mid_step(self, state: TrainerState, at_start, stopped_by: str) -> None:
        """A stop between micro-batches: the step is dropped, and the state before it saved
        unless its last step was non-finite (a resume review: it saved one after a skipped
        step)."""
        self.drop_step(at_start)
        if state.bad_in_row == 0:
            self.save(state)
            kept = f"checkpoint saved at step {state.step}"
        else:
            kept = f"step {state.step} was non-finite: {self.kept_before()}"
        log.info(
            "stopping during step %d on %s: the step was dropped, %s; resume with resume=auto",
            state.step + 1,
            stopped_by,
            kept,
        )

    def kept_before(self) -> str:
        """What a resume starts from when the last step was non-finite and is not saved."""
        saved = complete_checkpoints(Path(self.cfg.out_dir))
        if saved:
            return f"the checkpoint before it ({saved[-1].name}) is kept"
        return "no checkpoint yet, so a resume starts from step 0"

    def step_start(self) -> StepStart | None:
        """What a step dropped between micro-batches must restore, so the checkpoint saved then
        resumes exactly: the RNG streams and accelerate's micro-batch counter (both saved by
        ``save_state``). Only taken when the step can be dropped (many micro-batches)."""
        if not self.can_drop_steps:
            return None
        return StepStart(rng=capture_rng(), accelerate_step=self.accelerator.step)

    def drop_step(self, at_start: StepStart | None) -> None:
        """Forget a step's accumulated gradients; the weights, optimizer and scheduler were not
        touched yet, and the loader cursor in ``TrainerState`` is still the step's start."""
        self.optimizer.zero_grad(set_to_none=True)
        if at_start is not None:
            restore_rng(at_start.rng)
            self.accelerator.step = at_start.accelerate_step

    @property
    def can_drop_steps(self) -> bool:
        # DeepSpeed counts micro-steps inside its engine and steps at its own boundary, so a
        # step is not dropped there: the stop is honoured when the step ends (docs/finetuning.md)
        return self.plan.accumulation_steps > STOP_CHECK_MICRO_BATCHES and not is_deepspeed(
            self.accelerator
        )

    def stop_agreed(self) -> bool:
        """All ranks learn whether any got a stop signal (one all-reduce and one host read)."""
        flag = torch.tensor([float(stop_signal.requested())])
        return bool(reduce_sum(self.accelerator, flag).item() > 0)

    def train_step(self, micro: list[PackedBatch], droppable: bool = True) -> StepResult | None:
        """``plan.accumulation_steps`` micro-batches, then one optimizer step; a stop between
        micro-batches drops the step (None) when it is ``droppable`` (not the last step, which
        is finished so that ``final/`` is written).

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
                float(self.log_failure is not None),  # the last step's metrics unwritten
            ],
            dtype=torch.float64,
        )
        before = reduce_sum(acc, known)
        scale = micro_loss_scale(plan.accumulation_steps, plan.world_size, before[0]).float()
        loss_sum = torch.zeros((), dtype=torch.float32, device=device)
        bad = torch.zeros((), dtype=torch.float32, device=device)
        for i, batch in enumerate(micro):
            # between micro-batches of a long step, every STOP_CHECK_MICRO_BATCHES: a stop drops
            # the step (None) instead of waiting for maybe hours of accumulation to end
            at_check = i and i % STOP_CHECK_MICRO_BATCHES == 0 and self.can_drop_steps
            at_check = at_check and droppable  # the last step is finished: final/ is written
            if at_check and self.stop_agreed():
                return None
            with acc.accumulate(self.model):
                summed, _ = self.model(batch.to(device))
                summed, shown, is_bad = poisoned_loss(summed)  # NaN gradients if non-finite
                bad = bad + is_bad
                acc.backward(summed * scale)
                loss_sum = loss_sum + shown
        if not acc.sync_gradients:  # accelerate would skip this optimizer step, unsaid
            raise RuntimeError(
                f"accelerate did not sync gradients after a step's {len(micro)} micro-batches: "
                f"its micro-batch counter is off (acc.step {acc.step}); the optimizer would not "
                "step"
            )
        grad_norm = self.clip_gradients()
        own = [float(stop_signal.requested()), float(self.save_due())]
        flags = torch.cat([torch.stack([loss_sum, bad]), to_device(torch.tensor(own), device)])
        after = reduce_sum(acc, flags)
        labels, tokens, flops, unlogged, loss, n_bad, stops, due, norm = torch.cat(
            [before, after, grad_norm.to(device, torch.float64).reshape(1)]
        ).tolist()  # the step's one host synchronisation (transformers' mask preparation
        # added one per micro-batch: attention.no_mask_preparation)
        if unlogged:  # this step is dropped, unsaved (under DeepSpeed its optimizer has
            self.raise_log_failure()  # stepped inside backward already)
        finite = n_bad == 0 and math.isfinite(norm)
        lr = self.scheduler.get_last_lr()[0]  # read before scheduler.step(): the lr just used
        stepped = apply_step(acc, self.model, self.optimizer, self.scheduler, finite)
        return StepResult(
            loss=None if n_bad else loss / max(labels, 1.0),
            grad_norm=norm,
            lr=lr,
            label_tokens=int(labels),
            real_tokens=int(tokens),
            flops=flops,
            finite=finite,
            optimizer_stepped=stepped,
            stop_requested=stops > 0,
            save_due=due > 0,
        )

    def raise_log_failure(self) -> None:
        """Rank 0's failed write of metrics.jsonl, on every rank (a full disk: its own error,
        which ``disk_full`` says in one line; the others name rank 0)."""
        if self.log_failure is not None:
            raise self.log_failure
        raise UserError("rank 0 failed writing metrics.jsonl: see its message above")

    def save_due(self) -> bool:
        """This rank's clock says ``checkpoint.every_minutes`` have passed since the last save
        (the step's all-reduce makes any rank's say so everyone's)."""
        minutes = self.cfg.checkpoint.every_minutes
        return bool(minutes) and time.monotonic() - self.last_save >= minutes * 60

    def clip_gradients(self) -> torch.Tensor:
        """The global gradient norm before clipping (DeepSpeed clips inside its step)."""
        return global_grad_norm(self.accelerator, self.model, self.cfg.train.max_grad_norm)
