"""Answer metrics: ROUGE (rouge-score, stemmed), BLEU and chrF (sacrebleu), loops, lengths, and
their 95% intervals: Wilson's for a rate, the bootstrap for a score, and for before/after deltas
Newcombe's paired interval (a rate) or the paired bootstrap (a score).

rouge-score is called directly: ``evaluate.load("rouge")`` fetches a script from the hub.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")
LOOP_NGRAM = 4  # words
LOOP_REPEATS = 3  # an n-gram seen this often marks a repetition loop


_WORD = re.compile(r"[^\W_]+")
"""A word of any script: letters and digits (rouge-score's default keeps only [a-z0-9])."""


def rouge_words(text: str) -> list[str]:
    """ROUGE's words: rouge-score's default tokens for ASCII text (lower case, Porter stemming of
    words over 3 letters), but a word of any script is one word. The default dropped Cyrillic
    text whole (every overlap 0, so an answer quoting another record was not caught) and cut
    "ação" into "a", "o" (an outside review).

    >>> rouge_words("Running dogs don't bark"), rouge_words("O livro não é ação")
    (['run', 'dog', 'don', 't', 'bark'], ['o', 'livro', 'não', 'é', 'ação'])
    """
    from nltk.stem import porter

    global _STEMMER
    if _STEMMER is None:
        _STEMMER = porter.PorterStemmer()
    words = _WORD.findall(text.lower())
    return [_STEMMER.stem(w) if len(w) > 3 and w.isascii() else w for w in words]


_STEMMER = None


def rouge_scores(predictions: list[str], references: list[str]) -> dict[str, list[float]]:
    """Per-example ROUGE-1/2/L F1 over ``rouge_words`` (Porter stemming).

    >>> rouge_scores(["the cat is on the mat"], ["the cat sat on the mat"])["rougeL"]
    [0.8333333333333334]
    """
    from rouge_score import rouge_scorer, tokenizers

    class _Words(tokenizers.Tokenizer):
        def tokenize(self, text: str) -> list[str]:
            return rouge_words(text)

    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), tokenizer=_Words())
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
    """True when some word n-gram occurs ``repeats`` times or more, or a run of up to 8
    characters repeats 12 times in a row (128 dots are one "word": a new user's tuned model
    answered nothing else, at a loop rate of 0): the answer is looping.

    >>> is_loop("a great book a great book a great book a great book"), is_loop("a great book")
    (True, False)
    >>> is_loop("." * 128), is_loop("Vol. 1-10 (1990s) ... the end.")
    (True, False)
    """
    if _CHARACTER_LOOP.search(text):
        return True
    words = text.lower().split()
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return bool(grams) and max(grams.values()) >= repeats


_CHARACTER_LOOP = re.compile(r"(.{1,8}?)\1{11,}", re.DOTALL)


def length_ratio(prediction: str, reference: str) -> float:
    return len(prediction.split()) / max(1, len(reference.split()))


MIN_BOOTSTRAP_EXAMPLES = 10
"""Fewer examples and a bootstrap gives no interval: resamples of 2 titles collapse to a point
(``eval --n 2`` printed "+0.0000 [+0.0000, +0.0000]", the false certainty the Wilson interval
replaced for rates; an outside review)."""


def counted_examples(values: np.ndarray) -> int:
    """The examples a figure is over: every one of a vector; of (numerator, denominator) rows
    (``ratio_of_sums``), those with a denominator. ROUGE-L over the 5 right answers of 60
    questions is over 5 (an outside review: it printed "1.000 [1.000, 1.000] (of 5)").

    >>> counted_examples(np.ones(4)), counted_examples(np.array([[1, 1], [0, 0], [0.5, 1]]))
    (4, 2)
    """
    values = np.asarray(values)
    return int((values[:, 1] != 0).sum()) if values.ndim == 2 else len(values)


def paired_bootstrap(
    before: np.ndarray, after: np.ndarray, n_resamples: int = 1000, seed: int = 0, statistic=np.mean
) -> tuple[float, float, float]:
    """(delta, low, high): ``statistic(after) - statistic(before)`` and its 95% percentile interval
    over resamples of the same example indices for both (the pairing is what makes it tight).

    >>> d, lo, hi = paired_bootstrap(np.zeros(50), np.ones(50))
    >>> (d, lo, hi)
    (1.0, 1.0, 1.0)
    >>> paired_bootstrap(np.zeros(2), np.ones(2))  # 2 examples: no interval, not [1, 1]
    (1.0, nan, nan)
    """
    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if min(counted_examples(before), counted_examples(after)) < MIN_BOOTSTRAP_EXAMPLES:
        return float(statistic(after) - statistic(before)), float("nan"), float("nan")
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
    if counted_examples(values) < MIN_BOOTSTRAP_EXAMPLES:
        return float(statistic(values)), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_resamples, len(values)))
    lo, hi = _percentiles(np.array([statistic(values[i]) for i in idx]))
    return float(statistic(values)), lo, hi


