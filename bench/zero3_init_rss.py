"""Benchmark: per-rank peak host memory while loading a saved model, ZeRO-3 (zero.Init) vs DDP.

A Llama of ``--hidden``/``--layers`` is saved once with random weights; then each mode starts 2
processes with accelerate launch that build the accelerator exactly as amazon_sft.train does and
load the model with amazon_sft.modeling.load_model, and report their peak RSS. Under ZeRO-3 the
DeepSpeed config is live before from_pretrained, so each rank should hold about half the weights.

    python bench/zero3_init_rss.py                 # ~300M parameters, fp32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def worker(model_dir: str, deepspeed: str) -> None:
    import torch

    from amazon_sft.config import load_run_config
    from amazon_sft.distributed import build_accelerator
    from amazon_sft.loss import SummedAnswerLoss
    from amazon_sft.modeling import load_model, parameter_counts
    from amazon_sft.optim import build_optimizer
    from amazon_sft.tokenizer import choose_pad_id, load_tokenizer

    overrides = [
        f"model.path={model_dir}",
        "model.tokenizer=builtin:tiny",
        "train.trackers=[]",
        "train.global_batch_size=2",
        "train.micro_batch_size=1",
        f"deepspeed={deepspeed}",
    ]
    cfg = load_run_config("tiny", overrides)
    accelerator, _ = build_accelerator(cfg, Path(tempfile.mkdtemp()))
    tok = load_tokenizer(cfg.model)
    before = _peak_mb()
    model = load_model(cfg, len(tok), choose_pad_id(tok), "no")
    after_load = _peak_mb()
    held = sum(p.numel() for p in model.parameters())
    counts = parameter_counts(model)
    # what training then holds: wrapped model, AdamW states, one step on a small batch
    wrapped = SummedAnswerLoss(model, 256)
    optimizer, scheduler = build_optimizer(cfg, wrapped)
    wrapped, optimizer, scheduler = accelerator.prepare(wrapped, optimizer, scheduler)
    ids = torch.randint(4, len(tok), (1, 64))
    summed, _ = wrapped(ids, torch.arange(64)[None], ids)
    accelerator.backward(summed)
    optimizer.step()
    result = {
        "rank": accelerator.process_index,
        "rss_before_load_mb": round(before),
        "peak_rss_load_mb": round(after_load),
        "peak_rss_after_step_mb": round(_peak_mb()),
        "params_total": counts["total"],
        "params_held_by_rank_after_load": held,
    }
    # a file per rank: two ranks printing at once can interleave on one stdout line
    (Path(model_dir) / f"rss-{deepspeed}-{accelerator.process_index}.json").write_text(
        json.dumps(result)
    )


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=20)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        config = AutoConfig.for_model(
            "llama",
            vocab_size=args.vocab,
            hidden_size=args.hidden,
            intermediate_size=int(2.75 * args.hidden),
            num_hidden_layers=args.layers,
            num_attention_heads=args.hidden // 64,
            num_key_value_heads=args.hidden // 128,
        )
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(tmp)
        for mode, launch, env in (
            ("ddp", ["--multi_gpu"], {"ACCELERATE_USE_CPU": "true"}),
            ("zero3", ["--config_file", str(REPO / "launch/accelerate/zero3.yaml")], {}),
        ):
            cmd = [
                str(Path(sys.executable).with_name("accelerate")),
                "launch",
                *launch,
                "--num_processes",
                "2",
                "--main_process_port",
                str(_free_port()),
                __file__,
                "--worker",
                tmp,
                "zero3" if mode == "zero3" else "none",
            ]
            out = subprocess.run(
                cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, **env}
            )
            files = sorted(Path(tmp).glob(f"rss-{'zero3' if mode == 'zero3' else 'none'}-*.json"))
            if out.returncode or len(files) != 2:
                raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
            for f in files:
                print(json.dumps({"mode": mode, **json.loads(f.read_text())}))


if __name__ == "__main__":
    main()
