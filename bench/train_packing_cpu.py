"""Benchmark (CPU): packed, padding-free training against padded batches, in real tokens per second.

Same model (a ~4M-parameter Llama with the builtin tokenizer), same real rows from
../shared/data, same optimizer. Packed: rows of ``--seq-len`` tokens built by `amazon-sft prepare`,
position ids restarting per document. Padded: the same documents, ``--docs-per-batch`` at a time
in random order, right-padded to the longest one (the usual dynamic padding; causal attention
keeps real tokens away from the padding, so no mask is needed). Prints tokens/s and the ratio.

    python bench/train_packing_cpu.py --steps 20
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_ROWS

from amazon_sft.config import load_run_config
from amazon_sft.data.batch import IGNORE_INDEX, PackedBatch
from amazon_sft.data.loader import PackedLoader
from amazon_sft.data.shards import PackedShards
from amazon_sft.loss import SummedAnswerLoss
from amazon_sft.modeling import load_model
from amazon_sft.prepare import prepare
from amazon_sft.tokenizer import choose_pad_id, load_tokenizer


def documents(shards: PackedShards) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ids, loss mask) of every packed document, cut back out of the rows."""
    docs = []
    for i in range(len(shards)):
        ids, mask, lens = shards.row(i)
        start = 0
        for n in lens:
            docs.append((np.array(ids[start : start + n]), np.array(mask[start : start + n])))
            start += n
    return docs


def padded_batches(docs, per_batch: int, pad_id: int, seed: int = 0):
    """The same documents, one per row, right-padded to the batch's longest (dynamic padding)."""
    order = np.random.default_rng(seed).permutation(len(docs))
    for b in range(0, len(order) - per_batch + 1, per_batch):
        chosen = [docs[i] for i in order[b : b + per_batch]]
        width = max(len(ids) for ids, _ in chosen)
        ids = np.full((per_batch, width), pad_id, dtype=np.int64)
        labels = np.full((per_batch, width), IGNORE_INDEX, dtype=np.int64)
        for r, (d, m) in enumerate(chosen):
            ids[r, : len(d)] = d
            labels[r, : len(d)] = np.where(m.astype(bool), d, IGNORE_INDEX)
        pos = np.tile(np.arange(width, dtype=np.int64), (per_batch, 1))
        lens = [[len(d)] for d, _ in chosen]
        yield PackedBatch.from_rows(ids, labels, pos, lens, np.arange(per_batch))


def packed_batches(shards: PackedShards, micro: int):
    yield from PackedLoader(shards, micro, seed=0)


def measure(model, optimizer, batches, steps: int) -> float:
    """Real (non-padding) tokens per second over ``steps`` optimizer steps, after one warm-up."""
    tokens, seconds = 0, 0.0
    for i, batch in enumerate(batches):
        t0 = time.perf_counter()
        summed, n = model(batch)
        (summed / max(n, 1)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i > 0:
            seconds += time.perf_counter() - t0
            tokens += batch.real_tokens
        if i == steps:
            break
    return tokens / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--micro", type=int, default=2, help="packed rows per step")
    ap.add_argument("--docs-per-batch", type=int, default=8, help="documents per padded batch")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    cfg = load_run_config(
        "tiny",
        [
            f"data.max_seq_len={args.seq_len}",
            "data.max_answer_tokens=512",
            "model.arch.hidden_size=256",
            "model.arch.intermediate_size=688",
            "model.arch.num_hidden_layers=4",
            "model.arch.num_attention_heads=8",
            "model.arch.num_key_value_heads=4",
            "model.arch.max_position_embeddings=2048",
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        prepare(SHARED_ROWS, Path(tmp) / "data", cfg, progress=False)
        shards = PackedShards(Path(tmp) / "data")
        tok = load_tokenizer(cfg.model)
        docs = documents(shards)
        results = {}
        for name in ("packed", "padded"):
            torch.manual_seed(0)
            lm = load_model(cfg, len(tok), choose_pad_id(tok), "no")
            model = SummedAnswerLoss(lm, cfg.train.loss_chunk_tokens)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            batches = (
                packed_batches(shards, args.micro)
                if name == "packed"
                else padded_batches(docs, args.docs_per_batch, shards.pad_id)
            )
            results[name] = measure(model, optimizer, batches, args.steps)
            print(f"{name}: {results[name]:.0f} real tokens/s", flush=True)
        n_params = sum(p.numel() for p in lm.parameters())
        print(
            f"model {n_params / 1e6:.1f}M parameters, {len(docs)} documents, seq {args.seq_len}, "
            f"torch threads {torch.get_num_threads()}"
        )
        real = sum(len(d) for d, _ in docs)
        slots = sum(
            b.input_ids.numel() for b in padded_batches(docs, args.docs_per_batch, shards.pad_id)
        )
        print(
            f"padded batches: {real / slots:.3f} of token slots are real; packed rows: "
            f"{shards.manifest.fill_ratio:.3f}"
        )
        print(f"packed / padded: {results['packed'] / results['padded']:.2f}x")


if __name__ == "__main__":
    main()
