"""Retrieval by meaning fused with word retrieval (``--meaning-weight``, answering/meaning.py),
with WordLlama's own weights from its wheel: nothing is downloaded."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import orjson
import pytest

from amazon_sft.answering import meaning
from amazon_sft.answering.index import DESCRIPTION_CHARS, CatalogueIndex
from amazon_sft.answering.index_build import build_index
from amazon_sft.errors import UserError
from amazon_sft.evaluation.question_products import WithoutRows

pytestmark = pytest.mark.unit

SHELF = [
    (
        "The Sensitive Child: A Parent's Guide",
        "For parents of a child who is overwhelmed by noise, bright lights and busy places; "
        "calm routines for anxious, easily upset kids.",
    ),
    (
        "Crowds and Power",
        "A study of how crowds form, grow and act, from riots to stadiums: the mass behaviour "
        "of people in noisy gatherings.",
    ),
    ("Gardening for Beginners", "Plant, water and harvest vegetables in a small garden."),
    ("The Night Sky", "A guide to the stars and planets for amateur astronomers."),
    ("Bread Baking at Home", "Sourdough, rye and white loaves baked in a home oven."),
]
NEED = "my child is scared of loud crowds, any parenting advice"
"""Shares "crowds" and "loud"-ish words with the crowd study, its meaning with the guide."""


@pytest.fixture(scope="module")
def shelf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shelf")
    with open(folder / "catalogue.jsonl", "wb") as fh:
        for i, (title, content) in enumerate(SHELF):
            fh.write(orjson.dumps({"uid": f"u{i}", "title": title, "content": content}) + b"\n")
    build_index(folder)
    return folder


def test_a_need_in_other_words_finds_its_product_by_meaning(shelf):
    """Word retrieval puts the crowd study first for a parent's need (it shares "crowds"); by
    meaning too, the parent's guide comes first, its score (the word score + the floor) x
    exp(gamma x cosine), so the gate's ratio reads both."""
    words = CatalogueIndex(shelf).search(NEED, 3)
    assert [s.uid for s in words[:2]] == ["u1", "u0"]
    fused = CatalogueIndex(shelf, meaning_weight=4.0).search(NEED, 3)
    assert [s.uid for s in fused[:2]] == ["u0", "u1"]
    model = meaning.embedder()
    asked = model.embed([NEED], norm=True)[0]
    for s in fused:
        before = next(w for w in words if w.uid == s.uid)
        record = model.embed([meaning.record_text(s.title, s.content)], norm=True)[0]
        expected = (before.score + meaning.WORD_SCORE_FLOOR) * math.exp(4.0 * float(record @ asked))
        assert s.score == pytest.approx(expected, abs=2e-3)


def test_meaning_reads_more_candidates_than_it_returns_and_zero_is_words_only(shelf):
    """k = 1 still re-scores word retrieval's CANDIDATES first records, so the guide is the one
    record returned; weight 0 is word retrieval bit for bit."""
    assert [s.uid for s in CatalogueIndex(shelf, meaning_weight=4.0).search(NEED, 1)] == ["u0"]
    assert CatalogueIndex(shelf, meaning_weight=0.0).search(NEED, 3) == CatalogueIndex(
        shelf
    ).search(NEED, 3)


def test_a_removed_product_stays_out_when_meaning_rescores(shelf):
    """eval's absent-product path (``WithoutRows``): the product taken out never comes back,
    and the rest are re-scored as search would."""
    index = CatalogueIndex(shelf, meaning_weight=4.0)
    found = WithoutRows(index, frozenset({0})).search(NEED, 3)
    assert found and "u0" not in {s.uid for s in found}
    assert found[0].uid == "u1"


PREGNANCY_OPENING = (
    "A practical companion for expectant mothers through the nine months: booking scans, "
    "choosing a midwife, what to eat and what to avoid, vitamins, sleep, back pain, maternity "
    "leave forms, preparing siblings and pets, packing the hospital bag, and the questions to "
    "ask at every appointment. Written by a family doctor with thirty years of practice, it "
    "answers the worries of the first trimester, the aches of the second and the waiting of "
    "the third, week by week, with checklists at the end of each chapter and a glossary of the "
    "medical words you will hear. "
)
LATE_SHELF = [
    (
        "Nine Months: A Companion",
        PREGNANCY_OPENING + "The closing chapters are about labouring in warm water: how a "
        "birthing pool is filled, kept warm and cleaned, and what a water birth at home feels like.",
    ),
    (
        "Mothers of Invention",
        "The women who changed the world with their inventions, from the dishwasher to the "
        "windscreen wiper: mothers, engineers and tinkerers.",
    ),
    (
        "Swimming Pool Care",
        "Keep a garden swimming pool clean: filters, chlorine, covers and pumps.",
    ),
    ("Gardening for Beginners", "Plant, water and harvest vegetables in a small garden."),
    ("The Night Sky", "A guide to the stars and planets for amateur astronomers."),
]


