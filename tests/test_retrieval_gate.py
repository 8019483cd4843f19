"""The retrieval gate in answering (``--abstain-below``, ``--quote-when-sure``; answering/doubt.py):
abstaining without generating when retrieval is not sure, and citing the first record when it is.
Each rule's test starts from the question that got through before it."""

from __future__ import annotations

import orjson

from amazon_sft.prompts import ABSTENTIONS


def _jsonl(path):
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


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
    assert not any(s.cited for s in result.sources)

    # the language: the abstention whose tokens (then EOS) are likelier, by the model's own loss
    ids = hf_encoder(tok)([result.prompt])[0]  # the prompt's text holds the format's BOS
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

    from amazon_sft.answering.ask import Answerer
    from amazon_sft.answering.index import CatalogueIndex
    from amazon_sft.answering.record_prompts import quote_record
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
    assert quote_record(tok, cfg.data, first, fmt) == want
    body = want.rsplit("\n", 1)[0]
    replaced = {
        "declines": ABSTENTIONS["en"],
        "copies another record": taught(second),
        "cites nothing": "The catalogue lists it.",
    }
    for why, generated in replaced.items():
        result = answer(generated)
        assert result.quoted and result.answer == want, why
        assert result.cited == [first.uid] and result.sources[0].cited, why
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


def _assert_sure_far_ahead(answerer, found, question: str, uid: str) -> None:
    """With the first record past ``doubt.NAMED_LEAD`` times the second, ``question`` is sure:
    the record is the asked one and its text merely leaves the question's word out."""
    found[0].score = 4.5
    result = answerer(question, max_new_tokens=4)
    assert not result.doubtful and result.cited == [uid], question


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


