"""prepare's grounded stage: index the catalogue, then one grounded example per picked training
product, its records retrieved for its question (``data.grounded``), tokenized into the spill."""

from __future__ import annotations

import contextlib
import itertools
import time
from pathlib import Path

from tqdm import tqdm

from amazon_sft.answering.index import CatalogueIndex
from amazon_sft.answering.index_build import build_index
from amazon_sft.data.catalogue_row import catalogue_row
from amazon_sft.data.grounded import GroundedBuilder, build_batches, pair_groups, worker_count
from amazon_sft.data.streamed import Streamed
from amazon_sft.errors import UserError


def add_grounded(staging: Path, data, tok, fmt, streamed: Streamed, progress: bool) -> None:
    """Stage 2: index the catalogue (answering uses the same index), then write one grounded
    example for each picked training product, its records retrieved from the training split."""
    started = time.perf_counter()
    build_index(staging, lock=False)  # prepare's staging, under prepare's own lock
    streamed.seconds["grounded_index"] = time.perf_counter() - started
    # mapped, not read: with workers the parent only counts, and its pages are the workers' too
    builder = GroundedBuilder(CatalogueIndex(staging, mmap=True), fmt, tok, data)

    def picked():
        with open(staging / "catalogue.jsonl", "rb") as fh:
            for line in fh:
                rec = catalogue_row(line)  # written just now by this prepare: checked anyway
                if rec.get("split") == "train" and builder.wanted(str(rec["uid"])):
                    yield from ({**rec, "variant": n} for n in range(data.grounded_questions))

    total = sum(1 for _ in picked())
    workers = worker_count(data.grounded_workers, total)
    bar = tqdm(total=total, desc="grounded", disable=not progress, mininterval=0.5)
    batches = build_batches(builder, batched(picked(), 256), workers, staging)
    with contextlib.closing(batches), bar:  # a refusal stops the workers and ends the bar's line
        for n, examples in enumerate(batches):
            enc, kept = streamed.encoder.encode_pairs(
                [e.prompt for e in examples],
                [e.answer for e in examples],
                [None if e.absent else e.uid for e in examples],
                pair_groups(examples),
            )
            if n == 0:
                _check_grounded_fit(data, len(examples), len(enc.doc_lens))
            streamed.spill.add(enc)
            _count_grounded(streamed, enc)
            _note_unanswered(streamed, examples, kept)
            _uncount_dropped(builder.counts, examples, kept)
            bar.update(len(examples))
    streamed.counts.update(builder.counts)
    streamed.counts["grounded_workers"] = workers
    streamed.seconds["grounded"] = time.perf_counter() - started


def _check_grounded_fit(data, built: int, kept: int) -> None:
    """A grounded answer is never cut (it ends with its citation): an example longer than
    ``max_seq_len`` is dropped. When most of the first batch is, the run would write a dataset
    without the grounded examples asked for: refused before the rest is built."""
    if built and kept < built / 2:
        raise UserError(
            f"data.max_seq_len={data.max_seq_len} holds {kept} of the first {built} grounded "
            f"examples ({data.context_records} records of up to {data.context_record_tokens} "
            f"tokens, then an answer of up to {data.max_answer_tokens}): raise "
            "data.max_seq_len, or lower data.context_record_tokens / data.context_records / "
            "data.max_answer_tokens"
        )


def _uncount_dropped(counts: dict, examples: list, kept: list[bool]) -> None:
    """The builder counted the examples it built; the report counts those written (an outside
    audit: 388 of 889 dropped at 512-token rows, the report still said 889 and 308 pairs)."""
    for e, keep in zip(examples, kept):
        if not keep:
            counts["grounded"] -= 1
            counts["grounded_absent"] -= e.absent
            counts["grounded_paired"] -= e.paired and e.absent
            counts[f"grounded_kind_{e.kind}"] -= 1


def _note_unanswered(streamed: Streamed, examples: list, kept: list[bool]) -> None:
    """The products asked about so far not yet answered with their own record: this batch's
    answers leave it, its other products join it (a product's questions may run on into the
    next batch). Work in the batch's size: rebuilding the whole set each batch grew with the
    square of the catalogue (a review: 138 s at 1.3M products, unpaired abstentions)."""
    unanswered = streamed.grounded_unanswered
    unanswered -= {e.uid for e, keep in zip(examples, kept) if keep and not e.absent}
    unanswered |= {e.uid for e in examples} - streamed.encoder.taught_grounded


def _count_grounded(streamed: Streamed, enc) -> None:
    for p, a in zip(enc.prompt_lens, enc.answer_lens):
        streamed.hist["prompt_tokens"].add(p)
        streamed.hist["answer_tokens"].add(a)


def batched(items, size: int):
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch
