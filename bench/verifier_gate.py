"""A probe: a cross-encoder fine-tuned on questions generated from the catalogue, as the gate.

The ratio gate (``ask --abstain-below``) reads how far the first record leads the second; an
absent product asked by name (another year, volume or book of a series that is here) often
has its sibling far ahead. A model that reads the question against the first record could
tell them apart. This trains one, from any transformers encoder in ``--base`` (a sequence
classifier with one logit), on pairs made from the prepared catalogue itself, never from the
evaluation questions:

- each record's generated questions (``data/question_kinds.py``: fragment, reorder, typo,
  Portuguese, descriptive, attribute), paired with the record when retrieval finds it in its
  first 3 (label 1);
- the same question paired with retrieval's best other record (label 0), and with retrieval's
  first record once the product is taken out of the index (label 0: what an absent product's
  question retrieves, the sibling the ratio gate lets through).

With ``--dev``, shoppers' own questions are added (their first record, right or not, and the
product asked when retrieved), repeated ``--dev-repeat`` times. Then, on each ``--questions``
file as ``ask`` retrieves it (``--meaning-weight``), it prints the ROC AUC of the model's
probability p and of the ratio (the first record right vs absent), and the outcomes of the
shipped gate and of

    doubtful when p < P_DOUBT, or when the gate's rules at RATIO fire and p < P_SURE

for each ``--rule RATIO P_DOUBT P_SURE`` (``--verifier DIR``: score with one saved by ``--out``,
without training, e.g. on other questions once a rule is chosen). Not shipped: a probe of
whether a trained verifier is worth building (docs/results.md).

    python bench/verifier_gate.py --data /tmp/pair/g40p --base MINILM_DIR --out /tmp/verifier \\
        --questions eval/questions/real_dev.jsonl ... --rule 2.0 0 0.95

Protocol: end to end, gate alone (with ``--quote-when-sure`` the gate decides every citation).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amazon_sft.answering.doubt import doubt_rule
from amazon_sft.answering.index import CatalogueIndex, Source
from amazon_sft.data.question_kinds import KINDS, make_question
from amazon_sft.evaluation.question_products import WithoutRows
from bench.abstain_gate import first_to_second, retrieve
from bench.answer_choice import roc_auc
from bench.gate_change import asked_once
from bench.static_embedding_fusion import OUTCOMES, outcome_table, share

GATE_K = 3
DESCRIPTION_CHARS = 400  # of a record read by the verifier, after its title


def record_text(source: Source) -> str:
    return f"{source.title}. {source.content[:DESCRIPTION_CHARS]}"


def training_pairs(index: CatalogueIndex, rows: int | None = None) -> list[tuple[str, str, float]]:
    """(question, record text, label) for the first ``rows`` records (all when None)."""
    pairs = []
    for i in range(len(index) if rows is None else min(rows, len(index))):
        rec = index.record(i)
        for kind in KINDS[1:]:  # "title" is the template phrasings, not a generated question
            question = make_question(kind, rec)
            if question is None:
                continue
            found = index.search(question.text, GATE_K)
            right = [s for s in found if s.uid == rec["uid"]]
            other = [s for s in found if s.uid != rec["uid"]]
            if right:
                pairs.append((question.text, record_text(right[0]), 1.0))
            if other:
                pairs.append((question.text, record_text(other[0]), 0.0))
            instead = WithoutRows(index, frozenset({i})).search(question.text, 1)
            if instead:
                pairs.append((question.text, record_text(instead[0]), 0.0))
    return pairs


def question_pairs(rows: list[dict]) -> list[tuple[str, str, float]]:
    """(question, record text, label) from shoppers' questions as ``retrieve`` returns them: the
    first record (1 when it is the product asked, else 0), and the product asked when it is
    further down the first 3 (1)."""
    pairs = []
    for row in rows:
        for n, source in enumerate(row["sources"][:GATE_K]):
            right = not row["absent"] and source.uid == row["uid"]
            if n == 0 or right:
                pairs.append((row["question"], record_text(source), float(right)))
    return pairs


def load(base: Path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    if tok.pad_token is None:  # a causal LM's tokenizer: its classifier reads the last real token
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    return tok, model


def train(tok, model, pairs, epochs: float, batch: int, tokens: int, lr: float) -> None:
    """BCE on the pairs, AdamW, linear warm-up (50 steps) and decay; prints the loss."""
    rng = random.Random(0)
    steps = max(1, int(len(pairs) * epochs / batch))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * max(0.0, 1 - s / steps)
    )
    loss_fn, order, start = torch.nn.BCEWithLogitsLoss(), [], time.time()
    model.train()
    for step in range(steps):
        if len(order) < batch:
            order = rng.sample(range(len(pairs)), len(pairs))
        part = [pairs[order.pop()] for _ in range(min(batch, len(pairs)))]
        enc = tok([p[0] for p in part], [p[1] for p in part], truncation="only_second",
                  max_length=tokens, padding=True, return_tensors="pt")  # fmt: skip
        loss = loss_fn(model(**enc).logits[:, 0], torch.tensor([p[2] for p in part]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step + 1}/{steps}: loss {loss.item():.3f} ({time.time() - start:.0f} s)")
    model.eval()


@torch.no_grad()
def probabilities(tok, model, rows: list[dict], tokens: int) -> np.ndarray:
    """p that each question's first record is the product asked (0 when nothing was found)."""
    out = np.zeros(len(rows))
    for n, row in enumerate(rows):
        if row["sources"]:
            enc = tok([row["question"]], [record_text(row["sources"][0])],
                      truncation="only_second", max_length=tokens, return_tensors="pt")  # fmt: skip
            out[n] = torch.sigmoid(model(**enc).logits[0, 0]).item()
    return out


