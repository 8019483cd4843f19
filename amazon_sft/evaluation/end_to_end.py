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

The question file is JSON lines (``read_questions``)::

    {"question": "mogs kitens board book", "uid": "0001", "kind": "typo", "source": "real"}
    {"question": "do you sell a red kayak?", "uid": "absent", "kind": "absent"}
    {"question": "tell me about Mog's Kittens", "absent": "0001", "kind": "absent"}

``"uid": "absent"`` (or ``"absent": true``) asks about a product that does not exist;
``"absent": UID`` asks about a product that does exist, taken out of retrieval for that question
together with its twins (same normalised title or same description), so the right answer is
the abstention. Whether a product is held out or seen in training is read from the prepared
``catalogue.jsonl`` (a ``split`` field in the file is accepted and ignored).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from amazon_sft.answering.index import Source
from amazon_sft.answering.question_text import MAX_QUESTION_CHARS
from amazon_sft.data.reading import derived_uid
from amazon_sft.data.split import normalise_title
from amazon_sft.errors import UserError, reading
from amazon_sft.evaluation import metrics as M
from amazon_sft.prompts import cited_uids, is_abstention, strip_citations

SOURCES = ("real", "generated")
ABSENT = "absent"
CATALOGUE_SPLITS = {"heldout": "held-out", "train": "seen", "untaught": "untaught"}
"""The catalogue's ``split`` of a product -> its group in the report (``untaught``: kept in the
catalogue over ``data.max_train_products``, never taught)."""


@dataclass(frozen=True)
class ShopperQuestion:
    text: str
    uid: str | None
    """The product asked about; None when the right answer is the abstention."""
    removed: str | None
    """An existing product taken out of retrieval for this question (``"absent": UID``)."""
    kind: str
    source: str
    line: int

    @property
    def absent(self) -> bool:
        return self.uid is None


@dataclass(frozen=True)
class Product:
    uid: str
    content: str
    group: str
    """held-out, seen or untaught (``CATALOGUE_SPLITS``)."""


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


def read_questions(path: Path) -> list[ShopperQuestion]:
    """Every question of a JSON-lines file, each checked (one-line errors naming the line)."""
    if path.is_dir():
        raise UserError(f"--questions {path} is a folder: give a question file (JSON lines)")
    if not path.is_file():
        raise UserError(f"--questions {path}: no such file (JSON lines of question, uid, kind)")
    out = []
    with reading(path, "question file", "give a readable JSON-lines file"), open(path, "rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            if line_no == 1:
                line = line.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark, as prepare reads
            if line.strip():
                out.append(_question(line, f"{path} line {line_no}", line_no))
    if not out:
        raise UserError(f"--questions {path} holds no question")
    return out


def _question(line: bytes, where: str, line_no: int) -> ShopperQuestion:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise UserError(f"{where}: not valid JSON; write one JSON object a line") from None
    if not isinstance(row, dict):
        raise UserError(f"{where}: not a JSON object; write {{'question': ..., 'uid': ...}}")
    text, kind = row.get("question"), row.get("kind")
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"{where}: 'question' must be non-empty text")
    if (chars := len(" ".join(text.split()))) > MAX_QUESTION_CHARS:
        raise UserError(
            f"{where}: 'question' is {chars} characters; at most {MAX_QUESTION_CHARS} (what ask "
            "takes): shorten it"
        )
    if not isinstance(kind, str) or not kind.strip():
        raise UserError(f"{where}: 'kind' must be non-empty text (partial, typo, ...)")
    source = row.get("source", "generated")
    if source not in SOURCES:
        raise UserError(f"{where}: 'source' must be one of {SOURCES}, got {source!r}")
    uid, absent = row.get("uid"), row.get("absent", False)
    if uid is None and isinstance(row.get("title"), str) and row["title"]:
        uid = derived_uid(row["title"])  # a real row keyed by its title: prepare's derived uid
    if uid is not None and (not isinstance(uid, str) or not uid):
        raise UserError(f"{where}: 'uid' must be a product's uid or {ABSENT!r}, got {uid!r}")
    if absent is not True and absent is not False and not (isinstance(absent, str) and absent):
        raise UserError(f"{where}: 'absent' must be true or the uid taken out, got {absent!r}")
    if isinstance(absent, str) and uid not in (None, ABSENT, absent):
        raise UserError(f"{where}: 'uid' {uid!r} and 'absent' {absent!r} disagree; give one")
    if uid is None and absent is False:
        raise UserError(f"{where}: needs 'uid' (the product asked about, or {ABSENT!r})")
    if absent is False and uid != ABSENT:
        return ShopperQuestion(text, uid, None, kind, source, line_no)
    removed = absent if isinstance(absent, str) else (uid if uid not in (None, ABSENT) else None)
    return ShopperQuestion(text, None, removed, kind, source, line_no)


