"""Grounded (RAFT) training examples: a question, catalogue records retrieved for it, and an
answer that quotes the right record and cites it, or says the catalogue has no such product.

Zhang et al. 2024, "RAFT: Adapting Language Model to Domain Specific RAG": the model learns to
read the right record among distractors, to quote it, and to abstain when it is missing. Here:

- the question is of a kind picked by the uid from ``data.question_mix``, its shares kept over
  each batch however few records can make a kind (data/question_kinds.py): the title phrasings
  (EN/PT), or a title fragment, reordered or misspelt title, Portuguese phrasing, descriptive or
  attribute question made from the record;
- title questions: the records are the ``context_records`` best matches of the question in the
  *training* split (hard negatives: the products a user could confuse it with; the catalogue
  index, answering's retrieval), the right one at a place picked by the uid;
- every other kind: the records are what retrieval returns for the question as typed, in its
  order, so when it misses the right record the answer abstains (``grounded_retrieval_missed``);
- records with the same description or title as the product are never distractors (they would
  be a second right answer); up to ``series_distractors`` same-series products (the series named
  in parentheses, or the title with another number, year or volume: data/series.py) take the
  place of the last ones;
- attribute questions are answered with the description's sentence that answers them, then the
  citation;
- every description is cut to ``context_record_tokens`` at a word boundary, then "…"
  (data/cutting.py), and the answer is the right record exactly as shown, then
  ``[source: uid]`` (prompts.grounded_answer);
- for ``absent_fraction`` of products the right record is left out (one more negative instead)
  and the answer is the abstention in the question's language; with ``paired_absent`` every
  abstention also comes with its twin, the same question with the product shown and answered.

Products are picked by stable hashes of the uid, so a rerun teaches the same ones.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from amazon_sft.config import DataConfig
from amazon_sft.data.cutting import cut_to_tokens
from amazon_sft.data.question_kinds import KINDS, make_question
from amazon_sft.data.series import series_keys, series_query, sibling_keys
from amazon_sft.data.split import normalise_title, title_hash
from amazon_sft.prompts import ContextRecord, PromptFormat, grounded_answer

_RANGE = float(2**64)
AUTO_POOL_PRODUCTS = 4096
"""Below this many grounded products one process does the retrieval (workers take seconds to
start); above it ``data.grounded_workers=0`` starts one per core."""
MAX_AUTO_WORKERS = 16


def uid_share(uid: str, salt: str) -> float:
    """A stable number in [0, 1) for a uid and a purpose (which products are grounded, absent).

    >>> uid_share("B01", "grounded:") == uid_share("B01", "grounded:")
    True
    """
    return title_hash(uid, salt, key=uid) / _RANGE  # the split's stable hash, raw uid as key


@dataclass
class GroundedExample:
    uid: str
    question: str
    language: str
    records: list[ContextRecord]
    """The records as the prompt shows them (descriptions cut), in prompt order."""
    absent: bool
    """True when the right record was left out: the answer is the abstention."""
    prompt: str
    """The full prompt text (chat template or plain), as answering renders it."""
    answer: str
    """The right record's description as shown plus its citation, or the abstention."""
    kind: str = "title"
    """The kind of question (``KINDS``): the report counts the kinds written."""
    paired: bool = False
    """One of an abstention and its twin (``data.paired_absent``): built one after the other,
    the abstention first, and kept or dropped together (``pair_groups``)."""


def example_key(product: dict) -> str:
    """What a grounded example's random choices (question kind and wording, absent, place) are
    drawn from: the uid, or for a product's ``variant``-th extra example (``data.grounded_questions``)
    the uid and that number, so each example of a product asks its own question.

    >>> example_key({"uid": "B01"}), example_key({"uid": "B01", "variant": 2})
    ('B01', 'B01#2')
    """
    variant = product.get("variant", 0)
    return f"{product['uid']}#{variant}" if variant else str(product["uid"])


