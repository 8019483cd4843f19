"""``amazon-sft prepare``: raw trn.json(.gz) -> cleaned, split, tokenized, packed shards + manifest.

Stages (``_run``): (1) one streaming pass reads, cleans and scrubs the input into a staging file,
keeping two hashes a row; (2) the split groups rows that share a title or a description and
holds groups out whole; a second pass over the cleaned rows writes the catalogue with each row's
split and tokenizes closed-book documents (the tokenizer runs in a worker thread on all cores
while the main thread reads the next batch); (3) with ``data.grounded_fraction``, the catalogue
is indexed and grounded examples are built from it; (4) one global best-fit-decreasing pass packs
every document and the shards are written. Token ids go to a spill file on disk, so memory holds
only per-document lengths and hashes; everything is written into a temporary folder that is
renamed into place.
"""

from __future__ import annotations

import itertools
import shutil
import time
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from tqdm import tqdm

from amazon_sft import __version__
from amazon_sft.atomic import new_staging, refuse_mount_point, swap_into_place
from amazon_sft.bounds import check_prepare_bounds
from amazon_sft.config import RunConfig
from amazon_sft.config_loader import to_dict
from amazon_sft.data.cleaning import Cleaner
from amazon_sft.data.encode import DocumentEncoder, SpecialTextScrubber, nothing_left_remedy
from amazon_sft.data.grounded_stage import add_grounded, batched
from amazon_sft.data.manifest import COUNTS, Manifest, write_manifest
from amazon_sft.data.near_duplicates import NearDuplicateKeys
from amazon_sft.data.packing import build_row, pack_bfd
from amazon_sft.data.reading import ReadStats, check_input, read_records
from amazon_sft.data.report import Histogram, build_report, write_report
from amazon_sft.data.shards import ShardWriter
from amazon_sft.data.spill import Spill
from amazon_sft.data.split import (
    SPLIT_VERSION,
    ProbeSample,
    heldout_mask,
    normalise_title,
    split_groups,
    title_hash,
)
from amazon_sft.data.streamed import Streamed
from amazon_sft.data.taught import NOT_TAUGHT, not_taught, probe_rows, taught_ways
from amazon_sft.errors import UserError
from amazon_sft.output_lock import DataReadLock, OutputLock
from amazon_sft.output_places import refuse_inside_another_output
from amazon_sft.outputs import disk_full, landing
from amazon_sft.ownership import check_prepare_target
from amazon_sft.prompts import build_prompt_format
from amazon_sft.tokenizer import choose_pad_id, load_tokenizer, tokenizer_fingerprint

SAMPLE_DOCS = 256  # documents used to check the fast tokenizer paths against plain encoding


def _staging_dir(out_dir: Path, overwrite: bool, locked: bool) -> Path:
    check_prepare_target(out_dir, overwrite)  # under the lock: nobody else is writing there
    # held, the lock says no prepare of this folder lives on any node, so a killed one's
    # staging goes whatever machine wrote it (a requeue lands on another node); without locks
    # only this machine's dead processes' can be known dead
    return new_staging(out_dir, any_machine=locked)


def _write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "wb") as fh:
        for rec in records:
            fh.write(orjson.dumps(rec) + b"\n")


