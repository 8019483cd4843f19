"""Question kinds generated from a record (data/question_kinds.py), the question mix config, and
grounded examples whose records are what retrieval returns for the question as typed."""

from __future__ import annotations

import dataclasses

import pytest

from amazon_sft.config import DataConfig, QuestionMix, load_run_config
from amazon_sft.data import question_kinds as qk
from amazon_sft.data import series
from amazon_sft.data.grounded import GroundedBuilder, example_key
from amazon_sft.errors import UserError
from amazon_sft.prompts import ABSTENTIONS, PromptFormat, cited_uids

TITLE = "The Golden Lantern of Lisbon"
CONTENT = (
    "A gentle story about a lighthouse keeper and her lost compass. Written by Clara Mendes. "
    "The hardcover has 48 pages of watercolour illustrations."
)


def test_each_kind_is_deterministic_and_made_from_the_record():
    product = {"uid": "B0001", "title": TITLE, "content": CONTENT}
    for kind in qk.KINDS[1:]:
        first = qk.make_question(kind, product)
        assert first == qk.make_question(kind, dict(product)), kind
        assert first.kind == kind
    title_words = {w.lower() for w in qk.words(TITLE)}
    frag = qk.make_question("fragment", product).text
    assert any(" ".join(qk.words(TITLE)[i : i + 2]).lower() in frag for i in range(4))
    assert qk.make_question("typo", product).text.lower() != TITLE.lower()
    desc = qk.make_question("descriptive", product).text
    assert not {w.lower() for w in qk.words(desc)} & (title_words - qk._STOP)
    attr = qk.make_question("attribute", product)
    assert attr.lead in qk.sentences(CONTENT) and attr.text.endswith("?")
    assert qk.make_question("portuguese", product).language == "pt"


def test_typos_differ_from_the_title_by_a_few_character_edits():
    import difflib

    title = "Zentra Headphones Bluetooth Speaker Charger".lower().split()
    for n in range(50):
        q = qk.typo(" ".join(title), f"uid{n}")
        typed = q.text.split()[-len(title) :]  # the templates put the title last
        changed = [(a, b) for a, b in zip(typed, title) if a != b]
        assert 1 <= len(changed) <= 2, q.text
        assert all(difflib.SequenceMatcher(None, a, b).ratio() >= 0.75 for a, b in changed)


def test_series_keys_join_the_books_of_a_series_only():
    keys = series.series_keys
    assert keys("Harbor Tales, Vol. 2") == keys("Harbor Tales: Book 5")
    assert keys("Quiet Bear Plush #12") == keys("Quiet Bear Plush #7")
    assert keys("Harbor Tales, Vol. 2") != keys("Harbor Songs, Vol. 2")
    assert keys("Harbor Tales") == frozenset()


@pytest.mark.parametrize(
    ("title", "sibling"),
    [
        ("Dark Blood (Logan McRae, Book 6)", "Dying Light (Logan McRae, Book 2)"),
        ("Perelandra (Cosmic Trilogy)", "Out of the Silent Planet (Cosmic Trilogy)"),
        ("The Best American Poetry 1991", "The Best American Poetry: 1992"),
        (
            "2013 Collins Britain Big Road Atlas (Road Atlases)",
            "2014 Collins Britain Big Road Atlas (Road Atlases)",
        ),
        ("Times Crossword Book 12 (Bk. 12)", "Times Crossword Book 13 (Bk. 13)"),
        ("The Kitchen Diaries II: A Year of Simple Suppers", "The Kitchen Diaries: A Year"),
    ],
)
def test_series_keys_join_the_real_catalogues_series(title, sibling):
    """The real rows name a series in parentheses or number a title otherwise: the first rule
    read only a "Book N" marker on the same title, and joined no real product to a sibling."""
    assert series.series_keys(title) & series.sibling_keys(sibling), (title, sibling)
    assert not series.series_keys(title) & series.sibling_keys("Broken Skin (Roy Grace)")