def test_meaning_reads_a_need_answered_late_in_a_long_description(tmp_path):
    """The companion's water-birth chapters come after the 500 characters the word index reads
    (words find it only by "mothers"); meaning reads ``MEANING_CHARS`` and puts it first. Read
    to 500 characters, as it was, the pool-care and inventors' books came first."""
    assert len(PREGNANCY_OPENING) > DESCRIPTION_CHARS
    with open(tmp_path / "catalogue.jsonl", "wb") as fh:
        for i, (title, content) in enumerate(LATE_SHELF):
            fh.write(orjson.dumps({"uid": f"u{i}", "title": title, "content": content}) + b"\n")
    build_index(tmp_path)
    need = "I want to give birth in a pool of warm water, is there a guide for mothers"
    assert CatalogueIndex(tmp_path).search(need, 1)[0].uid != "u0"
    assert CatalogueIndex(tmp_path, meaning_weight=4.0).search(need, 1)[0].uid == "u0"


HILLS = [
    (f"Walking Guide to the {hills} Hills", f"A guide to {n} short walks in the {hills} hills.")
    for hills, n in [
        ("Cotswold", 20),
        ("Malvern", 15),
        ("Chiltern", 25),
        ("Mendip", 12),
        ("Quantock", 18),
        ("Pennine", 30),
        ("Brecon", 22),
        ("Lammermuir", 16),
        ("Ochil", 14),
        ("Pentland", 19),
        ("Cheviot", 21),
        ("Howgill", 17),
    ]
]
HEADACHE = (
    "The Hormone Headache: A Guide",
    "Why menstrual migraines strike and how to prevent and treat them: hormones, diet and "
    "medicine for women.",
)
PERIOD = "my head hurts badly every month around my period, is there a guide"
"""Shares only "guide" with every record: the headache guide, a longer record, is 13th by words."""


def _catalogue(folder, shelf) -> None:
    with open(folder / "catalogue.jsonl", "wb") as fh:
        for i, (title, content) in enumerate(shelf):
            fh.write(orjson.dumps({"uid": f"u{i}", "title": title, "content": content}) + b"\n")
    build_index(folder)


@pytest.fixture(scope="module")
def hills(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hills")
    _catalogue(folder, [*HILLS, HEADACHE])
    return folder


def test_a_product_words_barely_found_comes_first_by_meaning(hills):
    """Twelve walking guides lead by words on "guide", the one word the question shares with
    every record; the headache guide, 13th by words, is first by meaning: word retrieval's
    first 50 are read, and the floor lets meaning order records words found about equally little."""
    ranked = [i for i, _ in CatalogueIndex(hills).top(PERIOD, 20)]
    assert ranked.index(12) == 12
    found = CatalogueIndex(hills, meaning_weight=4.0).search(PERIOD, 3)
    assert found[0].uid == "u12"
    assert found[0].words_score < found[1].words_score


@pytest.mark.parametrize("question", [PERIOD, "Walking Guide to the Ochil Hills", "ochil"])
@pytest.mark.parametrize("k", [1, 3])
def test_pruned_embedding_keeps_exactly_the_first_k_of_embedding_all(hills, question, k):
    """``by_meaning`` embeds a record past the first ten only if it could still reach the first
    k: the first k are those of fusing every candidate, scores and all."""
    index = CatalogueIndex(hills)
    sources = index.ranked(question, index.top(question, meaning.CANDIDATES), meaning.CANDIDATES)
    model = meaning.embedder()
    asked = model.embed([question], norm=True)[0]
    records = model.embed([meaning.record_text(s.title, s.content) for s in sources], norm=True)
    assert (
        meaning.by_meaning(question, sources, 4.0, k)
        == meaning.fuse(sources, records @ asked, 4.0)[:k]
    )


def test_a_record_that_cannot_reach_the_first_k_is_never_embedded(hills, monkeypatch):
    """The cost: three guides named by their hills lead by words; for the first record (k = 1)
    no record past the first ten could pass the leader even with a cosine of 1, so none of
    them is embedded (with k = 3 the third place is within reach of them, and they are)."""
    index = CatalogueIndex(hills, meaning_weight=4.0)
    model = meaning.embedder()
    embedded = []
    real = model.embed

    def counting(texts, **kw):
        embedded.extend(texts)
        return real(texts, **kw)

    monkeypatch.setattr(model, "embed", counting)
    question = "walking guide to the ochil pentland and cheviot hills"
    found = index.search(question, 1)
    assert found[0].title == "Walking Guide to the Cheviot Hills"
    assert len(embedded) == 1 + meaning.FIRST_EMBEDDED  # the question, the first ten
    assert not any(text.startswith(HEADACHE[0]) for text in embedded)
    embedded.clear()
    index.search(question, 3)
    assert len(embedded) == 1 + len(HILLS) + 1


def test_the_index_loads_wordllama_when_built_so_the_first_question_pays_no_load(shelf):
    """serve's first shopper, and query_cost's first question, must not wait on the embedder's
    load (about 0.3 s): an index that re-scores by meaning loads it with the word index; one
    that does not never imports it."""
    meaning.embedder.cache_clear()
    CatalogueIndex(shelf)
    assert meaning.embedder.cache_info().currsize == 0
    CatalogueIndex(shelf, meaning_weight=4.0)
    assert meaning.embedder.cache_info().currsize == 1


def test_without_wordllama_the_flag_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "wordllama", None)  # import fails
    meaning.embedder.cache_clear()
    try:
        with pytest.raises(UserError, match=r"pip install 'wordllama"):
            meaning.embedder()
    finally:
        meaning.embedder.cache_clear()


