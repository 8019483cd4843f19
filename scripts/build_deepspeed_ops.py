"""Compile DeepSpeed's CPU ops (CPU Adam for ZeRO offload, shared-memory comm) once, at install.

DeepSpeed builds these C++ ops just in time, the first time a run needs them: about 2.5 minutes
of both cores here, which a fresh environment's first test run (or first ZeRO run on CPU)
otherwise pays inside its timing. They go to ``amazon_sft.deepspeed_config.prebuilt_ops_dir()``
(``<sys.prefix>/torch_extensions``), where training and the tests look for them.

Run by ``make install``. An op that cannot be built here is named and skipped (exit 0): the run
that needs it will try again and fail with DeepSpeed's own message.
"""

from __future__ import annotations

import os
import sys
import time

OPS = ("CPUAdamBuilder", "ShareMemCommBuilder")


def main() -> int:
    from amazon_sft.deepspeed_config import prebuilt_ops_dir

    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(prebuilt_ops_dir()))
    try:
        from deepspeed.accelerator import get_accelerator
    except ImportError as err:
        print(f"build_deepspeed_ops: deepspeed is not importable ({err}); nothing built")
        return 0
    for name in OPS:
        start = time.perf_counter()
        builder = get_accelerator().create_op_builder(name)
        if builder is None or not builder.is_compatible(verbose=False):
            print(f"build_deepspeed_ops: {name} does not apply to this machine; skipped")
            continue
        print(  # a C++ compile with no output of its own: minutes that looked like a hang
            f"build_deepspeed_ops: {name}: compiling unless built before (once; minutes on 2 cores)",
            flush=True,
        )
        try:
            builder.load(verbose=False)
        except Exception as err:  # any compiler failure: name it; the run that needs it retries
            print(f"build_deepspeed_ops: {name} did not build ({type(err).__name__}: {err})")
            continue
        took = time.perf_counter() - start
        print(
            f"build_deepspeed_ops: {name} ready in {os.environ['TORCH_EXTENSIONS_DIR']} ({took:.0f} s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
