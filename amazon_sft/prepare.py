"""``amazon-sft prepare``: raw trn.json(.gz) -> cleaned, split, tokenized, packed shards + manifest.

One streaming pass reads, cleans, splits and tokenizes (the tokenizer runs in a worker thread on
all cores while the main thread reads the next batch); token ids go to a spill file on disk, so
memory holds only per-document lengths. Then one global best-fit-decreasing pass packs every
document, and the shards are written into a temporary folder that is renamed into place.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from array import array
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson
from tqdm import tqdm

from amazon_sft import __version__
from amazon_sft.atomic import remove_stale, staging_name, swap_into_place
from amazon_sft.config import RunConfig
from amazon_sft.config_loader import to_dict
from amazon_sft.data.cleaning import Cleaner
from amazon_sft.data.encode import DocumentEncoder, EncodedBatch, SpecialTextScrubber
from amazon_sft.data.packing import build_row, pack_bfd
from amazon_sft.data.reading import ReadStats, check_input, read_records
from amazon_sft.data.report import Histogram, write_report
from amazon_sft.data.shards import MANIFEST, ShardWriter, seal
from amazon_sft.data.split import ProbeSample, is_heldout, normalise_title
from amazon_sft.errors import UserError
from amazon_sft.prompts import build_prompt_format
from amazon_sft.tokenizer import choose_pad_id, load_tokenizer, tokenizer_fingerprint

SAMPLE_DOCS = 256  # documents used to check the fast tokenizer paths against plain encoding


class _Spill:
    """Token ids of every training document, appended to one file; lengths kept in memory.

    Documents are read back with ``pread``, not a memory map: this kernel maps whole cached
    folios (~250 KB) per fault, so random reads through a map grow RSS with the file size.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "w+b")  # noqa: SIM115 - closed in close()
        self.doc_lens = array("i")  # 4 bytes a document, not a Python int object
        self.prompt_lens = array("i")
        self.offsets = np.zeros(1, dtype=np.int64)

    def add(self, enc: EncodedBatch) -> None:
        enc.tokens.tofile(self._fh)
        self.doc_lens.extend(enc.doc_lens)
        self.prompt_lens.extend(enc.prompt_lens)

    def finish(self) -> np.ndarray:
        """Stop writing; returns the document lengths."""
        self._fh.flush()
        lens = np.asarray(self.doc_lens, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lens)]) * 4  # bytes
        return lens

    def document(self, index: int) -> tuple[np.ndarray, int]:
        """(token ids, prompt length) of one document."""
        start, end = self.offsets[index], self.offsets[index + 1]
        data = os.pread(self._fh.fileno(), int(end - start), int(start))
        return np.frombuffer(data, dtype=np.int32), self.prompt_lens[index]

    def close(self) -> None:
        self._fh.close()
        self.path.unlink()