def test_a_later_book_of_a_series_is_not_sure_for_the_first(grounded_prepared, tuned_run):
    """Blind questions asked for the first book of a series whose later one is here: "nigel
    slater kitchen diaries, the first one not II" had "The Kitchen Diaries II" 7.8 times ahead
    ("II" is no number ``names_other_numbers`` reads), and ``--quote-when-sure`` answered with
    it. A question asking for the first ("the first one", "book one", "part 1") against a title
    numbering a later one and no first: the gate abstains without generating. The later book
    asked, or the first when the title numbers it ("Part 1 ... Book 3"), is still sure."""
    from amazon_sft.answering.index import Source

    found = [
        Source("k-2", "The Kitchen Diaries II: A Year of Simple Suppers", "Recipes.", 7.8),
        Source("k-poem", "Poems", "Poems about the year.", 1.0),
    ]
    answerer, generated = _gate_with_found(tuned_run, grounded_prepared, found)
    asked = ("nigel slater kitchen diaries II", "the kitchen diaries, a year of simple suppers")
    absent = "nigel slater kitchen diaries, the first one not II"
    _assert_gate(answerer, generated, absent, asked, "k-2")
    found[0] = Source("s-1", "A Storm of Swords: Part 1 (A Song of Ice and Fire, Book 3)", "", 9)
    result = answerer("storm of swords part 1", max_new_tokens=4)
    assert not result.doubtful and result.cited == ["s-1"]


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
    _assert_sure_far_ahead(answerer, found, "Paddington Helps Out", "p-races")


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
    another title: the gate abstains without generating (however far ahead: the next test). A
    long question (a description, a need) may name no title word."""
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


def test_a_first_record_whose_description_names_the_asked_sibling_is_not_sure(
    grounded_prepared, tuned_run
):
    """Blind questions asked for another book that the first record's description names: "Raising
    Boys by Steve Biddulph" had "Steve Biddulph's Raising Girls" 32 times ahead, its praise
    quoting "Raising Boys"; "Flashman and the Tiger" had "Flashman on the March" ("Last seen
    in<i>Flashman and the Tiger</i>"). Words the question shares with the title, then one the
    title lacks, found together in the description; or the title's opening words alone ("Kaffir
    Boy" against "Kaffir Boy in America", "the sequel to the author's Kaffir Boy"); or three
    words in a row of a question the title shares none with ("A Short Walk in the Hindu Kush"
    against "Round Ireland in Low Gear", 9.1 times ahead): the description mentions the asked
    product, so this record is not it, however far ahead. The record's own title, asked with its
    author (which its description names after the title), or a long descriptive question quoting
    the description, stays sure."""
    from amazon_sft.answering.index import Source

    girls = (
        "The follow-up to the bestselling Raising Boys. Steve Biddulph, author of Raising Boys, "
        "on raising girls in a hard world: Raising Boys' readers asked for it."
    )
    cases = [  # (the first record, the absent product asked, questions the record answers)
        (
            Source("r-girls", "Steve Biddulph's Raising Girls", girls, 32.0),
            "Raising Boys by Steve Biddulph",
            (
                "raising girls steve biddulph",
                "Raising Girls by Steve Biddulph",
                "how old are the girls in raising girls?",
                "the follow-up to the bestselling raising boys book, about girls in a hard world",
            ),
        ),
        (
            Source(
                "f-march",
                "Flashman on the March",
                "Last seen in<i>Flashman and the Tiger</i>, Sir Harry Flashman, Fraser's rogue.",
                9.0,
            ),
            "Flashman and the Tiger",
            ("flashman on the march", "Flashman on the March, Fraser"),
        ),
        (
            Source(
                "k-america",
                "Kaffir Boy in America",
                "The absorbing sequel to the author's Kaffir Boy: Mathabane's life in America.",
                28.9,
            ),
            "kaffir boy mark mathabane",
            ("kaffir boy in america mark mathabane", "Kaffir Boy in America: An Encounter"),
        ),
        (
            Source(
                "n-ireland",
                "Round Ireland in Low Gear",
                "The author of A Short Walk in the Hindu Kush and his wife cycle round Ireland.",
                9.1,
            ),
            "a short walk in the hindu kush eric newby",
            ("round ireland in low gear", "eric newby cycling round ireland with his wife wanda"),
        ),
    ]
    found = [cases[0][0], Source("r-poems", "Poems", "Poems about the year.", 1.0)]
    answerer, generated = _gate_with_found(tuned_run, grounded_prepared, found)
    for record, absent, asked in cases:
        found[0] = record
        generated.clear()
        _assert_gate(answerer, generated, absent, asked, record.uid)


def test_a_first_record_whose_main_title_a_short_question_does_not_name_is_not_sure(
    grounded_prepared, tuned_run
):
    """Blind questions named famous books the catalogue lacks, and retrieval found a record by a
    series, an author or a word of a subtitle, far enough ahead to be sure: "ross poldark winston
    graham" had "The Loving Cup (The Poldark novels)" first, "harry poter and the philosophers
    stone" the Dark Is Rising box set ("... Over Sea, Under Stone"), "the very hungry caterpillar
    board book" "A Greedy Man in a Hungry World", and ``--quote-when-sure`` answered with them.
    A short question that names a title (no "about", "my", "I want": those describe a need)
    whose words the record's main title (before a subtitle or a series) has at most a quarter
    of, and whose own words the whole title has at most a third of, asks for another book,
    however far ahead the record is. Asked by its own title, in part, by its subtitle, or
    described, the record stays sure."""
    from amazon_sft.answering.index import Source

    dark = (
        "The Dark Is Rising Sequence: Silver on the Tree; The Grey King; Greenwitch; "
        "The Dark Is Rising; and Over Sea, Under Stone"
    )
    cases = [  # (the first record, the absent product asked, questions the record answers)
        (
            Source("p-cup", "The Loving Cup (The Poldark novels)", "Ross Poldark, 1813.", 9.0),
            "ross poldark winston graham",
            ("the loving cup winston graham", "poldark the loving cup", "The Loving Cup"),
        ),
        (
            Source("d-dark", dark, "Susan Cooper's five novels of the Old Ones.", 9.0),
            "harry poter and the philosophers stone",
            ("the dark is rising sequence", "over sea under stone susan cooper"),
        ),
        (
            Source("g-man", "A Greedy Man in a Hungry World", "Why we are hungry.", 9.0),
            "the very hungry caterpillar board book",
            ("a greedy man in a hungry world", "greedy man hungry world book"),
        ),
        (
            Source("s-man", "In the Shadow of Man", "Jane Goodall's years with wild chimps.", 9.0),
            "master and commander by patrick o'brian",
            ("jane goodall's book about living with wild chimpanzees", "in the shadow of man"),
        ),
    ]
    for record, absent, quotes in cases:
        found = [record, Source("x-poems", "Poems", "Poems about the sea.", 1.0)]
        answerer, generated = _gate_with_found(tuned_run, grounded_prepared, found)
        _assert_gate(answerer, generated, absent, quotes, record.uid)


def test_a_question_naming_the_first_title_and_not_the_second_is_sure_under_the_ratio(
    grounded_prepared, tuned_run
):
    """Series siblings score alike: "mog in the drak judith kerr" had *Mog in the Dark* only
    1.19 times ahead of *Mog's Kittens*, "france beautiful cookbook" *France: The Beautiful
    Cookbook* 1.59 times ahead of *California, The Beautiful Cookbook* (real dev questions),
    and the gate abstained on the product the shopper named. A question with every word of
    the first record's main title (typos count), which the second's title lacks one of, is
    sure whatever the ratio (answering/named_title.py). A question naming the sibling, or a
    third one of the series, still has the ratio against it; so does a long question that has
    a one-word main title's word by chance."""
    from amazon_sft.answering.index import Source

    found = [
        Source("m-dark", "Mog in the Dark", "Mog the cat dreams in the dark.", 1.19),
        Source("m-kits", "Mog's Kittens", "Mog has kittens.", 1.0),
    ]
    answerer, generated = _gate_with_found(tuned_run, grounded_prepared, found)
    asked = ("mog in the drak judith kerr", "Mog in the Dark", "who wrote mog in the dark?")
    _assert_gate(answerer, generated, "mog the forgetful cat", asked, "m-dark")
    for question in ("mog's kittens board book", "mog and the dark kittens"):
        assert answerer(question, max_new_tokens=4).doubtful, question  # Mog's Kittens' words

    found[:] = [
        Source("c-cof", "Coffee: Delectable Seasons", "Coffee drinks for every season.", 1.3),
        Source("f-fr", "French Cooking", "Classic recipes.", 1.0),
    ]
    assert not answerer("coffee delectable seasons", max_new_tokens=4).doubtful
    long = "stainless steel french press coffee maker 1 litre"
    assert answerer(long, max_new_tokens=4).doubtful


def test_a_decade_or_a_stop_word_before_a_number_numbers_no_series(grounded_prepared, tuned_run):
    """ "Gutman's Newsday reports from the Serb-run death camps in the 90s Balkan war" had its
    book, *A Witness to Genocide: The 1993 Pulitzer Prize-Winning Dispatches*, 14 times ahead,
    and the gate abstained: "the" was read as numbered 90 in the question and 1993 in the title,
    another year of a series (blind11 dev). A stop word numbers nothing and "90s" is a decade;
    "Tolkien Calendar 2015" against 2014's is still another year."""
    from amazon_sft.answering.index import Source

    found = [
        Source(
            "w-gen",
            "A Witness to Genocide: The 1993 Pulitzer Prize-Winning Dispatches",
            "Roy Gutman's reports for Newsday from Bosnia.",
            14.0,
        ),
        Source("w-war", "To End All Wars", "A history of the Great War.", 1.0),
    ]
    answerer, _ = _gate_with_found(tuned_run, grounded_prepared, found)
    question = "Gutman's Newsday reports from the Serb-run death camps in the 90s Balkan war"
    result = answerer(question, max_new_tokens=4)
    assert not result.doubtful and result.cited == ["w-gen"]
    found[0] = Source("t-2014", "Tolkien Calendar 2014: The Hobbit", "Tolkien art.", 14.0)
    assert answerer("Tolkien Calendar 2015", max_new_tokens=4).doubtful


def test_a_roman_volume_or_a_leading_year_numbered_otherwise_is_not_sure(
    grounded_prepared, tuned_run
):
    """Blind questions (thirteenth set, dev) about products the catalogue lacks: "nigel slater
    kitchen diaries III" had *The Kitchen Diaries II* 4.0 times ahead, "2015 Collins Britain
    Essential Road Atlas" the 2014 atlas 2.6 times ahead, and the gate quoted them: a Roman
    numeral and a year before the word it numbers were not read as numbers. Both are now: the
    same volume asked by its Roman or Arabic number, or a question naming no number, is still
    sure."""
    from amazon_sft.answering.index import Source

    found = [
        Source("k-2", "The Kitchen Diaries II: A Year of Simple Suppers. Nigel Slater", "", 55.2),
        Source("k-thirst", "Thirst", "Praise for 'Kitchen Diaries'.", 13.7),
    ]
    answerer, generated = _gate_with_found(tuned_run, grounded_prepared, found)
    asked = ("nigel slater kitchen diaries II", "nigel slater kitchen diaries 2")
    _assert_gate(answerer, generated, "nigel slater kitchen diaries III", asked, "k-2")
    found[:] = [
        Source("c-14", "2014 Collins Britain Essential Road Atlas (Road Atlases)", "Maps.", 198.7),
        Source("c-map", "Collins Whisky Map of Scotland", "A map.", 75.9),
    ]
    asked = ("2014 Collins Britain Essential Road Atlas", "collins britain essential road atlas")
    generated.clear()  # the first part's sure answers
    _assert_gate(answerer, generated, "2015 Collins Britain Essential Road Atlas", asked, "c-14")


def test_a_volume_asked_by_its_arabic_number_names_a_roman_title(grounded_prepared, tuned_run):
    """ "nigel slater kitchen diaries 2" (thirteenth blind set, dev) had *The Kitchen Diaries II*
    1.95 times ahead of the second, under the ratio, and the gate abstained on the product the
    shopper named: its main title's "II" was a word the question lacked. A number names the
    same Roman numeral (answering/named_title.py); another number does not."""
    from amazon_sft.answering.index import Source

    found = [
        Source("k-2", "The Kitchen Diaries II: A Year of Simple Suppers", "Recipes.", 1.95),
        Source("k-one", "The Kitchen Diaries", "A year of recipes.", 1.0),
    ]
    answerer, generated = _gate_with_found(tuned_run, grounded_prepared, found)
    asked = ("nigel slater kitchen diaries 2", "kitchen diaries ii")
    _assert_gate(answerer, generated, "nigel slater kitchen diaries 3", asked, "k-2")


def test_the_gate_reads_two_records_whatever_k_shows(grounded_prepared, tuned_run, capsys):
    """With ``k`` = 1 (``serve --k 1``, a model trained with ``data.context_records=1``) the
    gate saw no second record, so its ratio rule never fired: a question matching two products
    alike was "sure" and the first one's description quoted as the answer (an outside review).
    The gate reads the first two records; the prompt and the sources show ``k``."""
    import json

    from amazon_sft.answering.ask import Answerer
    from amazon_sft.answering.index import CatalogueIndex
    from amazon_sft.cli import main
    from amazon_sft.evaluation.loading import load_for_eval
    from amazon_sft.prompts import build_prompt_format

    model, tok, cfg, _ = load_for_eval(str(tuned_run), ["data.grounded_fraction=0.5"], "cpu")
    fmt = build_prompt_format(tok, cfg.data)
    index = CatalogueIndex(grounded_prepared)
    title = _jsonl(grounded_prepared / "heldout.jsonl")[0]["title"]
    question = f"Tell me about {title}"
    assert len(index.search(question, 2)) == 2
    gated = Answerer(model, tok, fmt, index, cfg.data, abstain_below=1e9, quote_when_sure=True)
    for k in (1, 3):
        plan = gated.plan(question, k=k, max_new_tokens=4)
        assert plan.doubt and "times the second's" in plan.doubt and not plan.sure, (k, plan)
        assert len(plan.sources) == k
    args = ["ask", question, "--index", str(grounded_prepared), "--sources-only", "--json"]
    assert main([*args, "--k", "1", "--abstain-below", "1e9"]) == 0
    shown = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert shown["doubtful"] and len(shown["sources"]) == 1, shown


def test_sources_only_gates_the_question_as_ask_reads_it(grounded_prepared, monkeypatch, capsys):
    """``--sources-only`` said what ask's gate would do from the question as typed, soft hyphens
    and zero-width spaces inside words included, while ask's gate reads it without them
    (question_text.normalise_question): the two could disagree (an outside review)."""
    from amazon_sft.answering import ask, doubt  # ask first: it binds the real doubt_rule
    from amazon_sft.cli import main

    # imported while a stub of the gate is in place, ask.py would keep it for the whole
    # process: a later test of ask's gate then never abstained (order-dependent, under xdist)
    assert ask.doubt_rule is doubt.doubt_rule

    read = []

    def gate(sources, abstain_below, question):
        read.append(question)
        return None

    monkeypatch.setattr(doubt, "doubt_reason", gate)
    title = _jsonl(grounded_prepared / "heldout.jsonl")[0]["title"]
    typed = "Tell me about \u00ad" + "\u200b".join(title.split(" ", 1))
    assert main(["ask", typed, "--index", str(grounded_prepared), "--sources-only"]) == 0
    capsys.readouterr()
    assert read == [f"Tell me about {''.join(title.split(' ', 1))}"], read


def test_sources_only_for_a_closed_book_model_says_no_gate_applies(
    grounded_prepared, tuned_run, monkeypatch, capsys, tmp_path
):
    """``ask --model M --sources-only`` for a model trained closed-book (its answers take no
    records) said "Retrieval is not sure ...; ask abstains", which ask never does for it (a
    review): the model's own mode decides, as in ask; ``--grounded`` still shows the gate."""
    from amazon_sft.answering import doubt
    from amazon_sft.cli import main

    # the gate's rules as they fire when it is on (abstain_below > 0)
    monkeypatch.setattr(doubt, "doubt_reason", lambda s, below, q: "a reason" if below else None)
    title = _jsonl(grounded_prepared / "heldout.jsonl")[0]["title"]
    args = ["ask", title, "--model", str(tuned_run), "--index", str(grounded_prepared)]
    assert main([*args, "--sources-only"]) == 0
    assert "abstains" not in capsys.readouterr().out
    assert main([*args, "--sources-only", "--grounded"]) == 0
    assert "a reason; ask abstains" in capsys.readouterr().out
    # a review of the change: a run still training (checkpoints, no final model) or a plain
    # model folder has no mode to read; with --index, sources are still listed, gate kept
    midrun = tmp_path / "midrun"
    (midrun / "checkpoints" / "step-00000002").mkdir(parents=True)
    args = ["ask", title, "--model", str(midrun), "--index", str(grounded_prepared)]
    assert main([*args, "--sources-only"]) == 0
    assert "a reason; ask abstains" in capsys.readouterr().out


def test_a_closed_book_answer_says_its_sources_were_not_given_to_the_model(
    grounded_prepared, tuned_run, capsys
):
    """A model trained closed-book answered "Mog's Kittens is a luxury dog food..." above
    "Sources:" and the real Mog records, as if it had read them (a new user's demo): the list
    says the model was given no records; a grounded answer's list stays "Sources:"."""
    from amazon_sft.cli import main

    title = _jsonl(grounded_prepared / "heldout.jsonl")[0]["title"]
    args = ["ask", title, "--model", str(tuned_run), "--index", str(grounded_prepared)]
    assert main([*args, "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "closed-book: the model was given no records" in out and "\nSources:" not in out
    assert main([*args, "--max-new-tokens", "4", "--grounded", "--gate", "off"]) == 0
    out = capsys.readouterr().out
    assert "\nSources:" in out and "given no records" not in out


def test_a_portuguese_opener_with_a_capital_is_no_name_the_record_lacks():
    """A review of the Portuguese path: "Quero comprar The Prophet" is not read as Portuguese
    (the title's English words outnumber its Portuguese ones), so the gate read the capitalised
    opener "Quero" as a name The Prophet lacks and abstained, while "quero comprar The Prophet"
    was answered: 41 to 48 of 300 real products refused for "Quero comprar {t}", "Voces tem
    {t}?" or "Quem escreveu {t}?", 152 of 300 generated ones under the demo's gate. Portuguese
    words that open a question or a request name nothing, as English ones do not."""
    from amazon_sft.answering.doubt import names_what_record_lacks, swaps_a_title_word
    from amazon_sft.answering.title_words import main_title_words

    title, content = "The Book of Revelation", "The last book of the New Testament."
    for opener in ("Quero comprar", "Voces tem", "Vocês têm", "Quem escreveu", "Onde encontro"):
        question = f"{opener} {title}?"
        assert names_what_record_lacks(question, title, content) == [], question
        assert swaps_a_title_word(question, title) == [], question
    # a name the record lacks is still read after a Portuguese opener
    assert names_what_record_lacks("Quero comprar The Book of Mormon", title, content) == ["Mormon"]
    # and Portuguese words inside an English title stay names (the first form of this fix
    # dropped them everywhere: a review)
    garda = "A Travel Guide to Lake Garda"
    assert names_what_record_lacks("A Travel Guide to Lake Como", garda, "Italy.") == ["Como"]
    assert swaps_a_title_word("A Travel Guide to Lake Como", garda) == [("Como", "Garda")]
    assert main_title_words("Lake Como: A Guide") == ["lake", "como"]


def test_a_plainly_portuguese_question_is_declined_in_portuguese_whatever_the_model_prefers(
    grounded_prepared, tuned_run, monkeypatch
):
    """A FIAP student's review: testing the base model before training, "Vocês vendem O Pequeno
    Príncipe?" was declined in English (the gate asked the model which abstention is likelier,
    and an untuned or briefly tuned model finds the English one likelier after any prompt).
    Training teaches each question's abstention in the question's language: a question plainly
    Portuguese gets the Portuguese one, in ask and in eval's batches; any other, the model's."""
    from amazon_sft.answering import answer_many, doubt
    from amazon_sft.answering.ask import Answerer
    from amazon_sft.answering.index import CatalogueIndex
    from amazon_sft.evaluation.loading import load_for_eval
    from amazon_sft.prompts import build_prompt_format

    prefers_english = lambda *args: ABSTENTIONS["en"]  # noqa: E731 - a base model's choice
    monkeypatch.setattr(doubt, "likeliest_abstention", prefers_english)
    model, tok, cfg, _ = load_for_eval(str(tuned_run), ["data.grounded_fraction=0.5"], "cpu")
    index = CatalogueIndex(grounded_prepared)
    doubtful = Answerer(
        model, tok, build_prompt_format(tok, cfg.data), index, cfg.data, abstain_below=1e9
    )
    asked = ["Vocês vendem O Pequeno Príncipe?", "vovó vigarista do David Walliams"]
    asked += ["Vocês vendem The Tale of the Pie and the Patty-Pan?"]  # an English title
    asked += ["Do you sell The Little Prince?", "what do poeple do all day richard scary"]
    asked += ["Do you sell Rebellion (Matthew Hawkwood, No. 5)?"]
    said = [doubtful(q, max_new_tokens=4).answer for q in asked]
    assert said == [ABSTENTIONS["pt"]] * 3 + [ABSTENTIONS["en"]] * 3
    many = answer_many.answer_many(
        doubtful, [(q, index) for q in asked], k=None, mode="grounded", max_new_tokens=4
    )
    assert [a.answer for a in many] == said
