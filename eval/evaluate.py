"""Evaluation entrypoint: ``accelerate launch eval/evaluate.py --data DIR --compare BASE TUNED``.

A script folder, not a package: a top-level package called ``eval`` would be importable as
``eval`` by everything on the path. The code lives in ``amazon_sft.evaluation``; this file and
``amazon-sft eval`` run the same ``main``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amazon_sft.evaluation.main import cli

if __name__ == "__main__":
    cli()
