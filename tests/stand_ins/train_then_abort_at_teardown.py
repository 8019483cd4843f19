"""``amazon_sft/train.py`` with a library that aborts the process while the interpreter tears
down, as gloo and DeepSpeed's C++ threads sometimes do after a finished run ("terminate called
without an active exception", SIGABRT: a CI run of the ZeRO-3 kernel-contract test). An atexit
handler writes ``$ATEXIT_MARK``, so the test also sees that exit handlers still ran."""

import atexit
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from amazon_sft.train import cli


class AbortsAtTeardown:
    """Stands for a C++ object whose destruction at interpreter exit calls std::terminate."""

    def __del__(self) -> None:
        os.abort()


_library_state = AbortsAtTeardown()  # a module global: destroyed only at interpreter teardown


def _mark() -> None:
    Path(os.environ["ATEXIT_MARK"]).write_text("ran\n")


if __name__ == "__main__":
    atexit.register(_mark)
    cli()
