"""Fine-tune on prepared shards: ``accelerate launch amazon_sft/train.py --config NAME [key=value ...]``.

Also ``amazon-sft train`` (same code). Full or LoRA, single process, DDP or DeepSpeed ZeRO-2/3,
exact resume, tokens/s and MFU in the logs.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file by accelerate launch: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__":  # a stop signal during start-up is honoured too, not fatal (143)
    from amazon_sft import stop_signal

    stop_signal.install()

import torch

from amazon_sft.checkpointing import after_a_cut_save
from amazon_sft.config import DEFAULT_CONFIG, RunConfig, load_run_config
from amazon_sft.config_keys import KeysHelpParser, every_key
from amazon_sft.config_loader import to_dict, write_resolved
from amazon_sft.data.fingerprints import check_fingerprints
from amazon_sft.data.loader import PackedLoader
from amazon_sft.data.manifest import shaping_overrides
from amazon_sft.data.shards import PackedShards
from amazon_sft.deepspeed_config import deepspeed_json_of, refuse_one_process_launch
from amazon_sft.distributed import (
    BatchPlan,
    agreed,
    build_accelerator,
    check_for_world,
    check_shared_folder,
    raise_if_any_rank,
    running_engine,
    seed_per_rank,
)
from amazon_sft.errors import KNOWN_FAILURES, UserError, known_failure, tell_the_launcher
from amazon_sft.exiting import exit_skipping_teardown
from amazon_sft.lora_base import frozen_base_of
from amazon_sft.loss import SummedAnswerLoss, head_calls
from amazon_sft.metrics import MFU_FORMULA
from amazon_sft.model_memory import check_full_fine_tune_fits, check_lora_names_before_load
from amazon_sft.modeling import choose_attention, load_model, parameter_counts
from amazon_sft.optim import build_optimizer, describe_optimizer, fused_adamw_here
from amazon_sft.output_lock import DataReadLock, OutputLock
from amazon_sft.outputs import disk_full, landing
from amazon_sft.ownership import run_dir_given_back
from amazon_sft.prompts import build_prompt_format
from amazon_sft.resume_config import history_header, precision_name
from amazon_sft.resuming import (
    base_after_load,
    branch_goes_on,
    branch_origin,
    plan_resume,
    resume,
)
from amazon_sft.run_data import refuse_data_not_prepared, taught_by_the_data
from amazon_sft.run_folder import check_out_dir, claim_out_dir
from amazon_sft.run_size import hold_back, resolve_schedule, steps_from_epochs, warmup_warning
from amazon_sft.saving import finished_before, save_final
from amazon_sft.tokenizer import (
    choose_pad_id,
    load_tokenizer,
    resolve_location,
    tokenizer_fingerprint,
)
from amazon_sft.trainable_state import refuse_undrawable_base
from amazon_sft.trained_on import TrainedOn, templates_read, whole_model_path
from amazon_sft.trainer import Trainer

log = logging.getLogger("amazon_sft.train")


def main(argv: list[str] | None = None) -> int:
    cfg, check_world, given, config_name = parse_config(argv)
    if check_world is not None:
        plan = check_for_world(cfg, check_world)  # nothing loaded, nothing written
        print(
            f"amazon-sft train: {check_world} process{'es' if check_world > 1 else ''} can run "
            f"this config: {plan.describe()} "
            "(the batch split and the engine; memory is not checked: see the README's table; "
            "nor is the prepared data, which the launch checks against the batch and "
            "train.validation_rows)"
        )
        return 0
    cfg = dataclasses.replace(cfg, out_dir=str(landing(cfg.out_dir)))  # nope/../mine: mine
    out_dir = Path(cfg.out_dir)
    branch = branch_origin(cfg, out_dir)  # recorded by each checkpoint: branch_goes_on reads it
    cfg = branch_goes_on(cfg, out_dir)  # a requeue of a branch from another run's checkpoint
    check_out_dir(cfg, out_dir)  # every rank, before anyone writes
    check_lora_names_before_load(cfg)  # before the accelerator: ZeRO-3's init hooks need weights
    accelerator, plan = build_accelerator(cfg, out_dir / "logs")
    setup_logging(accelerator)
    check_before_load(cfg, accelerator)
    with DataReadLock(Path(cfg.data.path), shared=True):  # prepare replaces it not meanwhile
        lock = train_on_data(cfg, accelerator, plan, out_dir, branch, given, config_name)
    shutdown(accelerator)
    if lock is not None:  # after the trackers' last writes into out_dir
        lock.release()
    return 0


def train_on_data(
    cfg: RunConfig,
    accelerator,
    plan,
    out_dir: Path,
    branch,
    given: list[str],
    config_name: str,
) -> OutputLock | None:
    """Load the prepared data, claim ``out_dir``, build or resume the model, train, save; the
    run folder's lock (main process), still held."""
    tok, shards = load_data(cfg, [config_name, *shaping_overrides(given)])
    templates = templates_read(cfg)  # final/ carries these bytes, whatever the file holds later
    refuse_data_not_prepared(given, cfg, shards.manifest)
    cfg = taught_by_the_data(cfg, shards.manifest, accelerator.is_main_process)
    rows, held = hold_back(cfg, shards)  # train.validation_rows, before any folder is made
    cfg = resolve_schedule(steps_from_epochs(cfg, len(rows)))
    made_here = accelerator.is_main_process and not out_dir.exists()
    lock, moved = claim_out_dir(cfg, accelerator, out_dir)  # one writer; a previous run aside
    with run_dir_given_back(out_dir, made_here, moved):  # refused before the first step: as was
        check_shared_folder(accelerator, out_dir, "out_dir")  # node-local scratch: refused
        base = frozen_base_of(cfg)  # a LoRA run's base files (its checkpoints hold the adapter)
        planned = plan_resume(cfg, accelerator, shards.manifest.identity, out_dir, base)
        model = build_model(cfg, tok, accelerator)
        base = base_after_load(cfg, accelerator, planned, out_dir, base)  # a hub name's
        optimizer, scheduler = build_optimizer(cfg, model, fused_adamw_here(accelerator))
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        rank = accelerator.process_index
        loader = PackedLoader(
            rows,
            plan.micro_batch_size,
            rank,
            plan.world_size,
            cfg.data.seed,
            plan.accumulation_steps,
        )
        state = resume(cfg, accelerator, model, loader, optimizer, scheduler, out_dir, planned)
    start_logging(accelerator, cfg, plan, model, optimizer, out_dir, state.step)
    trainer = Trainer(
        cfg, accelerator, plan, model, optimizer, scheduler, loader, base, branch, held
    )  # fmt: skip
    kept = functools.partial(after_a_cut_save, out_dir, accelerator.is_main_process)
    with disk_full(out_dir, "train could not save", kept):
        summary = trainer.train(state)
        finish(accelerator, cfg, trainer, tok, shards.manifest, summary, templates)
    return lock


