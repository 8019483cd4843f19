"""The answering sub-commands of ``amazon-sft``: index, ask, chat, export."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from amazon_sft.answering.gate import add_gate_flags, for_mode, resolve_gate
from amazon_sft.answering.option_checks import (
    check_counts,
    check_question_length,
    check_questions,
    for_question,
)
from amazon_sft.answering.shown import (
    AnswerPrinter,
    print_how,
    print_sources,
    public,
    retrieval_only,
)
from amazon_sft.errors import UserError
from amazon_sft.terminal import json_line, printable

if TYPE_CHECKING:
    from amazon_sft.answering.ask import Answerer
    from amazon_sft.config import RunConfig

ASK_MAX_NEW_TOKENS = 160
"""ask's and chat's answer length; eval --questions answers as long (it answers as ask)."""


def add_commands(sub) -> None:
    p = sub.add_parser("index", help="build the catalogue index beside prepared shards")
    p.add_argument("data", help="the folder amazon-sft prepare wrote")
    p.set_defaults(run=_run_index)

    for name, helptext in (
        ("ask", "answer one question with its sources"),
        ("chat", "ask questions interactively"),
    ):
        p = sub.add_parser(name, help=helptext)
        if name == "ask":
            p.add_argument(
                "question",
                nargs="+",
                help='e.g. "What is the description of Mog\'s Kittens?" (several: one model load)',
            )
            p.add_argument(
                "--json",
                action="store_true",
                help='one JSON line per question: {"answer", "mode", "cited", "cited_unretrieved", "doubtful", '
                '"doubt", "quoted", "sources", "prompt"}; with --sources-only {"question", "sources"} '
                '(and "doubtful", "doubt": the gate\'s verdict)',
            )
        p.add_argument(
            "--sources-only",
            action="store_true",
            help="retrieval only (and the gate's verdict); no model needed",
        )
        p.add_argument(
            "--model", default=None, help="a training out_dir, or config:NAME for a base model"
        )
        p.add_argument(
            "--index",
            default=None,
            help="prepared folder (default: the one the model was trained on, else its data.path)",
        )
        _add_mode_flags(p)
        p.add_argument(
            "--k",
            type=int,
            default=None,
            help="sources to retrieve (default: the records training showed, or 3)",
        )
        p.add_argument("--max-new-tokens", type=int, default=ASK_MAX_NEW_TOKENS)
        add_gate_flags(p)
        _add_trust_flag(p)
        p.set_defaults(run=_run_ask if name == "ask" else _run_chat)

    p = sub.add_parser("serve", help="web page and JSON API answering questions with sources")
    p.add_argument(
        "--model", default=None, help="a training out_dir, or config:NAME for a base model"
    )
    p.add_argument(
        "--index",
        default=None,
        help="prepared folder (default: the one the model was trained on, else its data.path)",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--max-new-tokens", type=int, default=128, help="default generation length (capped at 512)"
    )
    p.add_argument(
        "--k",
        type=int,
        default=None,
        help="records a request without k gets (default: the records training showed, or 3)",
    )
    _add_mode_flags(p)
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        help="a name clients may use in the Host header besides localhost and --host "
        "(repeat; needed when serving beyond this machine)",
    )
    p.add_argument(
        "--max-queue", type=int, default=8, help="requests that may wait for the model (503 beyond)"
    )
    add_gate_flags(p)
    _add_trust_flag(p)
    p.set_defaults(run=_run_serve)

    p = sub.add_parser("export", help="merge a LoRA run into a standalone safetensors model")
    p.add_argument("run_dir", metavar="RUN", help="training out_dir (or its final/ folder)")
    p.add_argument("--out", required=True, help="folder for the standalone model")
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="dtype of the saved weights (bfloat16 halves the folder; default float32)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier export in --out (refused if a file in it was added or edited)",
    )
    _add_trust_flag(p)
    p.set_defaults(run=_run_export)


def _add_mode_flags(p) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--closed-book",
        dest="mode",
        action="store_const",
        const="closed",
        help="answer from what tuning taught, no records in the prompt",
    )
    group.add_argument(
        "--grounded",
        dest="mode",
        action="store_const",
        const="grounded",
        help="put the retrieved records in the prompt (the default for a model trained with "
        "grounded examples)",
    )


def _add_trust_flag(p) -> None:
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run Python shipped in the model folder (never taken from a saved config)",
    )


def model_overrides(args) -> list[str]:
    """Overrides the person running the command granted on its command line."""
    return ["model.trust_remote_code=true"] if args.trust_remote_code else []


def _run_index(args) -> int:
    from amazon_sft.answering.index_build import build_index

    stats = build_index(args.data)
    print(
        f"indexed {stats['products']} products (titles and descriptions) in {stats['seconds']} s "
        f"into {Path(args.data) / 'index'}"
    )
    return 0


def _default_model() -> str:
    from amazon_sft.config import DEFAULT_CONFIG, load_run_config

    out = Path(load_run_config(DEFAULT_CONFIG).out_dir)
    return str(out) if (out / "final").is_dir() else f"config:{DEFAULT_CONFIG}"


def _session(args):
    """The loaded Answerer for ask/chat/serve."""
    return _checked_session(args)()


def _checked_session(args, serving: bool = False) -> Callable[[], Answerer]:
    """Every check of ask/chat/serve's options that needs no model (the run's config, the
    index), then what loads the model, to call when ready: serve binds its port in between.
    ``serving``: a request may ask for either mode, so the gate is kept whatever the default
    mode (it reads grounded answers only); ask and chat answer in one mode, checked here."""
    from amazon_sft.answering.ask import Answerer, default_mode
    from amazon_sft.evaluation import loading
    from amazon_sft.prompts import build_prompt_format

    check_counts(args.k, args.max_new_tokens)
    gate = resolve_gate(args)
    spec, overrides = args.model or _default_model(), model_overrides(args)
    cfg = loading.run_config_for(spec, overrides)  # what needs only the config, before the model
    if not serving:
        gate = for_mode(gate, args.mode or default_mode(cfg.data), args)
    index = index_for(args, gate.meaning_weight, cfg)

    def load() -> Answerer:
        model, tok, run_cfg, _ = loading.load_for_eval(spec, overrides, loading.pick_device())
        fmt = build_prompt_format(tok, run_cfg.data)
        return Answerer(
            model,
            tok,
            fmt,
            index,
            run_cfg.data,
            gate.abstain_below,
            gate.quote_when_sure,
            args.mode,
        )

    return load


def index_for(args, meaning: float, cfg: RunConfig | None = None):
    """The index of ``--index``, else of the prepared folder the model (``--model``, or the
    default) was trained on: its recorded folder or ``data.path`` (trained_on.py). ``cfg`` is
    the model's run config when the caller has read it."""
    from amazon_sft.evaluation import loading
    from amazon_sft.trained_on import index_folder_for

    if args.index:  # the model's record is not consulted: the user named the catalogue
        return _held(Path(args.index), f"--index {args.index}", meaning)
    spec = args.model or _default_model()
    cfg = cfg or loading.run_config_for(spec, model_overrides(args))
    data_path = index_folder_for(loading.saved_folder(spec), cfg.data.path)
    if not Path(data_path).is_dir():
        raise UserError(
            f"no --index given, and the model config's data.path {data_path} is not a folder "
            "here: pass --index PREPARED (the folder amazon-sft prepare wrote)"
        )
    return _held(Path(data_path), f"the model's data {data_path}", meaning)


