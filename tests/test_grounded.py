"""Grounded (RAFT) examples in prepare, the title-and-description split, eval's grounded scores
and grounded answering."""

from __future__ import annotations

import json
import re

import numpy as np
import orjson
import pytest

from amazon_sft.config import load_run_config
from amazon_sft.data.shards import PackedShards
from amazon_sft.data.split import normalise_title, split_groups
from amazon_sft.evaluation.items import EvalItem
from amazon_sft.evaluation.main import grounded_vectors
from amazon_sft.prepare import prepare
from amazon_sft.prompts import ABSTENTIONS, RECORDS_HEADER, ContextRecord, cited_uids

GROUNDED = [
    "data.max_seq_len=512",
    "data.grounded_fraction=0.5",
    "data.absent_fraction=0.3",
    "data.context_records=3",
    "data.context_record_tokens=40",
]
_RECORD = re.compile(r"^\[\d+\] title: (.*) \| description: (.*) \| uid: (\S+)$", re.M)


def _jsonl(path):
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def grounded_prepared(catalogue, tmp_path_factory):
    out = tmp_path_factory.mktemp("grounded") / "data"
    prepare(catalogue, out, load_run_config("tiny", GROUNDED), progress=False)
    return out


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
        assert by_uid[uid]["content"].startswith(shown)
        others = [by_uid[u] for u in uids if u != uid]  # distractors: never a twin
        assert all(o["content"] != by_uid[uid]["content"] for o in others)
        seen["cited"] += 1
        seen["pt"] += portuguese
    assert seen["cited"] > 50 and seen["abstained"] > 10 and seen["pt"] > 5


def test_grounded_scores_count_citations_twins_and_abstentions():
    ctx = [ContextRecord("A", "Bear", "a soft brown bear"), ContextRecord("B", "Fox", "a red fox")]
    present = [EvalItem("A", "Bear", "p", "a soft brown bear", "t", ctx) for _ in range(4)]
    answers = [
        "a soft brown bear\n[source: A]",  # right
        "a soft brown bear\n[source: B]",  # quotes A, cites B
        "a red fox\n[source: B]",  # wrong product, consistently cited
        "The catalogue has no record of this product.",
    ]
    vec = grounded_vectors(present, answers)
    assert vec["citation_accuracy"] == [1.0, 0.0, 0.0, 0.0]
    assert vec["wrong_record_cited"] == [0.0, 1.0, 0.0, 0.0]
    assert vec["false_abstention"] == [0.0, 0.0, 0.0, 1.0]
    absent = [EvalItem("A", "Bear", "p", "r", "t", ctx[1:], absent=True)] * 2
    pt = "O catálogo não tem registro deste produto."
    assert grounded_vectors(absent, [pt, "a red fox [source: B]"]) == {
        "abstention_accuracy": [1.0, 0.0]
    }
    assert grounded_vectors([EvalItem("A", "Bear", "p", "r", "t")], ["x"]) == {}


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
    assert all(s["uid"] in result.prompt and "cited" in s for s in result.sources)
    closed = answerer(f"Tell me about {title}", mode="closed", max_new_tokens=4)
    assert RECORDS_HEADER not in closed.prompt and "cited" not in closed.sources[0]


