"""Would a static embedding model, fused with word retrieval, find what shoppers mean, and
keep the gate's abstentions? A probe, not a retriever.

WordLlama (PyPI ``wordllama``, MIT) ships its weights in its wheel (a 256-dimension token
embedding table distilled from a Llama-2 tokenizer's embeddings, 16 MB): the one retrieval
model of the registry that runs offline, and at about 0.2 ms a record on 2 CPU cores it could
embed 1.3M records in minutes (the SmolLM2 hidden states of ``bench/embedding_rerank.py`` cost
a thousand times that). Records are embedded as their title, then the first ``--chars``
characters of the description; questions as typed.

Printed, for the questions of the files given (one table over all of them):

- recall@1 per kind, about products in the catalogue: ``ask``'s retrieval (``index.search``
  on the question as typed), the embeddings alone over the whole catalogue, and the fusion;
- the gate (``doubt.retrieval_doubtful``, as ``ask --abstain-below`` applies it) on the fused
  order, per (gamma, ratio): right and wrong first record, false abstention, absent abstention.

The fusion multiplies each of word retrieval's ``--candidates`` first records' BM25 score by
``exp(gamma x cosine)`` and re-sorts them: the gate's ratio of the first score to the second
then carries both signals (gamma 0 is ``ask`` as it ships; a rerank by a convex sum of
normalised scores would give the gate a ratio on another scale).

    python bench/static_embedding_fusion.py --data /tmp/pair/g40p \\
        --questions eval/questions/real_dev.jsonl eval/questions/real_blind5_dev.jsonl

Protocol: end to end (the question as typed, real retrieval, k = 3 for the gate); say whether
the question files were tuned on. Absent products that a question file takes out of the
catalogue are taken out here too (``abstain_gate.retrieve``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amazon_sft.answering.doubt import retrieval_doubtful
from amazon_sft.answering.index import CatalogueIndex, Source
from bench.abstain_gate import retrieve

GATE_K = 3  # records ask puts in the prompt, and the gate reads


def load_wordllama():
    """WordLlama from the weights and tokenizer its wheel ships, never the hub: 0.4 looks for
    its tokenizer under ``tokenizer/`` while the wheel puts it under ``tokenizers/``, so the
    package folder is given as the cache, where it finds both, with downloads off."""
    import wordllama

    return wordllama.WordLlama.load(
        cache_dir=Path(wordllama.__file__).parent, disable_download=True
    )


def fuse(sources: list[Source], cosines: np.ndarray, gamma: float) -> list[Source]:
    """The sources re-sorted by BM25 score x exp(gamma x cosine), with those scores.

    >>> s = [Source("a", "A", "", 2.0), Source("b", "B", "", 1.8)]
    >>> [x.uid for x in fuse(s, np.array([0.1, 0.5]), 0.0)], [x.uid for x in fuse(s, np.array([0.1, 0.5]), 1.0)]
    (['a', 'b'], ['b', 'a'])
    """
    scored = [
        replace(s, score=s.score * math.exp(gamma * float(c))) for s, c in zip(sources, cosines)
    ]
    return sorted(scored, key=lambda s: -s.score)


def recall_line(name: str, hits: list[bool], kinds: list[str]) -> str:
    per = " ".join(
        f"{k} {np.mean([h for h, q in zip(hits, kinds) if q == k]):.3f}" for k in sorted(set(kinds))
    )
    return f"| {name} | {np.mean(hits):.3f} | {per} |"


def gate_line(gamma: float, ratio: float, rows: list[dict], fused: list[list[Source]]) -> str:
    right = wrong = false = absent_abstained = 0
    for row, sources in zip(rows, fused):
        doubtful = retrieval_doubtful(sources[:GATE_K], ratio, row["question"])
        if row["absent"]:
            absent_abstained += doubtful
        elif doubtful:
            false += 1
        elif sources[0].uid == row["uid"]:
            right += 1
        else:
            wrong += 1
    present = max(sum(not r["absent"] for r in rows), 1)
    absent = max(sum(r["absent"] for r in rows), 1)
    return (
        f"| {gamma:g} | {ratio:g} | {right / present:.3f} | {wrong / present:.3f} | "
        f"{false / present:.3f} | {absent_abstained / absent:.3f} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="the prepared folder (its index)")
    p.add_argument("--questions", type=Path, nargs="+", required=True, help="question files")
    p.add_argument("--candidates", type=int, default=10, help="word retrieval's records fused")
    p.add_argument("--gammas", type=float, nargs="+", default=[0, 2, 3, 4])
    p.add_argument("--ratios", type=float, nargs="+", default=[1.4, 1.6, 1.8, 2.0])
    p.add_argument("--chars", type=int, default=500, help="description characters embedded")
    args = p.parse_args()

    model = load_wordllama()
    index = CatalogueIndex(args.data)
    records = [index.record(i) for i in range(len(index))]
    rows = [r for f in args.questions for r in retrieve(args.data, f, args.candidates)]
    text = {r["uid"]: f"{r['title']}. {r['content'][: args.chars]}" for r in records}
    start = time.perf_counter()
    uids = list(text)
    catalogue = model.embed([text[u] for u in uids], norm=True)
    took = time.perf_counter() - start
    position = {u: i for i, u in enumerate(uids)}
    asked = model.embed([r["question"] for r in rows], norm=True)
    cosines = asked @ catalogue.T
    present = [i for i, r in enumerate(rows) if not r["absent"]]
    kinds = [rows[i]["kind"] for i in present]
    print(f"{len(present)} questions about a product, {len(rows) - len(present)} absent; "
          f"{len(uids)} records embedded in {took:.1f} s ({took / len(uids) * 1000:.3f} ms a record)")  # fmt: skip

    def fused(gamma: float) -> list[list[Source]]:
        return [
            fuse(r["sources"], cosines[i, [position[s.uid] for s in r["sources"]]], gamma)
            for i, r in enumerate(rows)
        ]

    by_gamma = {g: fused(g) for g in args.gammas}
    print("\n| ranking | recall@1 | per kind |\n|---|---|---|")
    hits = [
        bool(rows[i]["sources"]) and rows[i]["sources"][0].uid == rows[i]["uid"] for i in present
    ]
    print(recall_line("word retrieval (ask)", hits, kinds))
    alone = [uids[int(cosines[i].argmax())] == rows[i]["uid"] for i in present]
    print(recall_line("embeddings alone (whole catalogue)", alone, kinds))
    for g in args.gammas:
        hits = [bool(by_gamma[g][i]) and by_gamma[g][i][0].uid == rows[i]["uid"] for i in present]
        print(recall_line(f"fused, gamma={g:g}, N={args.candidates}", hits, kinds))
    print("\n| gamma | ratio | right first | wrong first | false abstention | absent abstention |")
    print("|---|---|---|---|---|---|")
    for g in args.gammas:
        for ratio in args.ratios:
            print(gate_line(g, ratio, rows, by_gamma[g]))


if __name__ == "__main__":
    main()
