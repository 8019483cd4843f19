"""Benchmark (GPU): tokens/s, MFU and peak memory of the real train step, per attention path.

A Llama-3.2-1B-shape model (random weights, 32k vocabulary), full fine-tune, bf16 autocast over
fp32 master weights, packed rows of ``--seq-len`` tokens made by ``amazon-sft prepare`` from the
real rows of ../shared/data (replicated; the generated catalogue when absent). Each variant runs
``amazon_sft.trainer.Trainer.train_step`` itself (loss normalisation, one host sync per step,
optimizer), after ``--warmup`` untimed steps:

  varlen        train.attention=varlen_attn       (torch >= 2.10, CUDA; no wheel)
  flash         train.attention=flash_attention_2 (only when flash-attn imports)
  docsdpa       train.attention=sdpa_per_document (one SDPA call per document)
  sdpa-mask     train.attention=sdpa              (transformers' SDPA, block-diagonal mask)
  varlen-nockpt the first path again without gradient checkpointing (peak memory)
  trl           TRL SFTTrainer, packing_strategy="bfd" + padding_free, same documents (when trl
                imports); tokens/s from TRL's own token count over its timed steps

Then the packed-vs-documents logits check on the device for every path that ran. MFU uses
amazon_sft.metrics (PaLM convention, formula in the log); the peak is looked up from the card's
name or given with --peak-tflops. What could not run is printed as "skipped: ... (why)".

    python bench/gpu_train.py                               # on a GPU: 1B shape, 2048 tokens
    python bench/gpu_train.py --size tiny --steps 2 --seq-len 256 --rows 600   # CPU smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_ROWS, real_like_file
from train_packing_cpu import documents

from amazon_sft.attention import has_varlen_attn
from amazon_sft.config import load_run_config
from amazon_sft.data.loader import PackedLoader
from amazon_sft.data.shards import PackedShards
from amazon_sft.data.synthetic import write_catalogue
from amazon_sft.distributed import BatchPlan
from amazon_sft.metrics import MFU_FORMULA
from amazon_sft.optim import build_optimizer
from amazon_sft.prepare import prepare
from amazon_sft.tokenizer import load_tokenizer

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
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 2048,
    },
}
PATHS = {
    "varlen": "varlen_attn",
    "flash": "flash_attention_2",
    "docsdpa": "sdpa_per_document",
    "sdpa-mask": "sdpa",
}


def build_cfg(args, attention: str, checkpointing: bool):
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
    ]
    overrides += [f"model.arch.{k}={v}" for k, v in SIZES[args.size].items()]
    return load_run_config("tiny", overrides)


def available(name: str, device: str) -> str | None:
    """None when the variant can run here, else why not."""
    if name.startswith("varlen") and not has_varlen_attn():
        return "needs CUDA and torch >= 2.10 (torch.nn.attention.varlen)"
    if name == "flash" and not (device == "cuda" and importlib.util.find_spec("flash_attn")):
        return "flash-attn is not installed"
    if name == "trl" and not importlib.util.find_spec("trl"):
        return "trl is not installed"
    return None


def run_ours(name: str, args, data_dir: Path, device: str) -> dict:
    """The product's own train step: Trainer.train_step on accelerate, one device."""
    from accelerate import Accelerator

    from amazon_sft.train import build_model
    from amazon_sft.trainer import Trainer

    attention = PATHS[name.removesuffix("-nockpt")]
    cfg = build_cfg(args, attention, checkpointing=not name.endswith("-nockpt"))
    accelerator = Accelerator(mixed_precision="bf16" if device == "cuda" else "no")
    tok = load_tokenizer(cfg.model)
    model = build_model(cfg, tok, accelerator)
    optimizer, scheduler = build_optimizer(cfg, model)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    loader = PackedLoader(PackedShards(data_dir), args.micro)
    plan = BatchPlan(args.micro, 1, 1, args.micro, args.seq_len)
    trainer = Trainer(cfg, accelerator, plan, model, optimizer, scheduler, loader)
    batches = iter(loader)
    tokens = flops = seconds = 0.0
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(args.warmup + args.steps):
        micro = [next(batches)]
        t0 = time.perf_counter()
        result = trainer.train_step(micro)  # ends with the step's one host sync
        if i < args.warmup:
            continue
        seconds += time.perf_counter() - t0
        tokens += result.real_tokens
        flops += result.flops
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    mfu = trainer.flops.mfu(flops, seconds)
    del trainer, model, optimizer
    if device == "cuda":
        torch.cuda.empty_cache()
    return {
        "variant": name,
        "attention": attention,
        "tokens_per_sec": round(tokens / seconds),
        "mfu": None if mfu is None else round(mfu, 4),
        "peak_mem_gib": None if peak is None else round(peak, 2),
    }