def read_products(
    catalogue: Path, questions: list[ShopperQuestion]
) -> tuple[dict[str, Product], dict[str, frozenset[int]]]:
    """(uid -> product for every uid the questions name, removed uid -> the catalogue rows to
    take out of retrieval: the product and its twins). Two streaming passes over
    ``catalogue.jsonl`` (the second only when a question removes a product), keeping only the
    products asked about: memory grows with the questions, not the catalogue."""
    named = {q.uid for q in questions if q.uid} | {q.removed for q in questions if q.removed}
    products: dict[str, Product] = {}
    rows: dict[str, int] = {}
    keys: dict[str, tuple[str, str]] = {}
    for i, rec in enumerate(_records(catalogue)):
        uid = str(rec["uid"])
        if uid in named and uid not in products:
            group = CATALOGUE_SPLITS.get(rec.get("split", "train"), "seen")
            products[uid] = Product(uid, rec["content"], group)
            rows[uid] = i
            keys[uid] = (normalise_title(rec["title"]), rec["content"])
    removed = {q.removed for q in questions if q.removed and q.removed in products}
    twins: dict[str, set[int]] = {uid: {rows[uid]} for uid in removed}
    if removed:
        by_title = {keys[u][0]: u for u in removed}
        by_text = {keys[u][1]: u for u in removed}
        for i, rec in enumerate(_records(catalogue)):
            for uid in (by_title.get(normalise_title(rec["title"])), by_text.get(rec["content"])):
                if uid:
                    twins[uid].add(i)
    return products, {uid: frozenset(r) for uid, r in twins.items()}


