"""The ``amazon-sft`` command: one sub-command per job, user errors as one line, never a traceback."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
from contextlib import nullcontext
from typing import NoReturn

from amazon_sft.answering.commands import add_commands
from amazon_sft.config_keys import KeysHelpParser, prepare_reads
from amazon_sft.errors import KNOWN_FAILURES, OneLineParser, UserError, known_failure
from amazon_sft.process_stops import Stopped, exit_as_finished, stops_raised


def _add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="raw trn.json(.gz) -> cleaned, split, tokenized, packed shards",
        description="Stream trn.json / trn.json.gz / tst.json into packed training shards, "
        "held-out and probe files, a manifest and a report.",
        keys=prepare_reads,
    )
    p.add_argument("input", help="trn.json, trn.json.gz or tst.json (JSON lines)")
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument(
        "--config",
        default=None,
        help="config name or YAML whose model/data to use (default: smollm2-135m)",
    )
    p.add_argument(
        "--tokenizer", default=None, help="tokenizer folder or hub id (default: the config's)"
    )
    p.add_argument("--max-seq-len", type=int, default=None, help="tokens per packed row")
    p.add_argument(
        "--strict", action="store_true", help="stop at the first bad line instead of skipping it"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier prepare output (only a folder prepare wrote)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or printed report")
    p.add_argument(
        "overrides", nargs="*", help="dotted config overrides, e.g. data.heldout_fraction=0.05"
    )
    p.set_defaults(run=_run_prepare)


def _run_prepare(args) -> int:
    from amazon_sft.config import load_run_config
    from amazon_sft.data.report import dropped_line, kept_line
    from amazon_sft.outputs import check_output_folder
    from amazon_sft.prepare import prepare

    overrides = list(args.overrides)
    if args.max_seq_len is not None:
        overrides.append(f"data.max_seq_len={args.max_seq_len}")
    cfg = load_run_config(args.config, overrides)
    args.out = check_output_folder(args.out, "--out")
    manifest = prepare(
        args.input,
        args.out,
        cfg,
        tokenizer=args.tokenizer,
        strict=args.strict,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    kept = kept_line(manifest.lines_read, manifest.kept, manifest.skipped)
    kept += dropped_line(manifest.documents_dropped)
    print(
        f"{kept}; wrote {manifest.rows} rows of {manifest.max_seq_len} tokens "
        f"(fill_ratio {manifest.fill_ratio}) to {args.out}; report: {args.out}/report.md"
    )
    return 0


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write a generated catalogue in the trn.json format")
    p.add_argument("--out", required=True, help="file to write (.json or .json.gz)")
    p.add_argument("--rows", type=int, default=5000, help="lines to write")
    p.add_argument("--seed", type=int, default=0, help="same seed, same file")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out when it is a file synth wrote (its record beside it proves it)",
    )
    p.add_argument(
        "--version",
        type=int,
        choices=(1, 2),
        default=1,
        help="generator version: 2 writes descriptions about their titles (the demo's)",
    )
    p.set_defaults(run=_run_synth)


def _run_synth(args) -> int:
    from amazon_sft.atomic import remove_stale
    from amazon_sft.output_places import refuse_inside_another_output
    from amazon_sft.outputs import landing, refuse_under_a_file
    from amazon_sft.synth_ownership import check_synth_target, write_synth_output

    if args.rows < 1:
        raise UserError(f"--rows must be >= 1, got {args.rows}")
    out = landing(args.out)
    # first: a killed synth's cut file goes, a killed prepare's folder comes back to be named
    remove_stale(out)
    refuse_inside_another_output(out, "--out")
    if out.is_dir() or str(args.out).endswith(os.sep):  # "new/" wrote a file named new
        what = "is a folder" if out.is_dir() else f"ends with {os.sep}, a folder's name"
        raise UserError(f"--out {args.out} {what}: name the file to write, e.g. {out}/trn.json.gz")
    refuse_under_a_file(out, "--out")
    if out.exists() and not out.is_file():  # a pipe or a device was replaced by a plain file
        raise UserError(f"--out {out} is not a regular file (a pipe or a device): name a file")
    old = check_synth_target(out, args.overwrite)
    try:
        made = write_synth_output(out, old, args.rows, args.seed, args.version)
    except OSError as err:
        fix = "free space on its disk" if err.errno == errno.ENOSPC else "choose a writable path"
        raise UserError(f"cannot write {args.out} ({err.strerror}): {fix}") from None
    print(
        f"wrote {args.rows} lines to {args.out}: "
        + ", ".join(f"{k} {v}" for k, v in sorted(made.items()))
    )
    return 0


def _add_train(sub) -> None:
    # Parsed by amazon_sft.train itself (main() forwards everything after "train"); listed for --help.
    sub.add_parser(
        "train",
        help="fine-tune on prepared shards (same code as accelerate launch amazon_sft/train.py)",
    )
    # Likewise parsed by amazon_sft.evaluation.main and amazon_sft.demo.
    sub.add_parser(
        "demo", help="the whole story offline: prepare, base answers, LoRA, eval, answers"
    )
    sub.add_parser(
        "eval", help="score base and tuned models on held-out and seen titles (eval/evaluate.py)"
    )


QUIET_LIBRARIES = ("absl", "bm25s", "torch")
"""Libraries whose INFO/DEBUG logging is held back (rouge-score's absl says "Using default
tokenizer" once per scored answer; bm25s logs each index build; torch its FakeTensor cache's
statistics at exit, after a stop's one line: a hostile user's trial)."""


def _quiet_libraries(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.name.split(".")[0] not in QUIET_LIBRARIES


def build_parser() -> argparse.ArgumentParser:
    from amazon_sft import __version__

    parser = OneLineParser(prog="amazon-sft", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=KeysHelpParser)
    _add_prepare(sub)
    _add_synth(sub)
    _add_train(sub)
    add_commands(sub)
    return parser


STOPPABLE = ("prepare", "export", "index", "synth", "eval")
"""Commands whose SIGTERM or SIGHUP (a scheduler's stop, ``kill``, a closed terminal) stops them
as a Ctrl-C does: their ``finally`` removes the hidden staging folder (a whole copy of the
output; a model's weights for export; eval's report), which Python's default death by the signal
left behind, and say so in one line (eval ended with none)."""


def _run_module(command: str, argv: list[str]) -> int:
    """demo's or eval's own ``main``, imported here, inside the caller's stop handling, with
    stops held until the import is done: a Ctrl-C raised in Python code that torch's C++ called
    while it loaded aborted the process ("terminate called after throwing", a hostile user's
    trial)."""
    from amazon_sft.atomic import stops_held

    with stops_held():
        if command == "demo":
            from amazon_sft.demo import main as run
        else:
            from amazon_sft.evaluation.main import main as run
    return run(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # bm25s sets its own level on import
        handler.addFilter(_quiet_libraries)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        from amazon_sft import stop_signal

        stop_signal.install()  # before train's imports: a stop during start-up is not fatal
        from amazon_sft.train import main as train_main

        command, run = "train", lambda: train_main(argv[1:])
    elif argv[:1] in (["demo"], ["eval"]):
        # imported inside ``run``: a stop while torch loads (two seconds) is handled as later
        command, run = argv[0], lambda: _run_module(argv[0], argv[1:])
    else:
        parser = build_parser()
        # dotted overrides may come after options (argparse stops filling positionals there)
        args, extra = parser.parse_known_args(argv)
        bad = [x for x in extra if x.startswith("-") or "=" not in x]
        if bad or (extra and not hasattr(args, "overrides")):
            parser.error(f"unrecognized arguments: {' '.join(bad or extra)}")
        if extra:
            args.overrides = [*args.overrides, *extra]
        command, run = args.command, lambda: args.run(args)
    try:
        with stops_raised() if command in STOPPABLE else nullcontext():
            return run()
    except Stopped as err:
        name = signal.Signals(err.signum).name
        print(f"amazon-sft {command}: stopped by {name}; nothing partial was left", file=sys.stderr)
        return 128 + err.signum
    except KNOWN_FAILURES as err:  # a PermissionError from any reader or writer, on any path
        said, code = known_failure(command, err)
        # a second Ctrl-C while it is said was a KeyboardInterrupt traceback
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            print(said, file=sys.stderr)
        finally:
            signal.signal(signal.SIGINT, previous)
        return code
    except BrokenPipeError:  # the reader stopped (``| head``): end as Unix tools do, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 128 + signal.SIGPIPE
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        # what no writer said itself: the answers' stdout on a full disk (``> /dev/full``)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        print(f"amazon-sft {command}: error: {err.strerror}: free space", file=sys.stderr)
        return 2


def entry(argv: list[str] | None = None) -> NoReturn:
    """The ``amazon-sft`` program: ``main``, then an exit whose status no stop changes."""
    exit_as_finished(main(argv))


if __name__ == "__main__":
    entry()
