"""The one module that knows about ranks, world size, backends and DeepSpeed configs.

Everything else receives the ``Accelerator`` and asks it. Two traps of CPU runs are handled
here: without CUDA, accelerate gives DeepSpeed no process-group backend (every rank then trains
alone), so gloo is passed explicitly; and a launcher that silently starts one process is caught
by comparing accelerate's count with torch.distributed's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from amazon_sft.checkpoint_engine import Engine
from amazon_sft.config import RunConfig
from amazon_sft.deepspeed_config import (
    INLINE_DEEPSPEED,
    NO_DEEPSPEED_UNDER_DEEPSPEED,
    deepspeed_config_path,
    deepspeed_name,
    fill_deepspeed_config,
    use_prebuilt_ops,
)
from amazon_sft.errors import UserError
from amazon_sft.model_memory import check_lora_names_before_load
from amazon_sft.trackers import checked_trackers


@dataclass(frozen=True)
class BatchPlan:
    micro_batch_size: int
    accumulation_steps: int
    world_size: int
    global_batch_size: int
    max_seq_len: int

    @property
    def tokens_per_step(self) -> int:
        """Token slots per optimizer step over all ranks (padding included)."""
        return self.global_batch_size * self.max_seq_len

    def describe(self) -> str:
        return (
            f"global batch {self.global_batch_size} rows = micro {self.micro_batch_size} x "
            f"accumulation {self.accumulation_steps} x world {self.world_size}; "
            f"{self.tokens_per_step} token slots ({self.max_seq_len} per row) per optimizer step"
        )


def plan_batches(cfg: RunConfig, world_size: int) -> BatchPlan:
    """global = micro x accumulation x world, checked with the numbers in the error."""
    micro, glob = cfg.train.micro_batch_size, cfg.train.global_batch_size
    per_step = micro * world_size
    if glob % per_step:
        other = ""  # resume takes a micro-batch change, not a global one
        if glob % world_size == 0:  # each process's rows split evenly: the largest that divides
            rows = glob // world_size
            other = (
                f", or train.micro_batch_size={max(m for m in range(1, micro) if rows % m == 0)}"
            )
        raise UserError(
            f"train.global_batch_size={glob} is not a multiple of train.micro_batch_size={micro} x "
            f"world size {world_size} = {per_step}; use e.g. train.global_batch_size="
            f"{max(per_step, glob // per_step * per_step)}{other}"
        )
    return BatchPlan(micro, glob // per_step, world_size, glob, cfg.data.max_seq_len)


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def native_bf16_gpu() -> bool:
    """A GPU with bf16 in hardware: not emulated (a T4 or V100 says True by default, then runs
    bf16 slowly in software)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(cfg: RunConfig) -> str:
    """'bf16' where the GPU supports it (or when asked), 'no' (fp32) on CPU."""
    if cfg.train.precision == "fp32":
        return "no"
    has_bf16 = native_bf16_gpu()
    if cfg.train.precision == "bf16":
        if not has_bf16 and torch.cuda.is_available():
            raise UserError(
                "train.precision=bf16 but this GPU has no bf16; use train.precision=fp32"
            )
        return "bf16"
    return "bf16" if has_bf16 else "no"


def check_for_world(cfg: RunConfig, world_size: int) -> BatchPlan:
    """What every rank of a launch of ``world_size`` processes would refuse at start, checked
    where no rank runs yet (``train.py --check-world N``: the SLURM job, before it prepares):
    the batch split and the DeepSpeed JSON (its precision is left to the ranks, whose GPUs
    decide ``auto``)."""
    from amazon_sft.modeling import refuse_compile_with_deepspeed
    from amazon_sft.trainable_state import refuse_undrawable_base

    plan = plan_batches(cfg, world_size)
    path = deepspeed_config_path(cfg)
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
    refuse_compile_with_deepspeed(cfg, path is not None or deepspeed)
    if path is not None:
        ds = fill_deepspeed_config(path, cfg, plan, None)
        refuse_undrawable_base(cfg, (ds.get("zero_optimization") or {}).get("stage"))
    elif deepspeed:
        raise UserError(
            NO_DEEPSPEED_UNDER_DEEPSPEED if cfg.deepspeed == "none" else INLINE_DEEPSPEED
        )
    checked_trackers(cfg.train.trackers)  # a tracker not installed stopped every rank at start
    check_lora_names_before_load(cfg)  # a typo found after an 8B load cost the load and the slot
    return plan


