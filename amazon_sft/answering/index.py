"""The catalogue index: BM25 (bm25s) over product titles, saved beside the prepared shards.

Records are not held in memory: the index keeps the byte offset of each record in
``catalogue.jsonl`` and reads the few it returns.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from amazon_sft.atomic import staging_name, swap_into_place
from amazon_sft.data.shards import quick_digest
from amazon_sft.errors import UserError, first_line, reading

REDO = "re-run amazon-sft prepare (it writes catalogue.jsonl), then amazon-sft index"

INDEX_DIR = "index"
STATS = "stats.json"
# Words of the question, not of the product: dropped from queries (English stop words are
# dropped by bm25s itself).
QUESTION_WORDS = (  # noqa: SIM905
    "what is are the description of product products tell me about can you describe main features "
    "give information qual quais é são a o os as de do da dos das descrição produto me fale sobre "
    "descreva principais características informações um uma"
).split()


@dataclass
class Source:
    uid: str
    title: str
    content: str
    score: float


def _tokenize(texts: list[str]):
    import bm25s

    stop = sorted(set(QUESTION_WORDS) | set(bm25s.stopwords.STOPWORDS_EN))
    # single characters count: "Set of 2" and "Set of 5" are different products
    return bm25s.tokenize(texts, stopwords=stop, token_pattern=r"(?u)\b\w+\b", show_progress=False)


def build_index(prepared_dir: str | Path) -> dict:
    """Index every title of ``catalogue.jsonl``; returns build statistics."""
    import bm25s

    root = Path(prepared_dir)
    catalogue = root / "catalogue.jsonl"
    if not catalogue.is_file():
        raise UserError(
            f"{catalogue} not found: run amazon-sft prepare first (it writes the catalogue)"
        )
    start = time.perf_counter()
    titles, offsets, pos = [], [], 0
    with reading(catalogue, "catalogue", REDO), open(catalogue, "rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            offsets.append(pos)
            pos += len(line)
            try:
                titles.append(orjson.loads(line)["title"])
            except (ValueError, KeyError, TypeError) as err:
                raise UserError(
                    f"catalogue {catalogue} line {line_no} is cut or corrupt ({first_line(err)}): "
                    f"{REDO}"
                ) from None
    if not titles:
        raise UserError(f"{catalogue} is empty: nothing to index")
    retriever = bm25s.BM25()
    retriever.index(_tokenize(titles), show_progress=False)
    out = root / INDEX_DIR
    staging = staging_name(out)
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        retriever.save(str(staging), show_progress=False)
        np.save(staging / "offsets.npy", np.asarray(offsets, dtype=np.int64))
        stats = {"titles": len(titles), "seconds": round(time.perf_counter() - start, 2)}
        files = {p.name: quick_digest(p) for p in sorted(staging.iterdir())}
        files[catalogue.name] = quick_digest(catalogue)  # the index is only valid for this one
        (staging / STATS).write_text(json.dumps({**stats, "files": files}))
        swap_into_place(staging, out)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(
            f"cannot write the index into {root} ({first_line(err)}): make the prepared folder "
            "writable, or build it where you can with a copy"
        ) from None
    return stats


def check_index(folder: Path, catalogue: Path) -> None:
    """The index files and the catalogue are the ones the index was built from (sizes and
    sampled digests): a damaged file or a catalogue changed since is refused, not half-read."""
    files = json.loads((folder / STATS).read_text())["files"]
    for name, digest in files.items():
        path = catalogue if name == catalogue.name else folder / name
        if quick_digest(path) != digest:
            raise ValueError(f"{path.name} changed since the index was built")


class CatalogueIndex:
    def __init__(self, prepared_dir: str | Path) -> None:
        import bm25s

        root = Path(prepared_dir)
        if not root.is_dir():
            raise UserError(f"--index {root} is not a folder: give the prepared folder")
        folder = root / INDEX_DIR
        if not (folder / "offsets.npy").is_file():
            build_index(root)
        with reading(folder, "index", f"rebuild it: amazon-sft index {root}"):
            check_index(folder, root / "catalogue.jsonl")
            self.retriever = bm25s.BM25.load(str(folder), show_progress=False)
            self.offsets = np.load(folder / "offsets.npy", mmap_mode="r")
            if len(self.offsets) != self.retriever.scores["num_docs"]:
                raise ValueError("offsets.npy and the BM25 index disagree on the product count")
        self.catalogue = root / "catalogue.jsonl"

    def record(self, i: int) -> dict:
        with reading(self.catalogue, "catalogue", REDO), open(self.catalogue, "rb") as fh:
            fh.seek(int(self.offsets[i]))
            rec = orjson.loads(fh.readline())
            return {"uid": str(rec["uid"]), "title": rec["title"], "content": rec["content"]}

    def search(self, question: str, k: int = 3) -> list[Source]:
        """The ``k`` products whose titles best match the question, best first."""
        tokens = _tokenize([question])
        if not tokens.vocab or not any(tokens.ids):
            return []
        k = min(k, len(self.offsets))
        docs, scores = self.retriever.retrieve(tokens, k=k, show_progress=False)
        out = []
        for i, score in zip(docs[0].tolist(), scores[0].tolist()):
            if score <= 0:
                continue
            rec = self.record(i)
            out.append(Source(rec["uid"], rec["title"], rec["content"], round(float(score), 3)))
        return out
