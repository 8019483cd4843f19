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
    from amazon_sft.config_run_parts import check_ranges

    at_least_one = [
        ("--rows", args.rows),
        ("--steps", args.steps),
        ("--per-kind", args.per_kind),
        ("--max-new-tokens", args.max_new_tokens),
        ("--max-seq-len", args.max_seq_len),
        *([("--n", args.n)] if args.oracle_eval else []),
    ]
    held, grounded = args.heldout_fraction, args.grounded_fraction
    check_ranges(
        *((f"demo {flag}", value, value >= 1, ">= 1") for flag, value in at_least_one),
        # it asks about held-out products and teaches the rest
        ("demo --heldout-fraction", held, 0 < held < 1, "between 0 and 1"),
        ("demo --grounded-fraction", grounded, 0 <= grounded <= 1, "in [0, 1]"),
    )
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