def run_trl(args, data_dir: Path, device: str) -> dict:
    """TRL's SFTTrainer on the same documents: BFD packing, padding-free, completion-only loss."""
    from datasets import Dataset
    from transformers import AutoConfig, AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    cfg = build_cfg(args, "sdpa", checkpointing=True)
    attention = "flash_attention_2" if available("flash", device) is None else "sdpa"
    config = AutoConfig.for_model(**cfg.model.arch)
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


def logits_check(name: str, device: str) -> float:
    """Largest |packed - alone| logit over the documents of a 2-row micro-batch (bf16 on GPU)."""
    import numpy as np

    from amazon_sft.attention import packed_attention_inputs
    from amazon_sft.data.batch import PackedBatch
    from amazon_sft.modeling import load_model

    cfg = load_run_config("tiny", [f"train.attention={PATHS[name]}"])
    torch.manual_seed(0)
    precision = "bf16" if device == "cuda" else "no"
    lm = load_model(cfg, 2048, 0, precision).to(
        device, torch.bfloat16 if device == "cuda" else None
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
    with torch.no_grad():
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=list(SIZES), default="1b")
    ap.add_argument("--steps", type=int, default=20, help="timed optimizer steps per variant")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--micro", type=int, default=4, help="packed rows per step")
    ap.add_argument("--rows", type=int, default=20000, help="input lines to prepare")
    ap.add_argument("--peak-tflops", type=float, default=0.0)
    ap.add_argument("--variants", default="varlen,flash,docsdpa,sdpa-mask,varlen-nockpt,trl")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    card = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"# card: {card}; torch {torch.__version__}; MFU = {MFU_FORMULA}", flush=True)
    results, skipped = [], []
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "trn.json"
        if SHARED_ROWS.is_file():
            real_like_file(source, args.rows)
        else:
            write_catalogue(source, args.rows, seed=0)
            skipped.append(f"real rows ({SHARED_ROWS} missing: generated catalogue used)")
        data_dir = Path(tmp) / "data"
        prepare(source, data_dir, build_cfg(args, "sdpa", True), progress=False)
        for name in args.variants.split(","):
            why = available(name, device)
            if why:
                skipped.append(f"{name} ({why})")
                continue
            row = (
                run_trl(args, data_dir, device)
                if name == "trl"
                else run_ours(name, args, data_dir, device)
            )
            results.append({"card": card, **row})
            print(json.dumps(results[-1]), flush=True)
    for name in ("varlen", "flash", "docsdpa", "sdpa-mask"):
        if available(name, device) is None:
            print(f"logits packed vs alone, {name}: max |diff| {logits_check(name, device):.3g}")
    by = {r["variant"]: r for r in results}
    if "varlen" in by and "varlen-nockpt" in by and device == "cuda":
        on, off = by["varlen"]["peak_mem_gib"], by["varlen-nockpt"]["peak_mem_gib"]
        print(f"peak memory with/without checkpointing: {on} / {off} GiB ({on / off:.2f}x)")
    best = max((r for r in results if r["variant"] != "trl"), key=lambda r: r["tokens_per_sec"])
    if "trl" in by:
        ratio = best["tokens_per_sec"] / by["trl"]["tokens_per_sec"]
        print(f"ours ({best['variant']}) / TRL SFTTrainer tokens/s: {ratio:.2f}x")
    for s in skipped:
        print(f"skipped: {s}")


if __name__ == "__main__":
    main()