def test_question_mix_is_validated_naming_the_key():
    cfg = load_run_config("tiny", ["data.question_mix.title=0.4", "data.question_mix.typo=0.6"])
    assert cfg.data.question_mix.typo == 0.6 and cfg.data.series_distractors == 1
    with pytest.raises(UserError, match=r"data\.question_mix: the shares must sum to 1"):
        load_run_config("tiny", ["data.question_mix.typo=0.5"])
    with pytest.raises(UserError, match=r"data\.question_mix\.fragment must be a number >= 0"):
        QuestionMix(title=1.5, fragment=-0.5)
    with pytest.raises(UserError, match=r"data\.series_distractors must be >= 0"):
        load_run_config("tiny", ["data.series_distractors=-1"])
    with pytest.raises(UserError, match=r"data\.grounded_shortlist must be >= 100"):
        load_run_config("tiny", ["data.grounded_shortlist=10"])
    with pytest.raises(UserError, match=r"data\.grounded_questions must be >= 1"):
        load_run_config("tiny", ["data.grounded_questions=0"])


class FakeIndex:
    """Retrieval with known answers: ``results[question]`` is the uids returned, best first."""

    def __init__(self, records: list[dict], results: dict[str, list[str]]) -> None:
        self.records, self.results = records, results
        self.row = {r["uid"]: i for i, r in enumerate(records)}
        self.shortlists: list = []

    def record(self, i: int) -> dict:
        return self.records[i]

    def top_many(self, questions, k, train_only=False, shortlist=None):
        self.shortlists.append(shortlist)
        return [
            [(self.row[u], 1.0 / (n + 1)) for n, u in enumerate(self.results.get(q, [])[:k])]
            for q in questions
        ]


def _builder(records, results, kind: str, **data):
    mix = QuestionMix(**{"title": 0.0, kind: 1.0}) if kind != "title" else QuestionMix()
    cfg = dataclasses.replace(DataConfig(), question_mix=mix, **{"absent_fraction": 0.0, **data})
    fmt = PromptFormat("", "", ("Tell me about {title}.",), chat=False, languages=("en",))
    return GroundedBuilder(FakeIndex(records, results), fmt, _Tok(), cfg)


class _Tok:
    """Whitespace tokens with offsets: enough for cut_to_tokens."""

    def __call__(self, texts, add_special_tokens=False, return_offsets_mapping=True):
        import re

        return {"offset_mapping": [[m.span() for m in re.finditer(r"\S+", t)] for t in texts]}


def _catalogue(n: int = 6) -> list[dict]:
    records = [{"uid": f"U{i}", "title": f"Other Thing {i}", "content": f"Plain text {i}."}
               for i in range(n)]  # fmt: skip
    records.append({"uid": "P", "title": TITLE, "content": CONTENT})
    return records


def test_records_are_what_retrieval_returns_for_the_typed_question():
    records = _catalogue()
    product = records[-1]
    question = qk.make_question("typo", product).text
    found = _builder(records, {question: ["U1", "P", "U2", "U3"]}, "typo")
    (example,) = found.build([product])
    assert [r.uid for r in example.records] == ["U1", "P", "U2"]  # retrieval's order
    assert example.question == question and cited_uids(example.answer) == ["P"]
    assert found.counts["grounded_retrieval_missed"] == 0 and found.counts["grounded_kind_typo"]

    missed = _builder(records, {question: ["U1", "U2", "U3", "P"]}, "typo")
    (example,) = missed.build([product])  # P ranked 4th: ask's 3 records would not show it
    assert "P" not in [r.uid for r in example.records]
    assert example.absent and example.answer == ABSTENTIONS["en"]
    assert missed.counts["grounded_retrieval_missed"] == 1


def test_prepare_retrieves_with_its_own_shortlist():
    """``data.grounded_shortlist`` reaches every query of the grounded examples (questions and
    series stems); ``ask`` keeps answering/batched.py's ``SHORTLIST``."""
    records = _catalogue()
    product = {"uid": "P", "title": "Harbor Tales, Book 1", "content": CONTENT}
    records[-1] = product
    builder = _builder(records, {}, "title", grounded_shortlist=777)
    builder.build([product])
    assert builder.index.shortlists == [777, 777]  # the question, then the series stem
    # a typo question shows what ask retrieves: ranked with ask's shortlist, not prepare's
    typo = _builder(records, {}, "typo", grounded_shortlist=777, series_distractors=0)
    typo.build([product])
    assert typo.index.shortlists == [None]


def test_a_series_named_in_parentheses_joins_the_distractors():
    """ "Dark Blood (Logan McRae, Book 6)": its series' other books are retrieved by the series'
    name and shown among its records (the first rule retrieved "dark blood logan mcrae" and
    kept only titles equal but for the number: none). The report counts the examples that show
    a sibling, put there or retrieved: it counted only those put there (0 on the real rows
    prepared with smollm2-135m-grounded, whose title questions' hard negatives hold the series
    already: 17 examples show one)."""
    records = _catalogue()
    product = {"uid": "P", "title": "Dark Blood (Logan McRae, Book 6)", "content": CONTENT}
    records[-1] = product
    records.append({"uid": "S", "title": "Dying Light (Logan McRae, Book 2)", "content": "Two."})
    question = "Tell me about Dark Blood (Logan McRae, Book 6)."
    results = {question: ["P", "U1", "U2"], "logan mcrae": ["P", "S", "U3"]}
    builder = _builder(records, results, "title")
    (example,) = builder.build([product])
    assert sorted(r.uid for r in example.records) == ["P", "S", "U1"]
    assert builder.counts["grounded_series_distractors"] == 1
    assert builder.counts["grounded_series_shown"] == 1
    # retrieval already shows a sibling: it counts, and no second one is put in
    results[question] = ["P", "S", "U1"]
    builder = _builder(records, results, "title")
    (example,) = builder.build([product])
    assert sorted(r.uid for r in example.records) == ["P", "S", "U1"]
    assert builder.counts["grounded_series_distractors"] == 0
    assert builder.counts["grounded_series_shown"] == 1


def test_attribute_answers_lead_with_the_sentence_then_cite():
    records = _catalogue()
    product = records[-1]
    q = qk.make_question("attribute", product)
    builder = _builder(records, {q.text: ["P", "U1", "U2"]}, "attribute")
    (example,) = builder.build([product])
    assert example.answer == f"{q.lead}\n[source: P]"


def test_same_series_products_join_the_distractors():
    records = _catalogue()
    product = {"uid": "P", "title": "Harbor Tales, Book 1", "content": CONTENT}
    records[-1] = product
    records.append({"uid": "S", "title": "Harbor Tales, Book 2", "content": "Book two text."})
    question = "Tell me about Harbor Tales, Book 1."
    results = {question: ["P", "U1", "U2"], "harbor tales": ["P", "S"]}
    (example,) = _builder(records, results, "title").build([product])
    assert sorted(r.uid for r in example.records) == ["P", "S", "U1"]
    (plain,) = _builder(records, results, "title", series_distractors=0).build([product])
    assert sorted(r.uid for r in plain.records) == ["P", "U1", "U2"]
    # eval's oracle context (a phrasing asked) keeps its measured protocol: no series twins
    (oracle,) = _builder(records, results, "title").build([product], phrasing=0)
    assert sorted(r.uid for r in oracle.records) == ["P", "U1", "U2"]


def test_each_extra_example_of_a_product_asks_its_own_question():
    """``data.grounded_questions``: a product's n-th example draws its kind and wording from the
    uid and n; the first is the example a single-question run makes, and every one cites the
    product itself."""
    records = _catalogue()
    product = records[-1]
    mix = {k: 1 / 7 for k in ("fragment", "reorder", "typo", "portuguese", "descriptive")}
    builder = _builder(records, {}, "title", series_distractors=0)
    builder.data = dataclasses.replace(
        builder.data, question_mix=QuestionMix(title=2 / 7, attribute=0.0, **mix)
    )
    builder.index.results = {}  # every retrieval misses: only title questions show the product
    plain = builder.build([product])
    variants = builder.build([{**product, "variant": n} for n in range(8)])
    assert variants[0].question == plain[0].question
    assert len({v.question for v in variants}) >= 6
    assert {v.uid for v in variants} == {"P"}
    assert len({builder.kind_for(f"P#{n}") for n in range(1, 8)}) >= 3


def test_each_abstention_is_paired_with_the_same_question_answered():
    """``data.paired_absent``: an abstention (left out by its hash, or missed by retrieval) is
    taught beside its twin: the same question, the product shown among the same negatives, and
    its description cited. Examples that answer are not doubled, and eval is never paired."""
    records = _catalogue()
    product = records[-1]
    question = qk.make_question("typo", product).text
    missed = {question: ["U1", "U2", "U3", "P"]}  # ranked 4th: the abstention of a miss
    builder = _builder(records, missed, "typo", paired_absent=True, series_distractors=0)
    absent, present = builder.build([product])
    assert absent.absent and absent.answer == ABSTENTIONS["en"]
    assert not present.absent and cited_uids(present.answer) == ["P"]
    assert present.question == absent.question
    assert [r.uid for r in absent.records] == ["U1", "U2", "U3"]
    assert sorted(r.uid for r in present.records) == ["P", "U1", "U2"]
    assert builder.counts["grounded_paired"] == 1 and builder.counts["grounded_absent"] == 1
    assert builder.counts["grounded"] == 2

    found = {question: ["U1", "P", "U2", "U3"]}
    answered = _builder(records, found, "typo", paired_absent=True, series_distractors=0)
    assert len(answered.build([product])) == 1  # nothing to pair
    left_out = _builder(records, found, "typo", paired_absent=True, absent_fraction=1.0)
    absent, present = left_out.build([product])  # left out by the hash: its twin at the rank
    assert absent.absent and [r.uid for r in present.records][:2] == ["U1", "P"]
    # eval decides absence itself (absent=True): one example per product, as measured
    assert len(left_out.build([product], absent=True)) == 1
    unpaired = _builder(records, missed, "typo", series_distractors=0)
    assert len(unpaired.build([product])) == 1


def test_a_kind_few_records_can_make_keeps_its_share():
    """``data.question_mix.attribute=0.25`` over a catalogue where a quarter of the records
    state an attribute: a product that draws a kind its record cannot make owes it, and the
    next product of the batch that can make it asks it instead, so about a quarter of the
    examples are attribute questions, not a quarter of a quarter (171 of the 991 real rows
    state one; 5% asked gave 3 of 1,324 examples)."""
    able = [{"uid": f"A{i}", "title": f"Harbor Tale {i}", "content": f"Written by Clara Mendes {i}."}
            for i in range(10)]  # fmt: skip
    unable = [{"uid": f"N{i}", "title": f"Quiet Lamp {i}", "content": f"Plain text number {i}"}
              for i in range(30)]  # fmt: skip
    assert all(qk.make_question("attribute", r) for r in able)
    assert not any(qk.make_question("attribute", r) for r in unable)
    products = [r for pair in zip(unable[:10], able) for r in pair] + unable[10:]
    builder = _builder(products, {}, "title", series_distractors=0)
    builder.data = dataclasses.replace(
        builder.data, question_mix=QuestionMix(title=0.75, attribute=0.25)
    )
    builder.index.results = {
        q.text: [r["uid"]] for r in able for q in [qk.make_question("attribute", r)]
    }
    drawn = [r for r in products if builder.kind_for(r["uid"]) == "attribute"]
    able_drew = sum(r in able for r in drawn)
    assert len(drawn) >= 5 and able_drew <= 3  # the uids' draws, as in a real batch
    examples = builder.build(products)
    asked = builder.counts["grounded_kind_attribute"]
    assert asked == len(drawn), (asked, able_drew)  # dropped where unmade, it was able_drew
    assert asked + builder.counts["grounded_kind_title"] == len(products)
    attribute = [e for e in examples if not e.question.startswith("Tell me about")]
    assert len(attribute) == asked and {e.uid for e in attribute} <= {r["uid"] for r in able}
    assert builder.counts["grounded_kinds_unmade"] == 0
    twice = _builder(products, {}, "title", series_distractors=0)
    twice.data = builder.data
    assert [e.question for e in twice.build(products)] == [e.question for e in examples]
    # more drawn than records can make: the rest are title questions, counted
    few = _builder(unable + able[:2], {}, "title", series_distractors=0)
    few.data = builder.data
    few.build(unable + able[:2])
    drew = sum(few.kind_for(r["uid"]) == "attribute" for r in unable + able[:2])
    assert few.counts["grounded_kind_attribute"] == 2
    assert few.counts["grounded_kinds_unmade"] == drew - 2  # said, not lost silently
    # several examples a product (data.grounded_questions): a kind it did not draw goes to
    # another product rather than to a second example of one already asking it (a review:
    # the variants of the first able products all asked the same attribute question)
    variants = [{**r, "variant": v} for r in products for v in range(3)]
    many = _builder(variants, {}, "title", series_distractors=0)
    many.data = builder.data
    asked = [e.uid for e in many.build(variants) if not e.question.startswith("Tell me about")]
    drew_by_uid = {r["uid"]: 0 for r in variants}
    for r in variants:
        drew_by_uid[r["uid"]] += many.kind_for(example_key(r)) == "attribute"
    assert all(asked.count(u) <= max(1, drew_by_uid[u]) for u in set(asked)), asked
