"""Grounded (RAFT) examples in prepare, the title-and-description split, eval's grounded scores
and grounded answering."""

from __future__ import annotations

import json
import re

import numpy as np
import orjson
import pytest

from amazon_sft.config import load_run_config
from amazon_sft.data.cutting import RUNS_ON
from amazon_sft.data.grounded import uid_share
from amazon_sft.data.shards import PackedShards
from amazon_sft.data.split import normalise_title, split_groups
from amazon_sft.evaluation.items import EvalItem
from amazon_sft.evaluation.oracle_scores import grounded_vectors
from amazon_sft.prepare import prepare
from amazon_sft.prompts import ABSTENTIONS, RECORDS_HEADER, ContextRecord, cited_uids

from .conftest import GROUNDED

_RECORD = re.compile(r"^\[\d+\] title: (.*) \| description: (.*) \| uid: (\S+)$", re.M)


def _jsonl(path):
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _documents(prepared, tok):
    """(prompt text, answer text, loss mask) of every document in the shards."""
    shards = PackedShards(prepared)
    for index in range(len(shards)):
        ids, mask, lens = shards.row(index)
        start = 0
        for n in lens:
            doc, doc_mask = ids[start : start + n], mask[start : start + n]
            start += n
            n_prompt = int(np.argmax(doc_mask))
            yield tok.decode(doc[:n_prompt]), tok.decode(doc[n_prompt:-1]), doc_mask


def test_split_groups_titles_and_descriptions_together():
    # rows 0-1 share a description (editions), 1-2 a title, 3 stands alone
    titles = np.array([11, 22, 22, 33], dtype=np.uint64)
    texts = np.array([1, 1, 2, 3], dtype=np.uint64)
    assert split_groups(titles, texts).tolist() == [11, 11, 11, 33]


def test_no_held_out_product_has_a_twin_in_training(tmp_path):
    """Editions: two titles, one description. The old title-hash split put about half of the
    pairs on both sides; now neither the title nor the description crosses."""
    lines = []
    for i in range(300):
        text = f"Edition text number {i}: a story of ships, harbours and the sea, told anew."
        for binding in ("Paperback", "Hardcover"):
            lines.append(
                orjson.dumps(
                    {
                        "uid": f"B{i:04d}{binding[0]}",
                        "title": f"Sea {i} ({binding})",
                        "content": text,
                    }
                )
            )
    (tmp_path / "trn.json").write_bytes(b"\n".join(lines) + b"\n")
    prepare(
        tmp_path / "trn.json",
        tmp_path / "out",
        load_run_config("tiny", ["data.heldout_fraction=0.3", "data.probe_size=1000"]),
        progress=False,
    )
    rows = _jsonl(tmp_path / "out" / "catalogue.jsonl")
    held = [r for r in rows if r["split"] == "heldout"]
    train = [r for r in rows if r["split"] == "train"]
    assert 120 < len(held) < 240  # ~30% of the groups, both editions each
    assert not {r["content"] for r in held} & {r["content"] for r in train}
    assert not {normalise_title(r["title"]) for r in held} & {
        normalise_title(r["title"]) for r in train
    }
    # the held-out sample eval reads is drawn over the whole file, not its head
    sample = [r["uid"] for r in _jsonl(tmp_path / "out" / "heldout.jsonl")]
    order = {r["uid"]: i for i, r in enumerate(held)}
    assert sorted(sample) == sorted(order)  # all of them here (probe_size > held-out rows)
    assert [order[u] for u in sample[:20]] != sorted(order[u] for u in sample[:20])


def test_grounded_examples_quote_and_cite_or_abstain(grounded_prepared, tiny_tok):
    manifest = json.loads((grounded_prepared / "manifest.json").read_text())
    catalogue = _jsonl(grounded_prepared / "catalogue.jsonl")
    split_of = {r["uid"]: r["split"] for r in catalogue}
    by_uid = {r["uid"]: r for r in catalogue}
    taught = manifest["train_products"]
    assert 0.35 * taught < manifest["grounded_docs"] < 0.65 * taught
    assert 0.15 < manifest["grounded_absent_docs"] / manifest["grounded_docs"] < 0.45
    seen = {"cited": 0, "abstained": 0, "pt": 0}
    for prompt, answer, mask in _documents(grounded_prepared, tiny_tok):
        if RECORDS_HEADER not in prompt:
            continue
        records = _RECORD.findall(prompt)
        assert 1 <= len(records) <= 3
        uids = [u for _, _, u in records]
        assert all(split_of[u] == "train" for u in uids)  # negatives from training only
        assert mask[-1] == 1 and mask.sum() == len(mask) - int(np.argmax(mask))
        question = prompt.split("\n")[1]
        portuguese = question.startswith(("Qual", "Quais", "Me fale", "Descreva"))
        if answer in ABSTENTIONS.values():
            seen["abstained"] += 1
            assert answer == ABSTENTIONS["pt" if portuguese else "en"]
            asked = max(
                (r for r in catalogue if r["title"] in question), key=lambda r: len(r["title"])
            )
            assert asked["uid"] not in uids
            continue
        (uid,) = cited_uids(answer)
        assert uid in uids and answer.endswith(f"[source: {uid}]")
        shown = dict((u, d) for _, d, u in records)[uid]
        assert answer == f"{shown}\n[source: {uid}]"
        assert by_uid[uid]["content"].startswith(shown.removesuffix(RUNS_ON))
        others = [by_uid[u] for u in uids if u != uid]  # distractors: never a twin
        assert all(o["content"] != by_uid[uid]["content"] for o in others)
        seen["cited"] += 1
        seen["pt"] += portuguese
    assert seen["cited"] > 50 and seen["abstained"] > 10 and seen["pt"] > 5


