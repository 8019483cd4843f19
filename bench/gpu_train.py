"""Benchmark (GPU): tokens/s and MFU of a Llama-1B-class model, random weights, one device.

Variants, each the same loop as amazon_sft.train (SummedAnswerLoss, AdamW, bf16 autocast):
  full-sdpa-packed, full-flash-packed (when flash-attn imports), full-sdpa-padded,
  lora-sdpa-packed, and trl-sft (TRL's SFTTrainer with packing, when trl imports).
MFU = ((6 N_trainable + 4 N_frozen) tokens + 6 L d sum(doc_len^2)) / (seconds x peak), peak from the
card's name (amazon_sft.metrics) or --peak-tflops. Data: the generated catalogue, prepared here.

    python bench/gpu_train.py --size 1b --steps 30          # on a GPU
    python bench/gpu_train.py --size tiny --steps 2         # CPU smoke run (what the test does)
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
from train_packing_cpu import documents, packed_batches, padded_batches

from amazon_sft.attention import document_spans
from amazon_sft.config import load_run_config
from amazon_sft.data.shards import PackedShards
from amazon_sft.data.synthetic import write_catalogue
from amazon_sft.loss import SummedAnswerLoss
from amazon_sft.metrics import FlopCounter
from amazon_sft.modeling import load_model, parameter_counts
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
        "vocab": 32000,
    },
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab": 2048,
    },
}


def build_cfg(size: str, seq_len: int, attention: str, lora: bool):
    arch = {k: v for k, v in SIZES[size].items() if k != "vocab"}
    overrides = [
        f"data.max_seq_len={seq_len}",
        "data.max_answer_tokens=512",
        f"train.attention={attention}",
        f"lora.enabled={'true' if lora else 'false'}",
        "model.arch.max_position_embeddings=8192",
        "model.arch.tie_word_embeddings=false",
    ]
    overrides += [f"model.arch.{k}={v}" for k, v in arch.items()]
    return load_run_config("tiny", overrides)


def run_variant(name: str, args, shards, docs, device: str) -> dict:
    packed, lora = "padded" not in name, name.startswith("lora")
    attention = {"flash": "flash_attention_2", "docsdpa": "sdpa_per_document"}.get(
        name.split("-")[1], "sdpa"
    )
    cfg = build_cfg(args.size, args.seq_len, attention, lora)
    precision = "bf16" if device == "cuda" else "no"
    torch.manual_seed(0)
    lm = load_model(cfg, SIZES[args.size]["vocab"], shards.pad_id, precision).to(device)
    counts = parameter_counts(lm)
    model = SummedAnswerLoss(lm, cfg.train.loss_chunk_tokens)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=device == "cuda"
    )
    flops = FlopCounter.for_model(lm, counts, args.peak_tflops, 1)
    batches = (
        packed_batches(shards, args.micro)
        if packed
        else padded_batches(docs, args.micro * args.seq_len // 300, shards.pad_id)
    )
    tokens = total_flops = 0.0
    seconds = 0.0
    for i, (ids, pos, labels, real) in enumerate(batches):
        if i > args.steps:
            break
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            summed, n = model(ids.to(device), pos.to(device), labels.to(device))
        (summed / max(n, 1)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i == 0:
            continue  # warm-up step: kernels, allocator
        seconds += time.perf_counter() - t0
        tokens += real
        total_flops += flops.flops(_doc_lens(pos))
    mfu = total_flops / (seconds * flops.peak_flops) if flops.peak_flops else None
    return {
        "variant": name,
        "tokens_per_sec": round(tokens / seconds),
        "mfu": mfu,
        "params_trainable": counts["trainable"],
        "params_frozen": counts["frozen"],
    }


def _doc_lens(pos: torch.Tensor) -> list[list[int]]:
    """Document lengths of each row, from where its position ids restart."""
    return [[end - start for start, end in document_spans(row)] for row in pos]


def run_trl(args, docs, device: str) -> dict:
    from datasets import Dataset
    from transformers import AutoConfig, AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    arch = {k: v for k, v in SIZES[args.size].items() if k != "vocab"}
    config = AutoConfig.for_model(
        "llama",
        vocab_size=SIZES[args.size]["vocab"],
        max_position_embeddings=8192,
        tie_word_embeddings=False,
        **arch,
    )
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    data = Dataset.from_list(
        [{"input_ids": d.tolist(), "completion_mask": m.tolist()} for d, m in docs]
    )
    sft = SFTConfig(
        output_dir=tempfile.mkdtemp(),
        max_length=args.seq_len,
        packing=True,
        per_device_train_batch_size=args.micro,
        max_steps=args.steps + 1,
        learning_rate=1e-5,
        bf16=device == "cuda",
        logging_steps=1,
        report_to=[],
        completion_only_loss=True,
        include_num_input_tokens_seen=True,
        save_strategy="no",
        use_cpu=device == "cpu",
    )
    tok = load_tokenizer(build_cfg(args.size, args.seq_len, "sdpa", False).model)
    trainer = SFTTrainer(model=model, args=sft, train_dataset=data, processing_class=tok)
    out = trainer.train()
    tokens = trainer.state.num_input_tokens_seen
    return {
        "variant": "trl-sft",
        "tokens_per_sec": round(tokens / out.metrics["train_runtime"]),
        "mfu": None,
        "note": "includes TRL's first step; tokens counted by TRL",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=list(SIZES), default="1b")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--micro", type=int, default=2)
    ap.add_argument("--rows", type=int, default=40000, help="generated catalogue lines")
    ap.add_argument("--peak-tflops", type=float, default=0.0)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        write_catalogue(Path(tmp) / "trn.json.gz", args.rows, seed=0)
        cfg = build_cfg(args.size, args.seq_len, "sdpa", False)
        prepare(Path(tmp) / "trn.json.gz", Path(tmp) / "data", cfg, progress=False)
        shards = PackedShards(Path(tmp) / "data")
        docs = documents(shards)
        variants = [
            "full-sdpa-packed",
            "full-sdpa-padded",
            "full-docsdpa-packed",
            "lora-sdpa-packed",
        ]
        if device == "cuda" and importlib.util.find_spec("flash_attn"):
            variants.insert(0, "full-flash-packed")
        results = [run_variant(v, args, shards, docs, device) for v in variants]
        if importlib.util.find_spec("trl"):
            results.append(run_trl(args, docs, device))
    card = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    for r in results:
        print(json.dumps({"card": card, **r}))
    by = {r["variant"]: r["tokens_per_sec"] for r in results}
    print(f"packed/padded {by['full-sdpa-packed'] / by['full-sdpa-padded']:.2f}x")
    if "trl-sft" in by:
        print(
            f"ours (full-sdpa-packed) / TRL SFTTrainer: {by['full-sdpa-packed'] / by['trl-sft']:.2f}x"
        )


if __name__ == "__main__":
    main()