@pytest.mark.parametrize("value", ["-1", "nan", "21"])
def test_a_meaning_weight_out_of_range_is_one_line(shelf, value):
    proc = subprocess.run(
        [sys.executable, "-m", "amazon_sft.cli", "ask", "--index", str(shelf), "--sources-only",
         f"--meaning-weight={value}", NEED],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "--meaning-weight must be between 0 and 20" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ask_sources_only_json_with_meaning_and_the_gate(shelf):
    """What a user runs: the fused order, and the gate's decision on the fused ratio."""
    proc = subprocess.run(
        [sys.executable, "-m", "amazon_sft.cli", "ask", "--index", str(shelf), "--sources-only",
         "--json", "--meaning-weight", "4", "--abstain-below", "2.0", NEED],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [s["uid"] for s in line["sources"][:2]] == ["u0", "u1"]
    ratio = line["sources"][0]["score"] / line["sources"][1]["score"]
    assert line["doubtful"] is (ratio < 2.0)


def test_a_rescored_source_shows_its_word_score_and_cosine(shelf):
    """A new user could not tell why the order changed: each re-scored source carries the word
    score it had and its cosine (``--json``: ``words_score``, ``cosine``; text: both after the
    score), and the score is the one (plus the floor) times exp(gamma x the other)."""
    base = [sys.executable, "-m", "amazon_sft.cli", "ask", "--index", str(shelf), "--sources-only"]
    proc = subprocess.run([*base, "--json", "--meaning-weight", "4", NEED],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    for s in json.loads(proc.stdout.strip().splitlines()[-1])["sources"]:
        fused = (s["words_score"] + meaning.WORD_SCORE_FLOOR) * math.exp(4 * s["cosine"])
        assert s["score"] == pytest.approx(fused, rel=2e-3)
    proc = subprocess.run([*base, "--meaning-weight", "4", NEED],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert re.search(r"retrieval score [\d.]+: words [\d.]+, meaning cosine -?[\d.]+", proc.stdout)
    words_only = subprocess.run(
        [*base, "--json", "--gate", "off", NEED], capture_output=True, text=True, timeout=120
    )
    source = json.loads(words_only.stdout.strip().splitlines()[-1])["sources"][0]
    assert "cosine" not in source and "words_score" not in source


def test_several_questions_sources_only_each_under_its_own_question(shelf):
    """A new user's run: with several questions, the gate's line for the second was printed
    under the first one's sources, as if the first had abstained. Each question now heads its
    own block, the gate's verdict (sure or not) under it, and ``--json`` names the question."""
    base = [sys.executable, "-m", "amazon_sft.cli", "ask", "--index", str(shelf), "--sources-only",
            "--abstain-below", "2.0", "--meaning-weight", "4"]  # fmt: skip
    asked = ["Bread Baking at Home", "a carbon bicycle frame for racing"]
    proc = subprocess.run([*base, *asked], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, second = proc.stdout.split("Q: ")[1:]
    assert first.startswith("Bread Baking at Home") and "Retrieval is sure" in first
    assert "not sure" not in first and "Bread Baking at Home (retrieval score" in first
    assert second.startswith("a carbon bicycle frame") and "Retrieval is not sure" in second
    proc = subprocess.run([*base, "--json", *asked], capture_output=True, text=True, timeout=120)
    lines = [json.loads(x) for x in proc.stdout.strip().splitlines()]
    assert [x["question"] for x in lines] == asked
    assert [x["doubtful"] for x in lines] == [False, True]


@pytest.mark.parametrize("command", [["ask", NEED], ["chat"], ["serve"]])
def test_every_answering_command_refuses_a_bad_weight_before_loading_a_model(shelf, command):
    """ask (with a model), chat and serve read the flag as ``ask --sources-only`` does: one
    line, before any model is loaded (none is given: loading would fail otherwise)."""
    proc = subprocess.run(
        [sys.executable, "-m", "amazon_sft.cli", *command, "--index", str(shelf),
         "--model", str(shelf / "no-such-model"), "--meaning-weight=inf"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().endswith("--meaning-weight must be between 0 and 20, got inf")
    assert len(proc.stderr.strip().splitlines()) == 1