def test_grounded_scores_count_citations_twins_and_abstentions():
    ctx = [ContextRecord("A", "Bear", "a soft brown bear"), ContextRecord("B", "Fox", "a red fox")]
    present = [EvalItem("A", "Bear", "p", "a soft brown bear", "t", ctx) for _ in range(6)]
    answers = [
        "a soft brown bear\n[source: A]",  # right
        "a soft brown bear\n[source: B]",  # quotes A, cites B
        "a red fox\n[source: B]",  # wrong product, consistently cited
        "The catalogue has no record of this product.",
        # right, cited twice: end to end's score_answer calls it right, and so does this
        # (it asked for the list [A]; an outside review)
        "a soft brown bear\n[source: A]\n[source: A]",
        "a soft brown bear\n[source: A] [source: B]",  # credits another too: not right
    ]
    vec = grounded_vectors(present, answers)
    assert vec["citation_accuracy"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    # as end to end counts it (an outside review: the oracle figure read 0 for a model that
    # always answers about another product and cites it): citing another record is wrong
    assert vec["wrong_record_cited"] == [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    assert vec["false_abstention"] == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    # an outside audit: what was neither right, wrong nor an abstention had no row of its own
    # (a model writing nothing read 0 / 0 / 0): the four outcomes add up to each answer
    silent = grounded_vectors(present[:2], ["", "a soft brown bear"])
    assert silent["cites_nothing"] == [1.0, 1.0]
    outcomes = ("citation_accuracy", "wrong_record_cited", "false_abstention", "cites_nothing")
    assert all(sum(v) == 1 for v in zip(*(vec[k] for k in outcomes)))
    # the asked citation on another record's text: wrong, and not a right citation too
    quoted = grounded_vectors(present[:1], ["a red fox\n[source: A]"])
    assert (quoted["citation_accuracy"], quoted["wrong_record_cited"]) == ([0.0], [1.0])
    absent = [EvalItem("A", "Bear", "p", "r", "t", ctx[1:], absent=True)] * 2
    pt = "O catálogo não tem registro deste produto."
    assert grounded_vectors(absent, [pt, "a red fox [source: B]"]) == {
        "abstention_accuracy": [1.0, 0.0]
    }
    assert grounded_vectors([EvalItem("A", "Bear", "p", "r", "t")], ["x"]) == {}
    # the right record left out and retrieval found nothing else for the first item: its
    # context is empty, and the split's abstention accuracy went missing (a new user's run)
    alone = [EvalItem("A", "Bear", "p", "r", "t", [], absent=True), *absent]
    assert grounded_vectors(alone, [pt, pt, "x"]) == {"abstention_accuracy": [1.0, 1.0, 0.0]}


@pytest.mark.e2e
def test_eval_scores_both_modes_on_the_same_titles(grounded_prepared, tiny_model_dir, tmp_path):
    from .test_eval import _eval

    proc = _eval(
        "--data",
        str(grounded_prepared),
        "--model",
        "config:tiny",
        "--out",
        str(tmp_path / "r"),
        "--n",
        "6",
        "--max-new-tokens",
        "8",
        f"model.path={tiny_model_dir}",
        "model.tokenizer=builtin:tiny",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["mode"] == "both"  # auto: the data taught grounded examples
    splits = report["splits"]
    assert set(splits) == {
        f"{s}{m}" for s in ("heldout", "seen") for m in ("", " grounded", " absent")
    }
    grounded = splits["heldout grounded"]["model"]["metrics"]
    assert {"citation_accuracy", "wrong_record_cited", "false_abstention"} <= set(grounded)
    assert "abstention_accuracy" in splits["heldout absent"]["model"]["metrics"]
    assert "citation_accuracy" not in splits["heldout"]["model"]["metrics"]
    rows = _jsonl(tmp_path / "r" / "answers.jsonl")
    for row in rows:
        if row["split"].endswith("grounded"):
            assert row["uid"] in row["context"]  # the right record is shown
        if row["split"].endswith("absent"):
            assert row["uid"] not in row["context"] and row["reference"] == ABSTENTIONS["en"]
    assert "citation accuracy" in (tmp_path / "r" / "report.md").read_text()
    # each row carries its answer's outcomes, whose means are the report's (the one scoring,
    # which bench/grounded_intervals.py reads back)
    for split, figures in splits.items():
        scores = [r["scores"]["model"] for r in rows if r["split"] == split]
        for key in ("rougeL", "citation_accuracy", "false_abstention", "abstention_accuracy"):
            if key in figures["model"]["metrics"]:
                mean = sum(s[key] for s in scores) / len(scores)
                assert mean == pytest.approx(figures["model"]["metrics"][key]), (split, key)
    # "seen grounded" asks about products taught grounded (data.grounded_fraction=0.5), not any
    # training product: half the "seen" grounded titles had never been taught grounded
    seen = [r for r in rows if r["split"] in ("seen grounded", "seen absent")]
    assert len(seen) == 12 and all(uid_share(r["uid"], "grounded:") < 0.5 for r in seen)
    assert "taught grounded" in (tmp_path / "r" / "report.md").read_text()


def test_answering_defaults_to_grounded_for_a_grounded_model(grounded_prepared, tuned_run):
    from amazon_sft.answering.ask import Answerer
    from amazon_sft.answering.index import CatalogueIndex
    from amazon_sft.evaluation.loading import load_for_eval
    from amazon_sft.prompts import build_prompt_format

    model, tok, cfg, _ = load_for_eval(str(tuned_run), ["data.grounded_fraction=0.5"], "cpu")
    answerer = Answerer(
        model, tok, build_prompt_format(tok, cfg.data), CatalogueIndex(grounded_prepared), cfg.data
    )
    title = _jsonl(grounded_prepared / "heldout.jsonl")[0]["title"]
    result = answerer(f"Tell me about {title}", max_new_tokens=4)
    assert result.mode == "grounded" and RECORDS_HEADER in result.prompt
    assert len(result.sources) == cfg.data.context_records
    assert all(s.uid in result.prompt and s.cited is not None for s in result.sources)
    closed = answerer(f"Tell me about {title}", mode="closed", max_new_tokens=4)
    assert RECORDS_HEADER not in closed.prompt and closed.sources[0].cited is None


@pytest.mark.e2e
def test_a_run_on_grounded_data_answers_grounded_by_default(
    grounded_prepared, tiny_model_dir, tmp_path
):
    """The data taught grounded examples, whatever the train command said: the run's saved
    config takes the grounded settings from the manifest (a run trained with
    data.grounded_fraction left at 0 answered closed-book by default)."""
    from amazon_sft.answering.ask import default_mode
    from amazon_sft.config import load_run_config

    from .conftest import train_here, train_overrides

    run = tmp_path / "run"
    train_here(*train_overrides(grounded_prepared, tiny_model_dir, run), "train.max_steps=1",
               "data.max_seq_len=512")  # fmt: skip
    saved = load_run_config(str(tmp_path / "run" / "final" / "amazon_sft_config.yaml"))
    assert saved.data.grounded_fraction == 0.5 and saved.data.context_record_tokens == 40
    assert default_mode(saved.data) == "grounded"


def test_grounded_workers_write_the_same_shards(grounded_prepared, catalogue, tmp_path):
    """Retrieval for grounded examples in worker processes (data.grounded_workers) gives the
    same documents, in the same order, as one process: only the wall time may change."""
    out = tmp_path / "data"
    cfg = load_run_config("tiny", [*GROUNDED, "data.grounded_workers=2"])
    prepare(catalogue, out, cfg, progress=False)
    for name in ("input_ids.npy", "loss_mask.npy", "doc_lens.npy"):
        assert (out / "shard-00000" / name).read_bytes() == (
            grounded_prepared / "shard-00000" / name
        ).read_bytes(), name
    one, two = (json.loads((p / "report.json").read_text()) for p in (grounded_prepared, out))
    keys = ("grounded_docs", "grounded_absent_docs", "grounded_short_context", "train_docs")
    assert [one[k] for k in keys] == [two[k] for k in keys] and two["grounded_docs"] > 100


def test_compare_opens_the_catalogue_index_once(
    grounded_prepared, tiny_model_dir, tmp_path, monkeypatch
):
    # Both models are asked over the same index: at 1.3M products a second open is a second
    # ~0.5 s load and a second copy of the arrays in memory.
    from amazon_sft.answering import index
    from amazon_sft.evaluation.main import main

    opened = []
    real_init = index.CatalogueIndex.__init__

    def counting_init(self, *args, **kwargs):
        opened.append(args)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(index.CatalogueIndex, "__init__", counting_init)
    model = [f"model.path={tiny_model_dir}", "model.tokenizer=builtin:tiny"]
    args = ["--data", str(grounded_prepared), "--compare", "config:tiny", "config:tiny"]
    args += ["--mode", "grounded", "--splits", "heldout", "--n", "2", "--max-new-tokens", "4"]
    assert main([*args, "--out", str(tmp_path / "r"), *model]) == 0
    assert len(opened) == 1


def test_batched_retrieval_picks_the_records_of_one_query_at_a_time(grounded_prepared, tiny_tok):
    """GroundedBuilder asks a batch's questions together (index.top_many); asked one at a time
    (index.top), the examples are the same: records, order, prompts and answers."""
    from amazon_sft.answering.index import CatalogueIndex
    from amazon_sft.data.grounded import GroundedBuilder
    from amazon_sft.prompts import build_prompt_format

    data = load_run_config("tiny", GROUNDED).data
    fmt = build_prompt_format(tiny_tok, data)
    products = [r for r in _jsonl(grounded_prepared / "catalogue.jsonl") if r["split"] == "train"]
    products = products[:400]
    index = CatalogueIndex(grounded_prepared)
    batched = GroundedBuilder(index, fmt, tiny_tok, data).build(products)

    class OneAtATime:
        def __init__(self, index):
            self.index = index

        def __getattr__(self, name):
            return getattr(self.index, name)

        def top_many(self, questions, k, train_only=False, shortlist=None):
            return [self.index.top(q, k, train_only, shortlist) for q in questions]

    single = GroundedBuilder(OneAtATime(index), fmt, tiny_tok, data).build(products)
    assert batched == single
    assert sum(e.absent for e in batched) > 10
    # a title whose editions fill the candidates leaves fewer records (grounded_short_context)
    assert sum(len(e.records) == 3 for e in batched) >= 0.95 * len(batched)


def test_cutting_reads_only_the_opening_and_cuts_where_the_whole_text_would(tiny_tok):
    """cut_to_tokens tokenizes the opening of a long description (they run to 197k characters);
    the cut is the one tokenizing the whole text gives, whatever the text's words."""
    import random

    from amazon_sft.data import cutting

    rng = random.Random(0)
    words = ["headphones", "a", "Ünïcode", "x" * 40, "the", "&amp;", "12", "--", "", "日本語"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, n))) for n in (5, 300, 9000)]
    texts = [t for t in texts for _ in range(3)] + ["y" * 5000, "word " * 3000, "short"]
    texts += [" ".join(rng.choice(words) for _ in range(rng.randint(100, 3000))) for _ in range(60)]
    runs_on = len(tiny_tok([cutting.RUNS_ON], add_special_tokens=False)["input_ids"][0])
    for budget in (8, 40, 160):
        whole = tiny_tok(texts, add_special_tokens=False, return_offsets_mapping=True)
        want = cutting._cut_at(texts, whole["offset_mapping"], budget, runs_on)
        assert cutting.cut_to_tokens(tiny_tok, texts, budget) == want


