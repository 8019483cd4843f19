"""``amazon-sft eval``'s options, checked before any model loads (one-line errors naming the
option): the oracle eval's (``evaluation/main.py``) and ``--questions``' end-to-end ones
(``evaluation/end_to_end_run.py``)."""

from __future__ import annotations

import math
from pathlib import Path

from amazon_sft.bounds import check_new_tokens
from amazon_sft.config import check_seed
from amazon_sft.errors import OneLineParser, UserError
from amazon_sft.eval_ownership import check_eval_dir
from amazon_sft.evaluation import end_to_end_run
from amazon_sft.evaluation.items import MODES, SPLIT_FILES
from amazon_sft.output_places import refuse_inside_another_output
from amazon_sft.outputs import check_output_folder

DESCRIPTION = "score models on held-out and seen titles, or end to end on free-form questions"


ORACLE_DEFAULTS = {
    "n": 100,
    "splits": "heldout,seen",
    "mode": "auto",
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "examples": 5,
}
"""The oracle-context mode's settings and their defaults. End to end (``--questions``) asks
every question of the file and answers as ``ask`` does, so none of them applies there."""


def oracle_defaults(args) -> None:
    """Refuse an oracle-context setting given with ``--questions`` (it was silently ignored),
    and fill in the defaults of those left out."""
    if args.questions:
        given = [key for key in ORACLE_DEFAULTS if getattr(args, key) is not None]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise UserError(
                f"{flag} is an oracle-context setting: with --questions eval asks every question "
                f"of the file and answers as ask does; leave {flag} out"
            )
    for key, default in ORACLE_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    if args.max_new_tokens is None:  # end to end answers as long as ask does
        from amazon_sft.answering.commands import ASK_MAX_NEW_TOKENS

        args.max_new_tokens = ASK_MAX_NEW_TOKENS if args.questions else 128


def parse_args(argv):
    p = OneLineParser(prog="amazon-sft eval", description=DESCRIPTION)
    p.add_argument("--data", required=True, help="the folder amazon-sft prepare wrote")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--model", help="config:NAME (base model) or a training out_dir / final folder"
    )
    group.add_argument(
        "--compare",
        nargs=2,
        metavar=("BASE", "TUNED"),
        help="two models, same titles, same decoding",
    )
    p.add_argument("--out", default="runs/eval", help="report folder")
    p.add_argument("--n", type=int, default=None, help="titles per split (held-out and seen)")
    p.add_argument("--splits", default=None, help="comma list of heldout, seen")
    p.add_argument(
        "--mode",
        choices=("auto", *MODES),
        default=None,
        help="closed-book, grounded (records in the prompt; also scored with the right one "
        "left out) or both; auto: both when the data taught grounded examples, else closed",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="default: 128; with --questions ask's (160), as ask answers",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="prompts generated at once (with --questions: 1 answers one at a time, as ask)",
    )
    p.add_argument("--repetition-penalty", type=float, default=None)
    p.add_argument("--no-repeat-ngram-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--backend",
        choices=("hf", "vllm"),
        default="hf",
        help="generation engine: transformers (batched, spread over ranks) or vLLM (one process)",
    )
    p.add_argument(
        "--vllm-tensor-parallel", type=int, default=1, help="GPUs vLLM shards one model over"
    )
    p.add_argument(
        "--vllm-gpu-memory",
        type=float,
        default=0.85,
        help="share of GPU memory vLLM may take (its gpu_memory_utilization)",
    )
    p.add_argument("--examples", type=int, default=None, help="examples per split in report.md")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier report in --out (never files eval did not write)",
    )
    end_to_end_run.add_arguments(p)
    p.add_argument("overrides", nargs="*", help="dotted config overrides applied to both models")
    args = p.parse_intermixed_args(argv)  # overrides after an option too, as prepare
    oracle_defaults(args)
    for flag, given in (("--n", args.n), ("--batch-size", args.batch_size)):
        if given < 1:
            raise UserError(f"{flag} must be >= 1, got {given}")
    check_new_tokens(args.max_new_tokens)
    if not (math.isfinite(args.repetition_penalty) and args.repetition_penalty > 0):
        raise UserError(
            f"--repetition-penalty must be a finite number > 0 (1.0: none), got "
            f"{args.repetition_penalty}"
        )
    if args.examples is not None and args.examples < 0:
        raise UserError(f"--examples must be >= 0 (0: none in report.md), got {args.examples}")
    if args.no_repeat_ngram_size < 0:
        raise UserError(f"--no-repeat-ngram-size must be >= 0, got {args.no_repeat_ngram_size}")
    check_seed(args.seed, "--seed")  # numpy's seeding refused it after the model loaded
    if args.vllm_tensor_parallel < 1 or not 0.0 < args.vllm_gpu_memory <= 1.0:
        raise UserError("--vllm-tensor-parallel must be >= 1 and --vllm-gpu-memory in (0, 1]")
    args.out = str(check_output_folder(args.out, "--out", replaced_whole=False))  # file by file
    refuse_inside_another_output(Path(args.out), "--out")
    check_eval_dir(Path(args.out), args.overwrite)  # before any model loads
    bad = set(args.splits.split(",")) - set(SPLIT_FILES)
    if bad:
        raise UserError(f"--splits: unknown {sorted(bad)}; use heldout and/or seen")
    return args