WILSON_Z = 1.959964
"""The standard normal's 97.5th percentile: a 95% interval."""


def wilson_interval(successes: float, n: float) -> tuple[float, float, float]:
    """(rate, low, high): ``successes / n`` and its 95% Wilson score interval. For a rate of
    yes/no outcomes, where the percentile bootstrap gives 0 of n the point interval [0, 0]
    (every resample is 0) though n questions cannot show a rate under ~3.8/n.

    >>> [round(x, 4) for x in wilson_interval(0, 72)]
    [0.0, 0.0, 0.0507]
    >>> [round(x, 4) for x in wilson_interval(377, 438)]
    [0.8607, 0.8252, 0.89]
    """
    rate, z2 = successes / n, WILSON_Z**2
    centre = (rate + z2 / (2 * n)) / (1 + z2 / n)
    half = WILSON_Z * np.sqrt(rate * (1 - rate) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends, not 1e-17 off
    high = 1.0 if successes == n else min(1.0, centre + half)
    return float(rate), float(low), float(high)


def paired_rate_interval(before, after) -> tuple[float, float, float]:
    """(delta, low, high): ``mean(after) - mean(before)`` of yes/no outcomes on the same
    examples, with Newcombe's hybrid score interval for paired proportions (1998, method 10,
    no continuity correction): each rate's Wilson interval, joined through their correlation.
    The paired bootstrap gives 0 of 20 before and after the point [0, 0], and a 20-of-20
    change [-1, -1]: the false certainty Wilson's interval replaced for the rates themselves.

    >>> [round(x, 3) for x in paired_rate_interval([0] * 20, [0] * 20)]
    [0.0, -0.161, 0.161]
    >>> [round(x, 3) for x in paired_rate_interval([1] * 20, [0] * 20)]
    [-1.0, -1.0, -0.772]

    Fagerland, Lydersen & Laake's worked example (Cavo 2012: 59 both, 6 and 16 one only, 80
    neither) gives -0.0621 (-0.1186, -0.0046):

    >>> before = [1] * 59 + [1] * 16 + [0] * 6 + [0] * 80
    >>> after = [1] * 59 + [0] * 16 + [1] * 6 + [0] * 80
    >>> [round(x, 4) for x in paired_rate_interval(before, after)]
    [-0.0621, -0.1186, -0.0046]
    """
    b, a = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if not (np.isin(b, (0.0, 1.0)).all() and np.isin(a, (0.0, 1.0)).all()) or len(a) != len(b):
        raise ValueError("paired_rate_interval takes yes/no outcomes of the same examples")
    n = len(a)
    p1, l1, u1 = wilson_interval(b.sum(), n)
    p2, l2, u2 = wilson_interval(a.sum(), n)
    both, only_before = float((a * b).sum()), float(((1 - a) * b).sum())
    only_after, neither = float((a * (1 - b)).sum()), float(((1 - a) * (1 - b)).sum())
    margins = (both + only_before) * (only_after + neither) * (both + only_after)
    margins *= only_before + neither
    # Newcombe's phi: the cross product less n/2 when it is over n/2, 0 up to n/2 (method 10)
    cross = both * neither - only_before * only_after
    cross = cross - n / 2 if cross > n / 2 else 0.0 if cross >= 0 else cross
    phi = cross / np.sqrt(margins) if margins else 0.0
    delta = p2 - p1
    low = delta - np.sqrt(
        max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2)
    )
    high = delta + np.sqrt(
        max(0.0, (u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2)
    )
    return float(delta), float(max(-1.0, low)), float(min(1.0, high))


def paired_change(before, after) -> tuple[float, float, float]:
    """(delta, low, high) of ``mean(after) - mean(before)`` on the same examples: Newcombe's
    interval (``paired_rate_interval``) for yes/no outcomes, the paired bootstrap for scores.
    The bench scripts' bootstrap put 3 of 438 gained, none lost, at [+0.000, +0.016] and no change
    at [0, 0]: an outside review.

    >>> [round(x, 3) for x in paired_change([0] * 435 + [0] * 3, [0] * 435 + [1] * 3)]
    [0.007, -0.003, 0.02]
    >>> round(paired_change([0.2] * 20, [0.3] * 20)[0], 3)  # scores: the bootstrap
    0.1
    """
    b, a = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if len(b) == 0:  # no question the column applies to
        return float("nan"), float("nan"), float("nan")
    if np.isin(b, (0.0, 1.0)).all() and np.isin(a, (0.0, 1.0)).all():
        return paired_rate_interval(b, a)
    return paired_bootstrap(b, a)


def share_interval(outcomes) -> tuple[float, float, float]:
    """(share, low, high) of yes/no outcomes (booleans or 0/1): ``wilson_interval`` of them.

    >>> [round(x, 3) for x in share_interval([True, False, True, True])]
    [0.75, 0.301, 0.954]
    """
    values = np.asarray(outcomes, dtype=float)
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError("share_interval takes yes/no outcomes; bootstrap_interval takes scores")
    return wilson_interval(values.sum(), len(values))


def ratio_of_sums(pairs: np.ndarray) -> float:
    """``sum(numerator) / sum(denominator)`` of (numerator, denominator) rows; NaN when no row
    counts (a rate over a subset a resample may leave empty: abstention precision when nothing
    abstained).

    >>> ratio_of_sums(np.array([[1, 1], [0, 1], [0, 0]])), ratio_of_sums(np.zeros((2, 2)))
    (0.5, nan)
    """
    den = pairs[:, 1].sum()
    return float(pairs[:, 0].sum() / den) if den else float("nan")


MAX_UNDEFINED_SHARE = 0.05
"""More resamples than this without a value (a rate whose denominator a resample left empty)
and the interval is NaN: one from the rest would be an interval on the resamples that happened
to include the rare questions, read as if whole."""


def has_interval(low: float | None, high: float | None) -> bool:
    """Whether an interval is defined (None in report.json, NaN in memory when not).

    >>> has_interval(0.1, 0.2), has_interval(None, None), has_interval(float("nan"), 1.0)
    (True, False, False)
    """
    return low is not None and high is not None and not (np.isnan(low) or np.isnan(high))


def interval_text(low, high, digits: int = 3, signed: bool = False) -> str:
    """An interval as a report prints it; NaN ends (``_percentiles``; ``null`` once read back
    from report.json) say why there is none.

    >>> interval_text(0.1, 0.25), interval_text(-0.01, 0.2, 4, signed=True)
    ('[0.100, 0.250]', '[-0.0100, +0.2000]')
    >>> interval_text(float("nan"), float("nan")) == interval_text(None, None)
    True
    >>> interval_text(None, None)
    '[no interval: too few examples or resamples define it]'
    """
    if not has_interval(low, high):
        return "[no interval: too few examples or resamples define it]"
    spec = f"{'+' if signed else ''}.{digits}f"
    return f"[{low:{spec}}, {high:{spec}}]"


def _percentiles(draws: np.ndarray) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the draws, NaN when over ``MAX_UNDEFINED_SHARE`` of
    them are undefined."""
    defined = draws[~np.isnan(draws)]
    if len(defined) < (1 - MAX_UNDEFINED_SHARE) * len(draws) or not len(defined):
        return float("nan"), float("nan")
    draws = defined
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return float(lo), float(hi)


def bleu_bootstrap(before: list[str], after: list[str], refs: list[str], seed: int, n: int = 200):
    """Corpus BLEU has no per-example value: resample the (before, after, reference) triples
    (no interval under ``MIN_BOOTSTRAP_EXAMPLES``, as the other metrics).

    >>> bleu_bootstrap(["a b c d"], ["a b c d"], ["a b c d"], seed=0)[1:]
    (nan, nan)
    """
    delta = corpus_bleu(after, refs) - corpus_bleu(before, refs)
    if len(refs) < MIN_BOOTSTRAP_EXAMPLES:
        return delta, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(n):
        idx = rng.integers(0, len(refs), len(refs)).tolist()
        r = [refs[j] for j in idx]
        deltas.append(
            corpus_bleu([after[j] for j in idx], r) - corpus_bleu([before[j] for j in idx], r)
        )
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    return delta, float(lo), float(hi)
