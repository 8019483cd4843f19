"""What a question means as index words (answering/query_words.py) and how unknown words are
repaired (answering/repair.py), checked through ``CatalogueIndex.search`` on small catalogues."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest

from amazon_sft.answering import query_words, repair
from amazon_sft.answering.index import CatalogueIndex
from amazon_sft.answering.query_words import english_query, english_word, is_portuguese


def test_doctests():
    for module in (query_words, repair):
        assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize(
    "question",
    [
        "Quero o livro Freedom at Midnight sobre a independência da Índia",
        "Tem o disco ao vivo no Cairo do Marco?",
        "Pelúcia de elefante azul-marinho",
        "Biografia do Fernando Torres, o El Niño",
        "Asterix e os Godos",  # a blind question: "e" (and) is Portuguese between two words
    ],
)
def test_portuguese_questions_are_detected(question):
    assert is_portuguese(question)


@pytest.mark.parametrize(
    "question",
    [
        "Tell me about Mog's Kittens",
        "the story of a man and his dog in the Sierra Madre",
        "Who illustrated The Very Bad Bunny?",
        "Casa de Campo",  # a Portuguese-looking title alone is not a Portuguese question
        "Pizza Pilgrims: Recipes from the Backstreets of Italy",
        "an e-book os guide",  # "e-book" is English ("os": the operating system)
        "vitamin e oil for dry skin",
    ],
)
def test_english_questions_are_not_taken_for_portuguese(question):
    assert not is_portuguese(question)


def test_english_scaffolding_is_dropped_and_the_product_words_kept():
    assert english_query("Do you have the Elements of Style?") == "the Elements of Style?"
    assert english_query("Who wrote Ice Station Zebra?") == "Ice Station Zebra?"
    assert english_query("tell me about Thailand") == "Thailand"


def test_who_did_the_other_work_is_scaffolding_but_a_title_that_opens_with_who_stays():
    """Blind questions: "who illustrated the gruffalo?" (absent) found "The Illustrated Man"
    5.6 times ahead by the verb, and ``--quote-when-sure`` answered with it."""
    assert english_query("who illustrated the gruffalo?") == "the gruffalo?"
    assert (
        english_query("Who narrates the audiobook of Wolf Hall?") == "the audiobook of Wolf Hall?"
    )
    assert (
        english_query("who moved my cheese spencer johnson")
        == "who moved my cheese spencer johnson"
    )


def test_portuguese_words_go_to_english_and_names_stay():
    assert english_query("Quero o romance da Hilary Mantel sobre a corte") == (
        "novel Hilary Mantel corte"
    )
    assert english_word("trilogia") == "trilogy" and english_word("Mantel") == "Mantel"
    assert english_word("revolução") == "revolution"  # suffix rule, not in the glossary
    # "that one" points at the product: scaffolding, as "este" and "esse" are
    assert english_query("aquele livro de receitas da França") == "book recipes france"


def _index(tmp_path: Path, rows: list[tuple[str, str]]) -> CatalogueIndex:
    with open(tmp_path / "catalogue.jsonl", "w", encoding="utf-8") as fh:
        for i, (title, content) in enumerate(rows):
            rec = {"uid": f"U{i}", "title": title, "content": content, "split": "train"}
            fh.write(json.dumps(rec) + "\n")
    return CatalogueIndex(tmp_path)


FILLER = [(f"Garden Notes {i}", f"Notes on growing plant number {i}.") for i in range(20)]


def test_a_typo_is_repaired_to_the_word_that_agrees_with_the_rest(tmp_path):
    """'quen' is one edit from 'quean' and from 'queen': the title that also has 'seven' and
    'realms' says which (the nearest alone would be whichever the vocabulary lists first)."""
    index = _index(
        tmp_path,
        [
            ("The Quean", "An old word for a bold woman."),
            ("Exiled Queen (The Seven Realms Series)", "Han and Raisa in the seven realms."),
            *FILLER,
        ],
    )
    assert index.words("exiled quen seven realms")[1] == "queen"
    assert index.search("quen seven realms", 1)[0].title.startswith("Exiled Queen")


def test_three_letter_typos_are_repaired_when_the_rest_agrees(tmp_path):
    index = _index(
        tmp_path,
        [("Big Cat Stories", "Lions and tigers."), ("The Red Road", "A road trip."), *FILLER],
    )
    assert index.words("the rad road") == ["red", "road"]
    # nothing else in the question to agree with: the nearest repair is taken
    assert index.words("rrd") == ["red"]


def test_a_three_letter_repair_that_agrees_with_nothing_is_refused(tmp_path):
    index = _index(
        tmp_path,
        [("Big Cat Stories", "Lions and tigers."), ("The Red Road", "A road trip."), *FILLER],
    )
    # "gig" could become "big", but no product has "big" with "garden": left as typed
    assert index.words("gig garden") == ["gig", "garden"]


def test_a_long_word_keeps_its_only_repair(tmp_path):
    """'krabbat book': the only candidate agrees with nothing else, yet it is the word that finds
    the product (refusing it lost the product in an earlier attempt)."""
    index = _index(
        tmp_path,
        [("Krabat", "A boy apprenticed to a sorcerer in a mill."), *FILLER],
    )
    assert index.search("krabbat book", 1)[0].title == "Krabat"


def test_a_portuguese_question_finds_the_english_title(tmp_path):
    index = _index(
        tmp_path,
        [
            ("A Feast for Crows (A Song of Ice and Fire)", "The fourth book of the saga."),
            ("Crows of the Harbor", "A fishing village."),
            ("The Feast Day", "A village celebration."),
            *FILLER,
        ],
    )
    top = index.search("O Festim dos Corvos, o quarto livro de Gelo e Fogo", 1)
    assert top[0].title.startswith("A Feast for Crows")


def test_every_question_template_leaves_only_the_title_words(tmp_path):
    """The phrasings that training and eval ask (templates/questions.yaml, question_kinds)
    must leave no scaffolding word: an unknown one is "repaired" into some catalogue word (a
    wrong match, and at 1.3M products ~0.1 s of vocabulary search each; "descrição" went to
    "descrition" by the suffix rules before it reached the stop words)."""
    import yaml

    from amazon_sft.data import question_kinds

    index = _index(tmp_path, [("Ice Station Zebra", "A thriller at an arctic station."), *FILLER])
    templates = yaml.safe_load(
        (Path(query_words.__file__).parents[1] / "templates" / "questions.yaml").read_text()
    )["questions"]
    asked = [t.replace("{title}", "{t}") for group in templates.values() for t in group]
    asked += [*question_kinds._PORTUGUESE, *question_kinds._FRAGMENT, *question_kinds._TYPO]
    for template in asked:
        question = template.replace("{t}", "Ice Station Zebra")
        assert index.words(question) == ["ice", "station", "zebra"], question


def test_a_portuguese_question_keeps_the_english_titles_own_words(tmp_path):
    """The suffix rules turn Portuguese endings into English ones; an English title's words that
    happen to end that way ("Mosaica", "Historia") are kept as the catalogue has them, not
    changed and then "repaired" into another product's word."""
    rows = [("Britannica Mosaica Historia", "A history of tiles."), ("Mosaic Tiles", "Tiles.")]
    index = _index(tmp_path, rows + FILLER)
    words = index.words("Vocês têm a Britannica Mosaica Historia?")
    assert words == ["britannica", "mosaica", "historia"]  # a capital the catalogue has: a name
    assert index.search("Vocês têm a Britannica Mosaica Historia?", 1)[0].uid == "U0"


def test_a_portuguese_question_keeps_a_name_the_catalogue_has(tmp_path):
    """ "tem alguma biografia do Paulo Coelho?" (questions written blind to the retriever) had
    "Mog and Bunny" first: the glossary put the surname "Coelho" (rabbit) in English as "bunny".
    A word written with a capital after the question's first word, that the catalogue has as
    it is, is a name: kept. The first word and lower-case words still go through the glossary."""
    rows = [
        ("Paulo Coelho: Confessions of a Pilgrim", "Interviews with the author of The Alchemist."),
        ("Mog and Bunny", "Mog the cat loves her toy bunny."),
    ]
    index = _index(tmp_path, rows + FILLER)
    assert index.search("tem alguma biografia do Paulo Coelho?", 1)[0].uid == "U0"
    assert index.words("tem pelúcia de coelho?") == ["plush", "bunny"]


def test_the_pt_br_docs_board_book_example_reads_as_its_english_one():
    """docs/pt-BR/grounded.md's "by what it is" example, "o livro cartonado da Judith Kerr sobre
    uma gata e seus filhotes", was searched as "book cartonado Judith Kerr cat puppies" (a
    review): "cartonado" was not in the glossary, and "filhotes" is the young of any animal. The
    docs' example now says "gatinhos" (kittens, as the English one), and "cartonado" is "board"."""
    words = english_query("o livro cartonado da Judith Kerr sobre uma gata e seus gatinhos").split()
    assert {"board", "book", "cat", "kittens"} <= {w.lower() for w in words}
    doc = (Path(__file__).resolve().parents[1] / "docs" / "pt-BR" / "grounded.md").read_text()
    assert "sobre uma gata e seus\ngatinhos" in doc or "sobre uma gata e seus gatinhos" in doc


@pytest.mark.parametrize(
    "question, portuguese",
    [
        ("Me fala sobre The Hunger Games", True),
        ("Estou procurando The Great Gatsby", True),
        ("Tô procurando The Very Hungry Caterpillar", True),
        ("Vende Harry Potter and the Chamber of Secrets?", True),
        ("Oi, tem The Hobbit?", True),
        ("Vcs têm The Hobbit?", True),
        ("Cadê The Hobbit?", True),
        ("Pode me falar sobre Where the Wild Things Are?", True),
        ("Vocês vendem The Tale of the Pie and the Patty-Pan?", True),
        ("Gabriel García Márquez books", False),
        ("Chronicle of a Death Foretold García Márquez", False),
        ("Do you sell Rebellion (Matthew Hawkwood, No. 5)?", False),
        ("what do poeple do all day richard scary", False),
        ("Do you sell O Alquimista?", False),
        ("Me Before You paperback", False),
    ],
)
def test_the_language_the_gate_declines_in_reads_a_question_strictly(question, portuguese):
    """Two reviews of the gate's reply language (``is_portuguese(..., strict=True)``): a
    Portuguese request naming an English title, colloquial openings ("Me fala", "Tô
    procurando", "Vcs têm"), and English questions with signs Portuguese shares with English
    ("do", "no") or with Spanish (á í ó ú in "García Márquez")."""
    assert is_portuguese(question, strict=True) is portuguese
