"""``amazon-sft eval --questions FILE``: free-form questions asked through the very ``Answerer``
that ``ask``, ``chat`` and ``serve`` use, and scored end to end.

    amazon-sft eval --data DIR --compare config:smollm2-135m runs/smollm2 --questions q.jsonl

The oracle-context splits (``items.py``) hand the model the right record under the exact title;
here each question goes through the real path: ``index.search`` on what the shopper typed, the
``k`` records it returns cut as in training, the model's answer. Every answer is scored on what
a shopper gets (``score_answer``): the right record cited, a wrong one cited, an abstention, and
for questions about products that are not in the catalogue, whether it abstained; plus ROUGE-L
of the answer against the description when the right record was cited, and whether retrieval
had the product first (recall@1) or among the ``k`` records (recall@k).

The question file and the catalogue it asks about: ``question_file``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from amazon_sft.answering.answer_source import AnswerSource
from amazon_sft.answering.index import Source
from amazon_sft.evaluation import metrics as M
from amazon_sft.evaluation.end_to_end_types import Change, Figure, GroupFigures
from amazon_sft.evaluation.question_file import ShopperQuestion
from amazon_sft.evaluation.question_products import Product, WithoutRows
from amazon_sft.prompts import cited_uids, is_abstention, strip_citations


@dataclass(frozen=True)
class Outcome:
    """One answer, scored. Retrieval fields are False for absent questions (never counted)."""

    absent: bool
    right: bool
    """It cites the asked product's uid and no other, a uid retrieval returned, and its text is
    not another shown record's (``quotes_another``)."""
    wrong: bool
    """It cites some other uid, one retrieval did not return, or another record's text under
    the asked uid (for an absent question: any uid)."""
    abstained: bool
    """It says the catalogue has no such product."""
    rouge_l: float
    """ROUGE-L F1 of the answer (citations stripped) against the description when ``right``,
    else NaN."""
    top1: bool
    """Retrieval returned the asked product first."""
    topk: bool
    """Retrieval returned it among the ``k`` records in the prompt."""
    own: bool = False
    """``right``, and the model's own answer: not the first record quoted by the gate
    (``quoted``, ``--quote-when-sure``), which cites the same record whatever the model."""


QUOTE_MARGIN = 0.1
"""ROUGE-L by which an answer must be closer to another shown record than to the one it cites
to count as quoting that other record (series twins share most of a description)."""


def quotes_another(sources: list[AnswerSource], cited: str) -> bool:
    """The answer's text is another shown record's, under ``cited``'s citation (a new user's
    walkthrough: *The Lion Wakes*' review cited as *The Butterfly Lion*, ROUGE-L 0.20 against
    0.04, was scored right): by the answer's ROUGE-L against each source's description.

    >>> quotes_another([_shown("a", 0.2), _shown("b", 0.04)], "b")
    True
    >>> quotes_another([_shown("a", 0.9), _shown("b", 0.85)], "b")
    False
    """
    own = next((s.answer_rougeL for s in sources if s.uid == cited), None)
    others = [s.answer_rougeL for s in sources if s.uid != cited and s.answer_rougeL is not None]
    return own is not None and closer_to_another(own, others)


def _shown(uid: str, answer_rougeL: float | None = None) -> AnswerSource:
    """A source as the doctests here need one: its uid and the answer's ROUGE-L against it."""
    return AnswerSource(Source(uid, "", "", 0.0), answer_rougeL)


def closer_to_another(credited: float, others: list[float]) -> bool:
    """The one rule, end to end and with oracle context: an answer quotes another record when
    its ROUGE-L against one it does not cite beats the one it credits by ``QUOTE_MARGIN`` (a
    bare citation overlaps nothing, so it quotes nothing).

    >>> closer_to_another(0.04, [0.2]), closer_to_another(0.85, [0.9]), closer_to_another(0.0, [0.0])
    (True, False, False)
    >>> closer_to_another(0.3, [])
    False
    """
    return max(others, default=0.0) > credited + QUOTE_MARGIN


def _sentences_of_asked(answer: str, question: ShopperQuestion, products: dict) -> bool:
    """The answer (citations aside) is whole sentences of the asked product's description."""
    from amazon_sft.answering.sure import whole_sentences_of

    asked = products.get(question.uid)
    return asked is not None and whole_sentences_of(strip_citations(answer), asked.content)


