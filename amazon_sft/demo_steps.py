"""One demo step: an amazon-sft command run as the installed package runs it, echoed, its
output kept in the demo's log, and a sign of life while it runs."""

from __future__ import annotations

import shlex
import subprocess
import sys
import threading
import time

from amazon_sft.child_process import die_with_parent
from amazon_sft.errors import UserError

CLI = "import sys; sys.path.remove('') if '' in sys.path else None; from amazon_sft.cli import entry; entry(sys.argv[1:])"
"""The steps' interpreter code: the CLI of the installed package, as the ``amazon-sft`` command
runs it. ``python -m`` (and ``-c``) put the current folder first on ``sys.path``, so an
``amazon_sft`` folder there (the parent of a clone) was imported instead; ``-P``, which stops
that, needs Python 3.11."""


HEARTBEAT_S = 30.0
"""A step running longer than this prints, this often, its time and its latest output line (a
training step, a progress bar): a new user saw only the command, then "done in 1137 s"."""


def run(step: str, args: list[str], log) -> str:
    """Run one amazon-sft command, echo it, say it is alive, keep its output in the log; stop on
    failure."""
    cmd = [sys.executable, "-c", CLI, *args]
    print(f"\n== {step}\n$ amazon-sft {shlex.join(args)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(  # a killed demo leaves no step working on in its folder
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=die_with_parent
    )
    out, err, latest = [], [], [""]

    def read_err() -> None:
        for line in proc.stderr:  # text mode: a progress bar's carriage returns end lines too
            err.append(line)
            latest[0] = line.strip() or latest[0]

    readers = [
        threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True),
        threading.Thread(target=read_err, daemon=True),
    ]
    for reader in readers:
        reader.start()
    beat = start + HEARTBEAT_S
    while proc.poll() is None:
        time.sleep(min(0.5, HEARTBEAT_S))
        if time.perf_counter() >= beat and latest[0]:
            print(f"   ... {time.perf_counter() - start:.0f} s: {latest[0][:110]}", flush=True)
            beat = time.perf_counter() + HEARTBEAT_S
    for reader in readers:
        reader.join()
    stdout, stderr = "".join(out), "".join(err)
    log.write(f"$ amazon-sft {shlex.join(args)}\n{stdout}\n{stderr}\n")
    if proc.returncode:
        tail = (stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UserError(f"demo step '{step}' failed: {tail} (full output in the demo log)")
    print(f"   done in {time.perf_counter() - start:.0f} s", flush=True)
    return stdout
