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

The converse, ``--quote-when-sure`` (with the gate on): when the first record *is* that many
times ahead, retrieval is sure the product is there, and it is rarely wrong: on the real dev
questions at 1.4 the gate let 96 of the 101 questions about a product through, and the first
record was the asked product for all 96. So the answer must then be about the first record: the
model's answer stands when it cites that record; one that declines, copies another shown record
or cites none is replaced by the first record as training taught the answer (its description
cut as shown, then its citation); one that copies the first record's text but cites another
keeps its text and cites the first (``answer_when_sure``). While it streams, the answer is held
back until it is seen to follow the first record (``HeldForFirstRecord``), so a user never sees
text that is then replaced. The cost: behind the gate the citation is retrieval's choice, not
the model's, and an absent product that gets past the gate is quoted (docs/results.md).
"""

from __future__ import annotations

import torch

from amazon_sft.answering.index import Source
from amazon_sft.prompts import ABSTENTIONS, citation, cited_uids, grounded_answer
from amazon_sft.tokenizer import hf_encoder


def retrieval_doubtful(sources: list[Source], abstain_below: float) -> bool:
    """True when the gate is on and the first record's score is under ``abstain_below`` times
    the second's, or nothing was retrieved. One record alone has no rival: not doubtful.

    >>> s = lambda score: Source("u", "t", "c", score)
    >>> retrieval_doubtful([s(2.0), s(1.0)], 1.3), retrieval_doubtful([s(1.2), s(1.0)], 1.3)
    (False, True)
    >>> retrieval_doubtful([s(1.2), s(1.0)], 0.0), retrieval_doubtful([s(0.5)], 1.3)
    (False, False)
    >>> retrieval_doubtful([], 1.3), retrieval_doubtful([], 0.0)
    (True, False)
    """
    if abstain_below <= 0:
        return False
    if not sources:
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


def retrieval_sure(sources: list[Source], abstain_below: float) -> bool:
    """True when the gate is on and lets the question through: a first record to quote.

    >>> s = lambda score: Source("u", "t", "c", score)
    >>> retrieval_sure([s(2.0), s(1.0)], 1.3), retrieval_sure([s(1.2), s(1.0)], 1.3)
    (True, False)
    >>> retrieval_sure([s(2.0), s(1.0)], 0.0), retrieval_sure([], 1.3)
    (False, False)
    """
    return abstain_below > 0 and bool(sources) and not retrieval_doubtful(sources, abstain_below)


FOLLOW_CHARS = 24
"""Characters (spaces not counted) of an answer that must be found in the first record's shown
description before the answer is taken to follow it: about four words, past any common opening
("The", "This book") that several records share."""


def _squeezed(text: str) -> str:
    """Spaces dropped and case folded: decoding may space punctuation differently."""
    return "".join(text.split()).casefold()


def follows(answer_text: str, shown: str) -> bool:
    """True when the answer's text so far is a passage of ``shown`` (the first record's
    description as the prompt showed it), at least ``FOLLOW_CHARS`` long.

    >>> shown = "A soft plush bear for new babies. Machine washable, for ages 0 and up."
    >>> follows("A soft plush bear for new babies", shown)
    True
    >>> follows("Machine washable, for ages 0 and up.", shown)
    True
    >>> follows("A soft plush", shown), follows("A wooden train set for toddlers", shown)
    (False, False)
    """
    text = _squeezed(answer_text)
    return len(text) >= FOLLOW_CHARS and text in _squeezed(shown)


def answer_when_sure(text: str, first_uid: str, shown: str) -> tuple[str, bool]:
    """The answer when retrieval is sure of its first record, and whether it was replaced: the
    model's when it cites that record (alone); its text re-cited when it follows that record but
    cites another or none; else the record as training taught the answer.

    >>> shown = "A soft plush bear for new babies. Machine washable."
    >>> answer_when_sure("A soft plush bear for new babies.\\n[source: B1]", "B1", shown)
    ('A soft plush bear for new babies.\\n[source: B1]', False)
    >>> answer_when_sure("A soft plush bear for new babies.\\n[source: B2]", "B1", shown)
    ('A soft plush bear for new babies.\\n[source: B1]', True)
    >>> answer_when_sure("The catalogue has no record of this product.", "B1", shown)
    ('A soft plush bear for new babies. Machine washable.\\n[source: B1]', True)
    """
    if cited_uids(text) == [first_uid]:
        return text, False
    body = text.split("[source:", 1)[0].rstrip()
    if follows(body, shown):
        return f"{body}\n{citation(first_uid)}", True
    return grounded_answer(shown, first_uid, "en"), True


class HeldForFirstRecord:
    """Passes streamed pieces on to ``on_text`` once the text so far ``follows`` the first
    record; until then (an abstention, another record's text, a paraphrase) everything is held,
    and so is a citation, which may still be corrected. ``finish`` passes on what the final
    answer adds to what was shown, so the stream is always the final answer.

    >>> shown, out = "A soft plush bear for new babies. Machine washable.", []
    >>> held = HeldForFirstRecord(out.append, shown)
    >>> for piece in ["The", " catalogue has no", " record"]: held(piece)
    >>> out
    []
    >>> held.finish("A soft plush bear for new babies. Machine washable.\\n[source: B1]")
    >>> "".join(out)
    'A soft plush bear for new babies. Machine washable.\\n[source: B1]'
    >>> out = []
    >>> held = HeldForFirstRecord(out.append, shown)
    >>> for piece in ["A soft", " plush bear", " for new babies.", "\\n[source:", " B2]"]:
    ...     held(piece)
    >>> out
    ['A soft plush bear for new babies.']
    >>> held.finish("A soft plush bear for new babies.\\n[source: B1]"); "".join(out)
    'A soft plush bear for new babies.\\n[source: B1]'
    """

    def __init__(self, on_text, shown: str) -> None:
        self.on_text = on_text
        self.shown = shown
        self.held: list[str] = []
        self.passed = ""
        self.passing = False

    def __call__(self, piece: str) -> None:
        if self.passing and not self.held and "[" not in piece:
            self.passed += piece
            self.on_text(piece)
            return
        self.held.append(piece)
        if not self.passing and follows("".join(self.held), self.shown):
            self.passing = True
            self.passed, self.held = "".join(self.held), []
            self.on_text(self.passed)

    def finish(self, answer: str) -> None:
        """The answer is final: pass on what it adds to what was shown (the answer is built
        to start with it: ``answer_when_sure`` keeps the text that follows the first record)."""
        lead = self.passed.lstrip()
        rest = answer[len(lead) :] if answer.startswith(lead) else answer
        if rest:
            self.on_text(rest)
        self.held = []
