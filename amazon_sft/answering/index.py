"""The catalogue index: BM25 (bm25s) over product titles, saved beside the prepared shards.

Records are not held in memory: the index keeps the byte offset of each record in
``catalogue.jsonl`` and reads the few it returns.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from amazon_sft.errors import UserError

INDEX_DIR = "index"
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
    with open(catalogue, "rb") as fh:
        for line in fh:
            offsets.append(pos)
            pos += len(line)
            titles.append(orjson.loads(line)["title"])
    if not titles:
        raise UserError(f"{catalogue} is empty: nothing to index")
    retriever = bm25s.BM25()
    retriever.index(_tokenize(titles), show_progress=False)
    out = root / INDEX_DIR
    out.mkdir(exist_ok=True)
    retriever.save(str(out), show_progress=False)
    np.save(out / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    stats = {"titles": len(titles), "seconds": round(time.perf_counter() - start, 2)}
    (out / "stats.json").write_text(json.dumps(stats))
    return stats


class CatalogueIndex:
    def __init__(self, prepared_dir: str | Path) -> None:
        import bm25s

        root = Path(prepared_dir)
        folder = root / INDEX_DIR
        if not (folder / "offsets.npy").is_file():
            build_index(root)
        self.retriever = bm25s.BM25.load(str(folder), show_progress=False)
        self.offsets = np.load(folder / "offsets.npy", mmap_mode="r")
        self.catalogue = root / "catalogue.jsonl"

    def record(self, i: int) -> dict:
        with open(self.catalogue, "rb") as fh:
            fh.seek(int(self.offsets[i]))
            return orjson.loads(fh.readline())

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
