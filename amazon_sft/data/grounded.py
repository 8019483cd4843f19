"""Grounded (RAFT) training examples: a question, catalogue records retrieved for it, and an
answer that quotes the right record and cites it, or says the catalogue has no such product.

Zhang et al. 2024, "RAFT: Adapting Language Model to Domain Specific RAG": the model learns to
read the right record among distractors, to quote it, and to abstain when it is missing. Here:

- the question is one of the phrasings (EN/PT) picked by the product's uid;
- the records are the ``context_records`` best matches of that question in the *training* split
  (hard negatives: the products a user could confuse it with; the catalogue index, answering's
  retrieval), the right one at a place picked by the uid; records with the same description or
  title as the product are never distractors (they would be a second right answer);
- every description is cut to ``context_record_tokens`` at a word boundary, and the answer is the
  right record exactly as shown, then ``[source: uid]`` (prompts.grounded_answer);
- for ``absent_fraction`` of products the right record is left out (one more negative instead)
  and the answer is the abstention in the question's language.

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


CHARS_PER_TOKEN_READ = 6
"""Characters of a text read per token of budget when cutting it: more than the tokens of the
usual tokenizers hold on average in English (~4 for Llama/Mistral's SentencePiece, ~2 for the
tiny one), so the budget usually ends inside what was read; where it does not (digits, other
scripts), the whole text is tokenized."""
TOKENS_PAST_CUT = 8
"""Whole tokens that must follow the cut inside what was read, so that the tokens before it are
the ones the whole text gives (a tokenizer merges within a few characters of a word)."""


def cut_to_tokens(tok, texts: list[str], budget: int) -> list[str]:
    """Each text cut to at most ``budget`` tokens of ``tok``, at the last space before the cut
    (a cut word would teach the model to stop mid-word).

    Only the opening of a long text is tokenized (``CHARS_PER_TOKEN_READ`` characters a token
    of budget, up to a space): descriptions run to 197k characters and only ~160 tokens are
    kept. Where the opening holds fewer than ``budget + TOKENS_PAST_CUT`` tokens, the whole text
    is tokenized, so the cut is the one the whole text gives."""
    if not texts:
        return []
    limit = budget * CHARS_PER_TOKEN_READ
    heads = [_opening(t, limit) for t in texts]
    offsets = tok(heads, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    offsets = list(offsets)
    redo = [
        i
        for i, (text, head, o) in enumerate(zip(texts, heads, offsets))
        if len(head) < len(text) and len(o) < budget + TOKENS_PAST_CUT
    ]
    if redo:
        whole = tok([texts[i] for i in redo], add_special_tokens=False, return_offsets_mapping=True)
        for i, o in zip(redo, whole["offset_mapping"]):
            offsets[i] = o
    return _cut_at(texts, offsets, budget)


def _opening(text: str, limit: int) -> str:
    """``text`` up to the last space before ``limit`` characters (whole words only)."""
    if len(text) <= limit:
        return text
    space = text.rfind(" ", 0, limit)
    return text[:space] if space > 0 else text


def _cut_at(texts: list[str], offset_lists, budget: int) -> list[str]:
    out = []
    for text, offsets in zip(texts, offset_lists):
        if len(offsets) <= budget:
            out.append(text)
            continue
        end = offsets[budget - 1][1]
        space = text.rfind(" ", 0, end + 1)
        out.append(text[: space if space > end // 2 else end].rstrip())
    return out


class GroundedBuilder:
    """Builds grounded examples; prepare (training split, absent by hash) and eval (the whole
    catalogue, both variants of every product) share it, so they cannot drift apart."""

    def __init__(self, index, fmt: PromptFormat, tok, data: DataConfig) -> None:
        self.index, self.fmt, self.tok, self.data = index, fmt, tok, data
        self.counts = {"grounded": 0, "grounded_absent": 0, "grounded_short_context": 0}

    def wanted(self, uid: str) -> bool:
        return uid_share(uid, "grounded:") < self.data.grounded_fraction

    def negatives(self, question: str, product: dict, count: int, train_only: bool) -> list[dict]:
        """The ``count`` best matches of the question that are not the product, an edition of it
        (same description) or a twin (same title): those would be a second right answer. One
        query at a time (``build`` asks the batch's questions together)."""
        best = self.index.top(question, count + 8, train_only=train_only)
        return self._negatives(best, product, count)

    def _negatives(self, best: list[tuple[int, float]], product: dict, count: int) -> list[dict]:
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

    def build(
        self,
        products: Iterable[dict],
        *,
        phrasing: int | None = None,
        absent: bool | None = None,
        train_only: bool = True,
    ) -> list[GroundedExample]:
        """One example per product record. ``phrasing``: None picks one by the uid (training),
        eval asks phrasing 0; ``absent``: None decides by the uid's hash and absent_fraction."""
        k = self.data.context_records
        products = list(products)
        picks = [self.fmt.phrasing_for(str(p["uid"])) if phrasing is None else phrasing
                 for p in products]  # fmt: skip
        questions = [self.fmt.question(p["title"], n) for p, n in zip(products, picks)]
        # every question asks for k + 8 (the longest need): ranking ties go to the lower row,
        # so a product that needs one record fewer gets the same list, one shorter
        found = self.index.top_many(questions, k + 8, train_only=train_only)
        plans = []
        for product, p, question, best in zip(products, picks, questions, found):
            uid = str(product["uid"])
            leave_out = uid_share(uid, "absent:") < self.data.absent_fraction
            leave_out = leave_out if absent is None else absent
            want = k if leave_out else k - 1
            records = self._negatives(best, product, want)
            if len(records) < want:
                self.counts["grounded_short_context"] += 1  # a small catalogue: fewer records
            if not leave_out:
                records.insert(int(uid_share(uid, "place:") * (len(records) + 1)), product)
            plans.append((uid, question, self.fmt.language(p), leave_out, records))
        texts = [r["content"] for *_, records in plans for r in records]
        cut = iter(cut_to_tokens(self.tok, texts, self.data.context_record_tokens))
        out = []
        for uid, question, language, leave_out, records in plans:
            shown = [ContextRecord(str(r["uid"]), r["title"], next(cut)) for r in records]
            right = next((s.description for s in shown if s.uid == uid), None)
            answer = grounded_answer(None if leave_out else right, uid, language)
            prompt = self.fmt.wrap(self.fmt.grounded(question, shown))
            out.append(GroundedExample(uid, question, language, shown, leave_out, prompt, answer))
            self.counts["grounded"] += 1
            self.counts["grounded_absent"] += leave_out
        return out


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