def check_before_load(cfg: RunConfig, accelerator) -> None:
    """What can be told before the model loads (tens of seconds to minutes at 8B)."""
    if accelerator.is_main_process and (unused := cfg.lora.unused()):
        log.warning(
            "%s set, but lora.enabled is false: this run trains every weight (add "
            "lora.enabled=true to train adapters)",
            ", ".join(unused),
        )
    error = None
    try:  # what a rank reads of its own node: refused on all when any refuses
        resolve_location(cfg.model.path, "model.path")  # a node-local copy missing on one node
        check_full_fine_tune_fits(cfg, accelerator)  # DDP on GPUs too small (a job mixing kinds)
        refuse_undrawable_base(cfg, running_engine(accelerator).zero_stage)
    except UserError as err:
        error = err
    raise_if_any_rank(accelerator, error, "before the model loaded")


def finish(accelerator, cfg, trainer: Trainer, tok, manifest, summary, templates) -> None:
    """After the last step: the final model into ``final/`` (not after a stop, nor when a
    finished run is launched again)."""
    out_dir = Path(cfg.out_dir)
    if summary.stopped_by is not None:
        return
    if finished_before(out_dir, summary):
        log.info("already finished at step %d: final/ is kept as it is", summary.steps)
        return
    if trainer.held is not None and summary.final_loss is None and summary.val_loss is None:
        # this launch ran no step: the last one was scored, if at all, by the one that did
        summary = dataclasses.replace(summary, val_loss=trainer.score_unscored(summary.steps))
    data = TrainedOn(  # the manifest's prompt fingerprint is the one load_data checked
        str(Path(cfg.data.path).resolve()),
        manifest.identity.digest,
        manifest.template_fingerprint,
        whole_model_path(cfg.model.path),
    )
    final = save_final(
        accelerator, cfg, trainer.model, tok, out_dir, summary, data, trainer.base_weights,
        templates,
    )  # fmt: skip
    log.info(
        'the model is in %s; next: amazon-sft ask "..." --model %s, amazon-sft eval '
        "--model %s --data %s",
        final,
        out_dir,
        out_dir,
        cfg.data.path,
    )


