"""The variants of ``bench/gpu_train.py``: each runs in its own process (``run_variant``).

A variant builds the model itself at the advertised shape (the 1B shape keeps its 32k vocabulary:
the benchmark's tokenizer has fewer ids, which only leaves embedding rows unused, while the LM
head still computes 32k logits per answer token), times ``Trainer.train_step``, reads the peak
device memory, frees everything, and then checks packed-vs-alone logits of its attention path.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import torch
from gpu_train_knobs import (
    cfg_overrides,
    micro_rows,
    profile_steps,
    split_knobs,
)

from amazon_sft.attention import has_varlen_attn
from amazon_sft.config import load_run_config
from amazon_sft.data.loader import PackedLoader
from amazon_sft.data.shards import PackedShards
from amazon_sft.distributed import BatchPlan
from amazon_sft.optim import build_optimizer, fused_adamw_here
from amazon_sft.tokenizer import load_tokenizer

CRASH_ENV = "GPU_TRAIN_BENCH_CRASH"
"""A variant name: its process raises before training (tests prove a failure is recorded and
the other variants still run)."""

SIZES = {
    # Llama-3.2-1B-like shapes with a 32k vocabulary
    "1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 32000,
    },
    # SmolLM2-135M's shapes (the default config's model), its 49k vocabulary untied here
    "135m": {
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
    },
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 4096,  # above the builtin tokenizer's 2,048 ids, as 32k is for "1b"
    },
}
PATHS = {
    "varlen": "varlen_attn",
    "flash": "flash_attention_2",
    "docsdpa": "sdpa_per_document",
    "sdpa-mask": "sdpa",
}


def build_cfg(args, attention: str, checkpointing: bool, extra: tuple[str, ...] = ()):
    overrides = [
        f"data.max_seq_len={args.seq_len}",
        "data.max_answer_tokens=512",
        "data.heldout_fraction=0",
        f"train.attention={attention}",
        f"train.micro_batch_size={args.micro}",
        f"train.global_batch_size={args.micro}",
        f"train.max_steps={args.warmup + args.steps}",
        "train.warmup_steps=0",
        "train.lr=1e-5",
        f"train.peak_tflops={args.peak_tflops}",
        f"train.gradient_checkpointing={'true' if checkpointing else 'false'}",
        "model.arch.max_position_embeddings=8192",
        "model.arch.tie_word_embeddings=false",
        "train.trackers=[]",
        *extra,
    ]
    # the vocabulary is the tokenizer's for a random model (build_lm and the TRL path size it)
    overrides += [f"model.arch.{k}={v}" for k, v in SIZES[args.size].items() if k != "vocab_size"]
    return load_run_config("tiny", overrides)


def available(name: str, device: str) -> str | None:
    """None when the variant can run here, else why not."""
    name = split_knobs(name)[0]
    if name.startswith("varlen") and not has_varlen_attn():
        return "needs CUDA and torch >= 2.10 (torch.nn.attention.varlen)"
    if name == "flash" and not (device == "cuda" and importlib.util.find_spec("flash_attn")):
        return "flash-attn is not installed"
    if name == "trl" and not importlib.util.find_spec("trl"):
        return "trl is not installed"
    return None


def build_lm(cfg, tok, accelerator, vocab_size: int):
    """``amazon_sft.train.build_model`` at the advertised vocabulary (``build_model`` sizes the
    embeddings from the tokenizer, 2,048 ids for the builtin one)."""
    from accelerate.utils import set_seed

    from amazon_sft.loss import SummedAnswerLoss
    from amazon_sft.modeling import load_model
    from amazon_sft.tokenizer import choose_pad_id

    set_seed(cfg.seed)
    vocab = max(vocab_size, len(tok))
    lm = load_model(cfg, vocab, choose_pad_id(tok), accelerator.mixed_precision).train()
    return SummedAnswerLoss(lm, cfg.train.loss_chunk_tokens)


def run_ours(name: str, args, data_dir: Path, device: str) -> dict:
    """The product's own train step: Trainer.train_step on accelerate, one device."""
    from accelerate import Accelerator

    from amazon_sft.trainer import Trainer

    base, knobs = split_knobs(name)  # knobs: bench/gpu_train_knobs.py
    attention = PATHS[base.removesuffix("-nockpt")]
    micro = micro_rows(knobs, args.micro)
    extra = (f"train.micro_batch_size={micro}", f"train.global_batch_size={micro}")
    cfg = build_cfg(args, attention, not base.endswith("-nockpt"), (*extra, *cfg_overrides(knobs)))
    accelerator = Accelerator(mixed_precision="bf16" if device == "cuda" else "no")
    tok = load_tokenizer(cfg.model)
    model = build_lm(cfg, tok, accelerator, SIZES[args.size]["vocab_size"])
    vocab = model.lm.get_input_embeddings().weight.shape[0]
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    fused = "fused" in knobs or fused_adamw_here(accelerator)  # train's choice, or the knob's
    optimizer, scheduler = build_optimizer(cfg, model, fused)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    loader = PackedLoader(PackedShards(data_dir), micro)
    plan = BatchPlan(micro, 1, 1, micro, args.seq_len)
    trainer = Trainer(cfg, accelerator, plan, model, optimizer, scheduler, loader, None)
    batches = round_the_rows(loader)  # a benchmark times steps, not epochs
    tokens = flops = seconds = collate = 0.0
    padding_rows = 0
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(args.warmup + args.steps):
        t_batch = time.perf_counter()
        batch = [next(batches)]  # collated on the main thread, between steps
        t0 = time.perf_counter()
        result = trainer.train_step(batch)  # ends with the step's one host sync
        if i < args.warmup:
            continue
        seconds += time.perf_counter() - t0
        collate += t0 - t_batch
        padding_rows += int((batch[0].rows < 0).sum())
        tokens += result.real_tokens
        flops += result.flops
        if not result.finite:
            raise RuntimeError(f"step {i} was non-finite (loss {result.loss})")
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    profiled = {}
    if "prof" in knobs:
        step = trainer.train_step
        profiled = profile_steps(name, lambda: step([next(batches)]))
    # over the wall time, collation included: TRL's clock (run_trl) runs through its data
    # loading, and training's own tokens/s counts it (an outside review: step time alone
    # flattered the ratio to TRL)
    wall = seconds + collate
    mfu = trainer.flops.mfu(flops, wall)
    # the model sits in a reference cycle: del alone frees nothing until gc runs
    del trainer, model, optimizer, scheduler, accelerator
    free_device()
    return {
        "variant": name,
        "attention": attention,
        "vocab": vocab,
        "rows_per_step": micro,
        "trained_params": trained,
        "tokens_per_sec": round(tokens / wall),
        "mfu": None if mfu is None else round(mfu, 4),
        "peak_mem_gib": None if peak is None else round(peak, 2),
        # the host's share of the wall time: what a background collate could hide
        "host_collate_share": round(collate / wall, 4),
        "packed_rows": len(loader.shards),
        "padding_rows_timed": padding_rows,
        "epochs": round(loader.epoch + loader.cursor / max(1, len(loader.shards)), 2),
        **profiled,
    }