def score_answer(question: ShopperQuestion, answer, products: dict[str, Product]) -> Outcome:
    """Score one ``ask`` answer (``answering.ask.Answer``: its text and the sources retrieved).

    >>> from amazon_sft.answering.ask import Answer
    >>> q = ShopperQuestion("mogs kitens", "7", None, "typo", "real", 1)
    >>> shown = [_shown("9"), _shown("7")]
    >>> products = {"7": Product("7", "A cat has kittens.", "seen")}
    >>> score_answer(q, Answer(q.text, "A cat has kittens. [source: 7]", shown, "", "grounded", ["7"]), products)
    Outcome(absent=False, right=True, wrong=False, abstained=False, rouge_l=1.0, top1=False, topk=True, own=True)
    >>> score_answer(q, Answer(q.text, "A cat has kittens. [source: 7]", shown[:1], "", "grounded", []), products).wrong
    True
    >>> quoted = Answer(q.text, "A cat has kittens. [source: 7]", shown, "", "grounded", ["7"], quoted=True)
    >>> (score_answer(q, quoted, products).right, score_answer(q, quoted, products).own)
    (True, False)
    >>> quoting = [_shown("9", 0.8), _shown("7", 0.1)]
    >>> score_answer(q, Answer(q.text, "A dog. [source: 7]", quoting, "", "grounded", ["7"]), products).wrong
    True

    Citing the right record and another is wrong; citing nothing is neither (a mutation audit):

    >>> both = Answer(q.text, "A cat has kittens. [source: 7] [source: 9]", shown, "", "grounded", ["7", "9"])
    >>> score_answer(q, both, products).wrong
    True
    >>> bare = score_answer(q, Answer(q.text, "A cat has kittens.", shown, "", "grounded", []), products)
    >>> (bare.right, bare.wrong, bare.abstained)
    (False, False, False)

    Whole sentences of the asked record, cited (an attribute question's answer), quote no other
    record, however close a shorter record holding the same sentence is by ROUGE-L (a review):

    >>> told = {"7": Product("7", "A long family saga by the sea. Written by Ana Lopes.", "seen")}
    >>> short = [_shown("9", 0.86), _shown("7", 0.27)]
    >>> score_answer(q, Answer(q.text, "Written by Ana Lopes. [source: 7]", short, "", "grounded", ["7"]), told).right
    True
    """
    uids = cited_uids(answer.answer)
    retrieved = [s.uid for s in answer.sources]
    # a uid retrieval did not return is no source (``cited_unretrieved``): wrong, even the asked one
    # an answer that says the product is not there is an abstention, whatever it cites after
    abstained = is_abstention(answer.answer)
    wrong = any(u != question.uid or u not in retrieved for u in uids)
    wrong = not abstained and (
        wrong
        or (
            bool(uids)
            and quotes_another(answer.sources, question.uid)
            and not _sentences_of_asked(answer.answer, question, products)
        )
    )
    right = bool(uids) and not wrong and not abstained
    rouge_l = math.nan
    if right:
        plain = strip_citations(answer.answer)
        rouge_l = M.rouge_scores([plain], [products[question.uid].content])["rougeL"][0]
    present = not question.absent
    return Outcome(
        question.absent,
        right,
        wrong,
        abstained,
        rouge_l,
        present and retrieved[:1] == [question.uid],
        present and question.uid in retrieved,
        right and not getattr(answer, "quoted", False),
    )


def ask_all(
    answerer,
    questions,
    products,
    removals,
    k: int,
    max_new_tokens: int,
    desc: str = "",
    batch_size: int = 1,
    source: str = "question file",
):
    """(answers, outcomes): every question through ``answerer`` (``ask``'s ``Answerer``), the
    index without the removed product for a question that takes one out. ``batch_size`` > 1
    generates the answers the gate lets through in batches (answering/answer_many.py); 1 asks
    one question at a time, exactly as ``ask`` does. A progress bar on stderr (``desc``); an
    error about one question names it as ``source`` line N."""
    from amazon_sft.answering.answer_many import answer_many

    items = [
        (q.text, WithoutRows(answerer.index, removals[q.removed]) if q.removed else None)
        for q in questions
    ]
    answers = answer_many(
        answerer, items, k=k, mode="grounded", max_new_tokens=max_new_tokens,
        batch_size=batch_size, desc=desc, names=[f"{source} line {q.line}" for q in questions],
    )  # fmt: skip
    return answers, [score_answer(q, a, products) for q, a in zip(questions, answers)]


# name -> (label, per-outcome (numerator, denominator)): every figure is a ratio of sums over the
# questions of a group that count in its denominator, so its bootstrap resamples questions and
# recomputes the ratio.
METRICS: dict[str, tuple[str, Callable[[Outcome], tuple[float, bool]]]] = {
    "right_record_cited": ("right record cited", lambda o: (o.right, not o.absent)),
    # behind the gate's quote the citation is retrieval's: this row is what the model did itself
    "right_own_answer": (
        "right record cited by the model's own answer",
        lambda o: (o.own, not o.absent),
    ),
    "wrong_record_cited": ("wrong record cited", lambda o: (o.wrong, not o.absent)),
    "false_abstention": ("false abstention", lambda o: (o.abstained, not o.absent)),
    # with the three above, every answer about a product (a review: a model that never cites
    # showed "wrong 0.000" and no row said where its answers went)
    "cited_nothing": (
        "cites no record, no abstention",
        lambda o: (not (o.right or o.wrong or o.abstained), not o.absent),
    ),
    "right_when_retrieved": (
        "right record cited, when retrieved",
        lambda o: (o.right, o.topk),
    ),
    "abstention_recall": (
        "abstention recall (absent products)",
        lambda o: (o.abstained, o.absent),
    ),
    "abstention_precision": (
        "abstention precision",
        lambda o: (o.abstained and o.absent, o.abstained),
    ),
    "cited_when_absent": ("cites a record, product absent", lambda o: (o.wrong, o.absent)),
    "rougeL_when_right": (
        "ROUGE-L vs description, right cited",
        lambda o: (o.rouge_l if o.right else 0.0, o.right),
    ),
    "recall_at_1": ("retrieval recall@1", lambda o: (o.top1, not o.absent)),
    "recall_at_k": ("retrieval recall@k", lambda o: (o.topk, not o.absent)),
}
MEANS = {"rougeL_when_right"}
"""The metrics that average a score; every other one is a rate of yes/no outcomes."""
NOT_IN_CATALOGUE = "products not in the catalogue"