def shutdown(accelerator) -> None:
    """Tear the process group down before interpreter exit: left to atexit, gloo's threads can
    abort the process ("terminate called without an active exception") after a good run."""
    accelerator.wait_for_everyone()
    accelerator.end_training()  # closes trackers; newer accelerate also destroys the group here
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def parse_config(argv: list[str] | None) -> tuple[RunConfig, int | None, list[str], str]:
    """(the run config, --check-world, the overrides given, the config's name or YAML)."""
    parser = KeysHelpParser(
        prog="amazon-sft train",
        description=__doc__.splitlines()[0],
        keys=every_key,
        default_config=DEFAULT_CONFIG,
    )
    parser.add_argument(
        "--config", default=None, help="config name (tiny, smollm2-135m, ...) or YAML path"
    )
    parser.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=10 lora.enabled=true"
    )
    parser.add_argument(
        "--check-world",
        type=int,
        default=None,
        metavar="N",
        help="check the config for a launch of N processes (the batch split, the DeepSpeed "
        "JSON) and exit: nothing is loaded or written",
    )
    parser.add_argument(
        "--accelerate-config",
        default=None,
        metavar="YAML",
        help="with --check-world: the accelerate config the launch will use (its DeepSpeed JSON "
        "is checked too)",
    )
    args = parser.parse_intermixed_args(argv)  # overrides after an option too, as prepare
    if args.check_world is not None and args.check_world < 1:
        parser.error(
            f"--check-world takes a number of processes (1 or more), got {args.check_world}"
        )
    if args.accelerate_config and args.check_world is None:
        parser.error(
            "--accelerate-config goes with --check-world N (accelerate launch reads its own)"
        )
    if args.accelerate_config:
        refuse_one_process_launch(args.accelerate_config, args.check_world)
        json_path = deepspeed_json_of(args.accelerate_config)
        if json_path:  # as accelerate launch hands it to every rank
            os.environ["ACCELERATE_DEEPSPEED_CONFIG_FILE"] = json_path
    cfg = load_run_config(args.config, args.overrides)
    return cfg, args.check_world, args.overrides, args.config or DEFAULT_CONFIG


def setup_logging(accelerator) -> None:
    level = logging.INFO if accelerator.is_main_process else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", force=True)


def load_data(cfg: RunConfig, prepare_with: list[str] | None = None):
    """The tokenizer and the shards, refusing shards made with another tokenizer or template
    (``prepare_with``: the config's name or YAML and the overrides that shape the data, for the
    prepare command a refusal suggests)."""
    tok = load_tokenizer(cfg.model)
    fmt = build_prompt_format(tok, cfg.data)
    shards = PackedShards(cfg.data.path, verify=cfg.data.verify, config=prepare_with)
    check_fingerprints(
        shards.manifest,
        tokenizer_fingerprint(tok),
        fmt.fingerprint(),
        cfg.data.path,
        prepare_with,
        templates=cfg.data.templates,
    )
    if shards.max_seq_len != cfg.data.max_seq_len:
        raise UserError(
            f"{cfg.data.path} holds rows of {shards.max_seq_len} tokens but data.max_seq_len="
            f"{cfg.data.max_seq_len}; set data.max_seq_len={shards.max_seq_len} or re-run prepare"
        )
    return tok, shards


