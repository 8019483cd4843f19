"""Answer one question: retrieve the product, prompt as in training, stream the answer, cite sources.

The default answers from what fine-tuning taught the model: the prompt is the training prompt of
the best-matching title (phrasing 0), so the model is asked exactly what it learned to answer.
``grounded`` instead puts the retrieved description into the prompt (retrieval-augmented).
Every answer lists its sources (uid, title, retrieval score) and how closely the answer matches
each source's description (ROUGE-L), so a user sees when the model invents.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from transformers import StoppingCriteria

from amazon_sft.answering.index import CatalogueIndex, Source
from amazon_sft.data.encode import SpecialTextScrubber
from amazon_sft.errors import UserError
from amazon_sft.evaluation.metrics import rouge_scores
from amazon_sft.prompts import PromptFormat
from amazon_sft.tokenizer import choose_pad_id, hf_encoder

MAX_QUESTION_CHARS = 2000


@dataclass
class Answer:
    question: str
    answer: str
    sources: list[dict]
    prompt: str


def build_prompt(fmt: PromptFormat, question: str, sources: list[Source], grounded: bool) -> str:
    if not sources:
        return fmt.wrap(question)
    if grounded:
        context = "\n".join(f"- {s.title}: {s.content}" for s in sources[:1])
        return fmt.wrap(f"{question}\n\nCatalogue record:\n{context}")
    return fmt.render(sources[0].title, 0)


def clean_question(question: str, tok) -> str:
    """The user's text as it may enter a prompt: whitespace collapsed, length capped, and any
    special-token text ("<|im_end|>", "</s>") removed, so a question can never close the user
    turn or open a system one (product text is scrubbed the same way at prepare time)."""
    return normalise_question(SpecialTextScrubber(tok)(question))


def normalise_question(question: str) -> str:
    """Whitespace collapsed and length capped; an empty question is refused."""
    question = " ".join(question.split())[:MAX_QUESTION_CHARS]
    if not question:
        raise UserError("the question is empty: ask about a product, e.g. 'Tell me about <title>'")
    return question


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


def answer_question(
    question: str,
    model,
    tok,
    fmt: PromptFormat,
    index: CatalogueIndex,
    *,
    k: int = 3,
    grounded: bool = False,
    max_new_tokens: int = 128,
    on_text: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
) -> Answer:
    """Retrieve, generate (streaming pieces of text to ``on_text``), and score against sources.
    ``cancel``: set it to stop generating (what there is so far is returned)."""
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    question = clean_question(question, tok)
    sources = index.search(question, k)
    prompt = build_prompt(fmt, question, sources, grounded)
    ids = fmt.bos + hf_encoder(tok)([prompt])[0]
    context = context_length(model)
    if context is not None and len(ids) + max_new_tokens > context:
        raise UserError(
            f"max_new_tokens={max_new_tokens} does not fit: the model's context is {context} "
            f"tokens and the prompt takes {len(ids)}; ask for at most {max(context - len(ids), 0)}"
        )
    device = next(model.parameters()).device
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    kwargs = {
        "input_ids": torch.tensor([ids], device=device),
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "streamer": streamer,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": choose_pad_id(tok),
        "stopping_criteria": StoppingCriteriaList([Cancelled(cancel or threading.Event())]),
    }
    thread = threading.Thread(target=model.generate, kwargs=kwargs, daemon=True)
    thread.start()
    pieces = []
    for piece in streamer:
        pieces.append(piece)
        if on_text:
            on_text(piece)
    thread.join()
    text = "".join(pieces).strip()
    described = [asdict(s) for s in sources]
    if sources:
        overlap = rouge_scores([text] * len(sources), [s.content for s in sources])["rougeL"]
        for d, r in zip(described, overlap):
            d["answer_rougeL"] = round(r, 3)
    return Answer(question, text, described, prompt)


@dataclass
class Answerer:
    """What answering needs, loaded once: the model, its tokenizer and prompt format, the index."""

    model: object
    tok: object
    fmt: PromptFormat
    index: CatalogueIndex

    def __call__(
        self,
        question: str,
        *,
        k: int = 3,
        grounded: bool = False,
        max_new_tokens: int = 128,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Answer:
        return answer_question(
            question,
            self.model,
            self.tok,
            self.fmt,
            self.index,
            k=k,
            grounded=grounded,
            max_new_tokens=max_new_tokens,
            on_text=on_text,
            cancel=cancel,
        )


def sources_only(question: str, index: CatalogueIndex, k: int = 3) -> list[dict]:
    return [asdict(s) for s in index.search(normalise_question(question), k)]
