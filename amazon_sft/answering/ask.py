"""Answer one question: retrieve products, prompt as in training, stream the answer, cite sources.

Two modes, each asking exactly what training taught:

- ``grounded`` (the default for a model trained with grounded examples): the user's question
  with the ``context_records`` best-matching catalogue records, cut as in training; the model
  quotes the right record and cites it as ``[source: uid]``, or says the catalogue has no such
  product. The citation is checked against the records shown: each source says whether the
  answer cited it.
- ``closed``: the training prompt of the best-matching title (phrasing 0), answered from what
  fine-tuning taught; nothing in the prompt but the title.

Every answer lists its sources (uid, title, retrieval score) and how closely the answer matches
each source's description (ROUGE-L), so a user sees when the model invents.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria

from amazon_sft.answering.answer_source import AnswerSource
from amazon_sft.answering.doubt import (
    GATE_RECORDS,
    doubt_rule,
    gate_abstention,
    retrieval_sure,
)
from amazon_sft.answering.index import CatalogueIndex, Source
from amazon_sft.answering.question_text import clean_question, does_not_fit, normalise_question
from amazon_sft.answering.record_prompts import build_prompt, shown_description
from amazon_sft.answering.sure import HeldForFirstRecord, answer_when_sure
from amazon_sft.chat_templates import plain_text_of
from amazon_sft.config import DataConfig
from amazon_sft.errors import RequestError
from amazon_sft.evaluation.generation import (
    Decoding,
    greedy_config,
    own_settings_only,
    stop_ids,
)
from amazon_sft.evaluation.metrics import rouge_scores
from amazon_sft.prompts import (
    PromptFormat,
    cited_uids,
    strip_citations,
)
from amazon_sft.tokenizer import choose_pad_id, hf_encoder

MODES = ("grounded", "closed")


@dataclass
class Answer:
    question: str
    answer: str
    """What the model wrote, citations included."""
    sources: list[AnswerSource]
    """The retrieved records, best first, with the answer's ROUGE-L against each and, in
    grounded mode, whether it cites each."""
    prompt: str
    mode: str
    cited: list[str]
    """The uids the answer cites (grounded mode)."""
    doubtful: bool = False
    """Retrieval was not sure the product is there (``abstain_below``): the answer is the
    abstention, not generated; the model only chose its language (answering/doubt.py)."""
    quoted: bool = False
    """With ``quote_when_sure``: retrieval was sure of its first record (``abstain_below``)
    and the model's answer did not cite it (it declined, or followed another record or none),
    so the answer is that record as training taught it (its description cut as shown, then its
    citation; the model's opening kept as far as it copied it): not the model's own
    (answering/sure.py)."""
    doubt: str | None = None
    """Why retrieval was not sure, in words for the shopper (``doubt.doubt_reason``); None when
    it was."""
    cited_unretrieved: list[str] = field(default_factory=list)
    """Uids the answer's text cites that retrieval did not return (made up, or copied): not
    sources, not in ``cited``; eval scores such a citation wrong, the asked uid's too."""
    doubt_rule: str | None = None
    """The gate's rule that found ``doubt`` (``doubt.RULES``): eval counts each apart."""

    def sources_shown(self) -> list[dict]:
        """The sources as ``ask --json``, the API and the stream's last event say them."""
        return [s.shown() for s in self.sources]

    def fields(self) -> dict:
        """What ``ask --json``, the API and the stream's last event say besides the sources
        (each shows those its own way): the prompt is the text the model was given, as
        rendered, to send an exported model elsewhere as it was trained."""
        return {
            "answer": self.answer,
            "mode": self.mode,
            "cited": self.cited,
            "cited_unretrieved": self.cited_unretrieved,
            "doubtful": self.doubtful,
            "doubt": self.doubt,
            "quoted": self.quoted,
            "prompt": self.prompt,
        }


def default_mode(data: DataConfig) -> str:
    """Grounded when the model was trained with grounded examples, else closed-book."""
    return "grounded" if data.grounded_fraction > 0 else "closed"


def context_length(model) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None)


