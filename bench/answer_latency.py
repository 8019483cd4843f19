"""Benchmark: time to first token and tokens/s of one streamed answer (amazon-sft ask's path).

python bench/answer_latency.py --model RUN_OR_CONFIG --index PREPARED_DIR [--questions 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amazon_sft.answering.ask import Answerer
from amazon_sft.answering.index import CatalogueIndex
from amazon_sft.evaluation.loading import load_for_eval, pick_device
from amazon_sft.prompts import build_prompt_format


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--questions", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()
    model, tok, cfg, label = load_for_eval(args.model, [], pick_device())
    fmt = build_prompt_format(tok, cfg.data)
    index = CatalogueIndex(args.index)
    answerer = Answerer(model, tok, fmt, index, cfg.data)
    titles = [
        orjson.loads(x)["title"]
        for x in (Path(args.index) / "catalogue.jsonl").read_bytes().splitlines()
    ]
    ttft, rates = [], []
    for title in titles[: args.questions]:
        marks = []
        start = time.perf_counter()
        result = answerer(
            f"Tell me about {title}",
            max_new_tokens=args.max_new_tokens,
            on_text=lambda _t, m=marks: m.append(time.perf_counter()),
        )
        end = time.perf_counter()
        n = len(tok(result.answer, add_special_tokens=False).input_ids)
        if marks:
            ttft.append(marks[0] - start)
            rates.append(n / max(end - marks[0], 1e-9))
    print(
        f"{label}: time to first text {1000 * statistics.median(ttft):.0f} ms (median of {len(ttft)}), "
        f"{statistics.median(rates):.1f} tokens/s after it, max_new_tokens {args.max_new_tokens}"
    )


if __name__ == "__main__":
    main()