def test_a_cut_record_says_it_runs_on(tiny_tok):
    """A grounded answer copies the record as the prompt shows it. Cut at a word, a record was
    answered mid-sentence with nothing to say so (a new user's demo: "... the Saucepan measures
    [source: B01]"). Each cut record now ends at a word and then ``RUNS_ON``, within its budget
    of tokens; the answer taught and quoted is that text."""
    import json

    from amazon_sft.data.cutting import RUNS_ON, cut_to_tokens
    from amazon_sft.data.synthetic import generate_rows
    from amazon_sft.prompts import grounded_answer

    def content(line: bytes):
        try:
            return json.loads(line).get("content")
        except (ValueError, AttributeError):  # the generator's malformed lines
            return None

    texts = [content(line) for line in generate_rows(400, seed=1, version=2)[0]]
    texts = [t for t in texts if isinstance(t, str) and t]
    cut = 0
    for budget in (16, 40):
        for text, shown in zip(texts, cut_to_tokens(tiny_tok, texts, budget)):
            assert len(tiny_tok(shown, add_special_tokens=False)["input_ids"]) <= budget
            if shown != text:
                cut += 1
                opening = shown.removesuffix(RUNS_ON)
                assert shown.endswith(RUNS_ON) and text.startswith(opening)
                assert text[len(opening)] == " " and not opening.endswith(" ")  # at a word
    assert cut > 100
    shown = cut_to_tokens(tiny_tok, [texts[1]], 16)[0]
    assert shown.endswith(RUNS_ON)
    assert grounded_answer(shown, "B01", "en") == shown + "\n[source: B01]"