def build_model(cfg: RunConfig, tok, accelerator) -> SummedAnswerLoss:
    """The LM wrapped in its loss, in training mode, each rank with its own dropout stream."""
    from accelerate.utils import DistributedType, set_seed

    set_seed(cfg.seed)  # same init on every rank
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    ends = (tok.bos_token_id, tok.eos_token_id)
    lm = load_model(
        cfg, len(tok), choose_pad_id(tok), accelerator.mixed_precision, deepspeed, bos_eos=ends
    )
    # from_pretrained returns eval mode: checkpointed layers would not recompute, dropout be off
    lm.train()
    seed_per_rank(cfg.seed, accelerator)
    return SummedAnswerLoss(lm, cfg.train.loss_chunk_tokens)


def start_logging(
    accelerator, cfg: RunConfig, plan: BatchPlan, model, optimizer, out_dir: Path, step: int
) -> None:
    engine, n = running_engine(accelerator), accelerator.num_processes
    ran = (  # the config's auto / null leave these to the machine and the accelerate config
        f"# this launch ran with: mixed precision {precision_name(accelerator.mixed_precision)}, "
        f"{engine.describe()}, "
        f"{n} process{'es' if n != 1 else ''}\n"
    )

    def write_config() -> None:  # rank 0's write, agreed: a full disk left the others waiting
        out_dir.mkdir(parents=True, exist_ok=True)
        write_resolved(cfg, out_dir / "config.yaml", header=ran + history_header(out_dir))

    agreed(accelerator, write_config, "while writing config.yaml", main_only=True)
    counts = parameter_counts(accelerator.unwrap_model(model).lm)
    attn, why = choose_attention(cfg.train.attention, accelerator.mixed_precision)
    log.info("batch: %s", plan.describe())
    log.info("attention: %s (%s)", attn, why)
    calls = head_calls(plan.micro_batch_size * (plan.max_seq_len - 1), cfg.train.loss_chunk_tokens)
    log.info("loss: %d LM-head calls per micro-batch on every rank", calls)
    log.info(
        "parameters: %d trainable, %d frozen, %d total",
        counts["trainable"],
        counts["frozen"],
        counts["total"],
    )
    log.info("optimizer: %s", describe_optimizer(optimizer))
    if (said := warmup_warning(cfg.train.warmup_steps, cfg.train.max_steps)) and (
        accelerator.is_main_process
    ):
        log.warning(said)
    log.info(
        "precision: %s; distributed: %s", accelerator.mixed_precision, accelerator.distributed_type
    )
    log.info("MFU = %s (peak: train.peak_tflops or the GPU's name; n/a on CPU)", MFU_FORMULA)
    if cfg.train.trackers:
        flat = {k: str(v) for k, v in to_dict(cfg).items()}
        # TensorBoard hides what an earlier process logged after the step resumed from (those
        # steps run again), as metrics.jsonl drops them; at step 0 too (killed before a save)
        purge = {"tensorboard": {"purge_step": step + 1}}
        trackers = functools.partial(
            accelerator.init_trackers, "amazon_sft", config=flat, init_kwargs=purge
        )  # rank 0 makes their files (accelerate's own rule): agreed, as config.yaml
        agreed(accelerator, trackers, "while starting the trackers", main_only=False)


def cli() -> None:
    try:
        code = main()
    except KNOWN_FAILURES as err:  # as amazon-sft train says them; Ctrl-C twice: stop_signal
        said, code = known_failure("train", err)
        print(said, file=sys.stderr)
        if code == 2:
            tell_the_launcher(said)
    exit_skipping_teardown(code)


if __name__ == "__main__":
    cli()