def product_group(q: ShopperQuestion, products: dict[str, Product]) -> str:
    """The report's group of the product ``q`` asks about: "held-out products", "seen
    products", "untaught products", or ``NOT_IN_CATALOGUE``."""
    named = q.uid or q.removed
    return f"{products[named].group} products" if named else NOT_IN_CATALOGUE


def question_groups(
    questions: list[ShopperQuestion], products: dict[str, Product]
) -> dict[str, list[int]]:
    """Report group -> indices of its questions: all, per kind, per product group (held-out,
    seen, untaught, or not in the catalogue at all), per source when there are two."""
    out: dict[str, list[int]] = {"all": list(range(len(questions)))}
    for i, q in enumerate(questions):
        out.setdefault(f"kind {q.kind}", []).append(i)
    for i, q in enumerate(questions):
        out.setdefault(product_group(q, products), []).append(i)
    if len({q.source for q in questions}) > 1:
        for i, q in enumerate(questions):
            out.setdefault(f"source {q.source}", []).append(i)
    return out


def metric_pairs(outcomes: list[Outcome]) -> dict[str, np.ndarray]:
    """Metric -> (questions, 2) array of (numerator, denominator); a question outside the
    denominator adds nothing to the numerator either."""
    out = {}
    for name, (_, f) in METRICS.items():
        pairs = np.array([f(o) for o in outcomes], dtype=float).reshape(-1, 2)
        pairs[:, 0] *= pairs[:, 1] > 0
        out[name] = pairs
    return out


def summarise(
    outcomes: list[Outcome], groups: dict[str, list[int]], seed: int = 0
) -> dict[str, GroupFigures]:
    """Group -> its questions and each metric's figure with a 95% interval (Wilson's for a
    rate, the bootstrap's for a mean of ``MEANS``) and denominator. A metric with nothing to
    count in a group (no absent question, no abstention) is left out."""
    pairs = metric_pairs(outcomes)
    out = {}
    for group, idx in groups.items():
        row: dict[str, Figure] = {}
        for name, values in pairs.items():
            sub = values[idx]
            if not sub[:, 1].sum():
                continue
            if name in MEANS:
                v, lo, hi = M.bootstrap_interval(sub, seed=seed, statistic=M.ratio_of_sums)
            else:  # a rate of yes/no outcomes: 0 of n is no proof of a rate of 0
                v, lo, hi = M.wilson_interval(sub[:, 0].sum(), sub[:, 1].sum())
            row[name] = Figure(float(v), float(lo), float(hi), of=int(sub[:, 1].sum()))
        out[group] = GroupFigures(n=len(idx), figures=row)
    return out


def compare(
    base: list[Outcome], tuned: list[Outcome], groups: dict[str, list[int]], seed: int = 0
) -> dict[str, dict[str, Change]]:
    """Group -> metric -> tuned minus base and its 95% interval: Newcombe's paired score
    interval for a rate over the same questions, else the paired bootstrap (the same
    questions resampled for both)."""
    before, after = metric_pairs(base), metric_pairs(tuned)
    out = {}
    for group, idx in groups.items():
        row = {}
        for name in METRICS:
            b, a = before[name][idx], after[name][idx]
            if not (b[:, 1].sum() and a[:, 1].sum()):
                continue
            counted = b[:, 1] == 1
            binary = np.isin(np.concatenate([b, a]), (0, 1)).all()
            if name not in MEANS and binary and (b[:, 1] == a[:, 1]).all():
                # a rate over the same questions for both: Newcombe's paired interval (the
                # bootstrap gives 0 of n before and after the point [0, 0])
                d, lo, hi = M.paired_rate_interval(b[counted, 0], a[counted, 0])
            else:  # a mean, or a rate over each model's own questions (abstention precision)
                d, lo, hi = M.paired_bootstrap(b, a, seed=seed, statistic=M.ratio_of_sums)
            row[name] = Change(float(d), float(lo), float(hi))
        out[group] = row
    return out