def test_grounded_examples_that_do_not_fit_max_seq_len_are_refused_early(catalogue, tmp_path):
    """Grounded answers are never cut (they end with the citation), so an example longer than
    ``data.max_seq_len`` is dropped. The whole catalogue's benchmark ran config tiny (256
    tokens) and dropped 357,928 of its 357,973 grounded examples after 45 minutes, counted only
    in the report. Now the first batch tells: most of it does not fit -> one error naming the
    keys, before the rest is built, and no prepared folder."""
    from amazon_sft.errors import UserError

    out = tmp_path / "data"
    cfg = load_run_config("tiny", ["data.max_seq_len=96", "data.grounded_fraction=0.5"])
    with pytest.raises(UserError, match=r"data\.max_seq_len=96.*data\.context_record_tokens"):
        prepare(catalogue, out, cfg, progress=False)
    assert not out.exists()


def test_a_bare_citation_or_a_cited_abstention_is_not_scored_as_quoting_another_record():
    """An outside review: "[source: A]" alone scored citation 1 and wrong record cited 1 (every
    overlap 0, so argmax named the context's first record); an abstention that also cites A
    scored citation, wrong record and false abstention all at once."""
    ctx = [ContextRecord("B", "Fox", "a red fox"), ContextRecord("A", "Bear", "a soft brown bear")]
    present = [EvalItem("A", "Bear", "p", "a soft brown bear", "t", ctx) for _ in range(3)]
    answers = [
        "[source: A]",
        "The catalogue has no record of this product.\n[source: A]",
        "a soft red fox bear\n[source: A]",  # as close to both: no clear quote of another
    ]
    vec = grounded_vectors(present, answers)
    assert vec["citation_accuracy"] == [1.0, 0.0, 1.0]
    assert vec["wrong_record_cited"] == [0.0, 0.0, 0.0]
    assert vec["false_abstention"] == [0.0, 1.0, 0.0]


def test_oracle_scoring_takes_whole_sentences_of_the_asked_record_as_end_to_end_does():
    """An attribute answer quoting one whole sentence of the asked record ("Written by Ana
    Lopes.") that a shorter shown record holds too was right end to end and a wrong record
    with oracle context, whose docs say it counts as end to end does (an outside audit)."""
    asked = "A long family saga by the sea. Written by Ana Lopes."
    ctx = [ContextRecord("9", "Other", "Written by Ana Lopes."), ContextRecord("7", "Saga", asked)]
    item = EvalItem("7", "Saga", "p", asked, asked, ctx)
    vec = grounded_vectors(
        [item, item], ["Written by Ana Lopes.\n[source: 7]", "Written by Ana\n[source: 7]"]
    )
    assert vec["wrong_record_cited"] == [0.0, 1.0] and vec["citation_accuracy"] == [1.0, 0.0]


def test_a_product_asked_across_two_batches_leaves_the_unanswered_once_answered():
    """prepare's list of products it did not teach (not_taught.txt) is kept up batch by batch
    (a review: rebuilding it each batch was quadratic). A product whose questions run on into
    the next batch, answered there, leaves it; an example dropped as too long answers nothing."""
    from types import SimpleNamespace

    from amazon_sft.data.grounded_stage import _note_unanswered

    def asked(uid: str, absent: bool = False):
        return SimpleNamespace(uid=uid, absent=absent)

    taught = {"B"}  # what the encoder recorded as answered with the product's own record
    streamed = SimpleNamespace(grounded_unanswered=set(), encoder=SimpleNamespace(taught_grounded=taught))  # fmt: skip
    _note_unanswered(streamed, [asked("A", absent=True), asked("B")], [True, True])
    assert streamed.grounded_unanswered == {"A"}
    taught.add("A")  # the next batch answers A's second question
    _note_unanswered(streamed, [asked("A"), asked("C", absent=True)], [True, True])
    assert streamed.grounded_unanswered == {"C"}
    _note_unanswered(streamed, [asked("D")], [False])  # too long: dropped, so not taught
    assert streamed.grounded_unanswered == {"C", "D"}
