"""Many questions at once, for ``eval --questions``: each planned as ``ask`` plans it (retrieval
as typed, the gate, the prompt: ``ask.plan_answer``), those the gate lets through generated in
batches (``evaluation.generation``: length-sorted, left-padded, greedy, the KV cache), each
finished as ``ask`` finishes it (``ask.finish_answer``: quoting when sure, citations).

One at a time, the demo's tuned SmolLM2 answered its 31 questions in 201 s on 2 cores, in
batches of 8 in 88 s (2.3x; bench/end_to_end_batched.py, docs/benchmarks.md). Left padding changes the float rounding, so a greedy answer can
differ from ``ask``'s in a near tie; ``batch_size=1`` is ``ask``'s own path, exactly.
"""

from __future__ import annotations

import dataclasses

from amazon_sft.answering.ask import Answer, Answerer, finish_answer
from amazon_sft.answering.doubt import gate_abstention
from amazon_sft.answering.index import CatalogueIndex
from amazon_sft.errors import UserError
from amazon_sft.evaluation.generation import Decoding, generate_answers
from amazon_sft.tokenizer import choose_pad_id


def answer_many(
    answerer: Answerer,
    items: list[tuple[str, CatalogueIndex | None]],
    *,
    k: int | None,
    mode: str,
    max_new_tokens: int,
    batch_size: int = 8,
    desc: str = "",
    names: list[str] | None = None,
) -> list[Answer]:
    """The answer to each (question, index) of ``items``, in order; an index of None is the
    answerer's own (eval passes one without the asked product for an absent-product question).
    ``names``: where each question comes from ("q.jsonl line 7"), put before its error (a
    prompt over the model's context) so that the one to change is named."""
    if batch_size <= 1:  # ask's own path (Answerer.__call__), one question at a time
        from tqdm import tqdm

        return [
            _named(
                names,
                i,
                dataclasses.replace(answerer, index=index) if index is not None else answerer,
                question,
                k=k,
                mode=mode,
                max_new_tokens=max_new_tokens,
            )
            for i, (question, index) in enumerate(
                tqdm(items, desc=desc, unit="question", disable=not desc)
            )
        ]
    plans = [
        _named(
            names, i, answerer.plan, question, k=k, mode=mode, max_new_tokens=max_new_tokens,
            index=index,
        )
        for i, (question, index) in enumerate(items)
    ]  # fmt: skip
    model, tok = answerer.model, answerer.tok
    texts: list[str] = [
        gate_abstention(model, tok, p.ids, p.question) if p.doubt is not None else "" for p in plans
    ]
    todo = [i for i, p in enumerate(plans) if p.doubt is None]
    decoding = Decoding(max_new_tokens=max_new_tokens, batch_size=batch_size)
    made = generate_answers(
        model, tok, [plans[i].ids for i in todo], decoding, choose_pad_id(tok), desc=desc
    )
    for i, generated in zip(todo, made):
        texts[i] = generated.text
    return [finish_answer(p, text) for p, text in zip(plans, texts)]


def _named(names: list[str] | None, i: int, call, *args, **kwargs):
    """``call(*args, **kwargs)``, its one-line error prefixed with where question ``i`` is from."""
    try:
        return call(*args, **kwargs)
    except UserError as err:
        if names is None:
            raise
        raise UserError(f"{names[i]}: {err}") from None
