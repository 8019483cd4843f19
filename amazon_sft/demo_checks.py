"""The demo's flags and training overrides, checked before its first step.

Each step checks its own settings, but minutes into the demo and naming its inner key
(``train.max_steps`` for ``--steps``); some were not checked at all: ``--steps 0`` trained the
config's 100 steps, ``--per-kind -1`` wrote every product's questions, and ``out_dir=`` trained
a model elsewhere while the report and the "after" answers read the folder's earlier run (a
hostile user's trial). So every number is checked here, under the demo's own flag, and the
overrides are loaded as training will load them.
"""

from __future__ import annotations

from amazon_sft.errors import UserError

SET_BY_DEMO = {
    "out_dir": "it trains into --out's run/",
    "data.path": "it trains on what it prepares",
    "overwrite": "a second demo starts its run over",
    "resume": "a second demo starts its run over",
    "train.max_steps": "give --steps",
    "data.max_seq_len": "give --max-seq-len",
}
"""Training settings the demo sets itself, and what to do instead of overriding them."""


def check_demo_args(args, train_overrides: list[str]) -> None:
    """One-line ``UserError`` for a flag out of range or an override the demo cannot take;
    ``train_overrides``: what the demo's training step will be given (the config loads them)."""
    from amazon_sft.config import load_run_config

    at_least_one = {
        "--rows": args.rows,
        "--steps": args.steps,
        "--per-kind": args.per_kind,
        "--max-new-tokens": args.max_new_tokens,
        "--max-seq-len": args.max_seq_len,
        **({"--n": args.n} if args.oracle_eval else {}),
    }
    for flag, value in at_least_one.items():
        if value < 1:
            raise UserError(f"demo {flag} must be >= 1, got {value}")
    if not 0 < args.heldout_fraction < 1:  # it asks about held-out products, teaches the rest
        raise UserError(
            f"demo --heldout-fraction must be between 0 and 1, got {args.heldout_fraction}"
        )
    if not 0 <= args.grounded_fraction <= 1:
        raise UserError(f"demo --grounded-fraction must be in [0, 1], got {args.grounded_fraction}")
    for override in args.overrides:
        key = override.split("=", 1)[0].strip()
        if key in SET_BY_DEMO:
            raise UserError(f"demo sets {key} itself ({SET_BY_DEMO[key]}): remove {override}")
        if key.startswith("data."):  # training refuses a data setting its data lacks, minutes in
            raise UserError(
                f"demo prepares its data itself, so {key} cannot reach it (its flags: "
                "--heldout-fraction, --grounded-fraction, --max-seq-len): remove the override"
            )
    load_run_config(args.config, train_overrides)