def build_accelerator(cfg: RunConfig, log_dir: Path):
    """The Accelerator for this run, with gloo on CPU and a filled DeepSpeed plugin if any."""
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

    use_prebuilt_ops()  # before DeepSpeed builds its comm op (ZeRO on CPU) or CPU Adam
    precision = resolve_precision(cfg)
    plan = plan_batches(cfg, world_size_from_env())
    ds_path = deepspeed_config_path(cfg)
    if ds_path is not None:
        check_launched(cfg)
    elif os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        raise UserError(
            NO_DEEPSPEED_UNDER_DEEPSPEED if cfg.deepspeed == "none" else INLINE_DEEPSPEED
        )
    # step_scheduler_with_optimizer=False: one scheduler step per optimizer step (accelerate
    # otherwise steps it once per process, which bends the warmup/cosine curve under DDP).
    kwargs: dict = {
        "mixed_precision": precision,
        "project_dir": str(log_dir),
        "step_scheduler_with_optimizer": False,
    }
    if ds_path is not None:
        ds = fill_deepspeed_config(ds_path, cfg, plan, precision)
        stage = ds.get("zero_optimization", {}).get("stage", 0)
        # zero3_init_flag makes from_pretrained build the model inside deepspeed.zero.Init
        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=ds, zero3_init_flag=stage == 3)
    else:
        kwargs["gradient_accumulation_steps"] = plan.accumulation_steps
    if not torch.cuda.is_available() and (plan.world_size > 1 or ds_path is not None):
        kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
    if cfg.train.trackers:
        kwargs["log_with"] = checked_trackers(cfg.train.trackers)
    accelerator = Accelerator(**kwargs)
    check_world(accelerator)
    check_same_precision(accelerator)
    return accelerator, plan


def check_launched(cfg: RunConfig) -> None:
    """DeepSpeed needs a launcher's world (rank, world size, a rendezvous) even for one process,
    as transformers' notebook recipe shows; without one accelerate stops in a torch traceback."""
    if "LOCAL_RANK" in os.environ:
        return
    key = f"deepspeed={cfg.deepspeed}" if cfg.deepspeed else "ACCELERATE_DEEPSPEED_CONFIG_FILE"
    name = deepspeed_name(cfg)
    example = name if name in ("zero2", "zero3", "zero3_offload") else "zero3"
    raise UserError(
        f"{key} needs a launcher, even for one process: accelerate launch --config_file "
        f"launch/accelerate/{example}.yaml --num_processes N amazon_sft/train.py --config ... "
        "(or launch/train_local.sh), or train without DeepSpeed (deepspeed=none)"
    )


def check_world(accelerator) -> None:
    """A launcher that meant N processes but started one (``accelerate launch --cpu``) must not
    pass for a distributed run, nor N processes that accelerate runs each alone."""
    from accelerate.utils import DistributedType

    expected = world_size_from_env()
    if accelerator.num_processes != expected:
        raise UserError(
            f"accelerate sees {accelerator.num_processes} processes but WORLD_SIZE={expected}"
        )
    if accelerator.num_processes > 1 and accelerator.distributed_type == DistributedType.NO:
        # accelerate starts gloo, then runs each process alone: no DDP, no reduce (a review)
        raise UserError(
            f"accelerate runs each of the {accelerator.num_processes} processes alone (no GPU, "
            "so no --multi_gpu): on CPU launch with ACCELERATE_USE_CPU=true accelerate launch "
            "--multi_gpu --num_processes N (launch/train_local.sh CPU=1 does)"
        )
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        actual = torch.distributed.get_world_size()
        if actual != accelerator.num_processes:
            raise UserError(
                f"accelerate counts {accelerator.num_processes} processes, torch.distributed {actual}: "
                "on CPU launch with ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N"
            )