def round_the_rows(loader):
    """The loader's batches, epoch after epoch: 16 rows a step for 7 steps is more than --quick's
    3,000 lines pack into (a bare StopIteration on the H200). An epoch's last batch, filled up
    with empty rows, is left out: timed, it counts their time and not their tokens."""
    if len(loader.shards) < loader.micro_batch_size:
        raise RuntimeError(
            f"the prepared data holds {len(loader.shards)} packed rows, fewer than one step's "
            f"{loader.micro_batch_size}: raise --rows"
        )
    while True:
        for batch in loader:  # each pass ends by starting the loader's next epoch
            if not (batch.rows < 0).any():
                yield batch


def free_device() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def run_trl(args, data_dir: Path, device: str) -> dict:
    """TRL's SFTTrainer on the same documents: BFD packing, padding-free, completion-only loss."""
    from datasets import Dataset
    from train_packing_cpu import documents
    from transformers import AutoConfig, AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    cfg = build_cfg(args, "sdpa", checkpointing=True)
    attention = "flash_attention_2" if available("flash", device) is None else "sdpa"
    config = AutoConfig.for_model(**cfg.model.arch, vocab_size=SIZES[args.size]["vocab_size"])
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attention)
    docs = documents(PackedShards(data_dir))
    data = Dataset.from_list(
        [{"input_ids": d.tolist(), "completion_mask": m.tolist()} for d, m in docs]
    )

    class Clock(TrainerCallback):  # time TRL's steps after the warm-up, as ours are timed
        def __init__(self):
            self.t0, self.tokens0 = None, 0

        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == args.warmup:
                if device == "cuda":
                    torch.cuda.synchronize()
                self.t0, self.tokens0 = time.perf_counter(), state.num_input_tokens_seen

    clock = Clock()
    sft = SFTConfig(
        output_dir=tempfile.mkdtemp(),
        max_length=args.seq_len,
        packing=True,
        packing_strategy="bfd",
        padding_free=True,
        per_device_train_batch_size=args.micro,
        max_steps=args.warmup + args.steps,
        learning_rate=1e-5,
        bf16=device == "cuda",
        gradient_checkpointing=True,
        logging_steps=1,
        report_to=[],
        completion_only_loss=True,
        include_num_input_tokens_seen=True,
        save_strategy="no",
        use_cpu=device == "cpu",
    )
    tok = load_tokenizer(cfg.model)
    trainer = SFTTrainer(
        model=model, args=sft, train_dataset=data, processing_class=tok, callbacks=[clock]
    )
    trainer.train()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - clock.t0
    tokens = trainer.state.num_input_tokens_seen - clock.tokens0
    return {
        "variant": "trl",
        "attention": attention,
        "tokens_per_sec": round(tokens / seconds),
        "mfu": None,
        "note": "tokens counted by TRL (padding-free: real tokens)",
    }


