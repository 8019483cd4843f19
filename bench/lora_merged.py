"""Benchmark: answering with a LoRA run's adapters merged into its base against kept apart.

``load_for_eval`` (ask, chat, serve, eval) merges them (peft ``merge_and_unload``): each
projection is then one matmul instead of three. Same prompts (grounded, as ``ask`` renders them
for the held-out titles of ``--data``), greedy, ``--max-new-tokens`` forced; prints seconds,
tokens/s, the ratio, and whether both wrote the same tokens.

    python bench/lora_merged.py --run demo_out/run --data demo_out/prepared
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amazon_sft.answering.index import CatalogueIndex
from amazon_sft.answering.record_prompts import build_prompt
from amazon_sft.evaluation.loading import _no_lora, _ready, load_for_eval
from amazon_sft.modeling import load_model
from amazon_sft.prompts import build_prompt_format
from amazon_sft.tokenizer import choose_pad_id, hf_encoder


def timed(model, prompts: list[list[int]], new_tokens: int, pad: int):
    start, out = time.perf_counter(), []
    with torch.no_grad():
        for ids in prompts:
            made = model.generate(
                input_ids=torch.tensor([ids]),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
            out.append(made[0, len(ids) :].tolist())
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a LoRA training run's out_dir (or its final/)")
    ap.add_argument("--data", required=True, type=Path, help="its prepared folder (the index)")
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=80)
    args = ap.parse_args()
    final = Path(args.run) / "final" if (Path(args.run) / "final").is_dir() else Path(args.run)
    if not (final / "adapter_config.json").is_file():
        sys.exit(f"{args.run} is not a LoRA run (no adapter_config.json): nothing to merge")
    merged, tok, cfg, label = load_for_eval(args.run, [], "cpu")
    from peft import PeftModel

    base = load_model(_no_lora(cfg), len(tok), choose_pad_id(tok), "no")
    apart = _ready(PeftModel.from_pretrained(base, str(final)), "cpu")
    fmt, index = build_prompt_format(tok, cfg.data), CatalogueIndex(args.data)
    titles = [json.loads(x)["title"] for x in (args.data / "heldout.jsonl").open()]
    texts = [
        build_prompt(fmt, tok, cfg.data, t, index.search(t, cfg.data.context_records), "grounded")
        for t in titles[: args.prompts]
    ]
    prompts = [fmt.bos + ids for ids in hf_encoder(tok)(texts)]
    pad = choose_pad_id(tok)
    timed(merged, prompts[:1], 4, pad)  # warm-up
    seconds_apart, tokens_apart = timed(apart, prompts, args.max_new_tokens, pad)
    seconds_merged, tokens_merged = timed(merged, prompts, args.max_new_tokens, pad)
    n = args.max_new_tokens * len(prompts)
    print(f"{label}: {len(prompts)} grounded prompts x {args.max_new_tokens} new tokens, CPU")
    print(f"adapters apart: {seconds_apart:.1f} s ({n / seconds_apart:.1f} tokens/s)")
    print(f"merged:         {seconds_merged:.1f} s ({n / seconds_merged:.1f} tokens/s)")
    print(
        f"ratio: {seconds_apart / seconds_merged:.2f}x; same tokens: {tokens_apart == tokens_merged}"
    )


if __name__ == "__main__":
    main()