PRECISIONS = ("no", "fp16", "bf16", "fp8")
"""accelerate's ``mixed_precision`` names ('no': fp32), coded by their place for a reduce."""


def check_same_precision(accelerator) -> None:
    """Refuse, on every rank, a job whose ranks chose different precisions (one all-reduce):
    ``train.precision=auto`` reads each rank's own GPU, so a job mixing GPU kinds trained bf16
    on some ranks and fp32 on others, and DeepSpeed partitioned in each rank's dtype."""
    chosen = codes_of_ranks(accelerator, PRECISIONS.index(accelerator.mixed_precision))
    if len(set(chosen)) > 1:
        said = ", ".join(f"rank {rank}: {PRECISIONS[c]}" for rank, c in enumerate(chosen))
        raise UserError(
            f"the ranks chose different precisions ({said}; 'no' is fp32): "
            "train.precision=auto reads each rank's own GPU; run on one GPU kind, or set "
            "train.precision=fp32 where some GPUs lack bf16"
        )


def is_deepspeed(accelerator) -> bool:
    return accelerator.state.deepspeed_plugin is not None


def running_engine(accelerator) -> Engine:
    """This run's engine, to check a checkpoint's against (``checkpoint_engine``)."""
    plugin = accelerator.state.deepspeed_plugin
    stage = None if plugin is None else int(plugin.zero_stage)
    return Engine(stage, accelerator.num_processes)


def global_grad_norm(accelerator, model, max_norm: float) -> torch.Tensor:
    """The global gradient norm before clipping, as a tensor (on the device where it was
    computed: the step reads it with its other numbers, in one host sync). DeepSpeed clipped
    inside its step and keeps the norm on its engine; accelerate's ``clip_grad_norm_`` would
    return it through ``.item()``, a host sync of its own."""
    if is_deepspeed(accelerator):
        norm = model.get_global_grad_norm()
    else:
        norm = accelerator.clip_grad_norm_(
            model.parameters(), max_norm if max_norm > 0 else float("inf")
        )
    if norm is None:
        return torch.tensor(float("nan"))
    return norm if torch.is_tensor(norm) else torch.tensor(float(norm))


def to_device(values: torch.Tensor, device) -> torch.Tensor:
    """A small tensor on ``device`` without making the host wait: a host tensor goes to CUDA
    from pinned memory, non-blocking (a copy from pageable memory waits for the stream's queued
    work, the previous optimizer step's, before the host can queue the next forward); one on
    the device already stays (``pin_memory`` of a CUDA tensor raises)."""
    if torch.device(device).type == "cuda" and values.device.type == "cpu":
        return values.pin_memory().to(device, non_blocking=True)
    return values.to(device, non_blocking=True)  # on the device already: nothing to pin


def reduce_sum(accelerator, values: torch.Tensor) -> torch.Tensor:
    """Sum a float64 vector over ranks, on the device: no host synchronisation here."""
    return accelerator.reduce(
        to_device(values.to(torch.float64), accelerator.device), reduction="sum"
    )


def codes_of_ranks(accelerator, code: int) -> list[int]:
    """Every rank's ``code`` (one all-reduce), so that all make the same choice from them."""
    flags = torch.zeros(accelerator.num_processes, dtype=torch.float64)
    flags[accelerator.process_index] = float(code)
    return [int(c) for c in reduce_sum(accelerator, flags).tolist()]


def raise_if_any_rank(
    accelerator, error: Exception | None, when: str = "before training started"
) -> None:
    """Every rank raises when any rank failed (one all-reduce), so no rank is left waiting at
    the next collective for one that gave up; the others name the ranks whose message to read
    (a node-local base that differs fails on rank 1, not 0)."""
    codes = codes_of_ranks(accelerator, int(error is not None))
    failed = ", ".join(str(rank) for rank, code in enumerate(codes) if code)
    if error is not None:
        raise error
    if failed:
        raise UserError(f"rank {failed} failed {when}: see its message above (this rank had none)")


