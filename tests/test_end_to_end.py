"""End-to-end evaluation (``amazon-sft eval --questions``): the question file, the scoring
arithmetic on known answers, the index with a product taken out, and one run through ``ask``'s
Answerer with the tiny models."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pytest

from amazon_sft.answering.answer_source import AnswerSource
from amazon_sft.answering.ask import Answer
from amazon_sft.answering.gate import DEFAULT_GATE, GATES
from amazon_sft.answering.index import CatalogueIndex, Source
from amazon_sft.data.manifest import read_manifest
from amazon_sft.errors import UserError
from amazon_sft.evaluation import end_to_end as E
from amazon_sft.evaluation import metrics as M
from amazon_sft.evaluation import question_file as QF
from amazon_sft.evaluation import question_products as QP
from amazon_sft.evaluation.end_to_end_types import read_end_to_end_report
from amazon_sft.evaluation.report import json_text

from .test_eval import _base, _eval


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_question_file_in_the_question_sets_format(tmp_path):
    path = _write(
        tmp_path / "q.jsonl",
        [
            {"question": "mogs kitens", "uid": "B1", "kind": "typo", "source": "real"},
            "",
            {"question": "a red kayak?", "uid": "absent", "kind": "absent", "source": "generated"},
            {"question": "Mog's Kittens", "absent": "B1", "kind": "absent", "split": "seen"},
            {"question": "a blue kayak?", "absent": True, "kind": "absent"},
        ],
    )
    q = QF.read_questions(path)
    assert [(x.uid, x.removed, x.kind, x.source, x.line) for x in q] == [
        ("B1", None, "typo", "real", 1),
        (None, None, "absent", "generated", 3),
        (None, "B1", "absent", "unlabelled", 4),
        (None, None, "absent", "unlabelled", 5),
    ]  # a row naming no source was counted as the generated catalogue's (a user's own file)
    assert [x.absent for x in q] == [False, True, True, True]


def test_real_row_questions_name_their_product_by_the_rows_title(tmp_path):
    """eval/questions/real_*.jsonl key a real row by its exact title (the rows have no uid, so
    prepare derives one from the title): the same uid here."""
    from amazon_sft.data.reading import derived_uid

    title = "Mog&#8217;s Kittens"
    row = {"question": "the mog book?", "kind": "partial", "source": "real"}
    path = _write(tmp_path / "q.jsonl", [{**row, "title": title, "line": 4}])
    (q,) = QF.read_questions(path)
    assert q.uid == derived_uid(title) and not q.absent


def _ulysses_and_mog(tmp_path: Path) -> Path:
    """A prepared catalogue of two rows: a title with quotes (seen) and one held out."""
    return _write(
        tmp_path / "catalogue.jsonl",
        [
            {"uid": "u-1", "title": 'HMS "Ulysses"', "content": "A war novel.", "split": "train"},
            {"uid": "B0007", "title": "Mog's Kittens", "content": "A cat.", "split": "heldout"},
        ],
    )


def test_a_question_naming_its_product_by_the_title_the_tool_shows_finds_it(tmp_path):
    """``"title"`` was hashed as given, and prepare derived the row's uid from the raw title:
    the title as ask shows it (``HMS "Ulysses"``, cleaned of ``&quot;``) and any title of a
    catalogue with its own uids were skipped as "not in this catalogue" (an outside review).
    A title whose derived uid the catalogue lacks is found by the catalogue's own title."""
    cat = _ulysses_and_mog(tmp_path)
    path = _write(
        tmp_path / "q.jsonl",
        [
            {"question": "the ulysses one", "title": 'HMS "Ulysses"', "kind": "partial"},
            {"question": "mogs kitens", "title": "mog's kittens", "kind": "typo"},
            {"question": "no such", "title": "Not Here At All", "kind": "title"},
            {"question": "take it out", "title": "Mog's Kittens", "absent": True, "kind": "x"},
        ],
    )
    questions = QP.resolve_titles(cat, QF.read_questions(path))
    assert [(q.uid, q.removed) for q in questions] == [
        ("u-1", None),
        ("B0007", None),
        (questions[2].uid, None),  # no such title: left as derived, skipped as absent from it
        (None, "B0007"),
    ]
    products, _ = QP.read_products(cat, questions)
    _kept, skipped = QP.keep_answerable(questions, products)
    assert [q.line for q in skipped] == [3]


def test_an_absent_question_naming_a_product_is_refused_naming_the_file(tmp_path):
    """An absent question whose text is a product's whole title is refused (an answer citing
    that product was scored wrong); the error named no file, where every other question-file
    error does (a hostile user's trial)."""
    from amazon_sft.errors import UserError

    cat = _ulysses_and_mog(tmp_path)
    path = _write(
        tmp_path / "q.jsonl", [{"question": "Mog's Kittens", "uid": "absent", "kind": "x"}]
    )
    with pytest.raises(UserError) as err:
        QP.refuse_absent_naming_a_product(cat, QF.read_questions(path), path)
    assert str(err.value).startswith(f"{path} line 1: ") and '"absent": "B0007"' in str(err.value)


def test_a_product_named_once_by_uid_and_once_by_title_is_one_question(tmp_path):
    """A review: the repeat check keyed on the uid or title as written, so the same question
    about the same product, named by ``uid`` on one line and by ``title`` on another, counted
    twice (3 of a group's 4 questions in its repro). Checked again once titles are resolved."""
    cat = _write(
        tmp_path / "catalogue.jsonl",
        [{"uid": "B0007", "title": "Mog's Kittens", "content": "A cat.", "split": "heldout"}],
    )
    path = _write(
        tmp_path / "q.jsonl",
        [
            {"question": "the mog book", "uid": "B0007", "kind": "partial"},
            {"question": "the mog book", "title": "Mog's Kittens", "kind": "partial"},
        ],
    )
    with pytest.raises(UserError, match=f"{path} line 2 repeats line 1"):
        QP.resolve_titles(cat, QF.read_questions(path), path)


def test_a_title_beside_a_uid_must_name_that_product(tmp_path):
    """A review: a line giving both ``uid`` and ``title`` was scored on the uid and its title
    never read, so a line whose title names another product (a copy-paste slip) was scored
    against the wrong product, silently. A title that agrees (as the tool shows it, or as the
    raw row wrote it, ``&quot;`` and all) is taken; one that names another product is refused,
    naming the line and both titles; a title beside ``"uid": "absent"`` names no product."""
    cat = _ulysses_and_mog(tmp_path)
    agree = _write(
        tmp_path / "agree.jsonl",
        [
            {"question": "ulysses", "uid": "u-1", "title": "HMS &quot;Ulysses&quot;", "kind": "p"},
            {"question": "mog", "uid": "B0007", "title": "mog's kittens!", "kind": "p"},
            {"question": "mog gone", "absent": "B0007", "title": "Mog's Kittens", "kind": "p"},
            {
                "question": "gone",
                "uid": "absent",
                "absent": "B0007",
                "title": "<i>Mog's</i> Kittens",
                "kind": "p",
            },
            {"question": "none", "uid": "absent", "title": None, "kind": "absent"},
        ],
    )
    questions = QP.resolve_titles(cat, QF.read_questions(agree))
    products, _ = QP.read_products(cat, questions)
    assert sorted(products) == ["B0007", "u-1"]
    slip = _write(
        tmp_path / "slip.jsonl",
        [
            {"question": "ulysses", "uid": "u-1", "title": "HMS Ulysses", "kind": "p"},
            {"question": "the war one", "uid": "B0007", "title": 'HMS "Ulysses"', "kind": "p"},
        ],
    )
    questions = QP.resolve_titles(cat, QF.read_questions(slip))
    with pytest.raises(UserError) as err:
        QP.read_products(cat, questions, path=slip)
    said = str(err.value)
    assert f"{slip} line 2" in said and "B0007" in said and "Mog's Kittens" in said
    assert "HMS" in said and "\n" not in said
    for line, needle in (
        ({"question": "q", "uid": "absent", "title": "Mog's Kittens", "kind": "a"}, "absent"),
        ({"question": "q", "uid": "B0007", "title": 7, "kind": "a"}, "'title' must be"),
    ):
        path = _write(tmp_path / "bad.jsonl", [line])
        with pytest.raises(UserError, match=needle):
            QF.read_questions(path)


@pytest.mark.parametrize(
    "line, needle",
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "a JSON array, not JSON lines"),
        ('"a string"', "not a JSON object"),
        ('{"uid": "B1", "kind": "typo"}', "'question'"),
        ('{"question": "  ", "uid": "B1", "kind": "typo"}', "'question'"),
        ('{"question": "q", "uid": "B1"}', "'kind'"),
        ('{"question": "q", "kind": "typo"}', "needs 'uid'"),
        # (a whole number is the uid prepare reads it as: test_hostile_question_files.py)
        ('{"question": "q", "uid": 7.5, "kind": "typo"}', "'uid'"),
        ('{"question": "q", "uid": "B1", "kind": "t", "source": "web"}', "'source'"),
        ('{"question": "q", "absent": 3, "kind": "t"}', "'absent'"),
        ('{"question": "q", "uid": "B2", "absent": "B1", "kind": "t"}', "disagree"),
        ('{"question": "%s", "uid": "B1", "kind": "t"}' % ("word " * 401), "at most 2000"),
        # a review: zero-width spaces alone were refused only mid-run, after earlier answers
        ('{"question": "\u200b\u200b", "uid": "B1", "kind": "typo"}', "no visible text"),
        # ... and a repeated question counted twice, narrowing the intervals
        ('{"question": " Q ", "uid": "B1", "kind": "typo"}', "repeats line 1"),
        # (a review: text ask's cleaning makes the same was not the same question here)
        ('{"question": "q\u200b", "uid": "B1", "kind": "typo"}', "repeats line 1"),
    ],
)
def test_bad_question_lines_are_one_line_errors_naming_file_and_line(tmp_path, line, needle):
    good = '{"question": "q", "uid": "B1", "kind": "typo"}'
    path = _write(tmp_path / "q.jsonl", [good, line])
    with pytest.raises(UserError) as err:
        QF.read_questions(path)
    message = str(err.value)
    assert f"{path} line 2" in message and needle in message and "\n" not in message


def test_an_answer_that_cites_nothing_and_does_not_abstain_has_its_row():
    """A review: right, wrong and false abstention were all 0.000 for a model that never cites:
    nothing said where its answers went. The four rows over questions about a product add up."""
    nan = float("nan")
    said = E.Outcome(False, False, False, False, nan, True, True)  # "A nice book." and no source
    right = E.Outcome(False, True, False, False, 1.0, True, True, own=True)
    row = E.summarise([said, said, right], {"all": [0, 1, 2]})["all"]
    assert row.figures["cited_nothing"].value == pytest.approx(2 / 3)
    rows = ("right_record_cited", "wrong_record_cited", "false_abstention", "cited_nothing")
    assert sum(row.figures[k].value for k in rows) == pytest.approx(1.0)


@dataclass
class ScriptedAnswerer:
    """``ask``'s Answerer with a scripted model: real retrieval, the answer text looked up by
    question (so the scoring is checked on answers whose right scores are known)."""

    index: object
    script: dict

    def __call__(self, question, *, k, mode, max_new_tokens):
        sources = [AnswerSource(s) for s in self.index.search(question, k)]
        text = self.script[question]
        return Answer(question, text, sources, "", mode, E.cited_uids(text))


def _catalogue(prepared: Path) -> list[dict]:
    return [orjson.loads(x) for x in (prepared / "catalogue.jsonl").read_bytes().splitlines()]


def test_scoring_on_known_answers(prepared):
    rows = _catalogue(prepared)
    held = next(r for r in rows if r["split"] == "heldout")
    p1, p2, p3, p4 = held, *[r for r in rows if r["split"] == "train"][:3]
    half = " ".join(p4["content"].split()[: len(p4["content"].split()) // 2])
    abstain = "The catalogue has no record of this product."
    cases = [  # (question row, answer)
        ({"uid": p1["uid"], "q": p1["title"]}, f"{p1['content']}\n[source: {p1['uid']}]"),
        ({"uid": p2["uid"], "q": p2["title"]}, f"{p3['content']}\n[source: {p3['uid']}]"),
        ({"uid": p3["uid"], "q": p3["title"]}, abstain),
        ({"uid": p4["uid"], "q": p4["title"]}, f"{half}\n[source: {p4['uid']}]"),
        ({"uid": "absent", "q": "a carbon bicycle frame"}, abstain),
        ({"absent": p1["uid"], "q": p1["title"] + " please"}, abstain),
        ({"uid": "absent", "q": "a wooden chess set"}, f"Chess.\n[source: {p2['uid']}]"),
    ]
    path = _write(
        Path(prepared).parent / "known.jsonl",
        [
            {"question": c["q"], "kind": "k", **{k: v for k, v in c.items() if k != "q"}}
            for c, _ in cases
        ],
    )
    questions = QF.read_questions(path)
    products, removals = QP.read_products(prepared / "catalogue.jsonl", questions)
    assert QP.keep_answerable(questions, products) == (questions, [])
    index = CatalogueIndex(prepared)
    answerer = ScriptedAnswerer(index, {c["q"]: a for c, a in cases})
    answers, outcomes = E.ask_all(answerer, questions, products, removals, 3, 16)

    assert [(o.right, o.wrong, o.abstained) for o in outcomes] == [
        (True, False, False),
        (False, True, False),
        (False, False, True),
        (True, False, False),
        (False, False, True),
        (False, False, True),
        (False, True, False),
    ]
    retrieved = [[s.uid for s in a.sources] for a in answers]
    assert p1["uid"] not in retrieved[5] and removals[p1["uid"]] >= {
        i for i, r in enumerate(rows) if r["uid"] == p1["uid"]
    }
    for q, got in zip(questions[:4], retrieved[:4]):  # the index's own answer, unchanged
        assert got == [s.uid for s in index.search(q.text, 3)]

    groups = E.question_groups(questions, products)
    s = E.summarise(outcomes, groups)["all"]
    r4 = M.rouge_scores([half], [p4["content"]])["rougeL"][0]
    expected = {
        "right_record_cited": 2 / 4,
        "wrong_record_cited": 1 / 4,
        "false_abstention": 1 / 4,
        "cited_nothing": 0 / 4,
        "abstention_recall": 2 / 3,  # q5, q6 of q5-q7
        "abstention_precision": 2 / 3,  # q5, q6 of the abstentions q3, q5, q6
        "cited_when_absent": 1 / 3,
        "rougeL_when_right": (1.0 + r4) / 2,
        "recall_at_1": sum(g[:1] == [q.uid] for q, g in zip(questions[:4], retrieved)) / 4,
        "recall_at_k": sum(q.uid in g for q, g in zip(questions[:4], retrieved)) / 4,
    }
    for key, value in expected.items():
        assert s.figures[key].value == pytest.approx(value), key
        if key == "rougeL_when_right":  # a mean of 2 of 7: 9.5% of resamples have no right answer
            assert math.isnan(s.figures[key].low) and math.isnan(s.figures[key].high)
            continue
        assert s.figures[key].low <= s.figures[key].value <= s.figures[key].high, key
    assert s.figures["abstention_precision"].of == 3 and s.n == 7
    assert set(groups["held-out products"]) == {0, 5}  # p1's question and its removal
    assert groups[E.NOT_IN_CATALOGUE] == [4, 6]
    held_out = E.summarise(outcomes, groups)["held-out products"]
    assert (
        held_out.figures["right_record_cited"].value == 1.0
        and held_out.figures["abstention_recall"].value == 1.0
    )

    perfect = [
        E.Outcome(o.absent, not o.absent, False, o.absent, 1.0, o.top1, o.topk) for o in outcomes
    ]
    d = E.compare(outcomes, perfect, groups)["all"]
    assert d["right_record_cited"].delta == pytest.approx(0.5)
    # a handful of questions: a rate's paired score interval, never a point (the bootstrap
    # collapsed to one); a bootstrap figure gives no interval rather than one that collapses
    right = d["right_record_cited"]
    assert len(outcomes) < 10 and right.low < 0.5 < right.high <= 1.0
    assert d["abstention_precision"].delta == pytest.approx(1 / 3)
    assert np.isnan(d["abstention_precision"].low)
    assert d["recall_at_k"].delta == 0.0
    assert d["recall_at_k"].low < 0.0 < d["recall_at_k"].high


def test_questions_about_another_catalogue_are_skipped_and_counted(prepared, tmp_path):
    rows = _catalogue(prepared)
    path = _write(
        tmp_path / "q.jsonl",
        [
            {"question": rows[0]["title"], "uid": rows[0]["uid"], "kind": "title"},
            {"question": "x", "uid": "NOT-A-UID", "kind": "title", "source": "real"},
            {"question": "y", "absent": "NOT-A-UID", "kind": "absent", "source": "real"},
        ],
    )
    questions = QF.read_questions(path)
    products, _ = QP.read_products(prepared / "catalogue.jsonl", questions)
    kept, skipped = QP.keep_answerable(questions, products)
    assert [q.line for q in kept] == [1] and [q.line for q in skipped] == [2, 3]


@pytest.mark.e2e
def test_compare_end_to_end_through_the_answerer(prepared, tiny_model_dir, tuned_run, tmp_path):
    rows = _catalogue(prepared)
    held = [r for r in rows if r["split"] == "heldout"][:2]
    seen = [r for r in rows if r["split"] == "train"][:2]
    words = lambda r: " ".join(r["title"].split()[:3]).lower()  # noqa: E731
    lines = [{"question": words(r), "uid": r["uid"], "kind": "partial"} for r in held + seen]
    lines += [
        {"question": seen[0]["title"], "absent": seen[0]["uid"], "kind": "absent"},
        {"question": "a carbon bicycle frame", "uid": "absent", "kind": "absent"},
    ]
    lines = [{**x, "source": "generated"} for x in lines]
    questions = _write(tmp_path / "q.jsonl", lines)
    (base,), overrides = _base(tiny_model_dir)
    out = tmp_path / "r"
    proc = _eval(
        "--data", str(prepared), "--compare", base, str(tuned_run), "--questions", str(questions),
        "--out", str(out), "--max-new-tokens", "12", *overrides,
        "data.context_record_tokens=200",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    answers = [json.loads(x) for x in (out / "answers.jsonl").read_text().splitlines()]
    assert report["asked"] == 6 and set(report["models"]) == {"base", "tuned"}
    # ask's default gate, meaning re-scoring included: eval retrieves as a plain ask does
    assert report["meaning_weight"] == GATES[DEFAULT_GATE].meaning_weight > 0
    index = CatalogueIndex(prepared, meaning_weight=report["meaning_weight"])
    k = report["models"]["tuned"]["k"]
    hits = [index.search(x["question"], k) for x in lines[:4]]
    for model in ("base", "tuned"):
        got = report["groups"][model]["all"]
        assert got["recall_at_k"]["value"] == pytest.approx(
            sum(x["uid"] in [s.uid for s in h] for x, h in zip(lines, hits)) / 4
        )
        assert got["recall_at_1"]["value"] == pytest.approx(
            sum(h[:1] and h[0].uid == x["uid"] for x, h in zip(lines, hits)) / 4
        )
        assert (
            answers[4]["retrieved"][model] and seen[0]["uid"] not in answers[4]["retrieved"][model]
        )
        assert {"held-out products", "seen products", E.NOT_IN_CATALOGUE, "kind partial"} <= set(
            report["groups"][model]
        )
    assert report["comparison"]["all"]["recall_at_k"]["delta"] == 0.0  # one index, both models
    # both models see the records as prepare taught them, whatever their own configs say
    # (here 200 tokens): a base config cutting them to 160 against a tuned run's 96 made a
    # ROUGE-L "drop" of the gate's quotes alone (a new user's walkthrough)
    taught = read_manifest(prepared).data
    for model in ("base", "tuned"):
        assert report["models"][model]["record_tokens"] == taught["context_record_tokens"] != 200
        assert report["models"][model]["k"] == taught["context_records"]
    assert "data.context_record_tokens=160 as the prepared folder taught" in proc.stderr
    md = (out / "report.md").read_text()
    assert "tuned - base (95% CI)" in md and "retrieval recall@k" in md
    # a reader is told what the catalogue is and how the tuned model was trained (a new user
    # read the demo's generated catalogue's figures as the real rows', with no recipe beside)
    made = json.loads((prepared / "report.json").read_text())
    said = f"prepared from {made['input']}: {made['kept']} products"
    assert said in report["catalogue"] and "a generated catalogue (amazon-sft synth)" in md
    assert "full fine-tune of" in md and "25 steps of 4 rows, lr" in md
    assert "0 skipped" not in md  # none was: said only when some were
    # the rates' intervals are Wilson's, not a bootstrap (0 of 2 reads [0, 0.658], not [0, 0])
    assert "95% Wilson intervals for rates" in md and "bootstrap intervals over questions" not in md
    summary = md.split("## Summary")[1].split("\n## ")[0]
    assert "retrieval recall@k (tuned)" in summary
    # the rates of questions about a product are out of fewer than all: the count says so
    # (a new user read 71 questions beside rates out of 42)
    about = report["groups"]["tuned"]["all"]["right_record_cited"]["of"]
    assert "| group | questions (about a product) |" in summary
    assert f"| all | 6 ({about}) |" in summary, summary
    # the one typed reader (demo, gpu_check) reads this report back whole, in its layout
    typed = read_end_to_end_report(out / "report.json")
    assert json.loads(json_text(typed.to_json())) == report
    assert typed.groups["tuned"]["all"].figures["right_record_cited"].of == about


def test_oracle_splits_are_labelled_oracle_context():
    from amazon_sft.evaluation.oracle_types import OracleModel, OracleReport, SplitScores
    from amazon_sft.evaluation.report import render_markdown

    metrics = {"rougeL": 0.5, "citation_accuracy": 0.9}
    result = OracleReport(
        "d",
        "both",
        {},
        models={"model": OracleModel("m")},
        splits={
            s: {"model": SplitScores(1, metrics)}
            for s in ("heldout", "heldout grounded", "heldout absent")
        },
    )
    md = render_markdown(result, 0)
    # an outside trial: the closed-book split's heading said nothing of its protocol
    assert "## heldout titles, closed-book (n=1)" in md
    assert "## heldout grounded titles, oracle context (n=1)" in md
    assert "## heldout absent titles, oracle context (n=1)" in md
    assert "--questions FILE" in md


def test_a_split_with_fewer_titles_than_n_asks_is_said():
    """An outside trial: ``--n 200`` scored the 50 titles the prepared probe holds, unsaid."""
    from amazon_sft.evaluation.main import fewer_than_asked

    said = fewer_than_asked({"heldout": [{}] * 50, "seen": [{}] * 300}, 200, "closed")
    assert len(said) == 1 and "--n 200" in said[0] and "50 heldout titles" in said[0], said
    # counted as scored: the seen probe's rows taught the way the mode scores (a review)
    seen = [{"taught": ["closed_book"]}] * 60 + [{"taught": ["grounded"]}] * 20
    said = fewer_than_asked({"seen": seen}, 100, "both")
    assert [s.split(" (")[0] for s in said] == [
        "eval: 60 seen titles taught closed-book",
        "eval: 20 seen titles taught grounded",
    ], said


def test_a_question_file_with_a_byte_order_mark_or_a_folder_given(tmp_path):
    good = '{"question": "q", "uid": "B1", "kind": "typo"}'
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + good.encode() + b"\n")  # Windows editors write one
    assert [q.text for q in QF.read_questions(path)] == ["q"]
    with pytest.raises(UserError, match="is a folder: give a question file"):
        QF.read_questions(tmp_path)


def test_a_question_over_the_models_context_is_named_by_its_line(prepared, tuned_run, tmp_path):
    """The tiny model's context is 1024 tokens; a 1,800-character question (under ask's 2,000)
    with its records does not fit. The whole eval stopped on "the question is too long" without
    saying which of the file's questions it was."""
    first = orjson.loads((prepared / "heldout.jsonl").read_bytes().splitlines()[0])
    long = " ".join(f"w{i}" for i in range(450))[:1800]
    path = _write(
        tmp_path / "q.jsonl",
        [{"question": first["title"], "uid": first["uid"], "kind": "typo"},
         {"question": long, "uid": "absent", "kind": "t"}],
    )  # fmt: skip
    for batch in ("8",):  # one at a time: test_answer_many_names_the_question_it_failed_on
        proc = _eval(
            "--data", str(prepared), "--model", str(tuned_run), "--questions", str(path),
            "--out", str(tmp_path / "r"), "--batch-size", batch, "--max-new-tokens", "4",
        )  # fmt: skip
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        errors = [x for x in proc.stderr.splitlines() if "error:" in x]
        assert len(errors) == 1 and f"{path} line 2: the prompt does not fit" in errors[0], errors


def test_eval_with_a_bad_question_file_is_a_one_line_error(prepared, tiny_model_dir, tmp_path):
    (base,), overrides = _base(tiny_model_dir)
    bad = _write(tmp_path / "q.jsonl", ['{"question": "q", "uid": "B1", "kind": "typo"}', "{oops"])
    other = _write(tmp_path / "o.jsonl", [{"question": "q", "uid": "NOT-HERE", "kind": "typo"}])
    # another catalogue's questions with absent-product ones among them: only those were
    # scored ("abstention recall 1.000") where every product question was skipped (a new
    # user's walkthrough); refused as the file of product questions alone is
    mixed = _write(
        tmp_path / "m.jsonl",
        [{"question": "q", "uid": "NOT-HERE", "kind": "typo"},
         {"question": "a carbon bicycle frame", "uid": "absent", "kind": "absent"}],
    )  # fmt: skip
    cases = [
        (bad, f"{bad} line 2: not valid JSON"),
        (other, "none of its products"),
        (mixed, "none of its products"),
    ]
    for path, needle in cases:
        proc = _eval(
            "--data", str(prepared), "--model", base, "--questions", str(path),
            "--out", str(tmp_path / "r"), *overrides,
        )  # fmt: skip
        assert proc.returncode == 2 and needle in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
    proc = _eval(  # a filter that leaves nothing blamed the catalogue
        "--data", str(prepared), "--model", base, "--questions", str(other),
        "--question-source", "real", "--out", str(tmp_path / "r"), *overrides,
    )  # fmt: skip
    assert proc.returncode == 2 and "none of the 1 questions" in proc.stderr, proc.stderr[-2000:]
    assert "from: unlabelled" in proc.stderr and "catalogue" not in proc.stderr


def test_an_absent_question_naming_a_catalogue_title_is_refused_and_a_filter_is_reported(
    prepared, tiny_model_dir, tmp_path
):
    """A review: an absent question (``"uid": "absent"``) that was a catalogue product's whole
    title was scored wrong for citing it, lowering abstention recall; and a report made with
    ``--question-source`` read like one on the whole file. The first is refused naming the
    product and how to take it out; the second says the source and how many it left out."""
    row = _catalogue(prepared)[0]
    path = _write(tmp_path / "a.jsonl", [
        {"question": "q about it", "uid": row["uid"], "kind": "typo"},
        {"question": row["title"], "uid": "absent", "kind": "absent"},
    ])  # fmt: skip
    (base,), overrides = _base(tiny_model_dir)
    proc = _eval(
        "--data", str(prepared), "--model", base, "--questions", str(path),
        "--out", str(tmp_path / "r"), *overrides,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "line 2" in proc.stderr and f'"absent": "{row["uid"]}"' in proc.stderr

    mixed = _write(tmp_path / "s.jsonl", [
        {"question": row["title"], "uid": row["uid"], "kind": "title", "source": "real"},
        {"question": "q about it", "uid": row["uid"], "kind": "typo"},
    ])  # fmt: skip
    out = tmp_path / "r2"
    proc = _eval(
        "--data", str(prepared), "--model", base, "--questions", str(mixed),
        "--question-source", "real", "--max-new-tokens", "4", "--out", str(out), *overrides,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["question_source"] == "real" and report["skipped"]["other_source"] == 1
    assert "only source real: 1 others left out" in (out / "report.md").read_text()


def test_abstain_below_reaches_the_answerer_and_the_report(prepared, tiny_model_dir, tmp_path):
    """``eval --questions --abstain-below``: every answer goes through the same gate as ``ask``
    (here a ratio no retrieval reaches: every question abstains, none generated); the report
    says so. Without ``--questions`` the flag is refused: oracle context has no retrieval. The
    questions describe the products: one that names a whole title is sure at any ratio when the
    second record's title lacks a word of it (answering/named_title.py)."""
    rows = _catalogue(prepared)
    described = [" ".join(r["content"].split()[:8]) for r in rows[:2]]
    lines = [
        {"question": q, "uid": r["uid"], "kind": "descriptive"} for q, r in zip(described, rows)
    ]
    questions = _write(tmp_path / "q.jsonl", lines)
    (base,), overrides = _base(tiny_model_dir)
    out = tmp_path / "r"
    proc = _eval(
        "--data", str(prepared), "--model", base, "--questions", str(questions),
        "--out", str(out), "--max-new-tokens", "8", "--abstain-below", "1e9",
        "--quote-when-sure", "--meaning-weight", "4", *overrides,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = [json.loads(x) for x in (out / "answers.jsonl").read_text().splitlines()]
    assert [a["doubtful"]["model"] for a in answers] == [True, True]
    # each row names the gate's rule and the product's group (an outside audit recounted the
    # report's rows: the held-out ones took a join with catalogue.jsonl)
    from amazon_sft.answering.doubt import RULES

    assert all(a["doubt_rule"]["model"] in RULES for a in answers), answers
    groups = {"held-out products", "seen products", "untaught products"}  # the report's names
    assert {a["product"] for a in answers} <= groups, answers
    assert [a["quoted"]["model"] for a in answers] == [False, False]  # gated: nothing to quote
    assert all(a["outcomes"]["model"]["abstained"] for a in answers)
    report = json.loads((out / "report.json").read_text())
    assert report["abstain_below"] == 1e9 and report["quote_when_sure"] is True
    assert report["meaning_weight"] == 4.0
    assert (  # the formula ask applies, floor and candidates included
        "its first 50 records by meaning too: (score + 0.2) x exp(4 x cosine) (`--meaning-weight`"
        in (out / "report.md").read_text()
    )
    assert report["own_right"] == {"model": {"right": 0, "of": 2}}
    # the model's own right citations are a row with its interval, as every figure
    own = report["groups"]["model"]["all"]["right_own_answer"]
    assert own["value"] == 0 and own["of"] == 2 and "low" in own
    assert (
        "| right record cited by the model's own answer | 0.000 ["
        in (out / "report.md").read_text()
    )
    assert "right record cited by the model's own answer (model)" in (out / "report.md").read_text()
    assert "model 2 of 2 questions" in (out / "report.md").read_text()
    assert "model 0 of 2 questions" in (out / "report.md").read_text()
    assert (
        "model's own answer (not replaced): model 0 of 2 questions about a product**"
        in (out / "report.md").read_text()
    )
    for extra, named in (
        (["--abstain-below", "1.3"], "--abstain-below"),
        (["--questions", str(questions), "--abstain-below", "-1"], "--abstain-below"),
        (["--quote-when-sure"], "--quote-when-sure"),  # no retrieval without --questions
        (["--questions", str(questions), "--gate", "off", "--quote-when-sure"], "RATIO > 0"),
        (["--gate", "off"], "--gate off"),  # no retrieval without --questions
        (["--meaning-weight", "4"], "--meaning-weight"),  # no retrieval without --questions
        (["--questions", str(questions), "--meaning-weight", "-1"], "--meaning-weight"),
    ):
        proc = _eval(  # a new --out: the report above is refused without --overwrite
            "--data", str(prepared), "--model", base, "--out", str(tmp_path / "r2"), *extra,
            *overrides,
        )  # fmt: skip
        assert proc.returncode == 2 and named in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr


def test_batched_answers_are_the_answers_ask_gives_one_at_a_time(prepared, tuned_run):
    """eval --questions generates in batches (left-padded); every answer, citation, abstention
    and quote must be what ``ask``'s one-at-a-time path gives, the gate on and off, with an
    index that lacks the asked product for an absent-product question."""
    from amazon_sft.answering.answer_many import answer_many
    from amazon_sft.evaluation.end_to_end_run import _answerer
    from amazon_sft.evaluation.question_products import WithoutRows

    rows = _catalogue(prepared)
    held = [r for r in rows if r["split"] == "heldout"][:3]
    seen = [r for r in rows if r["split"] == "train"][:3]
    index = CatalogueIndex(prepared)
    without = WithoutRows(
        index, frozenset(i for i, r in enumerate(rows) if r["uid"] == seen[0]["uid"])
    )
    items = [(r["title"], None) for r in held + seen]
    items += [(" ".join(r["title"].split()[:2]).lower(), None) for r in held]
    items += [(seen[0]["title"], without), ("a carbon bicycle frame", None)]
    for gate in (0.0, 1.4):
        answerer, _ = _answerer(str(tuned_run), [], index, gate, gate > 0)
        asked = dict(k=3, mode="grounded", max_new_tokens=16)
        one = answer_many(answerer, items, batch_size=1, **asked)
        many = answer_many(answerer, items, batch_size=4, **asked)
        assert [dataclasses.asdict(a) for a in many] == [dataclasses.asdict(a) for a in one]
        if gate:
            assert any(a.doubtful for a in one) and not all(a.doubtful for a in one)


def test_answer_many_names_the_question_it_failed_on():
    from amazon_sft.answering.answer_many import answer_many

    def answerer(question, **kwargs):  # ask's Answerer, one question at a time
        if question == "long":
            raise UserError("the question is too long for the model's context")
        return question

    items = [("short", None), ("long", None)]
    with pytest.raises(UserError, match=r"^q.jsonl line 9: the question is too long"):
        answer_many(
            answerer, items, k=3, mode="grounded", max_new_tokens=4, batch_size=1,
            names=["q.jsonl line 8", "q.jsonl line 9"],
        )  # fmt: skip


def test_an_abstention_that_cites_the_asked_record_is_an_abstention_not_a_right_answer():
    """An outside review: "The catalogue has no record of this product. [source: 7]" counted as
    right record cited, as the model's own right answer and as a false abstention at once, so a
    report's rates could add to more than 1."""
    q = QF.ShopperQuestion("mogs kitens", "7", None, "typo", "real", 1)
    products = {"7": QP.Product("7", "A cat has kittens.", "seen")}
    text = "The catalogue has no record of this product.\n[source: 7]"
    o = E.score_answer(
        q,
        Answer(q.text, text, [AnswerSource(Source("7", "", "", 1.0))], "", "grounded", ["7"]),
        products,
    )
    assert (o.right, o.wrong, o.abstained, o.own) == (False, False, True, False)


def test_a_rate_of_none_or_all_has_an_interval_that_is_not_a_point():
    """An outside review: 0 wrong of 72 read "0.000 [0.000, 0.000]" (every bootstrap resample is
    0), and the docs took it as meeting "<= 0.03"; the Wilson 95% upper bound is 0.051."""
    outcomes = [E.Outcome(False, True, False, False, 1.0, True, True, True)] * 72
    row = E.summarise(outcomes, {"all": list(range(72))})["all"]
    wrong, right = row.figures["wrong_record_cited"], row.figures["right_record_cited"]
    assert wrong.value == 0.0 and wrong.low == 0.0 and 0.05 < wrong.high < 0.052
    assert right.value == 1.0 and right.high == 1.0 and 0.948 < right.low < 0.95


def test_a_paired_difference_mostly_undefined_in_resamples_has_no_interval():
    """An outside review: abstention precision with one base abstention in 40 questions was left
    out of 342 of 1,000 paired resamples without a word, and the interval read as if whole."""
    base = [E.Outcome(False, True, False, False, 1.0, True, True, True)] * 39
    base += [E.Outcome(True, False, False, True, math.nan, False, False, False)]
    tuned = [E.Outcome(False, False, False, True, math.nan, True, True, False)] * 30 + base[30:]
    cmp = E.compare(base, tuned, {"all": list(range(40))})["all"]
    assert math.isnan(cmp["abstention_precision"].low)
    assert not math.isnan(cmp["false_abstention"].low)  # defined in every resample


def test_every_absent_question_takes_out_its_products_twins_when_two_share_a_title(
    prepared, tmp_path
):
    """Two "absent" questions about editions of one title: the title and description keys
    mapped to one removed uid each (a dict built from a set), so the other question lost only
    its own row and retrieval still found its twins (an outside review; which question
    depended on PYTHONHASHSEED)."""
    from amazon_sft.data.split import normalise_title

    rows = _catalogue(prepared)
    by_title: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_title.setdefault(normalise_title(r["title"]), []).append(i)
    twins = next(v for v in by_title.values() if len(v) >= 3)
    a, b = rows[twins[0]]["uid"], rows[twins[1]]["uid"]
    title = rows[twins[0]]["title"]
    path = _write(
        tmp_path / "q.jsonl",
        [{"question": title, "absent": u, "kind": "absent"} for u in (a, b)],
    )
    questions = QF.read_questions(path)
    _, removals = QP.read_products(prepared / "catalogue.jsonl", questions)
    for uid in (a, b):
        _, alone = QP.read_products(
            prepared / "catalogue.jsonl", [q for q in questions if q.removed == uid]
        )
        assert removals[uid] == alone[uid] and removals[uid] >= set(twins), uid


@pytest.mark.parametrize(
    "flags",
    [["--k", "7"], ["--question-source", "real"], ["--gate", "off"], ["--abstain-below", "1"]],
)
def test_answering_flags_without_questions_are_refused_not_ignored(flags):
    """The gate's flags were refused in oracle mode, but ``--k 7`` and ``--question-source``
    were silently ignored and the report recorded no k (an outside review)."""
    from amazon_sft.evaluation.arguments import parse_args
    from amazon_sft.evaluation.end_to_end_run import refuse_answering_flags

    args = parse_args(["--data", "d", "--model", "config:tiny", *flags])
    with pytest.raises(UserError, match=f"{flags[0]}.*--questions FILE"):
        refuse_answering_flags(args)


@pytest.mark.parametrize("flag", ["--n", "--batch-size"])
def test_a_count_below_one_names_its_flag(flag):
    """An outside trial: ``--n 0`` said "--n and --batch-size must be >= 1"."""
    from amazon_sft.evaluation.arguments import parse_args

    with pytest.raises(UserError, match=f"^{flag} must be >= 1, got 0$"):
        parse_args(["--data", "d", "--model", "config:tiny", flag, "0"])


def test_a_training_product_taught_neither_way_is_not_scored_as_seen(catalogue, tmp_path):
    """An outside review: end to end grouped every catalogue row of the training split as
    "seen", also the products prepare taught neither closed-book nor grounded (both fractions
    under 1, as the demo's --grounded-fraction 0.5): a question about one counted as a seen
    product's. They are "untaught", as in the oracle mode's seen probe."""
    from types import SimpleNamespace

    from amazon_sft.config import load_run_config
    from amazon_sft.evaluation.end_to_end_run import _questions
    from amazon_sft.prepare import prepare, taught_ways

    out = tmp_path / "data"
    from .conftest import GROUNDED

    shares = ["data.closed_book_fraction=0.5", "data.grounded_fraction=0.5"]
    cfg = load_run_config("tiny", [*GROUNDED, *shares])
    prepare(catalogue, out, cfg, progress=False)
    train = [r for r in _catalogue(out) if r["split"] == "train"]
    never = next(r for r in train if not taught_ways(r["uid"], cfg.data))
    taught = next(r for r in train if taught_ways(r["uid"], cfg.data))
    path = _write(
        tmp_path / "q.jsonl",
        [{"question": r["title"], "uid": r["uid"], "kind": "title"} for r in (never, taught)],
    )
    _, products, _, _ = _questions(SimpleNamespace(questions=path, question_source=None), out)
    assert products[never["uid"]].group == "untaught"
    assert products[taught["uid"]].group == "seen"


def test_a_product_prepare_asked_about_only_as_an_abstention_is_not_scored_as_seen(
    catalogue, tmp_path
):
    """An outside review: end to end counted as "seen" every product the stable hashes pick,
    also those prepare then did not teach: asked about only as abstentions (their own record
    left out), or every prompt too long. 53 of 581 at the default fractions; the oracle's seen
    probe already left them out. Now prepare lists them (not_taught.txt) and eval agrees with
    the probe product by product."""
    from collections import Counter
    from types import SimpleNamespace

    from amazon_sft.config import load_run_config
    from amazon_sft.data.split import normalise_title
    from amazon_sft.evaluation.end_to_end_run import _questions
    from amazon_sft.prepare import prepare

    from .conftest import GROUNDED

    out = tmp_path / "data"
    shares = ["data.closed_book_fraction=0", "data.grounded_fraction=1", "data.probe_size=5000"]
    cfg = load_run_config("tiny", [*GROUNDED, *shares, "data.absent_fraction=0.5"])
    prepare(catalogue, out, cfg, progress=False)
    train = [r for r in _catalogue(out) if r["split"] == "train"]
    probed = {json.loads(line)["uid"] for line in (out / "seen_probe.jsonl").open()}
    path = _write(
        tmp_path / "q.jsonl",
        [{"question": r["title"], "uid": r["uid"], "kind": "title"} for r in train],
    )
    _, products, _, _ = _questions(SimpleNamespace(questions=path, question_source=None), out)
    seen = {uid for uid, product in products.items() if product.group == "seen"}
    assert len(seen) < len(train)  # some were asked about only as abstentions
    titles = Counter(normalise_title(r["title"]) for r in train)  # the probe keeps one a title
    unique = {r["uid"] for r in train if titles[normalise_title(r["title"])] == 1}
    assert probed <= seen and seen & unique == probed & unique
    (out / "not_taught.txt").write_text("")  # edited: refused, not read as taught
    with pytest.raises(UserError, match=r"not_taught\.txt changed since prepare wrote it"):
        _questions(SimpleNamespace(questions=path, question_source=None), out)


@pytest.mark.parametrize(
    "flags",
    [
        ["--n", "3"],
        ["--splits", "seen"],
        ["--mode", "closed"],
        ["--examples", "1"],
        ["--repetition-penalty", "1.3"],
        ["--no-repeat-ngram-size", "2"],
    ],
)
def test_oracle_flags_with_questions_are_refused_not_ignored(flags):
    """An outside review: with --questions, eval asked every question of the file whatever
    --n, decoded without the penalties given, and showed 5 examples for --examples 1, all
    unsaid. The oracle-context settings are refused there, as the answering ones are without
    it; left out, each keeps its default for the oracle mode."""
    from amazon_sft.evaluation.arguments import parse_args

    with pytest.raises(UserError, match=f"{flags[0]} is an oracle-context setting"):
        parse_args(["--data", "d", "--model", "config:tiny", "--questions", "q.jsonl", *flags])
    args = parse_args(["--data", "d", "--model", "config:tiny"])
    assert (args.n, args.splits, args.mode, args.examples) == (100, "heldout,seen", "auto", 5)
    assert (args.repetition_penalty, args.no_repeat_ngram_size) == (1.0, 0)


def test_skipped_questions_are_named_on_the_terminal(capsys, tmp_path):
    """An outside review: questions whose uid is not in the catalogue were skipped with no word
    on the terminal (report.md said "2 skipped" without the lines)."""
    from amazon_sft.evaluation.end_to_end_run import say_skipped

    say_skipped({"not_in_catalogue": [4, 5]}, "q.jsonl", tmp_path)
    err = capsys.readouterr().err
    assert "2 questions of q.jsonl" in err and "lines 4, 5" in err and "catalogue.jsonl" in err
    say_skipped({"not_in_catalogue": []}, "q.jsonl", tmp_path)
    assert capsys.readouterr().err == ""


def test_question_file_kinds_are_one_group_and_errors_stay_short(tmp_path):
    """An outside review: "typo", "typo " and "Typo" made three groups (two printed alike); a
    Latin-1 file was "not valid JSON"; a 2 MB 'source' was echoed whole into the error; a line
    without uid did not name the 'title' a real row may be keyed by."""
    rows = [{"question": f"mog kitens {i}", "uid": "a", "kind": k}
            for i, k in enumerate(("typo", "typo ", "Typo"))]  # fmt: skip
    got = QF.read_questions(_write(tmp_path / "q.jsonl", rows))
    assert {q.kind for q in got} == {"typo"}
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"question": "pelúcia", "uid": "a", "kind": "pt"}\n'.encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        QF.read_questions(latin)
    big = _write(
        tmp_path / "big.jsonl",
        [{"question": "q", "uid": "a", "kind": "t", "source": "x" * 2_000_000}],
    )
    with pytest.raises(UserError) as err:
        QF.read_questions(big)
    assert len(str(err.value)) < 400
    no_uid = _write(tmp_path / "n.jsonl", [{"question": "q", "kind": "t"}])
    with pytest.raises(UserError, match="'title'"):
        QF.read_questions(no_uid)


def test_a_question_file_given_as_a_pipe_is_read(tmp_path):
    """An outside review: ``--questions <(cat q.jsonl)`` said "/dev/fd/63: no such file"."""
    import os
    import threading

    fifo = tmp_path / "q.fifo"
    os.mkfifo(fifo)
    line = json.dumps({"question": "mog kitens", "uid": "a", "kind": "typo"}) + "\n"
    writer = threading.Thread(target=lambda: fifo.write_text(line), daemon=True)
    writer.start()
    got = QF.read_questions(fifo)
    writer.join(timeout=10)
    assert [q.text for q in got] == ["mog kitens"]


def test_a_damaged_catalogue_row_is_one_line_not_a_traceback(tmp_path):
    """An outside review: a hand-edited catalogue.jsonl row whose title is a number crashed eval
    (AttributeError in normalise_title)."""
    catalogue = tmp_path / "catalogue.jsonl"
    catalogue.write_text(
        json.dumps({"uid": "a", "title": 7, "content": "x", "split": "train"}) + "\n"
    )
    questions = QF.read_questions(
        _write(tmp_path / "q.jsonl", [{"question": "q", "uid": "a", "kind": "t"}])
    )
    with pytest.raises(UserError, match=r"catalogue\.jsonl line 1 is cut or corrupt"):
        QP.read_products(catalogue, questions)


def test_a_question_of_kind_absent_that_names_a_product_is_refused(tmp_path):
    """An outside audit: ``{"title": "Krabat", "kind": "absent"}`` (no ``absent`` key) was
    scored as a question about Krabat in the "kind absent" row, beside the real absent ones:
    that row mixed a citation with abstentions, unsaid. The line is refused, naming the fix."""
    path = tmp_path / "q.jsonl"
    path.write_text(
        '{"question": "do you sell kayaks?", "uid": "absent", "kind": "absent"}\n'
        '{"question": "Krabat", "title": "Krabat", "kind": "Absent"}\n'
    )
    with pytest.raises(UserError, match=r"line 2: 'kind' is 'absent' but the line names a product"):
        QF.read_questions(path)
    path.write_text('{"question": "Krabat", "title": "Krabat", "kind": "absent", "absent": true}\n')
    (q,) = QF.read_questions(path)
    assert q.uid is None and q.removed
