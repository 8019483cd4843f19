"""Retrieval over titles and descriptions: recall per question kind, typo repair, the train mask."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml

from amazon_sft.answering.index import FORMAT, CatalogueIndex
from amazon_sft.answering.index_build import build_index
from amazon_sft.evaluation.question_products import catalogue_records
from amazon_sft.evaluation.questions import KINDS, Question, make_questions, recall

FIXTURES = Path(__file__).parent / "fixtures"
REAL = Path(__file__).resolve().parents[2] / "shared" / "data"


def _records(prepared: Path) -> list[dict]:
    return [orjson.loads(x) for x in (prepared / "catalogue.jsonl").read_bytes().splitlines()]


@pytest.fixture(scope="module")
def index(prepared) -> CatalogueIndex:
    build_index(prepared)
    return CatalogueIndex(prepared)


def test_question_set_covers_every_kind_and_points_at_one_product(prepared):
    questions = make_questions(_records(prepared), per_kind=20, seed=0)
    assert len(questions) >= 100
    assert {q.kind for q in questions} == set(KINDS)
    assert questions == make_questions(_records(prepared), per_kind=20, seed=0)  # stable


@pytest.mark.parametrize("seed", [0, 1])
def test_recall_on_free_form_questions(prepared, index, seed):
    """Goal of issue 12: recall@1 >= 0.95 overall and >= 0.7 on descriptive questions (the
    title-only index scored 0.81 and 0.00 on these; seed 1 was not used to tune the weights)."""
    result = recall(index, make_questions(_records(prepared), per_kind=20, seed=seed))
    print(result)
    assert result["all"]["recall@1"] >= 0.95
    assert result["descriptive"]["recall@1"] >= 0.7


def test_a_typo_is_repaired_to_the_nearest_indexed_word(index):
    title = next(r["title"] for r in _records(index.catalogue.parent) if "Headphones" in r["title"])
    assert "headphones" in index.words(title.replace("Headphones", "Haedphones"))
    assert index.words("zzqxjw") == ["zzqxjw"]  # nothing near: left as it is, matches nothing


def test_train_only_never_returns_held_out_products(prepared, index):
    records = _records(prepared)
    held = next(r for r in records if r["split"] == "heldout")
    top = index.top(held["title"], 5, train_only=True)
    assert top and all(records[i]["split"] == "train" for i, _ in top)
    # asked for more than match (a mutation audit): the held-out rows, kept as candidates at
    # score 0, must not fill the list
    every = index.top(held["title"], len(index), train_only=True)
    assert all(records[i]["split"] == "train" and score > 0 for i, score in every)
    assert index.top(held["title"], 1)[0][0] == records.index(held)


def test_an_old_title_only_index_is_rebuilt(prepared, index):
    stats = prepared / "index" / "stats.json"
    old = orjson.loads(stats.read_bytes())
    stats.write_bytes(orjson.dumps({**old, "format": 1}))
    assert len(CatalogueIndex(prepared)) == len(index)
    assert orjson.loads(stats.read_bytes())["format"] == FORMAT


@pytest.mark.realdata
def test_recall_on_hand_written_questions_about_real_rows(tmp_path, tiny_cfg):
    rows = REAL / "amazontitles_real_head_sample.jsonl"
    if not rows.is_file():
        pytest.skip(f"{rows} not present")
    from amazon_sft.prepare import prepare

    prepare(rows, tmp_path / "data", tiny_cfg, progress=False)
    questions = [
        Question(q["kind"], q["question"], "", q["title"])
        for q in yaml.safe_load((FIXTURES / "real_questions.yaml").read_text())
    ]
    result = recall(CatalogueIndex(tmp_path / "data"), questions)
    print(result)
    assert result["all"]["recall@1"] >= 0.95
    assert result["descriptive"]["recall@1"] >= 0.7


def test_the_vectorised_build_gives_bm25s_own_matrix():
    import random

    import bm25s
    import numpy as np

    from amazon_sft.answering.bm25 import FastBM25
    from amazon_sft.answering.corpus_tokens import tokenize_flat
    from amazon_sft.answering.index import TOKEN_PATTERN, _stopwords, _tokenize
    from amazon_sft.data.synthetic import _product

    rng = random.Random(5)
    texts = [_product(rng, i)[1] for i in range(2500)]
    stock, fast, one_chunk = bm25s.BM25(), FastBM25(), FastBM25()
    fast.CHUNK_DOCS = 700  # four chunks, the last one short
    stock.index(_tokenize(texts), show_progress=False)  # each gets its own tokenized corpus:
    fast.index(_tokenize(texts), show_progress=False)  # index() adds "" to the vocabulary
    one_chunk.index(_tokenize(texts), show_progress=False)
    for key in ("data", "indices", "indptr"):
        assert stock.scores[key].dtype == fast.scores[key].dtype
        np.testing.assert_allclose(stock.scores[key], fast.scores[key], rtol=1e-6)
        assert np.array_equal(fast.scores[key], one_chunk.scores[key])  # chunks: bit for bit
    assert stock.vocab_dict == fast.vocab_dict
    flat = FastBM25()  # the build's path: flat token ids from corpus_tokens, bm25s's ids
    flat.CHUNK_DOCS = 900
    flat.index_flat(*tokenize_flat(texts, TOKEN_PATTERN, _stopwords()))
    assert flat.vocab_dict == stock.vocab_dict
    for key in ("data", "indices", "indptr"):
        assert np.array_equal(fast.scores[key], flat.scores[key])
    ids = stock.get_tokens_ids(["bear", "soft", "oslo", "cotton"])
    np.testing.assert_allclose(
        stock.get_scores_from_ids(ids), fast.get_scores_from_ids(ids), rtol=1e-6
    )


def test_batched_queries_give_the_one_at_a_time_rows_and_scores(prepared, index):
    """top_many (each question over its words' postings only) returns what top (dense scores
    over the whole catalogue) does, bit for bit, ties included; the scores are today's."""
    import numpy as np

    records = _records(prepared)
    questions = [f"Tell me about {r['title']}" for r in records[::7]]
    questions += [r["content"][:60] for r in records[3::50]]  # descriptive: many common words
    questions += ["Haedphones Kestrel", "zzqxjw", "", "qual é a descrição de Quiet River"]
    for k, train_only in ((1, False), (5, True), (11, False)):
        batched = index.top_many(questions, k, train_only=train_only)
        assert batched == [index.top(q, k, train_only=train_only) for q in questions]
        for q, got in zip(questions, batched):
            dense = index.scores(index.words(q))
            if train_only:
                dense = np.where(index.train, dense, 0.0)
            want = sorted(dense[dense > 0].tolist(), reverse=True)[:k]
            assert [s for _, s in got] == want
            assert all(dense[i] == s for i, s in got)
    ties = sum(len(t) > 1 and t[0][1] == t[1][1] for t in index.top_many(questions, 5))
    assert ties > 0  # the generated catalogue has tied products: their order is tested too


def test_flat_tokens_are_bm25s_tokens_across_chunks_and_with_the_break_word(monkeypatch):
    """corpus_tokens splits a chunk in one call with a break word between texts: a text that
    has that word, empty texts, stop-word-only texts and chunk edges give bm25s's ids."""
    from amazon_sft.answering import corpus_tokens
    from amazon_sft.answering.index import TOKEN_PATTERN, _stopwords, _tokenize

    monkeypatch.setattr(corpus_tokens, "CHUNK_TEXTS", 3)
    texts = ["Red Kettle", "", "the of", "qxdocbreakxq kettle", "ÉCOLE Straße ΟΔΟΣ", "red", "x"]
    ids, lens, vocab = corpus_tokens.tokenize_flat(texts, TOKEN_PATTERN, _stopwords())
    want = _tokenize(texts)
    assert vocab == want.vocab
    assert lens.tolist() == [len(one) for one in want.ids]
    assert ids.tolist() == [i for one in want.ids for i in one]


def test_any_worker_count_builds_the_same_index_files(prepared, tmp_path):
    """The catalogue read and tokenized in 1 or 3 spawned processes (ranges of lines, their
    vocabularies merged in order) gives the same files, byte for byte; a last line without its
    newline is a record; a corrupt line is named by its line number in the whole file."""
    import shutil

    from amazon_sft.answering.catalogue_tokens import line_starts
    from amazon_sft.errors import UserError

    digests = {}
    for workers in (1, 3):
        copy = tmp_path / f"w{workers}"
        copy.mkdir()
        shutil.copy(prepared / "catalogue.jsonl", copy / "catalogue.jsonl")
        build_index(copy, workers=workers)
        files = sorted(p for p in (copy / "index").rglob("*") if p.is_file())
        digests[workers] = {p.relative_to(copy).as_posix(): p.read_bytes() for p in files}
        digests[workers].pop("index/stats.json")  # it holds the build's seconds
    assert digests[1] == digests[3]
    assert len(digests[1]) > 8

    lines = (prepared / "catalogue.jsonl").read_bytes().splitlines(keepends=True)
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "catalogue.jsonl").write_bytes(b"".join(lines).rstrip(b"\n"))
    assert len(line_starts(cut / "catalogue.jsonl")) == len(lines)
    assert build_index(cut, workers=2)["products"] == len(lines)
    bad = len(lines) - 3
    (cut / "catalogue.jsonl").write_bytes(b"".join([*lines[:bad], b'{"title": 1\n', *lines[bad:]]))
    with pytest.raises(UserError, match=rf"line {bad + 1} is cut or corrupt"):
        build_index(cut, workers=2)
    # one verdict for a line, whoever reads it (data/catalogue_row.py): an integer uid was
    # indexed (cited as "7") while eval refused the same catalogue as corrupt
    number = b'{"uid": 7, "title": "Seven", "content": "Seven things."}\n'
    (cut / "catalogue.jsonl").write_bytes(b"".join([*lines[:bad], number, *lines[bad:]]))
    assert build_index(cut, workers=2)["products"] == len(lines) + 1
    assert [r["uid"] for r in catalogue_records(cut / "catalogue.jsonl")][bad] == "7"
    refused = {  # by both (a review: eval took an empty uid the index refused)
        b'{"uid": [7], "title": "Seven", "content": "Seven things."}\n': "its uid is not text",
        b'{"uid": "", "title": "Seven", "content": "Seven things."}\n': "cannot be cited",
    }
    for line, why in refused.items():
        (cut / "catalogue.jsonl").write_bytes(b"".join([*lines[:bad], line, *lines[bad:]]))
        for read in (lambda f: build_index(f.parent, workers=2), lambda f: [*catalogue_records(f)]):
            with pytest.raises(UserError, match=rf"line {bad + 1} is cut or corrupt \(.*{why}"):
                read(cut / "catalogue.jsonl")


def _catalogue_index(folder: Path, titles: list[str], contents: list[str] | None = None):
    from amazon_sft.answering.index import CatalogueIndex

    folder.mkdir()
    contents = contents or [f"A book, number {i} of the list." for i in range(len(titles))]
    rows = [
        {"uid": f"U{i}", "title": t, "content": c, "split": "train"}
        for i, (t, c) in enumerate(zip(titles, contents))
    ]
    rows += [  # other products, so that words have the weights of a catalogue
        {
            "uid": f"X{i}",
            "title": f"Garden Tools Volume {i}",
            "content": "Rakes and hoes.",
            "split": "train",
        }
        for i in range(20)
    ]
    (folder / "catalogue.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return CatalogueIndex(folder)


def test_a_title_that_repeats_a_word_asked_exactly_comes_first(tmp_path):
    """The title's word count counted a repeated word twice and the question's words once, so an
    exact title that repeats a word could never have all its words asked: "Heart to Heart"
    lost to "The Heart of the Family" (an outside review; 128 of the 991 real titles repeat a
    word, and 3 of the 4 real titles not found first when asked as typed were these)."""
    index = _catalogue_index(
        tmp_path / "c",
        ["The Heart of the Family", "Heart to Heart"],
        ["A novel of the heart: heart and home, a family's heart.", "Poems of love."],
    )
    assert index.search("Heart to Heart", k=2)[0].title == "Heart to Heart"


def test_decomposed_accents_find_the_composed_title(tmp_path):
    """ "Paramédico" typed with a combining accent (NFD, as macOS file names and some keyboards
    give it) was split at the mark and found another product (an outside review)."""
    import unicodedata

    index = _catalogue_index(tmp_path / "c", ["Paramédico", "Growing Up with Dick and Jane"])
    asked = unicodedata.normalize("NFD", "Paramédico")
    assert asked != "Paramédico" and index.search(asked, k=1)[0].title == "Paramédico"


def test_a_question_of_hundreds_of_words_looks_up_a_bounded_number(prepared, index):
    """Each distinct word of a question cost a pass over its postings: a 2,000-character question
    of 400 distinct words took 1.45 s at 1.3M products (an outside review). The words looked up
    are capped (the 1,792 questions of eval/questions have at most 33 distinct words)."""
    from amazon_sft.answering.repair import MAX_LOOKUP_WORDS

    vocab = [w for w in index.titles.vocab_dict if w.isalpha()][:300]
    assert len(vocab) > MAX_LOOKUP_WORDS
    assert len(index.words(" ".join(vocab))) == MAX_LOOKUP_WORDS
    short = " ".join(vocab[:5] + vocab[:5])  # repeats and all, as before, under the cap
    assert index.words(short) == vocab[:5] + vocab[:5]


def test_recall_counts_the_asked_product_not_another_of_its_title():
    """An outside review: a question about product A counted as found when retrieval returned
    B, another product of the same title; the title stands in only where a question has no
    uid (the hand-written real questions)."""
    from types import SimpleNamespace

    class TwinFirst:
        def search(self, text: str, k: int) -> list:
            return [SimpleNamespace(uid="B", title="Quiet Whisk Set of 6")][:k]

    asked = Question("descriptive", "the one with silicone and walnut", "A", "Quiet Whisk Set of 6")
    assert recall(TwinFirst(), [asked])["all"]["recall@1"] == 0.0
    by_title = Question(
        "descriptive", "the one with silicone and walnut", "", "Quiet Whisk Set of 6"
    )
    assert recall(TwinFirst(), [by_title])["all"]["recall@1"] == 1.0


def test_an_index_file_cut_in_place_while_serving_is_no_crash(prepared, index, tmp_path):
    """A hostile review: ``offsets.npy`` was memory-mapped, so a file cut in place while
    ``serve`` ran (``cp`` over it restores a backup that way) killed the server at its next
    question with SIGBUS, silently. The offsets (8 bytes a product) are read whole."""
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "prepared"
    shutil.copytree(prepared, copy)
    code = (
        "import sys\n"
        "from amazon_sft.answering.index import CatalogueIndex\n"
        "index = CatalogueIndex(sys.argv[1])\n"
        "open(sys.argv[1] + '/index/offsets.npy', 'w').close()\n"
        "print(index.record(len(index) - 1)['uid'])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(copy)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-1000:])
    assert proc.stdout.strip() == str(_records(prepared)[-1]["uid"])
