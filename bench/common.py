"""Shared set-up for the benchmarks: the real-size Mistral tokenizer and real-like input files."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from amazon_sft.tokenizer import sentencepiece_folder

SHARED_ROWS = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "amazontitles_real_head_sample.jsonl"
)


BENCH_MARKER = ".amazon_sft_bench.json"
"""Written into a working folder a benchmark made, so that a later stage or run may write there."""


def claim_work_dir(path: Path, flag: str = "--work", inputs: tuple[str, ...] = ()) -> Path:
    """``path`` as a benchmark's working folder: made if missing, marked; an existing folder
    that holds anything and no marker is refused (a benchmark overwrote a user's trn.json.gz
    and results.json in the folder it was given). ``inputs``: names the benchmark reads there
    and never writes (retrieval_full's catalogue.jsonl)."""
    path = Path(path)
    if path.is_symlink() and path.is_dir():
        path = path.resolve()  # a link to a scratch folder, as clusters have
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise SystemExit(f"{flag} {path} is not a folder: give a new or empty folder")
    if path.is_dir() and not (path / BENCH_MARKER).is_file():
        held = sorted(p.name for p in path.iterdir() if p.name not in inputs)
        if held:
            raise SystemExit(
                f"{flag} {path} holds {', '.join(held[:5])}{' ...' if len(held) > 5 else ''}, "
                "which no benchmark wrote: give a new or empty folder"
            )
    path.mkdir(parents=True, exist_ok=True)
    (path / BENCH_MARKER).write_text('{"written_by": "amazon_sft bench"}\n')
    return path


def mistral_tokenizer_dir(root: Path) -> Path:
    """The 32k Mistral SentencePiece tokenizer from the PyPI package mistral-common, as a folder
    AutoTokenizer loads (``LlamaTokenizerFast(vocab_file=...)`` silently ignores the file)."""
    import mistral_common

    src = Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"
    return sentencepiece_folder(src, root / "mistral-tokenizer")


def real_like_file(path: Path, n_rows: int) -> Path:
    """``n_rows`` lines in the trn.json format: the real rows of ../shared/data, replicated with a
    copy number in the title and uid so that de-duplication keeps them (no pipeline gets to skip
    work the other does)."""
    if not SHARED_ROWS.is_file():
        raise SystemExit(
            f"{SHARED_ROWS} is missing: the benchmarks read the real rows from ../shared/data"
        )
    rows = [orjson.loads(line) for line in SHARED_ROWS.read_bytes().splitlines() if line.strip()]
    with open(path, "wb") as fh:
        for i in range(n_rows):
            row = rows[i % len(rows)]
            copy = i // len(rows)
            title = row["title"] if copy == 0 else f"{row['title']} (copy {copy})"
            fh.write(
                orjson.dumps({"uid": f"{i:010d}", "title": title, "content": row["content"]})
                + b"\n"
            )
    return path


def cpu_seconds() -> float:
    """CPU time of this process and its finished children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system