def prepare(
    input_path: str | Path,
    out_dir: str | Path,
    cfg: RunConfig,
    tokenizer: str | None = None,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Manifest:
    """Run the whole pipeline; returns the manifest (also written to ``out_dir/manifest.json``)."""
    started = time.perf_counter()
    data, input_path, out_dir = cfg.data, Path(input_path), landing(out_dir)
    check_input(input_path)
    check_prepare_bounds(cfg)
    refuse_inside_another_output(out_dir, "--out", replaces="prepared")
    check_prepare_target(out_dir, overwrite)  # fail before the tokenizer is even loaded
    refuse_input_inside(input_path, out_dir)
    refuse_mount_point(out_dir, "--out", "the prepared data")
    tok = load_tokenizer(cfg.model, tokenizer)
    fmt = build_prompt_format(tok, data)
    if data.phrasings_per_doc > len(fmt.phrasings):  # a product is taught each phrasing once
        raise UserError(
            f"data.phrasings_per_doc={data.phrasings_per_doc} is more than the "
            f"{len(fmt.phrasings)} phrasings of data.templates={data.templates}: give <= "
            f"{len(fmt.phrasings)}, or a templates file with more phrasings"
        )
    kept = f"{out_dir} is unchanged" if out_dir.exists() else f"nothing was written to {out_dir}"
    with (
        OutputLock(out_dir, "amazon-sft prepare") as lock,
        DataReadLock(out_dir, shared=False),  # no run reads it while it is replaced
    ):
        staging = _staging_dir(out_dir, overwrite, lock.locked)
        setup_s = time.perf_counter() - started  # imports and tokenizer load: fixed, not per row
        try:
            source = tokenizer or cfg.model.tokenizer or cfg.model.path
            with disk_full(out_dir.parent, "prepare", f"{kept}; the partial output was removed"):
                manifest = _run(
                    input_path, staging, cfg, tok, fmt, strict, progress, setup_s, source
                )
                manifest = write_manifest(staging, manifest)
            _refuse_arrivals(out_dir, overwrite)  # the swap deletes what it replaces
            # the old output stays whole until the new one takes its place in one rename
            swap_into_place(staging, out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _refuse_arrivals(out_dir: Path, overwrite: bool) -> None:
    """Check ``--out`` again just before the swap: a folder made at the new path, or a report
    written into the old output (``eval --out PREPARED/eval``) while prepare ran, would be
    deleted with the output it replaces."""
    try:
        check_prepare_target(out_dir, overwrite)
    except UserError as err:
        raise UserError(
            f"{out_dir} changed while prepare ran, and the prepared data was not put in place "
            f"({err})"
        ) from None


def refuse_input_inside(input_path: Path, out_dir: Path) -> None:
    """The swap deletes what ``--out`` held: an input inside it (its own heldout.jsonl given
    back to it, with --overwrite) was deleted, and the report named it as the input (a
    hostile-input review)."""
    if input_path.resolve().is_relative_to(out_dir.resolve()):
        raise UserError(
            f"input {input_path} is inside --out {out_dir}, whose contents prepare replaces: "
            "copy it elsewhere first, or give another --out"
        )


def _refuse_nothing_left(input_path, cfg, streamed: Streamed) -> None:
    skipped = streamed.dropped + streamed.encoder.dropped
    if streamed.stats.lines == streamed.stats.skipped["blank_line"]:  # 0 lines, or blank ones
        raise UserError(f"{input_path} is empty: give the trn.json(.gz) file of the catalogue")
    held, taught = streamed.counts["heldout"], streamed.counts["taught"]
    if held and not taught:  # "all 29 lines were filtered out (skipped: {})": none was
        raise UserError(
            f"all {held} products kept of {input_path} went to the held-out split "
            f"(data.heldout_fraction={cfg.data.heldout_fraction}): none is left to train on; "
            "lower data.heldout_fraction, or give a larger catalogue"
        )
    raise UserError(
        f"all {streamed.stats.lines} lines of {input_path} were filtered out (skipped: "
        f"{dict(skipped)}); {nothing_left_remedy(skipped, cfg.data.max_seq_len)}"
    )


def _run(input_path, staging, cfg, tok, fmt, strict, progress, setup_s, source) -> Manifest:
    """The stages, in order; each one's time is reported."""
    started = time.perf_counter()
    cleaned = _read_clean(input_path, staging, cfg.data, tok, strict, progress)
    heldout = heldout_mask(split_groups(*cleaned.hashes), cfg.data.heldout_fraction)
    streamed = _split_encode(staging, cfg.data, tok, fmt, cleaned, heldout)
    if cfg.data.grounded_fraction > 0:
        if not (staging / "catalogue.jsonl").stat().st_size:  # before indexing nothing
            _refuse_nothing_left(input_path, cfg, streamed)
        add_grounded(staging, cfg.data, tok, fmt, streamed, progress)
    doc_lens = streamed.spill.finish()
    if len(doc_lens) == 0:
        _refuse_nothing_left(input_path, cfg, streamed)
    pad_id = choose_pad_id(tok)
    shards, n_rows = _pack_and_write(staging, cfg.data, streamed, doc_lens, pad_id)
    for name, probe in streamed.probes.items():
        rows = probe_rows(probe, streamed.encoder.untaught, streamed.encoder.taught_grounded)
        _write_jsonl(staging / f"{name}.jsonl", rows)
        streamed.counts[f"{name}_rows"] = len(rows)
    dropped = not_taught(cfg.data, streamed.encoder.untaught, streamed.grounded_unanswered)
    (staging / NOT_TAUGHT).write_text("".join(f"{uid}\n" for uid in dropped))
    total = time.perf_counter() - started
    report = build_report(input_path, cfg.data, streamed, doc_lens, n_rows, total, setup_s)
    markdown = write_report(report, staging)
    if progress:
        print(markdown)
    return _manifest(report, cfg, tok, fmt, pad_id, shards, source)


@dataclass
class _Cleaned:
    """Stage 1's output: cleaned rows in a staging file, and what the split needs of them."""

    path: Path
    hashes: tuple[np.ndarray, np.ndarray]
    """Per row: the hash of its normalised title, and its description's near-duplicate group
    (``near_duplicates``: 64 bytes a row while reading)."""
    stats: ReadStats
    cleaner: Cleaner
    scrub: SpecialTextScrubber
    hist: dict
    seconds: float


def _read_clean(input_path, staging, data, tok, strict, progress) -> _Cleaned:
    """Stage 1, one streaming pass over the input: read, clean, scrub special-token text."""
    started = time.perf_counter()
    stats = ReadStats(source=str(input_path))
    scrub = SpecialTextScrubber(tok, build_prompt_format(tok, data))
    cleaner = Cleaner(data.clean, scrub)  # special-token text goes before a row is judged
    hist = {
        k: Histogram() for k in ("title_chars", "content_chars", "prompt_tokens", "answer_tokens")
    }
    title_hashes, near = array("Q"), NearDuplicateKeys()
    with tqdm(
        total=input_path.stat().st_size,
        unit="B",
        unit_scale=True,
        desc="prepare",
        disable=not progress,
        mininterval=0.5,
    ) as bar:
        path = staging / "_cleaned.jsonl"
        with open(path, "wb") as out:
            for rec in read_records(input_path, stats, strict, data.clean.max_line_bytes):
                bar.update(stats.bytes_read - bar.n)
                pair = cleaner(rec.title, rec.content, rec.uid, rec.line_no)
                if pair is None:
                    continue
                title, content = pair
                hist["title_chars"].add(len(title))
                hist["content_chars"].add(len(content))
                title_hashes.append(title_hash(title))
                near.add(content)
                out.write(
                    orjson.dumps({"uid": rec.uid, "title": title, "content": content}) + b"\n"
                )
    stats.first_lines.update(cleaner.first_lines)  # its reasons are not the reader's
    hashes = (np.frombuffer(title_hashes, np.uint64), near.labels())
    return _Cleaned(path, hashes, stats, cleaner, scrub, hist, time.perf_counter() - started)


def _split_encode(staging, data, tok, fmt, cleaned: _Cleaned, heldout: np.ndarray) -> Streamed:
    """Stage 2: write the catalogue with each row's split and the probes, and tokenize the
    closed-book documents (in a worker thread while the next batch is read)."""
    started = time.perf_counter()
    probes = {"seen_probe": ProbeSample(data.probe_size), "heldout": ProbeSample(data.probe_size)}
    hist = cleaned.hist
    counts = {"heldout": 0, "taught": 0, "over_max_train_products": 0, "closed_book_products": 0}

    def documents():
        """Training rows taught closed-book; every row goes to the catalogue with its split."""
        with open(cleaned.path, "rb") as rows, open(staging / "catalogue.jsonl", "wb") as cat:
            for held, line in zip(heldout.tolist(), rows):
                row = orjson.loads(line)
                split = "heldout" if held else "train"
                if split == "train" and counts["taught"] == data.max_train_products:
                    split = "untaught"  # over the cap: still answerable from the catalogue
                cat.write(orjson.dumps({**row, "split": split}) + b"\n")
                key = normalise_title(row["title"])
                if split == "heldout":
                    counts["heldout"] += 1
                    probes["heldout"].offer(row["title"], row, key)
                    continue
                if split == "untaught":
                    counts["over_max_train_products"] += 1
                    continue
                counts["taught"] += 1
                taught = taught_ways(row["uid"], data)
                if taught:  # the seen probe scores what was taught, each way on its own
                    probes["seen_probe"].offer(row["title"], {**row, "taught": taught}, key)
                if "closed_book" in taught:
                    counts["closed_book_products"] += 1
                    yield row["uid"], row["title"], row["content"]
        cleaned.path.unlink()

    docs = documents()
    sample = list(itertools.islice(docs, SAMPLE_DOCS))  # read first: checks the fast paths
    encoder = DocumentEncoder(
        tok,
        fmt,
        data.max_seq_len,
        data.max_answer_tokens,
        data.tokenizer_backend,
        sample or [("u", "Title", "Content text")],
        data.phrasings_per_doc,
    )
    spill = Spill(staging / "_spill.bin")
    t_tokenize = 0.0

    def encode(batch):
        t0 = time.perf_counter()
        enc = encoder.encode(batch)
        return enc, time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for batch in batched(itertools.chain(sample, docs), data.tokenize_batch_docs):
            future = pool.submit(encode, batch)  # tokenizes while the next batch is read
            if pending is not None:
                t_tokenize += _collect(pending, spill, hist)
            pending = future
        if pending is not None:
            t_tokenize += _collect(pending, spill, hist)
    seconds = {
        "read_clean": cleaned.seconds,
        "split_tokenize": time.perf_counter() - started,
        "tokenize_worker": t_tokenize,
    }
    return Streamed(
        spill,
        encoder,
        cleaned.stats,
        cleaned.stats.skipped + cleaned.cleaner.dropped,
        cleaned.scrub.removed,
        dict(cleaned.cleaner.modified),
        counts,
        hist,
        probes,
        seconds,
    )


def _pack_and_write(staging: Path, data, streamed: Streamed, doc_lens, pad_id: int):
    """Stage 3: one best-fit-decreasing pass over every document, then the shards."""
    t0 = time.perf_counter()
    bins = pack_bfd(doc_lens, data.max_seq_len)
    streamed.seconds["pack"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    writer = ShardWriter(staging, data.max_seq_len, data.shard_rows)
    for docs_in_row in bins:
        row_docs = [streamed.spill.document(d) for d in docs_in_row]
        writer.add(*build_row(row_docs, data.max_seq_len, pad_id))
    writer.flush()
    streamed.spill.close()
    streamed.seconds["write"] = time.perf_counter() - t0
    return writer.shards, len(bins)


def _manifest(report: dict, cfg, tok, fmt, pad_id: int, shards: list, tokenizer: str) -> Manifest:
    return Manifest(
        **{k: report[k] for k in COUNTS},
        amazon_sft_version=__version__,
        split_version=SPLIT_VERSION,
        max_seq_len=cfg.data.max_seq_len,
        pad_id=pad_id,
        eos_id=tok.eos_token_id,
        vocab_size=len(tok),
        tokenizer=tokenizer,
        tokenizer_fingerprint=tokenizer_fingerprint(tok),
        template_fingerprint=fmt.fingerprint(),
        files={
            "heldout": "heldout.jsonl",
            "seen_probe": "seen_probe.jsonl",
            "not_taught": NOT_TAUGHT,
            "catalogue": "catalogue.jsonl",
            "report": "report.json",
        },
        config=to_dict(cfg),
        shards=tuple(shards),
    )


def _collect(future, spill: Spill, hist: dict) -> float:
    enc, seconds = future.result()
    spill.add(enc)
    hist["prompt_tokens"].add_many(enc.prompt_lens)
    hist["answer_tokens"].add_many(enc.answer_lens)
    return seconds