def logits_check(name: str, device: str, autocast: bool = False) -> float:
    """Largest |packed - alone| logit over the documents of a 2-row micro-batch: bf16 weights
    on GPU, or (``autocast``) a full fine-tune's forward, fp32 weights under bf16 autocast,
    where RoPE hands the kernel fp32 q/k beside a bf16 v unless the product casts them."""
    import numpy as np

    from amazon_sft.attention import packed_attention_inputs
    from amazon_sft.data.batch import PackedBatch
    from amazon_sft.modeling import load_model

    cfg = load_run_config("tiny", [f"train.attention={PATHS[name]}"])
    torch.manual_seed(0)
    precision = "bf16" if device == "cuda" or autocast else "no"
    lm = load_model(cfg, 2048, 0, precision).to(
        device, torch.bfloat16 if device == "cuda" and not autocast else None
    )
    g = np.random.default_rng(0)
    rows = [[g.integers(4, 2000, n) for n in (70, 41, 9)], [g.integers(4, 2000, 100)]]
    seq = 128
    ids = np.zeros((2, seq), dtype=np.int64)
    pos = np.tile(np.arange(seq), (2, 1))
    for r, docs in enumerate(rows):
        at = 0
        for d in docs:
            ids[r, at : at + len(d)], pos[r, at : at + len(d)] = d, np.arange(len(d))
            at += len(d)
        pos[r, at:] = np.arange(seq - at)
    lens = [[len(d) for d in docs] for docs in rows]
    batch = PackedBatch.from_rows(ids, ids.copy(), pos, lens, np.arange(2)).to(device)
    worst = 0.0
    cast = torch.autocast(device, dtype=torch.bfloat16, enabled=autocast)
    with torch.no_grad(), cast:
        packed = lm(
            input_ids=batch.input_ids,
            position_ids=batch.position_ids,
            **packed_attention_inputs(batch, PATHS[name]),
        ).logits.float()
        for r, docs in enumerate(rows):
            at = 0
            for d in docs:
                alone = lm(input_ids=torch.as_tensor(d, device=device)[None]).logits[0].float()
                worst = max(worst, (packed[r, at : at + len(d)] - alone).abs().max().item())
                at += len(d)
    return worst


def run_variant(name: str, args, data_dir: Path, device: str) -> dict:
    """One variant, timed, then its attention path's packed-vs-alone logits check."""
    if os.environ.get(CRASH_ENV) == name:
        raise RuntimeError(f"crash injected by ${CRASH_ENV}")
    if name == "trl":
        return run_trl(args, data_dir, device)
    row = run_ours(name, args, data_dir, device)
    if name in PATHS:  # a knob changes no attention path: checked once, on the plain variant
        row["logits_max_diff"] = float(f"{logits_check(name, device):.3g}")
        if device == "cuda":  # the full fine-tune's forward too (fp32 weights, bf16 autocast)
            diff = logits_check(name, device, autocast=True)
            row["logits_max_diff_autocast"] = float(f"{diff:.3g}")
    return row