def _records(catalogue: Path):
    redo = "re-run amazon-sft prepare (it writes catalogue.jsonl)"
    with reading(catalogue, "catalogue", redo), open(catalogue, "rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                raise UserError(f"{catalogue} line {line_no} is cut or corrupt: {redo}") from None


def keep_answerable(
    questions: list[ShopperQuestion], products: dict[str, Product]
) -> tuple[list[ShopperQuestion], list[ShopperQuestion]]:
    """(questions this catalogue can score, questions naming a product it lacks: another
    catalogue's, or a row cleaning dropped; skipped and counted, never asked)."""
    kept, skipped = [], []
    for q in questions:
        missing = (q.uid and q.uid not in products) or (q.removed and q.removed not in products)
        (skipped if missing else kept).append(q)
    return kept, skipped


class WithoutRows:
    """The catalogue index with some rows taken out: what ``search`` returns when the product a
    question names is not in the catalogue. Only ``search`` is answered (what ``Answerer`` calls);
    anything else is refused rather than passed through to the whole index."""

    def __init__(self, index, rows: frozenset[int]) -> None:
        self.index, self.rows = index, rows

    def search(self, question: str, k: int = 3) -> list[Source]:
        """``index.search`` without the removed rows (the next best fill their places)."""
        wanted = self.index.candidates(k)  # as many as the whole index's search reads
        hits = [
            (i, s)
            for i, s in self.index.top(question, wanted + len(self.rows))
            if i not in self.rows
        ]
        return self.index.ranked(question, hits[:wanted], k)


QUOTE_MARGIN = 0.1
"""ROUGE-L by which an answer must be closer to another shown record than to the one it cites
to count as quoting that other record (series twins share most of a description)."""


def quotes_another(sources: list[dict], cited: str) -> bool:
    """The answer's text is another shown record's, under ``cited``'s citation (a new user's
    walkthrough: *The Lion Wakes*' review cited as *The Butterfly Lion*, ROUGE-L 0.20 against
    0.04, was scored right): by the answer's ROUGE-L against each source's description.

    >>> quotes_another([{"uid": "a", "answer_rougeL": 0.2}, {"uid": "b", "answer_rougeL": 0.04}], "b")
    True
    >>> quotes_another([{"uid": "a", "answer_rougeL": 0.9}, {"uid": "b", "answer_rougeL": 0.85}], "b")
    False
    """
    own = next((s.get("answer_rougeL") for s in sources if s["uid"] == cited), None)
    others = [s["answer_rougeL"] for s in sources if s["uid"] != cited and "answer_rougeL" in s]
    return own is not None and bool(others) and max(others) > own + QUOTE_MARGIN


def score_answer(question: ShopperQuestion, answer, products: dict[str, Product]) -> Outcome:
    """Score one ``ask`` answer (``answering.ask.Answer``: its text and the sources retrieved).

    >>> from amazon_sft.answering.ask import Answer
    >>> q = ShopperQuestion("mogs kitens", "7", None, "typo", "real", 1)
    >>> shown = [{"uid": "9"}, {"uid": "7"}]
    >>> products = {"7": Product("7", "A cat has kittens.", "seen")}
    >>> score_answer(q, Answer(q.text, "A cat has kittens. [source: 7]", shown, "", "grounded", ["7"]), products)
    Outcome(absent=False, right=True, wrong=False, abstained=False, rouge_l=1.0, top1=False, topk=True, own=True)
    >>> score_answer(q, Answer(q.text, "A cat has kittens. [source: 7]", shown[:1], "", "grounded", []), products).wrong
    True
    >>> quoted = Answer(q.text, "A cat has kittens. [source: 7]", shown, "", "grounded", ["7"], quoted=True)
    >>> (score_answer(q, quoted, products).right, score_answer(q, quoted, products).own)
    (True, False)
    >>> quoting = [{"uid": "9", "answer_rougeL": 0.8}, {"uid": "7", "answer_rougeL": 0.1}]
    >>> score_answer(q, Answer(q.text, "A dog. [source: 7]", quoting, "", "grounded", ["7"]), products).wrong
    True
    """
    uids = cited_uids(answer.answer)
    retrieved = [s["uid"] for s in answer.sources]
    # a uid retrieval did not return is no source (``cited_unretrieved``): wrong, even the asked one
    wrong = any(u != question.uid or u not in retrieved for u in uids)
    wrong = wrong or (bool(uids) and quotes_another(answer.sources, question.uid))
    right = bool(uids) and not wrong
    rouge_l = math.nan
    if right:
        plain = strip_citations(answer.answer)
        rouge_l = M.rouge_scores([plain], [products[question.uid].content])["rougeL"][0]
    present = not question.absent
    return Outcome(
        question.absent,
        right,
        wrong,
        is_abstention(answer.answer),
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
NOT_IN_CATALOGUE = "products not in the catalogue"


def question_groups(
    questions: list[ShopperQuestion], products: dict[str, Product]
) -> dict[str, list[int]]:
    """Report group -> indices of its questions: all, per kind, per product group (held-out,
    seen, untaught, or not in the catalogue at all), per source when there are two."""
    out: dict[str, list[int]] = {"all": list(range(len(questions)))}
    for i, q in enumerate(questions):
        out.setdefault(f"kind {q.kind}", []).append(i)
    for i, q in enumerate(questions):
        named = q.uid or q.removed
        group = f"{products[named].group} products" if named else NOT_IN_CATALOGUE
        out.setdefault(group, []).append(i)
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
) -> dict[str, dict]:
    """Group -> {"n": questions, metric: {value, low, high, of}} with 95% bootstrap intervals;
    ``of`` is the denominator (questions the rate is over). A metric with nothing to count in
    a group (no absent question, no abstention) is left out."""
    pairs = metric_pairs(outcomes)
    out = {}
    for group, idx in groups.items():
        row: dict = {"n": len(idx)}
        for name, values in pairs.items():
            sub = values[idx]
            if sub[:, 1].sum():
                v, lo, hi = M.bootstrap_interval(sub, seed=seed, statistic=M.ratio_of_sums)
                row[name] = {"value": v, "low": lo, "high": hi, "of": int(sub[:, 1].sum())}
        out[group] = row
    return out


def compare(
    base: list[Outcome], tuned: list[Outcome], groups: dict[str, list[int]], seed: int = 0
) -> dict[str, dict]:
    """Group -> metric -> tuned minus base and its 95% paired-bootstrap interval (the same
    questions resampled for both)."""
    before, after = metric_pairs(base), metric_pairs(tuned)
    out = {}
    for group, idx in groups.items():
        row = {}
        for name in METRICS:
            b, a = before[name][idx], after[name][idx]
            if b[:, 1].sum() and a[:, 1].sum():
                d, lo, hi = M.paired_bootstrap(b, a, seed=seed, statistic=M.ratio_of_sums)
                row[name] = {"delta": d, "low": lo, "high": hi}
        out[group] = row
    return out