def fitted(args, p, index: CatalogueIndex):
    """The verifier trained as the options say (and saved to ``--out``)."""
    if set(args.dev) & set(args.questions):
        p.error("--dev and --questions share a file: train and score on different questions")
    start = time.process_time()
    pairs = training_pairs(index, args.rows)
    dev = retrieve(args.data, asked_once(args.data, args.dev, []), GATE_K, args.meaning_weight)
    shoppers = question_pairs(dev)
    pairs += shoppers * args.dev_repeat
    if dev:
        print(f"{len(dev)} --dev questions, {len(shoppers)} pairs each repeated "
              f"{args.dev_repeat} times")  # fmt: skip
    positives = int(sum(x[2] for x in pairs))
    print(f"{len(pairs)} training pairs ({positives} right) from the catalogue's generated "
          f"questions{' and --dev' if dev else ''} in {time.process_time() - start:.0f} CPU s")  # fmt: skip
    tok, model = load(args.base)
    train(tok, model, pairs, args.epochs, args.batch, args.tokens, args.lr)
    if args.out:  # checked new or empty before training (main)
        model.save_pretrained(args.out), tok.save_pretrained(args.out)
    return tok, model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="the prepared folder (its index)")
    p.add_argument("--base", type=Path, help="a transformers encoder's folder, to train from")
    p.add_argument("--out", type=Path, help="save the trained verifier here")
    p.add_argument(
        "--verifier", type=Path, help="a verifier --out saved: score with it, no training"
    )
    p.add_argument("--questions", type=Path, nargs="+", required=True, help="question files")
    p.add_argument("--meaning-weight", type=float, default=4.0)
    p.add_argument("--ratio", type=float, default=2.0, help="the shipped gate's ratio")
    p.add_argument("--rule", type=float, nargs=3, action="append", default=[],
                   metavar=("RATIO", "P_DOUBT", "P_SURE"), help="a verifier gate to table")  # fmt: skip
    p.add_argument("--rows", type=int, help="train on the first ROWS records only")
    p.add_argument(
        "--dev",
        type=Path,
        nargs="*",
        default=[],
        help="shoppers' question files to train on too (never those of --questions)",
    )
    p.add_argument("--dev-repeat", type=int, default=5, help="each --dev pair, this many times")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--tokens", type=int, default=96, help="question + record, cut at")
    p.add_argument("--lr", type=float, default=4e-5)
    args = p.parse_args()
    if not (args.base or args.verifier):
        p.error("give --base DIR to train a verifier, or --verifier DIR to score with a saved one")
    out = args.out
    if out and (out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir())))):
        p.error(f"--out {args.out} is not a new or empty folder: saving would replace its files")
    torch.manual_seed(0)

    index = CatalogueIndex(args.data, meaning_weight=args.meaning_weight)
    if args.verifier:
        tok, model = load(args.verifier)
        model.eval()
    else:
        tok, model = fitted(args, p, index)

    asked = asked_once(args.data, args.questions, args.dev or [])  # none it was fitted on
    rows = retrieve(args.data, asked, GATE_K, args.meaning_weight)
    prob = probabilities(tok, model, rows, args.tokens)
    absent = np.array([r["absent"] for r in rows])
    right = np.array([r["top1"] for r in rows])
    ratio = np.array([first_to_second([s.score for s in r["sources"]]) for r in rows])
    print(f"\n{int((~absent).sum())} questions about a product, {int(absent.sum())} absent; "
          f"ROC AUC, first record right vs absent: verifier {roc_auc(prob[right], prob[absent]):.3f}, "
          f"ratio {roc_auc(ratio[right], ratio[absent]):.3f}")  # fmt: skip
    fused = [r["sources"] for r in rows]
    print("\n| gate | " + " | ".join(OUTCOMES) + " |\n" + "|---" * 5 + "|")
    gates = [(f"shipped: rules at {args.ratio:g}", args.ratio, 0.0, 2.0)]
    gates += [(f"p < {d:g}, or rules at {r:g} and p < {s:g}", r, d, s) for r, d, s in args.rule]
    for name, at, p_doubt, p_sure in gates:
        doubts = [
            prob[n] < p_doubt or (doubt_rule(r["sources"], at, r["question"]) is not None
                                  and prob[n] < p_sure)
            for n, r in enumerate(rows)
        ]  # fmt: skip
        table = outcome_table(rows, fused, doubts)
        print(f"| {name} | " + " | ".join(share(table[:, j]) for j in range(len(OUTCOMES))) + " |")


if __name__ == "__main__":
    main()
