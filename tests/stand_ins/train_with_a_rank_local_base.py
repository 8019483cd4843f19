"""``amazon_sft/train.py`` where rank ``$OTHER_BASE_RANK`` reads other base weight files than the
rest (a node-local copy of the base that differs), for ``accelerate launch`` tests of a resume
refused on one rank only: every rank must stop, none wait at a collective."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# as train.py does from its first line: without it, torch's agent's SIGTERM (sent when the
# failing rank exits) killed rank 0 before it printed which rank to read (a flaky CI run)
from amazon_sft import stop_signal

stop_signal.install()

import amazon_sft.train as train  # noqa: E402 (after the handler)
from amazon_sft.train import cli  # noqa: E402

_digest = train.frozen_base_of


def node_local_base(cfg):
    here = _digest(cfg)
    if here and os.environ.get("RANK") == os.environ.get("OTHER_BASE_RANK"):
        return {name: "another copy" for name in here}
    return here


if __name__ == "__main__":
    train.frozen_base_of = node_local_base
    cli()
