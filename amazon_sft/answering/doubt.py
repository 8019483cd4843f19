"""Abstaining when retrieval is not sure (``--abstain-below RATIO``), before the model answers.

Measured on the real question sets (docs/results.md): whether the asked product is among the
records is told apart far better by retrieval than by the tuned 135M model. The ratio of the
first record's BM25 score to the second's separates questions about absent products from the
others with ROC AUC 0.93 on the test questions (0.92 dev), the model's own abstain-vs-answer
log-odds with 0.55. A BM25 score is not comparable across questions (it grows with the words
asked); its ratio within one question is: a product that is there stands out from the rest.

So when the first record is not ``abstain_below`` times ahead of the second, ``ask`` abstains
without generating; the model still picks the abstention's language (the likelier of
``prompts.ABSTENTIONS`` after the very prompt it would have answered), so a Portuguese question
is declined in Portuguese. Off (0) unless asked for: the threshold is chosen on dev questions.

One more sign that the first record is not the asked product, whatever its lead: its title
names numbers and none of them is one the question names ("Tolkien Calendar 2015" against
"Tolkien Calendar 2014: The Hobbit", 8.9 times ahead of the second on the real dev questions):
another year or volume of a series (``names_other_numbers``).

The converse, ``--quote-when-sure``: when the first record *is* that many times ahead, the
answer must cite it (answering/sure.py).
"""

from __future__ import annotations

import re

import torch

from amazon_sft.answering.index import Source
from amazon_sft.prompts import ABSTENTIONS
from amazon_sft.tokenizer import hf_encoder

NUMBER = re.compile(r"\d+")


def names_other_numbers(question: str, title: str) -> bool:
    """True when the question names a number (a year, a volume), the title names numbers too,
    and none of the question's is among them: another edition of a series. Numbers spelt out
    ("the second book") are not read.

    >>> names_other_numbers("Tolkien Calendar 2015", "Tolkien Calendar 2014: The Hobbit")
    True
    >>> names_other_numbers("killer su doku book 1", "The Times Killer Su Doku Book 15")
    True
    >>> names_other_numbers("pepys diary 1660", "The Diary of Samuel Pepys: 1660")
    False
    >>> names_other_numbers("Tolkien calendar", "Tolkien Calendar 2014"), names_other_numbers(
    ...     "a gift for my 9-year-old", "Paddington at Large")
    (False, False)
    """
    asked = set(NUMBER.findall(question))
    named = set(NUMBER.findall(title))
    return bool(asked) and bool(named) and not asked & named


def retrieval_doubtful(sources: list[Source], abstain_below: float, question: str = "") -> bool:
    """True when the gate is on and the first record's score is under ``abstain_below`` times
    the second's, its title names other numbers than the ``question`` (``names_other_numbers``),
    or nothing was retrieved. One record alone has no rival: not doubtful.

    >>> s = lambda score, title="t": Source("u", title, "c", score)
    >>> retrieval_doubtful([s(2.0), s(1.0)], 1.3), retrieval_doubtful([s(1.2), s(1.0)], 1.3)
    (False, True)
    >>> retrieval_doubtful([s(1.2), s(1.0)], 0.0), retrieval_doubtful([s(0.5)], 1.3)
    (False, False)
    >>> retrieval_doubtful([], 1.3), retrieval_doubtful([], 0.0)
    (True, False)
    >>> retrieval_doubtful([s(9.0, "Calendar 2014"), s(1.0)], 1.3, "calendar 2015")
    True
    """
    if abstain_below <= 0:
        return False
    if not sources:
        return True
    if names_other_numbers(question, sources[0].title):
        return True
    if len(sources) == 1:
        return False
    return sources[0].score < abstain_below * sources[1].score


@torch.no_grad()
def likeliest_abstention(model, tok, prompt_ids: list[int]) -> str:
    """The abstention (``prompts.ABSTENTIONS``, one per language taught) the model finds likeliest
    after ``prompt_ids``, each scored whole (its tokens, then EOS) as training taught it."""
    device = next(model.parameters()).device
    texts = list(ABSTENTIONS.values())
    best, best_logp = texts[0], -float("inf")
    for text, answer in zip(texts, hf_encoder(tok)(texts)):
        answer = [*answer, tok.eos_token_id]
        ids = torch.tensor([[*prompt_ids, *answer]], device=device)
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
        target = torch.tensor(answer, device=device)
        logp = torch.log_softmax(logits, -1).gather(1, target[:, None]).sum().item()
        if logp > best_logp:
            best, best_logp = text, logp
    return best


def retrieval_sure(sources: list[Source], abstain_below: float, question: str = "") -> bool:
    """True when the gate is on and lets the ``question`` through: a first record to quote.

    >>> s = lambda score: Source("u", "t", "c", score)
    >>> retrieval_sure([s(2.0), s(1.0)], 1.3), retrieval_sure([s(1.2), s(1.0)], 1.3)
    (True, False)
    >>> retrieval_sure([s(2.0), s(1.0)], 0.0), retrieval_sure([], 1.3)
    (False, False)
    """
    doubtful = retrieval_doubtful(sources, abstain_below, question)
    return abstain_below > 0 and bool(sources) and not doubtful