class GroundedBuilder:
    """Builds grounded examples; prepare (training split, absent by hash) and eval (the whole
    catalogue, both variants of every product) share it, so they cannot drift apart."""

    def __init__(self, index, fmt: PromptFormat, tok, data: DataConfig) -> None:
        self.index, self.fmt, self.tok, self.data = index, fmt, tok, data
        self.counts = {
            "grounded": 0,
            "grounded_absent": 0,
            "grounded_short_context": 0,
            "grounded_retrieval_missed": 0,
            "grounded_series_distractors": 0,
            "grounded_series_shown": 0,
            "grounded_paired": 0,
            "grounded_kinds_unmade": 0,
            **{f"grounded_kind_{kind}": 0 for kind in KINDS},
        }

    def wanted(self, uid: str) -> bool:
        return uid_share(uid, "grounded:") < self.data.grounded_fraction

    def kind_for(self, uid: str) -> str:
        """The question kind of a product: ``data.question_mix`` by a stable hash of the uid."""
        share, upto = uid_share(uid, "kind:"), 0.0
        for kind in KINDS:
            upto += getattr(self.data.question_mix, kind)
            if share < upto:
                return kind
        return "title"  # the shares' rounding left a sliver above their sum

    def _negatives(self, best: list[tuple[int, float]], product: dict, count: int) -> list[dict]:
        """The ``count`` best matches of the question (``best``) that are not the product, an
        edition of it (same description) or a twin (same title): those would be a second right
        answer."""
        title, content = normalise_title(product["title"]), product["content"]
        out = []
        for i, _ in best[: count + 8]:  # what a query for this count alone would have returned
            rec = self.index.record(i)
            if rec["content"] == content or normalise_title(rec["title"]) == title:
                continue
            out.append(rec)
            if len(out) == count:
                break
        return out

    def _questions(self, products: list[dict], phrasing: int | None) -> list[tuple]:
        """(kind, question, language, lead) of each product: eval asks title ``phrasing``;
        training asks the kinds the uids draw (``kind_for``), as many of each as were drawn.

        Most records cannot make every kind (171 of the 991 real rows prepare keeps state an
        attribute the patterns read), so a kind is not simply dropped where its record cannot
        make it: the batch's draws are the counts to meet, and the kinds fewest records can
        make are given out first, to the products that drew them, then to other products
        that can make them, in an order drawn by their uid (not the catalogue's), never to
        a second example of a product that already asks it (``data.grounded_questions``).
        What no record of the batch can make becomes a title question, counted
        (``grounded_kinds_unmade``). Batches are fixed runs of the catalogue, so a rerun asks
        the same questions, with workers or without."""
        if phrasing is not None:
            return [self._title_question(p, phrasing) for p in products]
        seeds = [example_key(p) for p in products]
        drawn = [self.kind_for(seed) for seed in seeds]
        made: list = [None] * len(products)
        for kind in reversed(KINDS[1:]):  # description kinds first: fewest records make them
            wanted, asking = drawn.count(kind), set()  # the products asked it so far
            order = sorted(
                range(len(products)),
                key=lambda n: (drawn[n] != kind, uid_share(seeds[n], f"kind {kind}:")),
            )
            for n in order:
                if not wanted:
                    break
                uid = str(products[n]["uid"])
                if made[n] is not None or (drawn[n] != kind and uid in asking):
                    continue
                made[n] = make_question(kind, {**products[n], "uid": seeds[n]})
                if made[n] is not None:
                    wanted -= 1
                    asking.add(uid)
            self.counts["grounded_kinds_unmade"] += wanted
        return [
            self._title_question(p, None) if q is None else (q.kind, q.text, q.language, q.lead)
            for p, q in zip(products, made)
        ]

    def _title_question(self, product: dict, phrasing: int | None) -> tuple:
        """A template phrasing around the exact title: ``phrasing``, or one the uid picks."""
        n = self.fmt.phrasing_for(example_key(product)) if phrasing is None else phrasing
        return "title", self.fmt.question(product["title"], n), self.fmt.language(n), None

    def build(
        self,
        products: Iterable[dict],
        *,
        phrasing: int | None = None,
        absent: bool | None = None,
        train_only: bool = True,
    ) -> list[GroundedExample]:
        """One example per product record, two for an abstention with ``data.paired_absent``
        (training only: the abstention, then the same question with the product shown among
        the same hard negatives). ``phrasing``: None picks the kind of question by the
        uid (training), eval asks title phrasing 0 with the right record always shown (oracle
        context); ``absent``: None decides by the uid's hash and absent_fraction.

        Title questions show the right record at a place picked by the uid among hard
        negatives. Every other kind shows what retrieval returns for the question as typed
        (twins left out): when the right record is not among the first ``context_records``,
        the answer abstains (counted as ``grounded_retrieval_missed``), as ``ask`` would need."""
        k = self.data.context_records
        products = list(products)
        asked = self._questions(products, phrasing)
        # every question asks for k + 8 (the longest need): ranking ties go to the lower row,
        # so a product that needs one record fewer gets the same list, one shorter
        found = self._retrieve(asked, k + 8, train_only)
        twins = self._series(products, phrasing, train_only)
        plans = []
        for product, (kind, question, language, lead), best, series in zip(
            products, asked, found, twins
        ):
            uid, seed = str(product["uid"]), example_key(product)
            leave_out = uid_share(seed, "absent:") < self.data.absent_fraction
            leave_out = leave_out if absent is None else absent
            rows = [i for i, _ in best]
            rank = next((n for n, i in enumerate(rows) if self._uid(i) == uid), None)
            ranked = rank is not None and rank < k
            if kind != "title" and not leave_out and not ranked:
                leave_out = True  # retrieval missed it: ask could not answer either
                self.counts["grounded_retrieval_missed"] += 1
            # paired: the abstention and the same question with the product shown, so that
            # only the record's presence, never the question's wording, tells them apart
            paired = leave_out and self.data.paired_absent and absent is None
            self.counts["grounded_paired"] += paired
            for left_out in (True, False) if paired else (leave_out,):
                want = k if left_out else k - 1
                records = self._negatives(best, product, want)
                if len(records) < want:
                    self.counts["grounded_short_context"] += 1  # a small catalogue
                records = self._with_series(records, series)
                if not left_out:
                    place = int(uid_share(seed, "place:") * (len(records) + 1))
                    if kind != "title" and ranked:  # where retrieval ranked it among them
                        above = {self._uid(i) for i in rows[:rank]}
                        place = sum(str(r["uid"]) in above for r in records)
                    records.insert(place, product)
                self.counts[f"grounded_kind_{kind}"] += 1
                plans.append((uid, question, language, lead, left_out, records, kind, paired))
        texts = [r["content"] for *_, records, _, _ in plans for r in records]
        cut = iter(cut_to_tokens(self.tok, texts, self.data.context_record_tokens))
        out = []
        for uid, question, language, lead, leave_out, records, kind, paired in plans:
            shown = [ContextRecord(str(r["uid"]), r["title"], next(cut)) for r in records]
            right = next((s.description for s in shown if s.uid == uid), None)
            lead = lead if lead is not None and right is not None and lead in right else None
            answer = grounded_answer(None if leave_out else right, uid, language, lead=lead)
            prompt = self.fmt.wrap(self.fmt.grounded(question, shown))
            out.append(
                GroundedExample(
                    uid, question, language, shown, leave_out, prompt, answer, kind, paired
                )
            )
            self.counts["grounded"] += 1
            self.counts["grounded_absent"] += leave_out
        return out

    def _retrieve(self, asked: list, k: int, train_only: bool) -> list[list[tuple[int, float]]]:
        """``top_many`` of each question. A title question's records are hard negatives around
        a right record shown anyway: ``data.grounded_shortlist`` ranks them (cheaper at 1.3M
        products). Any other kind shows what ``ask`` would retrieve, so it is ranked as ``ask``
        ranks (answering's shortlist): when that misses the right record, the answer abstains."""
        out: list = [None] * len(asked)
        for title in (True, False):
            picked = [n for n, (kind, *_) in enumerate(asked) if (kind == "title") == title]
            if not picked:
                continue
            shortlist = self.data.grounded_shortlist if title else None
            found = self.index.top_many([asked[n][1] for n in picked], k, train_only, shortlist)
            for n, best in zip(picked, found):
                out[n] = best
        return out

    def _uid(self, row: int) -> str:
        return str(self.index.record(row)["uid"])

    def _series(self, products: list[dict], phrasing, train_only: bool) -> list[list[dict]]:
        """For each product, up to ``data.series_distractors`` other products of its series
        (data/series.py: the series its title names in parentheses, or its title with another
        number), found by retrieving the series' words; none for eval's oracle context (its
        protocol stays the one docs/results.md measured)."""
        want = self.data.series_distractors
        keys = [
            series_keys(p["title"]) if want and phrasing is None else frozenset() for p in products
        ]
        asked = [n for n, own in enumerate(keys) if own]
        out: list[list[dict]] = [[] for _ in products]
        if not asked:
            return out
        found = self.index.top_many(
            [series_query(keys[n]) for n in asked],
            want + 8,
            train_only,
            self.data.grounded_shortlist,
        )
        for n, best in zip(asked, found):
            same = [r for r in self._negatives(best, products[n], want + 8)
                    if keys[n] & sibling_keys(r["title"])]  # fmt: skip
            out[n] = same  # every sibling found: the shown ones are counted among them
        return out

    def _with_series(self, records: list[dict], series: list[dict]) -> list[dict]:
        """The records with up to ``data.series_distractors`` products of the series (those
        retrieval showed count), in place of the last ones."""
        shown = {str(r["uid"]) for r in records}
        # retrieval's own records often hold the series already (a title question's hard
        # negatives): those count towards data.series_distractors, and the report says how
        # many examples show a sibling either way
        already = sum(str(r["uid"]) in shown for r in series)
        fits = min(max(self.data.series_distractors - already, 0), len(records))
        new = [r for r in series if str(r["uid"]) not in shown][:fits]
        self.counts["grounded_series_distractors"] += len(new)
        self.counts["grounded_series_shown"] += bool(new or already)
        return records[: len(records) - len(new)] + new if new else records


def worker_count(requested: int, products: int) -> int:
    """Processes for the retrieval of ``products`` grounded examples (``data.grounded_workers``).

    >>> worker_count(3, 10), worker_count(0, 100)
    (3, 1)
    """
    if requested:
        return requested
    if products <= AUTO_POOL_PRODUCTS:
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_AUTO_WORKERS))


_WORKER: GroundedBuilder | None = None


def _start_worker(prepared_dir: str, fmt: PromptFormat, tok, data: DataConfig) -> None:
    from amazon_sft.answering.index import CatalogueIndex

    global _WORKER
    _WORKER = GroundedBuilder(CatalogueIndex(prepared_dir, mmap=True), fmt, tok, data)


def _build_in_worker(products: list[dict]) -> tuple[list[GroundedExample], dict]:
    before = dict(_WORKER.counts)
    examples = _WORKER.build(products)
    return examples, {k: v - before[k] for k, v in _WORKER.counts.items()}


def pair_groups(examples: list[GroundedExample]) -> list[int]:
    """A group number for each example: an abstention and its twin share one (the twin comes
    right after it), every other example has its own.

    >>> ex = lambda absent, paired: GroundedExample("u", "q", "en", [], absent, "p", "a", paired=paired)
    >>> pair_groups([ex(False, False), ex(True, True), ex(False, True), ex(True, False)])
    [0, 1, 1, 3]
    """
    return [
        i - 1 if e.paired and not e.absent and i and examples[i - 1].paired else i
        for i, e in enumerate(examples)
    ]


def build_batches(
    builder: GroundedBuilder, batches: Iterable[list[dict]], workers: int, prepared_dir: Path
) -> Iterator[list[GroundedExample]]:
    """``builder.build`` of each batch, in order; with ``workers`` > 1 in that many processes,
    each loading the index of ``prepared_dir`` memory-mapped (its pages shared), at most two
    batches per worker in flight (the products are not all queued at once). The counts of the
    workers are added to ``builder.counts``.

    Spawned, not forked: the parent holds the fast tokenizer's thread pool, and a fork of a
    process with threads can deadlock.
    """
    if workers <= 1:
        yield from (builder.build(batch) for batch in batches)
        return
    args = (str(prepared_dir), builder.fmt, builder.tok, builder.data)
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_start_worker, initargs=args) as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.apply_async(_build_in_worker, (batch,)))
            if len(pending) >= 2 * workers:
                yield _collect(builder, pending.popleft().get())
        while pending:
            yield _collect(builder, pending.popleft().get())


def _collect(builder: GroundedBuilder, done: tuple[list[GroundedExample], dict]):
    examples, counts = done
    for key, value in counts.items():
        builder.counts[key] += value
    return examples
