"""Benchmark: batched generation (amazon_sft.evaluation) against one-by-one ``generate``, tokens/s.

Same model, same prompts (the generated catalogue's held-out titles, rendered by the prompt
module), greedy, the same ``max_new_tokens``; generated tokens per second of wall time.

    python bench/generation_speed.py                           # random 3.4M Llama, CPU
    python bench/generation_speed.py --model config:smollm2-135m   # the real SmolLM2 (GGUF)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amazon_sft.config import load_run_config
from amazon_sft.data.synthetic import write_catalogue
from amazon_sft.evaluation.generation import Decoding, generate_answers
from amazon_sft.evaluation.loading import load_for_eval, pick_device
from amazon_sft.modeling import load_model
from amazon_sft.prepare import prepare
from amazon_sft.prompts import build_prompt_format
from amazon_sft.tokenizer import choose_pad_id, hf_encoder, load_tokenizer

SMALL = [
    "model.arch.hidden_size=256",
    "model.arch.intermediate_size=688",
    "model.arch.num_hidden_layers=4",
    "model.arch.num_attention_heads=8",
    "model.arch.num_key_value_heads=4",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model",
        default=None,
        help="config:NAME or a trained folder (default: random small Llama)",
    )
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    torch.manual_seed(0)
    device = pick_device()
    if args.model:
        model, tok, cfg, label = load_for_eval(args.model, [], device)
    else:
        cfg = load_run_config("tiny", SMALL)
        tok = load_tokenizer(cfg.model)
        model = load_model(cfg, len(tok), choose_pad_id(tok), "no").to(device).eval()
        model.config.use_cache = True
        label = "random Llama (hidden 256, 4 layers)"
    fmt = build_prompt_format(tok, cfg.data)
    with tempfile.TemporaryDirectory() as tmp:
        write_catalogue(Path(tmp) / "trn.json", 3000, seed=0)
        prepare(Path(tmp) / "trn.json", Path(tmp) / "data", load_run_config("tiny"), progress=False)
        titles = [
            json.loads(x)["title"]
            for x in (Path(tmp) / "data" / "heldout.jsonl").read_text().splitlines()
        ]
    bos = fmt.bos
    prompts = [
        bos + ids for ids in hf_encoder(tok)([fmt.render(t) for t in titles[: args.prompts]])
    ]
    pad = choose_pad_id(tok)
    results = {}
    for name, batch in (("one-by-one", 1), ("batched", args.batch_size)):
        decoding = Decoding(max_new_tokens=args.max_new_tokens, batch_size=batch)
        start = time.perf_counter()
        out = generate_answers(model, tok, prompts, decoding, pad, desc=name)
        seconds = time.perf_counter() - start
        tokens = sum(g.new_tokens + g.ended_with_eos for g in out)
        results[name] = tokens / seconds
        print(
            f"{name}: {tokens} tokens in {seconds:.1f} s = {results[name]:.0f} tokens/s", flush=True
        )
    card = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(
        f"{label} on {card}, {len(prompts)} prompts, max_new_tokens {args.max_new_tokens}, "
        f"batch {args.batch_size}: batched / one-by-one = {results['batched'] / results['one-by-one']:.2f}x"
    )


if __name__ == "__main__":
    main()
