"""Answer metrics: ROUGE (rouge-score, stemmed), BLEU and chrF (sacrebleu), loops, lengths, and the
paired bootstrap for before/after deltas.

rouge-score is called directly: ``evaluate.load("rouge")`` fetches a script from the hub.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")
LOOP_NGRAM = 4  # words
LOOP_REPEATS = 3  # an n-gram seen this often marks a repetition loop


def rouge_scores(predictions: list[str], references: list[str]) -> dict[str, list[float]]:
    """Per-example ROUGE-1/2/L F1 with Porter stemming.

    >>> rouge_scores(["the cat is on the mat"], ["the cat sat on the mat"])["rougeL"]
    [0.8333333333333334]
    """
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    out: dict[str, list[float]] = {k: [] for k in ROUGE_KEYS}
    for pred, ref in zip(predictions, references):
        scores = scorer.score(ref, pred)
        for k in ROUGE_KEYS:
            out[k].append(scores[k].fmeasure)
    return out


def chrf_scores(predictions: list[str], references: list[str]) -> list[float]:
    import sacrebleu

    return [sacrebleu.sentence_chrf(p, [r]).score for p, r in zip(predictions, references)]


def corpus_bleu(predictions: list[str], references: list[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_bleu(predictions, [references]).score)


def is_loop(text: str, n: int = LOOP_NGRAM, repeats: int = LOOP_REPEATS) -> bool:
    """True when some word n-gram occurs ``repeats`` times or more: the answer is looping.

    >>> is_loop("a great book a great book a great book a great book"), is_loop("a great book")
    (True, False)
    """
    words = text.lower().split()
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return bool(grams) and max(grams.values()) >= repeats


def length_ratio(prediction: str, reference: str) -> float:
    return len(prediction.split()) / max(1, len(reference.split()))


def paired_bootstrap(
    before: np.ndarray, after: np.ndarray, n_resamples: int = 1000, seed: int = 0, statistic=np.mean
) -> tuple[float, float, float]:
    """(delta, low, high): ``statistic(after) - statistic(before)`` and its 95% percentile interval
    over resamples of the same example indices for both (the pairing is what makes it tight).

    >>> d, lo, hi = paired_bootstrap(np.zeros(50), np.ones(50))
    >>> (d, lo, hi)
    (1.0, 1.0, 1.0)
    """
    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(before), size=(n_resamples, len(before)))
    deltas = np.array([statistic(after[i]) - statistic(before[i]) for i in idx])
    lo, hi = _percentiles(deltas)
    return float(statistic(after) - statistic(before)), lo, hi


def bootstrap_interval(
    values: np.ndarray, n_resamples: int = 1000, seed: int = 0, statistic=np.mean
) -> tuple[float, float, float]:
    """(value, low, high): ``statistic(values)`` and its 95% percentile interval over resamples
    of the examples (rows of ``values``).

    >>> bootstrap_interval(np.ones(30))
    (1.0, 1.0, 1.0)
    """
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_resamples, len(values)))
    lo, hi = _percentiles(np.array([statistic(values[i]) for i in idx]))
    return float(statistic(values)), lo, hi


def ratio_of_sums(pairs: np.ndarray) -> float:
    """``sum(numerator) / sum(denominator)`` of (numerator, denominator) rows; NaN when no row
    counts (a rate over a subset a resample may leave empty: abstention precision when nothing
    abstained).

    >>> ratio_of_sums(np.array([[1, 1], [0, 1], [0, 0]])), ratio_of_sums(np.zeros((2, 2)))
    (0.5, nan)
    """
    den = pairs[:, 1].sum()
    return float(pairs[:, 0].sum() / den) if den else float("nan")


def _percentiles(draws: np.ndarray) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the draws that are defined (NaN when none is)."""
    draws = draws[~np.isnan(draws)]
    if not len(draws):
        return float("nan"), float("nan")
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return float(lo), float(hi)


def bleu_bootstrap(before: list[str], after: list[str], refs: list[str], seed: int, n: int = 200):
    """Corpus BLEU has no per-example value: resample the (before, after, reference) triples."""
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(n):
        idx = rng.integers(0, len(refs), len(refs)).tolist()
        r = [refs[j] for j in idx]
        deltas.append(
            corpus_bleu([after[j] for j in idx], r) - corpus_bleu([before[j] for j in idx], r)
        )
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    return corpus_bleu(after, refs) - corpus_bleu(before, refs), float(lo), float(hi)