class Cancelled(StoppingCriteria):
    """A stopping criterion that ends generation when ``event`` is set (the client went away)."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__()
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


@dataclass
class Planned:
    """A question made ready for the model (``plan_answer``): what it retrieved, the gate's
    verdict and the prompt. ``answer_planned`` generates after it one question at a time;
    ``answer_many`` (eval) many at once."""

    question: str
    """As cleaned for the prompt (``clean_question``)."""
    sources: list[Source]
    prompt: str
    ids: list[int]
    """The prompt's token ids, BOS first."""
    mode: str
    doubt: str | None
    """Why retrieval was not sure (the answer is then the abstention, not generated)."""
    sure: bool
    """``quote_when_sure`` and retrieval sure of its first record: the answer must cite it."""
    shown: str
    """The first record's description as the prompt shows it (when ``sure``)."""
    sent: str = ""
    """``prompt`` as the text of ``ids``: BOS's text first when the format puts one before it
    (a plain format, then a space where a SentencePiece tokenizer needs one:
    ``chat_templates.plain_text_of``), so a server given it without special tokens added gets
    the same ids."""
    doubt_rule: str | None = None
    """The gate's rule that found ``doubt`` (``doubt.RULES``)."""


def plan_answer(
    question: str,
    model,
    tok,
    fmt: PromptFormat,
    index: CatalogueIndex,
    data: DataConfig,
    *,
    k: int | None = None,
    mode: str | None = None,
    max_new_tokens: int = 128,
    abstain_below: float = 0.0,
    quote_when_sure: bool = False,
) -> Planned:
    """Retrieve, ask the gate, render the prompt and check it fits the model's context."""
    mode = mode or default_mode(data)
    if mode not in MODES:
        raise RequestError(f"mode must be one of {MODES}, got {mode!r}")
    question = clean_question(question, tok, fmt)
    k = k or (data.context_records if mode == "grounded" else 3)
    found = index.search(question, max(k, GATE_RECORDS))  # the gate reads two at least
    sources = found[:k]
    prompt = build_prompt(fmt, tok, data, question, sources, mode)
    ids = fmt.bos + hf_encoder(tok)([prompt])[0]
    context = context_length(model)
    shown_records = len(sources) if mode == "grounded" else 0  # closed book shows none
    if context is not None and len(ids) + max_new_tokens > context:
        raise RequestError(
            does_not_fit(tok, question, shown_records, len(ids), context, max_new_tokens)
        )
    doubted = doubt_rule(found, abstain_below, question) if mode == "grounded" else None
    rule, doubt = doubted or (None, None)
    sure = (
        doubt is None
        and quote_when_sure
        and mode == "grounded"
        and retrieval_sure(found, abstain_below, question)
    )
    shown = shown_description(tok, data, sources[0], fmt) if sure else ""
    sent = plain_text_of(tok, prompt, ids) if fmt.bos else prompt
    return Planned(question, sources, prompt, ids, mode, doubt, sure, shown, sent, rule)


def finish_answer(plan: Planned, text: str, cancelled: bool = False) -> Answer:
    """The answer to a planned question from what the model wrote (or the abstention): the
    first record quoted when retrieval was sure and the model did not cite it, the citations,
    and each source's overlap with the answer."""
    quoted = False
    if plan.sure and not cancelled:  # cancelled: what there is, as it is
        text, quoted = answer_when_sure(text, plan.sources[0].uid, plan.shown)
    grounded = plan.mode == "grounded"
    # a citation is a record retrieval returned: a uid copied from elsewhere is said apart
    retrieved = {s.uid for s in plan.sources}
    written = cited_uids(text) if grounded else []
    cited = [u for u in written if u in retrieved]
    unretrieved = list(dict.fromkeys(u for u in written if u not in retrieved))
    overlap = []
    if plan.sources:
        contents = [s.content for s in plan.sources]
        overlap = rouge_scores([strip_citations(text)] * len(contents), contents)["rougeL"]
    described = [
        AnswerSource(s, round(r, 3), s.uid in cited if grounded else None)
        for s, r in zip(plan.sources, overlap)
    ]
    doubtful = plan.doubt is not None
    return Answer(
        plan.question,
        text,
        described,
        plan.sent or plan.prompt,
        plan.mode,
        cited,
        doubtful,
        quoted,
        plan.doubt,
        unretrieved,
        plan.doubt_rule,
    )


def answer_planned(
    plan: Planned,
    model,
    tok,
    max_new_tokens: int = 128,
    on_text: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
) -> Answer:
    """The answer to a planned question: the likeliest abstention when retrieval was not sure,
    else a greedy generation streamed to ``on_text`` (``cancel``: set it to stop; what there is
    so far is returned), then ``finish_answer``."""
    held = None
    if plan.doubt is not None:
        text = gate_abstention(model, tok, plan.ids, plan.question)
        if on_text:
            on_text(text)
    else:
        held = HeldForFirstRecord(on_text, plan.shown) if plan.sure and on_text else None
        text = _generate(model, tok, plan.ids, max_new_tokens, held or on_text, cancel)
    answer = finish_answer(plan, text, cancelled=bool(cancel and cancel.is_set()))
    if held:
        held.finish(answer.answer)
    return answer