def agreed(accelerator, action: Callable[[], object], when: str, main_only: bool) -> None:
    """``action`` on rank 0 (``main_only``) or every rank, then one all-reduce for a barrier:
    all ranks learn whether it failed anywhere. Rank 0's failed writes left the others at the
    barrier until the launcher killed them (NCCL: 10 minutes), a traceback on each node (a
    review). An ``action`` with collectives of its own (DeepSpeed's save) still can."""
    error = None
    if accelerator.is_main_process or not main_only:
        try:
            action()
        except Exception as err:  # raised again below, after every rank has heard of it
            error = err
    if error is None:
        raise_if_any_rank(accelerator, None, when)
        return
    with contextlib.suppress(Exception):  # a dead peer: this rank's own error is the one said
        codes_of_ranks(accelerator, 1)
    raise error


def shared_folder_error(folder: Path, name: str, token: str, what: str) -> UserError | None:
    """This rank's error when ``folder/name`` does not hold ``token``, which rank 0 wrote there:
    ``folder`` is not the same folder here (node-local scratch on a multi-node job)."""
    try:
        if (folder / name).read_text() == token:
            return None
    except OSError:
        pass
    return UserError(
        f"{what}={folder} is not the folder rank 0 writes to, as seen from this rank: put it "
        "on a shared filesystem every node sees (each node's ranks write their checkpoint "
        "shards there, and rank 0 marks a checkpoint whole)"
    )


def check_shared_folder(accelerator, folder: Path, what: str) -> None:
    """Refuse, on every rank, a ``folder`` some rank does not share with rank 0 (a review:
    ``OUT`` on node-local scratch trained, each node holding its ranks' shards, and rank 0
    marked checkpoints complete that no resume could read). One file, one broadcast, one
    all-reduce; nothing for one process."""
    import secrets

    from accelerate.utils import broadcast_object_list

    from amazon_sft.atomic import staging_name

    if accelerator.num_processes == 1:
        return
    probe, error = [None, None], None
    if accelerator.is_main_process:  # a staging name: litter to make clean if a kill leaves it
        path = staging_name(folder / "shared_check")
        try:
            path.write_text(token := secrets.token_hex(8))
            probe = [path.name, token]
        except OSError as err:  # a full disk or quota: every rank says so, in one line
            path.unlink(missing_ok=True)  # made, then not written: it would keep the folder
            error = UserError(f"{what}={folder} cannot be written: {err.strerror}")
    name, token = broadcast_object_list(probe)  # after rank 0 wrote it
    if name is not None:
        error = shared_folder_error(folder, name, token, what)
    try:
        raise_if_any_rank(accelerator, error)
    finally:
        if accelerator.is_main_process and name is not None:
            (folder / name).unlink(missing_ok=True)


def seed_per_rank(seed: int, accelerator) -> None:
    """After the model is built with the same seed everywhere (identical weights), give each
    rank its own random stream: dropout masks (LoRA, attention) must differ between the ranks'
    data, as they would over one big batch."""
    from accelerate.utils import set_seed

    set_seed(seed + accelerator.process_index)


def schedule_the_stepped_optimizer(scheduler, optimizer) -> None:
    """Point the lr scheduler at the param groups of the optimizer that really steps. Under ZeRO
    offload accelerate hands DeepSpeed a DeepSpeedCPUAdam built on the torch AdamW's param group
    dicts, shared with the scheduler's until a checkpoint's load replaced them (torch's
    ``load_state_dict`` makes new ones): a resumed run then stepped at the lr of the step it
    resumed from, for good, while the scheduler and the log moved on. Elsewhere a no-op."""
    inner = optimizer
    while hasattr(inner, "optimizer") and inner.optimizer is not inner:
        inner = inner.optimizer
    schedule = getattr(scheduler, "scheduler", scheduler)  # accelerate's wrapper
    if isinstance(inner, torch.optim.Optimizer) and schedule.optimizer is not inner:
        schedule.optimizer = inner


def build_eval_accelerator():
    """A plain Accelerator for spreading generation over ranks (no DeepSpeed: evaluation loads
    consolidated weights), gloo when there is no CUDA."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    kwargs = {}
    if not torch.cuda.is_available() and world_size_from_env() > 1:
        kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
    accelerator = Accelerator(**kwargs)
    check_world(accelerator)
    return accelerator