@pytest.mark.e2e
def test_a_run_on_grounded_data_answers_grounded_by_default(
    grounded_prepared, tiny_model_dir, tmp_path
):
    """The data taught grounded examples, whatever the train command said: the run's saved
    config takes the grounded settings from the manifest (a run trained with
    data.grounded_fraction left at 0 answered closed-book by default)."""
    import subprocess

    from amazon_sft.answering.ask import default_mode
    from amazon_sft.config import load_run_config

    from .conftest import train_command

    cmd = train_command(
        grounded_prepared,
        tiny_model_dir,
        tmp_path / "run",
        "train.max_steps=1",
        "data.max_seq_len=512",
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
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
    assert sum(e.absent for e in batched) > 10 and all(len(e.records) == 3 for e in batched)


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
    for budget in (8, 40, 160):
        whole = tiny_tok(texts, add_special_tokens=False, return_offsets_mapping=True)
        want = cutting._cut_at(texts, whole["offset_mapping"], budget)
        assert cutting.cut_to_tokens(tiny_tok, texts, budget) == want


def test_abstains_without_generating_when_retrieval_is_not_sure(grounded_prepared, tuned_run):
    """``abstain_below``: when the first record's score is not that many times the second's,
    the answer is an abstention the model did not generate (it only picks the language: the
    likelier whole abstention after the prompt); with the gate off the model answers."""
    import torch

    from amazon_sft.answering.ask import Answerer
    from amazon_sft.answering.doubt import likeliest_abstention
    from amazon_sft.answering.index import CatalogueIndex
    from amazon_sft.evaluation.loading import load_for_eval
    from amazon_sft.prompts import build_prompt_format
    from amazon_sft.tokenizer import hf_encoder

    model, tok, cfg, _ = load_for_eval(str(tuned_run), ["data.grounded_fraction=0.5"], "cpu")
    fmt = build_prompt_format(tok, cfg.data)
    index = CatalogueIndex(grounded_prepared)
    title = _jsonl(grounded_prepared / "heldout.jsonl")[0]["title"]
    question = f"Tell me about {title}"

    def refuse(*args, **kwargs):
        raise AssertionError("generate was called although retrieval was not sure")

    model.generate, generate = refuse, model.generate
    streamed: list[str] = []
    doubtful = Answerer(model, tok, fmt, index, cfg.data, abstain_below=1e9)
    result = doubtful(question, max_new_tokens=4, on_text=streamed.append)
    assert result.doubtful and result.answer in ABSTENTIONS.values() and result.cited == []
    assert streamed == [result.answer] and len(result.sources) == cfg.data.context_records
    assert not any(s["cited"] for s in result.sources)

    # the language: the abstention whose tokens (then EOS) are likelier, by the model's own loss
    ids = fmt.bos + hf_encoder(tok)([result.prompt])[0]
    losses = {}
    for text in ABSTENTIONS.values():
        answer = [*hf_encoder(tok)([text])[0], tok.eos_token_id]
        labels = torch.tensor([[-100] * len(ids) + answer])
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids + answer]), labels=labels)
        losses[text] = out.loss.item() * len(answer)  # mean over the answer's tokens
    assert likeliest_abstention(model, tok, ids) == min(losses, key=losses.get) == result.answer

    model.generate = generate
    plain = Answerer(model, tok, fmt, index, cfg.data)(question, max_new_tokens=4)
    assert not plain.doubtful


def test_when_retrieval_is_sure_the_answer_cites_its_first_record(grounded_prepared, tuned_run):
    """``quote_when_sure``: the gate lets the question through (the first record is far enough
    ahead), so the answer must be about the first record. The model's answer stands when it
    cites that record; an abstention, an answer copying another record (6 of the 8 wrong
    citations of the real test run) or one citing nothing becomes the first record as training
    taught it (cut description, citation); an answer copying the first record but citing
    another keeps its text and cites the first. What streams is always the final answer:
    nothing replaced is ever shown. Without the flag, every answer is left as generated."""
    import torch

    from amazon_sft.answering.ask import Answerer, quote_record
    from amazon_sft.answering.index import CatalogueIndex
    from amazon_sft.data.cutting import cut_to_tokens
    from amazon_sft.evaluation.loading import load_for_eval
    from amazon_sft.prompts import build_prompt_format, grounded_answer

    model, tok, cfg, _ = load_for_eval(str(tuned_run), ["data.grounded_fraction=0.5"], "cpu")
    fmt = build_prompt_format(tok, cfg.data)
    index = CatalogueIndex(grounded_prepared)
    title = _jsonl(grounded_prepared / "heldout.jsonl")[0]["title"]
    question = f"Tell me about {title}"
    first, second = index.search(question, 2)

    def taught(source) -> str:
        shown = cut_to_tokens(tok, [source.content], cfg.data.context_record_tokens)[0]
        return grounded_answer(shown, source.uid, "en")

    def writes(text: str):
        """A stand-in for generate that streams ``text`` a token at a time, as generate does."""

        def generate(input_ids, streamer, **kwargs):
            streamer.put(input_ids.cpu())  # the prompt, which skip_prompt drops
            for token in tok(text, add_special_tokens=False)["input_ids"]:
                streamer.put(torch.tensor([token]))
            streamer.end()

        return generate

    def answer(generated: str, quote: bool = True, gate: float = 1e-9):
        model.generate = writes(generated)
        streamed: list[str] = []
        result = Answerer(model, tok, fmt, index, cfg.data, gate, quote)(
            question, on_text=streamed.append
        )
        assert "".join(streamed).strip() == result.answer  # the stream is the final answer
        assert not result.doubtful
        return result

    want = taught(first)
    assert quote_record(tok, cfg.data, first) == want
    body = want.rsplit("\n", 1)[0]
    replaced = {
        "declines": ABSTENTIONS["en"],
        "copies another record": taught(second),
        "cites nothing": "The catalogue lists it.",
    }
    for why, generated in replaced.items():
        result = answer(generated)
        assert result.quoted and result.answer == want, why
        assert result.cited == [first.uid] and result.sources[0]["cited"], why
        # without the flag the same answer is left as generated
        result = answer(generated, quote=False)
        assert not result.quoted and result.answer == generated.strip(), why

    result = answer(want)  # the model's own answer about the first record stands
    assert not result.quoted and result.answer == want
    recited = answer(f"{body}\n[source: {second.uid}]")  # its text, another record's uid
    assert recited.quoted and recited.answer == want and recited.cited == [first.uid]

    # the gate off: --quote-when-sure alone changes nothing (the commands refuse it alone)
    result = answer(ABSTENTIONS["en"], gate=0.0)
    assert not result.quoted and result.answer == ABSTENTIONS["en"]