def _held(folder: Path, named: str, meaning: float):
    """The index of ``folder``, the folder held for reading while this process lives (ask,
    chat, serve): ``prepare --overwrite`` there is refused meanwhile. A hostile user's trial:
    a prepare during ``serve`` left it answering from the replaced catalogue without a word,
    and one during ``ask`` read the new catalogue at the old index's offsets."""
    from amazon_sft.answering.index import CatalogueIndex
    from amazon_sft.output_lock import DataReadLock

    lock = DataReadLock(folder, shared=True, named=named).acquire()  # before the index's files
    index = CatalogueIndex(folder, meaning_weight=meaning)
    index.read_lock = lock  # released with the index, or when the process ends
    return index


def _answer(answerer, args, question: str, on_text=None):
    return answerer(
        question,
        k=args.k,
        mode=args.mode,
        max_new_tokens=args.max_new_tokens,
        on_text=on_text,
    )


def _plan_all(answerer, args) -> list:
    """Every question of ``ask`` planned (retrieved, its prompt checked against the model's
    context) before the first is answered: one the model cannot take is refused before any
    answer is printed, named by its position."""
    plans = []
    for n, question in enumerate(args.question, 1):
        try:
            plan = answerer.plan(
                question, k=args.k, mode=args.mode, max_new_tokens=args.max_new_tokens
            )
        except UserError as err:
            raise for_question(err, n, len(args.question)) from None
        plans.append(plan)
    return plans


def _run_ask(args) -> int:
    check_counts(args.k, args.max_new_tokens)
    resolve_gate(args)
    check_questions(args.question)  # all of them, before a model loads or one is answered
    if args.sources_only:
        show = retrieval_only(args)
        for n, question in enumerate(args.question):
            if not args.json and len(args.question) > 1:  # each answer under its own question
                print(f"{chr(10) if n else ''}Q: {printable(question)}")
            show(question)
        return 0
    answerer = _session(args)  # loaded once for every question
    plans = _plan_all(answerer, args)
    for n, (question, plan) in enumerate(zip(args.question, plans)):
        if not args.json and len(args.question) > 1:
            print(f"{chr(10) if n else ''}Q: {printable(question)}\nA: ", end="", flush=True)
        stream = None if args.json else AnswerPrinter()
        result = answerer.answer(plan, args.max_new_tokens, stream)
        if args.json:  # one JSON line per question, in order
            print(
                json_line(
                    {**result.fields(), "sources": [public(s) for s in result.sources_shown()]}
                )
            )
        else:
            print()
            print_how(result)
            print_sources(result.sources_shown(), closed=result.mode == "closed")
    return 0


LEAVE_WORDS = frozenset({"exit", "quit", "sair"})
"""What ends a chat, in any case, with or without a leading slash (the course's users write
Portuguese: "sair")."""


def _run_chat(args) -> int:
    from amazon_sft.answering.chat_input import read_question

    if args.sources_only:
        show, answerer = retrieval_only(args, "chat"), None
    else:
        answerer = _session(args)
    print("Ask about a product (Ctrl-D, 'exit' or 'sair' to quit).")
    if hasattr(sys.stdin, "reconfigure"):  # bytes that are not UTF-8: U+FFFD, not a traceback
        sys.stdin.reconfigure(errors="replace")
    while (line := read_question()) is not None:
        question = line.strip()
        if question.lower().lstrip("/") in LEAVE_WORDS:
            break
        if not question:
            continue
        try:
            check_question_length(question)
            if answerer is None:
                show(question)
            else:
                result = _answer(answerer, args, question, AnswerPrinter())
                print()
                print_how(result)
                print_sources(result.sources_shown(), closed=result.mode == "closed")
        except UserError as err:  # one line, and the conversation goes on
            print(f"amazon-sft chat: {err}")
            continue
        print()
    return 0


def _run_serve(args) -> int:
    from amazon_sft.answering import serve as serving
    from amazon_sft.answering import serve_socket

    if args.max_queue < 0:
        raise UserError(f"--max-queue must be >= 0, got {args.max_queue}")
    serving.check_default_tokens(args.max_new_tokens)  # before minutes of loading the model
    serve_socket.check_port(args.port)
    serve_socket.check_host(args.host)
    serving.check_default_k(args.k)
    load = _checked_session(args, serving=True)
    with serve_socket.listen(args.host, args.port) as sock:  # the port is ours before the load
        answerer = load()
        print(f"serving on {serve_socket.address(sock)}  (API: POST /api/ask)")
        hosts = (*serving.LOCAL_HOSTS, args.host, *args.allowed_host)
        app = serving.create_app(
            answerer,
            args.max_new_tokens,
            allowed_hosts=hosts,
            max_queue=args.max_queue,
            default_k=args.k,
        )
        serve_socket.serve(app, sock)
    return 0


def _run_export(args) -> int:
    from amazon_sft.answering.export import export_model

    result = export_model(
        args.run_dir, args.out, model_overrides(args), args.dtype, overwrite=args.overwrite
    )
    print(
        f"exported {result['source']} to {result['out']} (merge against the model as trained: "
        f"max logit difference {result['merge_logit_diff']:.2e}; the saved files reloaded: "
        f"{result['max_logit_diff']:.2e})"
    )
    return 0
