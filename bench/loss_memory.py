"""Benchmark: peak memory of the chunked answer-only loss against full logits, vocabulary >= 32k.

Each variant runs forward + backward of the LM head and cross-entropy on the same hidden states in
its own process, and reports its peak memory above the state before the loss (CPU: resident memory
sampled every 0.5 ms from /proc/self/statm, above what is resident just before the loss; GPU with
--cuda: torch.cuda.max_memory_allocated). The head's gradient exists before the loss, as from the
second step on. Prints the ratio.

The CPU baseline was the process's high-water mark (ru_maxrss), which the set-up had already
raised (a review measured it 1.5 GB above what was in use at vocab 128k): the chunked figure
came out too low.

    python bench/loss_memory.py                     # 8192 tokens, hidden 1024, vocab 32000, CPU
    python bench/loss_memory.py --cuda --vocab 128256
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amazon_sft.loss import chunked_cross_entropy


def _rss_mb() -> float:
    """Resident memory now (not the high-water mark)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _PeakRss:
    """The highest resident memory seen while it runs, sampled every 0.5 ms."""

    def __enter__(self) -> _PeakRss:
        self.peak, self._done = _rss_mb(), False
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done:
            self.peak = max(self.peak, _rss_mb())
            time.sleep(0.0005)

    def __exit__(self, *exc) -> None:
        self._done = True
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def run_variant(args) -> dict:
    device = "cuda" if args.cuda else "cpu"
    torch.manual_seed(0)
    head = torch.nn.Linear(args.hidden, args.vocab, bias=False, device=device)
    hidden = torch.randn(1, args.tokens, args.hidden, device=device, requires_grad=True)
    labels = torch.randint(0, args.vocab, (1, args.tokens), device=device)
    labels[0, : args.tokens // 4] = -100  # a quarter of the row is prompt: no loss there
    # warm-up on a few tokens so allocator and kernels are set up before the baseline
    chunked_cross_entropy(head, hidden[:, :8], labels[:, :8], 4)[0].backward()
    head.weight.grad.zero_()  # kept: from the second step on it exists before the loss
    hidden.grad = None
    if args.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_mb()
    with _PeakRss() as rss:
        if args.variant == "full":
            logits = head(hidden)[:, :-1].float()
            loss = F.cross_entropy(
                logits.reshape(-1, args.vocab), labels[:, 1:].reshape(-1), reduction="sum"
            )
        else:
            loss, _ = chunked_cross_entropy(head, hidden, labels, args.chunk)
        loss.backward()
    if args.cuda:
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = rss.peak - base
    return {"variant": args.variant, "peak_mb": round(peak, 1), "loss": float(loss)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--cuda", action="store_true")
    ap.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        print("RESULT " + json.dumps(run_variant(args)))
        return
    results = {}
    for variant in ("full", "chunked"):
        cmd = [
            sys.executable,
            __file__,
            "--variant",
            variant,
            "--tokens",
            str(args.tokens),
            "--hidden",
            str(args.hidden),
            "--vocab",
            str(args.vocab),
            "--chunk",
            str(args.chunk),
        ] + (["--cuda"] if args.cuda else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[variant] = json.loads(
            next(x for x in out.splitlines() if x.startswith("RESULT "))[7:]
        )
        print(json.dumps(results[variant]))
    assert abs(results["full"]["loss"] - results["chunked"]["loss"]) <= 1e-3 * abs(
        results["full"]["loss"]
    )
    ratio = results["chunked"]["peak_mb"] / results["full"]["peak_mb"]
    print(
        f"tokens {args.tokens}, hidden {args.hidden}, vocab {args.vocab}, chunk {args.chunk}, "
        f"{'cuda' if args.cuda else 'cpu'}: chunked/full peak memory = {ratio:.3f}"
    )


if __name__ == "__main__":
    main()
