"""Fine-tune on prepared shards: ``accelerate launch amazon_sft/train.py --config NAME [key=value ...]``.

Also ``amazon-sft train`` (same code). Full or LoRA, single process, DDP or DeepSpeed ZeRO-2/3,
exact resume, tokens/s and MFU in the logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file by accelerate launch: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from tqdm import tqdm

from amazon_sft.checkpointing import StopFlag, find_resume_dir, load_checkpoint, save_checkpoint
from amazon_sft.config import RunConfig, load_run_config
from amazon_sft.config_loader import to_dict, write_resolved
from amazon_sft.data.loader import PackedLoader
from amazon_sft.data.shards import PackedShards, check_fingerprints
from amazon_sft.distributed import (
    BatchPlan,
    any_rank,
    build_accelerator,
    global_sum,
    is_deepspeed,
    offloads_optimizer,
)
from amazon_sft.errors import UserError
from amazon_sft.loss import SummedAnswerLoss, micro_loss_scale
from amazon_sft.metrics import MFU_FORMULA, FlopCounter
from amazon_sft.modeling import choose_attention, load_model, parameter_counts
from amazon_sft.optim import build_optimizer
from amazon_sft.prompts import build_prompt_format
from amazon_sft.saving import save_final
from amazon_sft.tokenizer import choose_pad_id, load_tokenizer, tokenizer_fingerprint

log = logging.getLogger("amazon_sft.train")


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    out_dir = Path(cfg.out_dir)
    accelerator, plan = build_accelerator(cfg, out_dir / "logs")
    setup_logging(accelerator)
    tok, shards = load_data(cfg)
    model, counts = build_model(cfg, tok, accelerator)
    optimizer, scheduler = build_optimizer(cfg, model, cpu_adam=offloads_optimizer(accelerator))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    loader = PackedLoader(
        shards, plan.micro_batch_size, accelerator.process_index, plan.world_size, cfg.data.seed
    )
    state = resume(cfg, accelerator, loader, out_dir)
    start_logging(accelerator, cfg, plan, counts, out_dir)
    summary = fit(cfg, accelerator, plan, model, optimizer, scheduler, loader, state, counts)
    if summary["stopped_by"] is None:
        save_final(accelerator, cfg, model, tok, out_dir, summary)
    shutdown(accelerator)
    return 0


def shutdown(accelerator) -> None:
    """Tear the process group down before interpreter exit: left to atexit, gloo's threads can
    abort the process ("terminate called without an active exception") after a good run."""
    accelerator.wait_for_everyone()
    accelerator.end_training()  # closes trackers; newer accelerate also destroys the group here
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def parse_config(argv: list[str] | None) -> RunConfig:
    parser = argparse.ArgumentParser(prog="amazon-sft train", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", default=None, help="config name (tiny, smollm2-135m, ...) or YAML path"
    )
    parser.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=10 lora.enabled=true"
    )
    args = parser.parse_args(argv)
    return load_run_config(args.config, args.overrides)


def setup_logging(accelerator) -> None:
    level = logging.INFO if accelerator.is_main_process else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", force=True)


def load_data(cfg: RunConfig):
    """The tokenizer and the shards, refusing shards made with another tokenizer or template."""
    tok = load_tokenizer(cfg.model)
    fmt = build_prompt_format(tok, cfg.data)
    shards = PackedShards(cfg.data.path)
    check_fingerprints(
        shards.manifest, tokenizer_fingerprint(tok), fmt.fingerprint(), cfg.data.path
    )
    if shards.max_seq_len != cfg.data.max_seq_len:
        raise UserError(
            f"{cfg.data.path} holds rows of {shards.max_seq_len} tokens but data.max_seq_len="
            f"{cfg.data.max_seq_len}; set data.max_seq_len={shards.max_seq_len} or re-run prepare"
        )
    return tok, shards


def build_model(cfg: RunConfig, tok, accelerator):
    from accelerate.utils import set_seed

    set_seed(cfg.seed)  # same init on every rank
    lm = load_model(cfg, len(tok), choose_pad_id(tok), accelerator.mixed_precision)
    counts = parameter_counts(lm)
    return SummedAnswerLoss(lm, cfg.train.loss_chunk_tokens), counts


def resume(cfg: RunConfig, accelerator, loader: PackedLoader, out_dir: Path) -> dict:
    path = find_resume_dir(cfg.resume, out_dir)
    if path is None:
        return {"step": 0, "bad_in_row": 0, "tokens_seen": 0}
    state = load_checkpoint(accelerator, path)
    loader.load_state_dict(state["loader"])
    log.info(
        "resumed from %s at step %d (data epoch %d, row cursor %d)",
        path,
        state["step"],
        state["loader"]["epoch"],
        state["loader"]["cursor"],
    )
    return state


def start_logging(
    accelerator, cfg: RunConfig, plan: BatchPlan, counts: dict, out_dir: Path
) -> None:
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_resolved(cfg, out_dir / "config.yaml")
    attn, why = choose_attention(cfg.train.attention)
    log.info("batch: %s", plan.describe())
    log.info("attention: %s (%s)", attn, why)
    log.info(
        "parameters: %d trainable, %d frozen, %d total",
        counts["trainable"],
        counts["frozen"],
        counts["total"],
    )
    log.info(
        "precision: %s; distributed: %s", accelerator.mixed_precision, accelerator.distributed_type
    )
    log.info("MFU = %s (peak: train.peak_tflops or the GPU's name; n/a on CPU)", MFU_FORMULA)
    if cfg.train.trackers:
        flat = {k: str(v) for k, v in to_dict(cfg).items()}
        accelerator.init_trackers("amazon_sft", config=flat)


def batches_forever(loader: PackedLoader):
    while True:
        yield from loader  # each pass is the rest of the current epoch


def count_labels(batch: dict) -> int:
    return int((batch["labels"][:, 1:] != -100).sum())


def fit(
    cfg,
    accelerator,
    plan: BatchPlan,
    model,
    optimizer,
    scheduler,
    loader,
    state: dict,
    counts: dict,
) -> dict:
    """The training loop: one optimizer step = ``plan.accumulation_steps`` micro-batches per rank.

    The loss of a step is the sum of cross-entropy over every answer token of the step on every
    rank, divided by the number of those tokens: each micro-batch's summed loss is scaled by
    ``accumulation x world / total_tokens`` (accelerate/DeepSpeed divide by accumulation and
    average over ranks), which gives exactly the gradient of one big batch.
    """
    step, bad_in_row, tokens_seen = state["step"], state["bad_in_row"], state["tokens_seen"]
    flops = FlopCounter.for_model(
        accelerator.unwrap_model(model).lm, counts, cfg.train.peak_tflops, plan.world_size
    )
    stop = StopFlag()
    metrics_file = Path(cfg.out_dir) / "metrics.jsonl"
    batches = batches_forever(loader)
    bar = tqdm(
        total=cfg.train.max_steps,
        initial=step,
        disable=not accelerator.is_main_process,
        desc="train",
    )
    started, stopped_by, loss = time.perf_counter(), None, float("nan")
    while step < cfg.train.max_steps:
        t0 = time.perf_counter()
        micro = [next(batches) for _ in range(plan.accumulation_steps)]
        n_tokens = global_sum(accelerator, sum(count_labels(b) for b in micro))
        scale = micro_loss_scale(plan.accumulation_steps, plan.world_size, n_tokens)
        loss_sum, finite = 0.0, True
        for batch in micro:
            with accelerator.accumulate(model):
                summed, _ = model(
                    batch["input_ids"].to(accelerator.device),
                    batch["position_ids"].to(accelerator.device),
                    batch["labels"].to(accelerator.device),
                )
                if any_rank(accelerator, not bool(torch.isfinite(summed))):
                    finite = False
                    summed = torch.where(torch.isfinite(summed), summed, torch.zeros_like(summed))
                accelerator.backward(summed * scale)
                loss_sum += float(summed.detach())
        grad_norm = clip_gradients(accelerator, model, cfg.train.max_grad_norm)
        finite = finite and math.isfinite(grad_norm)
        if finite or is_deepspeed(accelerator):  # DeepSpeed has stepped inside backward already
            optimizer.step()
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bad_in_row = 0 if finite else bad_in_row + 1
        if bad_in_row >= cfg.train.max_bad_steps:
            raise UserError(
                f"{bad_in_row} optimizer steps in a row had a non-finite loss or gradient norm "
                f"(last at step {step + 1}); lower train.lr or check the data"
            )
        step += 1
        step_tokens = int(global_sum(accelerator, sum(sum(map(sum, b["doc_lens"])) for b in micro)))
        seconds = time.perf_counter() - t0
        tokens_seen += step_tokens
        loss = global_sum(accelerator, loss_sum) / max(n_tokens, 1.0)
        row = {
            "step": step,
            "loss": loss,
            "lr": scheduler.get_last_lr()[0],
            "grad_norm": grad_norm,
            "tokens_per_sec": step_tokens / seconds,
            "label_tokens": int(n_tokens),
            "skipped": not finite,
            "mfu": flops.mfu(micro, seconds, accelerator),
        }
        report_step(accelerator, cfg, row, metrics_file, bar)
        if any_rank(accelerator, stop.requested):
            stopped_by = stop.signal_name or "signal on another rank"
        if step % cfg.checkpoint.every_steps == 0 or step == cfg.train.max_steps or stopped_by:
            trainer_state = {
                "step": step,
                "bad_in_row": bad_in_row,
                "tokens_seen": tokens_seen,
                "loader": loader.state_dict(),
            }
            save_checkpoint(
                accelerator, Path(cfg.out_dir), step, trainer_state, cfg.checkpoint.keep_last
            )
        if stopped_by:
            log.info(
                "stopping at step %d on %s: checkpoint saved, resume with resume=auto",
                step,
                stopped_by,
            )
            break
    bar.close()
    return {
        "steps": step,
        "final_loss": loss,
        "tokens_seen": tokens_seen,
        "stopped_by": stopped_by,
        "train_seconds": round(time.perf_counter() - started, 1),
    }


def clip_gradients(accelerator, model, max_norm: float) -> float:
    """The global gradient norm before clipping (DeepSpeed clips inside its step)."""
    norm = accelerator.clip_grad_norm_(
        model.parameters(), max_norm if max_norm > 0 else float("inf")
    )
    return float(norm) if norm is not None else float("nan")


def report_step(accelerator, cfg, row: dict, metrics_file: Path, bar) -> None:
    bar.update(1)
    if not accelerator.is_main_process:
        return
    with open(metrics_file, "a") as fh:
        fh.write(json.dumps(row) + "\n")
    if row["step"] % cfg.train.log_every == 0:
        mfu = "n/a" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%"
        log.info(
            "step %d loss %.4f lr %.3e grad_norm %.3f tokens/s %.0f MFU %s%s",
            row["step"],
            row["loss"],
            row["lr"],
            row["grad_norm"],
            row["tokens_per_sec"],
            mfu,
            " (skipped: non-finite)" if row["skipped"] else "",
        )
        if cfg.train.trackers:
            accelerator.log(
                {k: v for k, v in row.items() if isinstance(v, (int, float)) and v is not None},
                step=row["step"],
            )


def cli() -> None:
    try:
        sys.exit(main())
    except UserError as err:
        print(f"amazon-sft train: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
