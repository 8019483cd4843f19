"""Does the tuned model know when the asked product is among its records? Its likelihoods say.

For every question of a question file, on the real path (``index.search`` on the question as
typed, the product and its twins removed for an absent one, ``k`` records cut as in training),
the model scores every answer it could give: each shown record's training answer (its cut
description, then ``[source: uid]``, then EOS) and the abstention in English and Portuguese.
The prompt is run once and the candidates continue from its cache.

Printed:
- how well the model's abstain-vs-answer log-odds at the first answer token separates questions
  about absent products from the others (ROC AUC: 0.5 is a coin, 1.0 a perfect split);
- the outcome of answering by choice instead of greedy decoding: abstain when
  ``log P(abstention) + margin >= log sum_i P(record i)`` (first token), else cite the record
  whose whole answer is likeliest, for several margins;
- with ``--greedy``, the same questions' outcomes from an ``eval --questions`` folder's
  ``answers.jsonl`` (greedy decoding), to compare at equal abstention on absent products.

    python bench/answer_choice.py --data PREPARED --model RUN --questions eval/questions/real_dev.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amazon_sft.answering.index import CatalogueIndex
from amazon_sft.answering.question_text import clean_question
from amazon_sft.answering.record_prompts import build_prompt, quote_record
from amazon_sft.evaluation import question_file as QF
from amazon_sft.evaluation import question_products as QP
from amazon_sft.evaluation.loading import load_for_eval
from amazon_sft.prompts import ABSTENTIONS, build_prompt_format
from amazon_sft.tokenizer import hf_encoder

MARGINS = (-4, -3, -2, -1, 0, 1, 2)


def candidate_logprobs(
    model, prompt_ids: list[int], candidates: list[list[int]]
) -> list[list[float]]:
    """Per-token log-probabilities of each candidate continuing the prompt."""
    n = len(candidates)
    with torch.no_grad():
        first = model(input_ids=torch.tensor([prompt_ids]), use_cache=True)
        cache = first.cache
        cache.batch_repeat_interleave(n)
        longest = max(len(c) for c in candidates)
        batch = torch.zeros((n, longest), dtype=torch.long)
        mask = torch.zeros((n, len(prompt_ids) + longest), dtype=torch.long)
        mask[:, : len(prompt_ids)] = 1
        for j, c in enumerate(candidates):
            batch[j, : len(c)] = torch.tensor(c)
            mask[j, len(prompt_ids) : len(prompt_ids) + len(c)] = 1
        logits = model(input_ids=batch, attention_mask=mask, cache=cache).logits
    opening = torch.log_softmax(first.logits[0, -1].float(), -1)
    out = []
    for j, c in enumerate(candidates):
        lp = [opening[c[0]].item()]
        if len(c) > 1:
            steps = torch.log_softmax(logits[j, : len(c) - 1].float(), -1)
            lp += steps[torch.arange(len(c) - 1), torch.tensor(c[1:])].tolist()
        out.append(lp)
    return out


def score_questions(data_dir: Path, model_spec: str, questions_file: Path) -> list[dict]:
    model, tok, cfg, _ = load_for_eval(model_spec, [], "cpu")
    fmt = build_prompt_format(tok, cfg.data)
    index = CatalogueIndex(data_dir)
    questions = QF.read_questions(questions_file)
    products, removals = QP.read_products(data_dir / "catalogue.jsonl", questions)
    questions, _ = QP.keep_answerable(questions, products)
    encode, k = hf_encoder(tok), cfg.data.context_records
    rows, start = [], time.perf_counter()
    for n, q in enumerate(questions):
        searched = QP.WithoutRows(index, removals[q.removed]) if q.removed else index
        text = clean_question(q.text, tok)
        sources = searched.search(text, k)
        prompt_ids = (
            fmt.bos + encode([build_prompt(fmt, tok, cfg.data, text, sources, "grounded")])[0]
        )
        answers = [quote_record(tok, cfg.data, s, fmt) for s in sources]  # as training taught
        answers += [ABSTENTIONS["en"], ABSTENTIONS["pt"]]
        candidates = [[*ids, tok.eos_token_id] for ids in encode(answers)]
        rows.append(
            {
                "line": q.line,
                "kind": q.kind,
                "uid": q.uid,
                "absent": q.absent,
                "shown": [s.uid for s in sources],
                "logp": candidate_logprobs(model, prompt_ids, candidates),
            }
        )
        if n % 20 == 19:
            print(f"{n + 1} questions, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return rows


def _logsumexp(xs: list[float]) -> float:
    top = max(xs)
    return top + math.log(sum(math.exp(x - top) for x in xs))


def abstain_log_odds(row: dict) -> float:
    """log P(abstention) - log sum_i P(record i), at the first answer token (infinite when
    retrieval returned no record: nothing to cite)."""
    records, abstentions = row["logp"][:-2], row["logp"][-2:]
    if not records:
        return math.inf
    return max(a[0] for a in abstentions) - _logsumexp([r[0] for r in records])


def choose(row: dict, margin: float) -> str | None:
    """The uid the answer cites under the choice rule, or None for the abstention."""
    records = row["logp"][:-2]
    if abstain_log_odds(row) + margin >= 0:
        return None
    return row["shown"][int(np.argmax([sum(r) for r in records]))]


def roc_auc(positive: list[float], negative: list[float]) -> float:
    """P(a positive scores above a negative), ties half.

    >>> roc_auc([2.0, 3.0], [1.0, 2.0])
    0.875
    """
    pairs = [(p > n) + 0.5 * (p == n) for p in positive for n in negative]
    return sum(pairs) / len(pairs)


def auc_behind_gate(rows: list[dict], through: dict[int, bool], ratio: float) -> str:
    """The abstain log-odds' ROC AUC among the questions the gate at ``ratio`` lets through
    (``through``: line -> let through): could the model catch the absent products the gate is
    sure of?"""
    kept = [r for r in rows if through.get(r["line"])]
    absent = [abstain_log_odds(r) for r in kept if r["absent"]]
    present = [abstain_log_odds(r) for r in kept if not r["absent"]]
    if not absent or not present:
        return f"behind the gate at {ratio}: {len(present)} present, {len(absent)} absent: no AUC"
    return (
        f"behind the gate at {ratio}: {len(present)} present, {len(absent)} absent: ROC AUC of "
        f"the abstain log-odds {roc_auc(absent, present):.3f}"
    )


def outcome_table(rows: list[dict], greedy: dict | None) -> list[str]:
    present = [r for r in rows if not r["absent"]]
    absent = [r for r in rows if r["absent"]]
    lines = [
        f"questions: {len(present)} about a product in the catalogue, {len(absent)} absent",
        "| decision | right cited | wrong cited | false abstention | abstention on absent |",
        "|---|---|---|---|---|",
    ]
    if greedy is not None:
        g = [greedy[r["line"]] for r in present]
        ga = [greedy[r["line"]] for r in absent]
        lines.append(
            f"| greedy (eval answers) | {np.mean([o['right'] for o in g]):.3f} "
            f"| {np.mean([o['wrong'] for o in g]):.3f} | {np.mean([o['abstained'] for o in g]):.3f} "
            f"| {np.mean([o['abstained'] for o in ga]) if ga else float('nan'):.3f} |"
        )
    for margin in MARGINS:
        chosen = [choose(r, margin) for r in present]
        chosen_absent = [choose(r, margin) for r in absent]
        right = np.mean([c == r["uid"] for c, r in zip(chosen, present)])
        wrong = np.mean([c not in (None, r["uid"]) for c, r in zip(chosen, present)])
        abstained = np.mean([c is None for c in chosen])
        on_absent = np.mean([c is None for c in chosen_absent]) if absent else float("nan")
        lines.append(
            f"| choice, margin {margin:+d} | {right:.3f} | {wrong:.3f} | {abstained:.3f} "
            f"| {on_absent:.3f} |"
        )
    if absent and present:
        auc = roc_auc([abstain_log_odds(r) for r in absent], [abstain_log_odds(r) for r in present])
        lines.append(f"ROC AUC of the abstain log-odds, absent vs present: {auc:.3f}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="the prepared folder (index inside)")
    p.add_argument("--model", help="a training out_dir or its final folder")
    p.add_argument("--questions", type=Path, help="a question file (JSON lines)")
    p.add_argument("--from-scores", type=Path, help="read a --scores file instead of scoring")
    p.add_argument("--greedy", type=Path, help="answers.jsonl of eval --questions, same model")
    p.add_argument("--scores", type=Path, help="write every candidate's log-probs here")
    p.add_argument("--sure-at", type=float, help="also the AUC behind the gate at this ratio "
                   "(needs --data and --questions, also with --from-scores)")  # fmt: skip
    args = p.parse_args()
    if args.scores and not args.from_scores and (args.scores.exists() or args.scores.is_symlink()):
        p.error(
            f"--scores {args.scores} exists: give a new file (scores are never written over one)"
        )
    if args.from_scores:
        rows = [json.loads(x) for x in args.from_scores.read_text().splitlines() if x.strip()]
    elif args.data and args.model and args.questions:
        rows = score_questions(args.data, args.model, args.questions)
    else:
        p.error("give --data, --model and --questions (or --from-scores FILE)")
    if args.scores and not args.from_scores:
        args.scores.write_text("".join(json.dumps(r) + "\n" for r in rows))
    greedy = None
    if args.greedy:
        answers = [json.loads(x) for x in args.greedy.read_text().splitlines() if x.strip()]
        greedy = {
            a["line"]: a["outcomes"].get("tuned", a["outcomes"].get("model")) for a in answers
        }
    print("\n".join(outcome_table(rows, greedy)))
    if args.sure_at:
        if not (args.data and args.questions):
            p.error("--sure-at needs --data and --questions (the gate reads retrieval)")
        from amazon_sft.answering.doubt import retrieval_doubtful
        from bench.abstain_gate import retrieve  # the gate as ask applies it, k = 3

        through = {
            r["line"]: not retrieval_doubtful(r["sources"], args.sure_at, r["question"])
            for r in retrieve(args.data, args.questions, 3)
        }
        print(auc_behind_gate(rows, through, args.sure_at))


if __name__ == "__main__":
    main()