def _gate_with_found(tuned_run, grounded_prepared, found):
    """An ``Answerer`` with the gate at 1.4 and ``--quote-when-sure`` whose retrieval returns
    ``found`` whatever is asked, and the list its model's ``generate`` calls go to."""
    from amazon_sft.answering.ask import Answerer
    from amazon_sft.answering.index import CatalogueIndex
    from amazon_sft.evaluation.loading import load_for_eval
    from amazon_sft.prompts import build_prompt_format

    model, tok, cfg, _ = load_for_eval(str(tuned_run), ["data.grounded_fraction=0.5"], "cpu")
    fmt = build_prompt_format(tok, cfg.data)

    class Found:
        """The catalogue index with what it found for the question fixed."""

        def __init__(self, index):
            self.index = index

        def __getattr__(self, name):
            return getattr(self.index, name)

        def search(self, question, k):
            return found[:k]

    generated: list[str] = []

    def generate(input_ids, streamer, **kwargs):
        generated.append("called")
        streamer.put(input_ids.cpu())
        streamer.end()

    model.generate = generate
    index = Found(CatalogueIndex(grounded_prepared))
    return Answerer(model, tok, fmt, index, cfg.data, 1.4, True), generated


def _assert_gate(answerer, generated, abstains_on: str, quotes: tuple[str, ...], uid: str) -> None:
    """``abstains_on`` is gated (an abstention, nothing generated); each of ``quotes`` is sure and
    answered with the record ``uid``."""
    gated = answerer(abstains_on, max_new_tokens=4)
    assert gated.doubtful and gated.answer in ABSTENTIONS.values()
    assert gated.cited == [] and generated == []
    for question in quotes:
        result = answerer(question, max_new_tokens=4)
        assert not result.doubtful and result.quoted and result.cited == [uid], question


def test_a_first_record_of_another_year_or_volume_is_not_sure(grounded_prepared, tuned_run):
    """With the gate on, "Tolkien Calendar 2015" had "Tolkien Calendar 2014: The Hobbit" first,
    8.9 times ahead of the second (real dev questions; "Your Chinese Horoscope 2014" had 2013's
    10.3 times ahead on test), so ``--quote-when-sure`` answered with last year's calendar. A
    first record whose title names numbers, none of them the question's, is another edition of
    a series: the gate abstains without generating. The same record named by its own number,
    or a question naming no number, is still sure."""
    from amazon_sft.answering.index import Source

    found = [
        Source("t-2014", "Tolkien Calendar 2014: The Hobbit", "A calendar of Tolkien art.", 8.9),
        Source("t-poem", "Poems", "Poems about the year.", 1.0),
    ]
    answerer, generated = _gate_with_found(tuned_run, grounded_prepared, found)
    asked = ("Tolkien Calendar 2014", "the Tolkien calendar with The Hobbit")
    _assert_gate(answerer, generated, "Tolkien Calendar 2015", asked, "t-2014")