def _staging_dir(out_dir: Path, overwrite: bool) -> Path:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a folder: choose a folder path")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise UserError(
            f"output {out_dir} exists and is not empty: pass --overwrite or another --out"
        )
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out_dir)
        staging = staging_name(out_dir)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as err:
        raise UserError(
            f"cannot write to {out_dir.parent} ({err.strerror}): choose a writable --out"
        ) from None
    return staging


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
) -> dict:
    """Run the whole pipeline; returns the manifest (also written to ``out_dir/manifest.json``)."""
    started = time.perf_counter()
    data, input_path, out_dir = cfg.data, Path(input_path), Path(out_dir)
    check_input(input_path)
    tok = load_tokenizer(cfg.model, tokenizer)
    fmt = build_prompt_format(tok, data)
    staging = _staging_dir(out_dir, overwrite)
    setup_s = time.perf_counter() - started  # imports and tokenizer load: fixed, not per row
    try:
        manifest = _run(input_path, staging, cfg, tok, fmt, strict, progress, setup_s)
        manifest["tokenizer"] = tokenizer or cfg.model.tokenizer or cfg.model.path
        manifest = seal(manifest)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        # the old output stays whole until the new one takes its place in one rename
        swap_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _run(input_path, staging, cfg, tok, fmt, strict, progress, setup_s) -> dict:
    started = time.perf_counter()
    data = cfg.data
    stats = ReadStats()
    cleaner = Cleaner(data.clean)
    probe = ProbeSample(data.probe_size)
    hist = {
        k: Histogram() for k in ("title_chars", "content_chars", "prompt_tokens", "answer_tokens")
    }
    records = read_records(input_path, stats, strict, data.clean.max_line_bytes)
    bar = tqdm(
        total=input_path.stat().st_size,
        unit="B",
        unit_scale=True,
        desc="prepare",
        disable=not progress,
        mininterval=0.5,
    )

    def documents():
        """Cleaned training rows; held-out and catalogue rows are written on the way."""
        with (
            open(staging / "heldout.jsonl", "wb") as heldout,
            open(staging / "catalogue.jsonl", "wb") as cat,
        ):
            for rec in records:
                bar.update(stats.bytes_read - bar.n)
                pair = cleaner(rec.title, rec.content)
                if pair is None:
                    continue
                title, content = scrub(pair[0]), scrub(pair[1])
                hist["title_chars"].add(len(title))
                hist["content_chars"].add(len(content))
                row = {"uid": rec.uid, "title": title, "content": content}
                key = normalise_title(title)
                split = "heldout" if is_heldout(title, data.heldout_fraction, key) else "train"
                if split == "train" and counts["taught"] == data.max_train_products:
                    split = "untaught"  # over the cap: still answerable from the catalogue
                cat.write(orjson.dumps({**row, "split": split}) + b"\n")
                if split == "heldout":
                    heldout.write(orjson.dumps(row) + b"\n")
                    counts["heldout"] += 1
                    continue
                if split == "untaught":
                    counts["over_max_train_products"] += 1
                    continue
                counts["taught"] += 1
                probe.offer(title, row, key)
                yield rec.uid, title, content

    counts = {"heldout": 0, "taught": 0, "over_max_train_products": 0}
    scrub = SpecialTextScrubber(tok)
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
    spill = _Spill(staging / "_spill.bin")
    t_tokenize = 0.0

    def encode(batch):
        t0 = time.perf_counter()
        enc = encoder.encode(batch)
        return enc, time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for batch in _batched(itertools.chain(sample, docs), data.tokenize_batch_docs):
            future = pool.submit(encode, batch)  # tokenizes while the next batch is read
            if pending is not None:
                t_tokenize += _collect(pending, spill, hist)
            pending = future
        if pending is not None:
            t_tokenize += _collect(pending, spill, hist)
    bar.close()
    t_read = time.perf_counter() - started

    doc_lens = spill.finish()
    if len(doc_lens) == 0:
        raise UserError(
            f"all {stats.lines} lines of {input_path} were filtered out (skipped: "
            f"{dict(stats.skipped + cleaner.dropped + encoder.dropped)}); check the file, "
            "or relax data.clean (e.g. data.clean.min_content_chars) / data.heldout_fraction"
        )
    t0 = time.perf_counter()
    bins = pack_bfd(doc_lens, data.max_seq_len)
    t_pack = time.perf_counter() - t0

    t0 = time.perf_counter()
    pad_id = choose_pad_id(tok)
    writer = ShardWriter(staging, data.max_seq_len, data.shard_rows)
    for docs_in_row in bins:
        row_docs = [spill.document(d) for d in docs_in_row]
        writer.add(*build_row(row_docs, data.max_seq_len, pad_id))
    writer.flush()
    spill.close()
    _write_jsonl(staging / "seen_probe.jsonl", probe.records())
    t_write = time.perf_counter() - t0

    total = time.perf_counter() - started
    n_tokens = int(doc_lens.sum())
    skipped = dict(stats.skipped + cleaner.dropped + encoder.dropped)
    report = {
        "input": str(input_path),
        "lines_read": stats.lines,
        "records_parsed": stats.lines - sum(stats.skipped.values()),
        "kept": counts["taught"] + counts["heldout"] + counts["over_max_train_products"],
        "train_products": counts["taught"],
        "train_docs": len(doc_lens),  # products x data.phrasings_per_doc, less prompt_too_long
        "heldout_docs": counts["heldout"],
        "over_max_train_products": counts["over_max_train_products"],
        "probe_docs": len(probe.records()),
        "answer_truncated": encoder.truncated,
        "answer_precut_before_encoding": encoder.precut,
        "uid_derived": stats.uid_derived,
        "uid_coerced": stats.uid_coerced,
        "special_token_text_removed": scrub.removed,
        "rows": len(bins),
        "tokens": n_tokens,
        "answer_tokens": int(hist["answer_tokens"].total + len(doc_lens)),
        "fill_ratio": round(n_tokens / (len(bins) * data.max_seq_len), 6),
        "skipped": skipped,
        "first_bad_lines": stats.first_lines,
        "modified": dict(cleaner.modified),
        "histograms": {k: h.summary() for k, h in hist.items()},
        "tokenizer_backend": encoder.backend,
        "prompt_encoding": encoder.encode_prompts.path,
        "rows_per_sec": round(stats.lines / total, 1),
        "rows_per_sec_with_setup": round(stats.lines / (total + setup_s), 1),
        "seconds": {
            "setup": round(setup_s, 2),
            "total": round(total, 2),
            "read_clean_tokenize": round(t_read, 2),
            "tokenize_worker": round(t_tokenize, 2),
            "pack": round(t_pack, 2),
            "write": round(t_write, 2),
        },
    }
    markdown = write_report(report, staging)
    if progress:
        print(markdown)
    return {
        **{
            k: report[k]
            for k in (
                "lines_read",
                "kept",
                "train_products",
                "train_docs",
                "heldout_docs",
                "over_max_train_products",
                "probe_docs",
                "rows",
                "tokens",
                "answer_tokens",
                "fill_ratio",
                "skipped",
                "answer_truncated",
            )
        },
        "format_version": 1,
        "amazon_sft_version": __version__,
        "max_seq_len": data.max_seq_len,
        "pad_id": pad_id,
        "eos_id": tok.eos_token_id,
        "vocab_size": len(tok),
        "tokenizer_fingerprint": tokenizer_fingerprint(tok),
        "template_fingerprint": fmt.fingerprint(),
        "files": {
            "heldout": "heldout.jsonl",
            "seen_probe": "seen_probe.jsonl",
            "catalogue": "catalogue.jsonl",
            "report": "report.json",
        },
        "config": to_dict(cfg),
        "shards": writer.shards,
    }


def _collect(future, spill: _Spill, hist: dict) -> float:
    enc, seconds = future.result()
    spill.add(enc)
    for p, a in zip(enc.prompt_lens, enc.answer_lens):
        hist["prompt_tokens"].add(p)
        hist["answer_tokens"].add(a)
    return seconds


def _batched(items, size: int):
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch
