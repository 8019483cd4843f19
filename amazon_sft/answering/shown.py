"""What ``ask`` and ``chat`` print: the streamed answer, how it was made, its sources, and the
records alone (``--sources-only``)."""

from __future__ import annotations

from amazon_sft.answering.gate import check_no_quote, for_mode, resolve_gate
from amazon_sft.answering.option_checks import check_counts
from amazon_sft.errors import UserError
from amazon_sft.terminal import json_line, one_line, printable


class AnswerPrinter:
    """Prints a streamed answer's pieces, without control characters (model output is data)
    and without its leading white space: a model's empty answer streamed blank lines before
    ``print_how`` said it was empty. One a question."""

    def __init__(self) -> None:
        self.started = False

    def __call__(self, text: str) -> None:
        if not self.started:
            text = text.lstrip()
            if not text:
                return
            self.started = True
        print(printable(text), end="", flush=True)


def print_how(result) -> None:
    """Say when the gate, not the model, wrote the answer (answering/doubt.py, answering/sure.py)."""
    if result.doubtful:
        print(f"(abstained without generating: retrieval was not sure: {one_line(result.doubt)}; "
              "the gate, --abstain-below; --gate off asks the model anyway)")  # fmt: skip
    elif result.quoted:
        print(
            "(the first record's answer: retrieval was sure, and the model's answer did not give "
            "it (it declined, cited another record or none, or cited it without copying its "
            "description): the gate's --quote-when-sure; --no-quote-when-sure keeps the model's)"
        )
    elif not result.answer.strip():  # else a run of blank lines reads as a hang or a bug
        print("(the model's answer is empty: it wrote only white space)")
    unretrieved = getattr(result, "cited_unretrieved", None)
    if unretrieved:
        uids = ", ".join(one_line(u) for u in unretrieved)
        print(f"(the answer cites {uids}: not a record retrieval returned, so not a source)")


def print_sources(sources: list[dict], closed: bool = False) -> None:
    """The records retrieved for a question; ``closed``: a closed-book answer, whose model was
    given none of them (an invented answer above a plain "Sources:" read as sourced)."""
    if closed:
        print("\nNearest catalogue records (closed-book: the model was given no records):")
    else:
        print("\nSources:")
    if not sources:
        print("  (no catalogue product matched the question)")
    for s in sources:
        match = (
            f", answer ROUGE-L vs its description {s['answer_rougeL']:.2f}"
            if "answer_rougeL" in s
            else ""
        )
        mark = {True: "cited ", False: "unused"}.get(s.get("cited"), "")
        mark = f"{mark} " if mark else ""
        uid, title = one_line(str(s["uid"])), one_line(s["title"])  # a newline forged a line
        meaning = (
            f": words {s['words_score']:.2f}, meaning cosine {s['cosine']:.2f}"
            if s.get("cosine") is not None
            else ""
        )
        print(f"  {mark}[{uid}] {title} (retrieval score {s['score']:.2f}{meaning}{match})")


def retrieval_only(args, command: str = "ask"):
    """``--sources-only`` for ask and chat: a function printing one question's records (and,
    what the gate would do unless ``--gate off``), the index opened once, no model."""
    from amazon_sft.answering.ask import default_mode, sources_only
    from amazon_sft.answering.commands import index_for, model_overrides
    from amazon_sft.answering.doubt import GATE_RECORDS, doubt_reason
    from amazon_sft.answering.index import Source
    from amazon_sft.answering.question_text import normalise_question
    from amazon_sft.evaluation import loading

    check_counts(args.k, args.max_new_tokens)
    gate = resolve_gate(args)
    check_no_quote(args)  # given by the user (the gate's own quote is for answers)
    cfg = None
    if args.mode is None and args.model:  # the model's own mode, as ask answers in it
        try:
            cfg = loading.run_config_for(args.model, model_overrides(args))
        except UserError:  # a run still training: with --index, its sources all the same
            if not args.index:
                raise
    if (args.mode or (cfg and default_mode(cfg.data))) == "closed":
        gate = for_mode(gate, "closed", args)  # a closed-book answer has no gate to report
    abstain_below, meaning = gate.abstain_below, gate.meaning_weight
    index = index_for(args, meaning, cfg)  # --index, else the folder --model was trained on

    def show(question: str) -> None:
        k = args.k or 3
        found = sources_only(question, index, max(k, GATE_RECORDS))  # as plan_answer reads
        sources = found[:k]
        # the gate reads retrieval only: say what a grounded answer would do, from the question
        # as the answer reads it (no soft hyphens, zero-width spaces)
        read = normalise_question(question)
        doubt = doubt_reason([Source(**s) for s in found], abstain_below, read)
        if getattr(args, "json", False):
            gate = {"doubtful": doubt is not None, "doubt": doubt} if abstain_below else {}
            print(json_line({"question": read, **gate, "sources": [public(s) for s in sources]}))
            return
        if doubt:
            print(
                f"Retrieval is not sure (--abstain-below {abstain_below}): {one_line(doubt)}; "
                f"{command} abstains."
            )
        elif abstain_below and sources:
            alone = "; only one record matched: no second to be ahead of" if len(found) == 1 else ""
            print(
                f"Retrieval is sure (--abstain-below {abstain_below}{alone}): {command} answers "
                "from the first record."
            )
        print_sources(sources)

    return show


def public(source: dict) -> dict:
    """A source as ``ask --json`` and ``serve`` give it: whether the answer cited it included.

    >>> public({"uid": "B01", "title": "t", "score": 1.0, "cited": False, "internal": 3})
    {'uid': 'B01', 'title': 't', 'score': 1.0, 'cited': False}
    """
    keys = ("uid", "title", "score", "words_score", "cosine", "answer_rougeL", "cited")
    return {k: source[k] for k in keys if k in source}