def test_a_first_record_lacking_the_asked_title_is_not_sure(grounded_prepared, tuned_run):
    """With the gate on, "Paddington Helps Out" (not in the real catalogue) had "Paddington Races
    Ahead" first, 3.6 times ahead of the second, and ``--quote-when-sure`` answered with it; so
    did "Flashman at the Charge by George MacDonald Fraser" with another Fraser novel (real dev
    questions, 8 of 14 absent products let through). A record that lacks a word the question
    names with a capital, while under ``doubt.NAMED_LEAD`` times ahead, is another product of
    the series or author: the gate abstains without generating. Not read as a name: the author
    after "by" (descriptions often leave it out), a typo of the record's word, a question word."""
    from amazon_sft.answering.index import Source

    found = [
        Source("p-races", "Paddington Races Ahead", "Paddington the bear by Michael Bond.", 3.6),
        Source("p-large", "Paddington at Large", "More stories of the bear.", 1.0),
    ]
    answerer, generated = _gate_with_found(tuned_run, grounded_prepared, found)
    asked = (
        "Paddington Races Ahead",
        "Who wrote Padington Races Ahead?",
        "Paddington Races Ahead by Bond",
        "Paddington Races Ahead by Peggy Fortnum",
    )
    _assert_gate(answerer, generated, "Paddington Helps Out", asked, "p-races")
    found[0].score = 4.5  # far enough ahead: the description merely leaves the word out
    result = answerer("Paddington Helps Out", max_new_tokens=4)
    assert not result.doubtful and result.cited == ["p-races"]


def test_a_first_record_whose_title_swaps_the_asked_name_is_not_sure(grounded_prepared, tuned_run):
    """ "A Day in the Life of Japan photo book" (not in the real catalogue) had "A Day in the Life
    of Canada" first, whose description names Japan ("like the similar books about Australia,
    Hawaii, and Japan"), so ``--quote-when-sure`` answered with Canada's book; on the generated
    catalogue "A Field Guide to Pottery" had "A Field Guide to Astronomy" 30.9 times ahead. A
    first record whose title is the asked title with the one name swapped for another is a
    sibling, however far ahead: the gate abstains without generating. The title asked in part,
    with its author, or with a typo, is still sure."""
    from amazon_sft.answering.index import Source

    canada = "Photos of Canada, like the similar books about Australia, Hawaii, and Japan."
    found = [
        Source("d-canada", "A Day in the Life of Canada", canada, 9.0),
        Source("d-poems", "Poems", "Poems about the year.", 1.0),
    ]
    answerer, generated = _gate_with_found(tuned_run, grounded_prepared, found)
    asked = (
        "A Day in the Life of Canada",
        "Who took the photos in A Day in the Life of Canadaa?",
        "the day in the life photo book about Canada, not the Japan one",
    )
    _assert_gate(answerer, generated, "A Day in the Life of Japan photo book", asked, "d-canada")
    generated.clear()
    found[0] = Source("d-ganges", "Slowly Down the Ganges", "A journey by Eric Newby.", 9.0)
    asked = ("How long was Eric Newby's journey down the Ganges?", "Slowly Down the Ganges")
    _assert_gate(answerer, generated, "Slowly Down the Nile", asked, "d-ganges")


def test_a_first_record_whose_title_has_no_word_of_a_short_question_is_not_sure(
    grounded_prepared, tuned_run
):
    """Questions written blind to the gate (eval/questions/real_blind_dev.jsonl) typed absent
    titles in lower case: "master and commander patrick o'brian" had "Red Gold" first (3.2
    times ahead; its description names O'Brian), and ``--quote-when-sure`` answered with it.
    A short question (a title and an author, ``doubt.SHORT_QUESTION_WORDS``) none of whose words
    the first record's title has, while under ``doubt.NAMED_LEAD`` times ahead, asks for
    another title: the gate abstains without generating. A long question (a description, a
    need) may name no title word, and a record far enough ahead stands."""
    from amazon_sft.answering.index import Source

    red_gold = "A sea story for readers of Patrick O'Brian and C. S. Forester."
    found = [
        Source("r-gold", "Red Gold", red_gold, 3.2),
        Source("r-poems", "Poems", "Poems about the sea.", 1.0),
    ]
    answerer, generated = _gate_with_found(tuned_run, grounded_prepared, found)
    asked = (
        "red gold",
        "red gold, the sea story",
        "a sea story for readers who like patrick o'brian and c. s. forester novels",
    )
    _assert_gate(answerer, generated, "master and commander patrick o'brian", asked, "r-gold")
    found[0].score = 4.5  # far enough ahead: the question's words are its description's
    result = answerer("master and commander patrick o'brian", max_new_tokens=4)
    assert not result.doubtful and result.cited == ["r-gold"]


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
