"""What the GGUF cache (amazon_sft/gguf_cache.py) saves each command: the seconds to load a
config's GGUF tokenizer and model read from the GGUF file, converted into a fresh cache (the
first command's cost) and read back from it (every later command's), and the ratio.

    python bench/gguf_cache.py                      # SmolLM2-135M-Instruct (make demo-deps)
    python bench/gguf_cache.py --config my.yaml     # another GGUF config
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amazon_sft.config import load_run_config
from amazon_sft.evaluation.loading import _no_lora
from amazon_sft.gguf_cache import CACHE_ENV
from amazon_sft.modeling import load_model
from amazon_sft.tokenizer import choose_pad_id, load_tokenizer


def timed_load(cfg) -> tuple[float, float]:
    """(tokenizer seconds, model seconds) of one load as a command does it."""
    start = time.perf_counter()
    tok = load_tokenizer(cfg.model)
    tokenizer_s = time.perf_counter() - start
    start = time.perf_counter()
    load_model(cfg, len(tok), choose_pad_id(tok), "no")
    return tokenizer_s, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="smollm2-135m", help="a config whose model is GGUF")
    args = parser.parse_args()
    cfg = _no_lora(load_run_config(args.config))
    if not cfg.model.gguf_file:
        sys.exit(f"{args.config}: model.gguf_file is not set; give a GGUF config")
    with tempfile.TemporaryDirectory() as cache:
        rows = []
        for label, where in [("GGUF file", "off"), ("convert", cache), ("cached", cache)]:
            os.environ[CACHE_ENV] = where
            rows.append((label, *timed_load(cfg)))
        size_mb = sum(p.stat().st_size for p in Path(cache).rglob("*") if p.is_file()) / 1e6
    print(f"{args.config}: {cfg.model.path} {cfg.model.gguf_file}; cache {size_mb:.0f} MB")
    print("| load | tokenizer s | model s | total s |\n|---|---|---|---|")
    for label, tok_s, model_s in rows:
        print(f"| {label} | {tok_s:.1f} | {model_s:.1f} | {tok_s + model_s:.1f} |")
    direct, cached = rows[0][1] + rows[0][2], rows[2][1] + rows[2][2]
    print(f"later commands load {direct / cached:.0f}x faster ({direct:.1f} s -> {cached:.1f} s)")


if __name__ == "__main__":
    main()
