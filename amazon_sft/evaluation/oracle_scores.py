"""Oracle-context scoring (``amazon-sft eval`` without ``--questions``): each answer's outcomes,
the split's means, each figure's interval and the paired change between two models. The one
rule for a citation is end to end's (``end_to_end.closer_to_another``, whole sentences of the
asked record exempt), so both modes count an answer alike."""

from __future__ import annotations

import math

import numpy as np

from amazon_sft.answering.sure import whole_sentences_of
from amazon_sft.evaluation import metrics as M
from amazon_sft.evaluation.end_to_end import closer_to_another
from amazon_sft.evaluation.end_to_end_types import Change
from amazon_sft.evaluation.items import EvalItem
from amazon_sft.evaluation.report import SHOWN
from amazon_sft.prompts import cited_uids, is_abstention, strip_citations


def summarise(items: list[EvalItem], scored: dict) -> tuple[dict, dict]:
    """(metrics, per-example vectors for the bootstrap). Grounded answers are scored without
    their citations, and the citations on their own."""
    refs = [it.reference for it in items]
    preds = [strip_citations(p) for p in scored["answers"]]
    vec = {
        **M.rouge_scores(preds, refs),
        "chrf": M.chrf_scores(preds, refs),
        "eos_rate": [float(e) for e in scored["eos"]],
        "empty_rate": [float(not p) for p in preds],
        "loop_rate": [float(M.is_loop(p) and not e) for p, e in zip(preds, scored["eos"])],
        "length_ratio": [M.length_ratio(p, r) for p, r in zip(preds, refs)],
        "perplexity": [list(x) for x in scored["nll"]],
        **grounded_vectors(items, scored["answers"]),
    }
    nll = np.array(vec["perplexity"], dtype=float)
    summary = {k: float(np.mean(v)) for k, v in vec.items() if k != "perplexity"}
    summary["perplexity"] = math.exp(nll[:, 0].sum() / nll[:, 1].sum())
    summary["bleu"] = M.corpus_bleu(preds, refs)
    return summary, vec


def grounded_vectors(items: list[EvalItem], answers: list[str]) -> dict[str, list[float]]:
    """Per-example citation and abstention outcomes (empty for closed-book items):

    - citation_accuracy: the answer cites the asked product's uid (once or more) and no other,
      does not abstain, and does not quote another record (as end to end's ``score_answer``);
    - wrong_record_cited: it does not abstain and cites another record than the asked one, or
      cites one while its text is closer (ROUGE-L, by more than ``end_to_end.QUOTE_MARGIN``)
      to a record of the context it does not cite (it quotes one product and credits another):
      as end to end counts it;
    - false_abstention: it says the product is missing when its record was there;
    - cites_nothing: none of those (it cites nothing and does not abstain: an empty answer, a
      description without its citation), so the four add up to each answer;
    - abstention_accuracy (right record left out): it says the product is missing.
    """
    if items and items[0].absent:  # its context may be empty: nothing else was retrieved
        return {"abstention_accuracy": [float(is_abstention(a)) for a in answers]}
    if not items or not items[0].context:  # closed-book (a grounded item shows its record)
        return {}
    cited, wrong, abstained, nothing = [], [], [], []
    for it, answer in zip(items, answers):
        uids = cited_uids(answer)
        abstains = is_abstention(answer)  # whatever it cites after saying the product is missing
        abstained.append(float(abstains))
        nothing.append(float(not uids and not abstains))
        if not uids or abstains:
            wrong.append(0.0)
            cited.append(0.0)
            continue
        overlap = M.rouge_scores(
            [strip_citations(answer)] * len(it.context), [r.description for r in it.context]
        )["rougeL"]
        # clearly closer to a record it does not cite (as end to end's ``quotes_another``): a
        # bare citation overlaps none, and argmax of all zeros named the first record
        credited = max((o for o, r in zip(overlap, it.context) if r.uid in uids), default=0.0)
        others = [o for o, r in zip(overlap, it.context) if r.uid not in uids]
        # whole sentences of the asked record (an attribute's answer) quote no other record,
        # however close a shorter one holding the same sentence is: end to end's exemption
        quotes = closer_to_another(credited, others) and not whole_sentences_of(
            strip_citations(answer), it.reference
        )
        is_wrong = set(uids) != {it.uid} or quotes
        wrong.append(float(is_wrong))
        cited.append(float(not is_wrong))  # the asked uid, once or more, and nothing else
    return {
        "citation_accuracy": cited,
        "wrong_record_cited": wrong,
        "false_abstention": abstained,
        "cites_nothing": nothing,
    }


ROW_SCORES = (
    "rougeL",
    "eos_rate",
    "empty_rate",
    "loop_rate",
    "citation_accuracy",
    "wrong_record_cited",
    "false_abstention",
    "cites_nothing",
    "abstention_accuracy",
)
"""Per-answer outcomes each row of answers.jsonl carries, as the report's means count them (an
outside audit could not recount the EOS and loop rates). Perplexity, a ratio of sums over the
reference's tokens, is the split's only."""
RATES = frozenset(
    {
        "eos_rate",
        "empty_rate",
        "loop_rate",
        "citation_accuracy",
        "wrong_record_cited",
        "false_abstention",
        "cites_nothing",
        "abstention_accuracy",
    }
)
"""Per-example yes/no outcomes: their interval is Wilson's (the bootstrap gives 20 of 20 the
point [1, 1])."""


def figure_intervals(vec: dict, seed: int) -> dict[str, list[float]]:
    """Each figure's own 95% interval, [low, high]: Wilson's for a rate, the percentile
    bootstrap's for a score (ROUGE, chrF, length ratio) and for perplexity (a ratio of sums).
    BLEU, a corpus statistic, has its interval only as a paired delta (``compare``)."""
    out = {}
    for key, values in vec.items():
        if key.startswith("_") or key not in SHOWN:
            continue
        if key in RATES:
            _, low, high = M.share_interval(values)
        elif key == "perplexity":
            _, low, high = M.bootstrap_interval(values, seed=seed, statistic=_ppl)
        else:
            _, low, high = M.bootstrap_interval(values, seed=seed)
        out[key] = [low, high]
    return out


def compare(rows: list[EvalItem], base: dict, tuned: dict, seed: int) -> dict[str, Change]:
    """Tuned minus base of every metric, with its 95% interval: Newcombe's paired score
    interval for a rate, the paired bootstrap for a score."""
    out = {}
    for key in SHOWN:
        if key not in base and key != "bleu":  # a grounded-only metric, closed-book split
            continue
        if key == "bleu":
            refs = [it.reference for it in rows]
            delta, lo, hi = M.bleu_bootstrap(base["_preds"], tuned["_preds"], refs, seed)
        elif key == "perplexity":
            delta, lo, hi = M.paired_bootstrap(base[key], tuned[key], seed=seed, statistic=_ppl)
        elif key in RATES:  # the bootstrap gives 0 of 20 before and after the point [0, 0]
            delta, lo, hi = M.paired_rate_interval(base[key], tuned[key])
        else:
            delta, lo, hi = M.paired_bootstrap(base[key], tuned[key], seed=seed)
        out[key] = Change(delta, lo, hi)
    return out


def _ppl(nll: np.ndarray) -> float:
    return math.exp(nll[:, 0].sum() / nll[:, 1].sum())