def _generate(model, tok, ids: list[int], max_new_tokens: int, on_text, cancel) -> str:
    """Greedy generation after ``ids`` on a thread, its text streamed to ``on_text``."""
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    device = next(model.parameters()).device
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    prompt = torch.tensor([ids], device=device)
    kwargs = {
        "input_ids": prompt,
        "attention_mask": torch.ones_like(prompt),  # else generate masks any pad id it sees
        "generation_config": greedy_config(
            choose_pad_id(tok), Decoding(max_new_tokens=max_new_tokens), stop_ids(tok, model)
        ),
        "streamer": streamer,
        "stopping_criteria": StoppingCriteriaList([Cancelled(stop := cancel or threading.Event())]),
        **own_settings_only(model),
    }
    failure: list[BaseException] = []

    def generate() -> None:
        try:
            model.generate(**kwargs)
        except BaseException as err:  # out of memory...: end the stream, raise it below
            failure.append(err)  # (else the loop below waits for the stream's end forever,
            streamer.end()  # holding the server's model lock: every later request hangs)

    thread = threading.Thread(target=generate, daemon=True)
    thread.start()
    pieces = []
    try:
        for piece in streamer:
            pieces.append(piece)
            if on_text:
                on_text(piece)
    except BaseException:  # Ctrl-C, a closed pipe: generate left running on its thread was
        stop.set()  # aborted by torch as the interpreter exited (SIGABRT after "interrupted")
        while thread.is_alive():  # a second Ctrl-C while it stops must not leave it running
            with contextlib.suppress(KeyboardInterrupt):
                thread.join()
        raise
    thread.join()
    if failure:
        raise failure[0]
    return "".join(pieces).strip()


@dataclass
class Answerer:
    """What answering needs, loaded once: the model, its tokenizer and prompt format, the index."""

    model: object
    tok: object
    fmt: PromptFormat
    index: CatalogueIndex
    data: DataConfig
    """The run's data config: grounded settings and whether the model was taught them."""
    abstain_below: float = 0.0
    """Abstain without generating when retrieval's first record is under this many times the
    second's score (``--abstain-below``; 0: never). See answering/doubt.py."""
    quote_when_sure: bool = False
    """With the gate on: when retrieval is sure, the answer must cite its first record, else
    that record is quoted (``--quote-when-sure``). See answering/sure.py."""
    mode: str | None = None
    """The mode of a question asked without one (``--grounded`` / ``--closed-book``: serve's
    API requests and its page's first choice); None: the model's, ``default_mode``."""

    @property
    def default_mode(self) -> str:
        return self.mode or default_mode(self.data)

    def plan(
        self,
        question: str,
        *,
        k: int | None = None,
        mode: str | None = None,
        max_new_tokens: int = 128,
        index: CatalogueIndex | None = None,
    ) -> Planned:
        """``plan_answer`` with this answerer's model, gate and ``index`` unless another is given
        (eval passes one without the asked product for an absent-product question)."""
        return plan_answer(
            question, self.model, self.tok, self.fmt, self.index if index is None else index,
            self.data, k=k, mode=mode or self.default_mode, max_new_tokens=max_new_tokens,
            abstain_below=self.abstain_below, quote_when_sure=self.quote_when_sure,
        )  # fmt: skip

    def __call__(
        self,
        question: str,
        *,
        k: int | None = None,
        mode: str | None = None,
        max_new_tokens: int = 128,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Answer:
        """Retrieve, generate (streaming pieces of text to ``on_text``), and score against
        sources. ``k``: records retrieved (grounded default: as many as training showed);
        ``mode``: grounded or closed (default: ``default_mode``). ``cancel``: set it to stop
        generating. With ``abstain_below``, a grounded question is abstained on without
        generating when retrieval is not sure (doubt.py); with ``quote_when_sure`` too, the
        answer must cite the first record when it is (sure.py)."""
        plan = self.plan(question, k=k, mode=mode, max_new_tokens=max_new_tokens)
        return self.answer(plan, max_new_tokens, on_text, cancel)

    def answer(
        self,
        plan: Planned,
        max_new_tokens: int = 128,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Answer:
        """The answer to a question ``plan`` made ready (``answer_planned`` with this model):
        ``ask`` plans every question before it answers the first."""
        return answer_planned(plan, self.model, self.tok, max_new_tokens, on_text, cancel)


def sources_only(question: str, index: CatalogueIndex, k: int = 3) -> list[dict]:
    return [s.shown() for s in index.search(normalise_question(question), k)]
