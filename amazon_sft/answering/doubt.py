"""Abstaining when retrieval is not sure (``--abstain-below RATIO``), before the model answers.

Measured on the real question sets (docs/results.md): whether the asked product is among the
records is told apart far better by retrieval than by the tuned 135M model. The ratio of the
first record's BM25 score to the second's separates questions about absent products from the
others with ROC AUC 0.93 on the test questions (0.92 dev), the model's own abstain-vs-answer
log-odds with 0.55. A BM25 score is not comparable across questions (it grows with the words
asked); its ratio within one question is: a product that is there stands out from the rest.

So when the first record is not ``abstain_below`` times ahead of the second, ``ask`` abstains
without generating (unless the question names the first record's main title and not the
second's: series siblings score alike, answering/named_title.py); the model still picks the
abstention's language (the likelier of ``prompts.ABSTENTIONS`` after the very prompt it would
have answered) unless the question is plainly Portuguese (``gate_abstention``), so a Portuguese
question is declined in Portuguese. Off (0) unless asked for:
the threshold is chosen on dev questions.

One more sign that the first record is not the asked product, whatever its lead: its title
numbers a word the question numbers otherwise ("Tolkien Calendar 2015" against
"Tolkien Calendar 2014: The Hobbit", 8.9 times ahead of the second on the real dev questions):
another year or volume of a series (answering/series_numbers.py, as is the first of a series
asked against a later one). And one more, while the first
record is under ``NAMED_LEAD`` times ahead or retrieved alone: the question names, with
capitals, a word the record has nowhere ("Paddington Helps Out" against "Paddington Races
Ahead", 3.6 times ahead): the asked product is another one of the same series, author or shelf
(``names_what_record_lacks``).

At any lead, the first record is not the asked product when its title swaps the asked title's
name for another ("A Day in the Life of Canada" for "... of Japan", ``swaps_a_title_word``) or
its description names the asked title as another book ("From the author of Raising Boys" in
"Raising Girls", answering/mentions.py), or a short question names a title its main title is
not ("ross poldark winston graham" against "The Loving Cup (The Poldark novels)",
answering/other_title.py).

Which rule fired is said in words (``doubt_reason``): ``ask`` prints it after the abstention,
``--json`` and the API give it as ``doubt``. The converse, ``--quote-when-sure``: when the first
record *is* that many times ahead, the answer must cite it (answering/sure.py).
"""

from __future__ import annotations

from difflib import SequenceMatcher

import torch

from amazon_sft.answering.index import Source
from amazon_sft.answering.mentions import description_names_asked_title
from amazon_sft.answering.named_title import names_first_title_only
from amazon_sft.answering.other_title import asks_another_title
from amazon_sft.answering.query_words import english_query, is_portuguese
from amazon_sft.answering.series_numbers import asks_first_of_a_later, names_other_numbers
from amazon_sft.answering.title_words import (
    NOT_NAMES,
    SHORT_QUESTION_WORDS,
    WORD,
    has_word,
    is_lookup_word,
    names_part,
)
from amazon_sft.prompts import ABSTENTIONS
from amazon_sft.tokenizer import hf_encoder

GATE_RECORDS = 2
"""Records the gate reads, however few a prompt shows: its ratio rule compares the first with
the second, and with ``k`` = 1 there was no second, so every question was "sure"."""
NAMED_LEAD = 4.0
"""Under this lead of the first record over the second, a capitalized word of the question that
the record lacks makes it doubtful (``names_what_record_lacks``); further ahead, the record is
the asked one and its description merely leaves the word out. Chosen on the dev questions
(real and generated): 3 caught fewer absent products, 8 added false abstention."""
SWAP_FRAME = 0.6
"""A title counts as the frame of the question's title when the question has at least this share
(and at least two) of its words (``swaps_a_title_word``): "A Day in the Life of Canada" for "A
Day in the Life of Japan photo book" (day, life: 2 of 3), not "Slowly Down the Ganges" for
"Eric Newby's journey down the Ganges" (ganges: 1 of 2)."""
SWAP_WORDS = 2
"""At most this many title words in the swapped slot ("Penguin" for "Bear")."""


def names_what_record_lacks(question: str, title: str, content: str) -> list[str]:
    """The capitalized words of an English ``question`` (titles, brands, models, names) that the
    record's title and description have nowhere, not even one typo away (``repair.max_edits``)
    or as a plural. Not read: stop words and the words that open a question or a request
    (``NOT_NAMES``), the author after "by" (descriptions often leave it out), a question all in
    capitals, lower-case words (a word of a description the question paraphrases),
    numbers (``names_other_numbers``), and a Portuguese question (its title words come
    translated, so an English record lacks them whichever product is asked).

    >>> names_what_record_lacks("Paddington Helps Out", "Paddington Races Ahead", "A bear.")
    ['Helps', 'Out']
    >>> names_what_record_lacks("Who wrote Sharpe's Eagle by Bernard Cornwell?",
    ...                         "Sharpe's Eagles", "A novel of the Peninsular War.")
    []
    >>> names_what_record_lacks("the kestrl Q10 keyboard", "Kestrel Q10 Keyboard", "Keys.")
    []
    >>> names_what_record_lacks("paddington helps out", "Paddington Races Ahead", "A bear.")
    []
    >>> names_what_record_lacks("Perelandra do C. S. Lewis, da Trilogia Cósmica", "Perelandra", "")
    []
    >>> names_what_record_lacks("Does Sharpe's Fury have maps?", "Sharpe's Fury", "A novel.")
    []
    >>> names_what_record_lacks("IS SHARPE'S FURY GOOD?", "Sharpe's Fury", "A novel.")
    []
    """
    asked = names_part(question)
    if asked is None:
        return []
    named = [w for w in WORD.findall(asked) if w[0].isupper() and len(w) > 1]
    named = [w for w in dict.fromkeys(named) if w.casefold() not in NOT_NAMES]
    has = set(WORD.findall(f"{title} {content}".casefold()))
    return [w for w in named if not has_word(w.casefold(), has)]


def swaps_a_title_word(question: str, title: str) -> list[tuple[str, str]]:
    """(asked, titled) when the record's ``title`` is the asked title with one name swapped:
    the question has at least ``SWAP_FRAME`` of the title's words (two or more), in order, and
    where the title has one or two other words (``SWAP_WORDS``), the question has one
    capitalized word the title lacks, not even a typo away. Such a record is a sibling (another
    country, colour, subject of the series), however far retrieval puts it ahead, and whatever
    its description mentions in passing. Read as ``names_what_record_lacks`` reads names: not
    in a Portuguese or all-capitals question, not the author after "by"; the title's swapped
    words are ones the question has nowhere (numbers: ``names_other_numbers``).

    >>> swaps_a_title_word("A Day in the Life of Japan photo book", "A Day in the Life of Canada")
    [('Japan', 'Canada')]
    >>> swaps_a_title_word("Tiny Bear Plush Toy, White", "Tiny Penguin Plush Toy, Navy #106")
    [('Bear', 'Penguin'), ('White', 'Navy')]
    >>> swaps_a_title_word("A Day in the Life of Canadaa", "A Day in the Life of Canada")
    []
    >>> swaps_a_title_word("the day in the life book on Canada, not Japan", "A Day in the Life of Canada")
    []
    >>> swaps_a_title_word("How long was Eric Newby's journey down the Ganges?", "Slowly Down the Ganges")
    []
    >>> swaps_a_title_word("a day in the life of japan", "A Day in the Life of Canada")
    []
    """
    part = names_part(question)
    if part is None:
        return []
    asked, titled = WORD.findall(part), WORD.findall(title)
    asked_cf, titled_cf = [w.casefold() for w in asked], [w.casefold() for w in titled]
    in_question = {w.casefold() for w in WORD.findall(question)}
    matcher = SequenceMatcher(None, asked_cf, titled_cf, autojunk=False)
    matched = [titled_cf[b.b + i] for b in matcher.get_matching_blocks() for i in range(b.size)]
    frame = [w for w in matched if is_lookup_word(w)]
    if len(frame) < 2 or len(frame) < SWAP_FRAME * sum(map(is_lookup_word, titled_cf)):
        return []
    swaps = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op != "replace" or j2 - j1 > SWAP_WORDS:
            continue
        names = [
            w
            for w in asked[i1:i2]
            if w[0].isupper()
            and is_lookup_word(w.casefold())
            and not has_word(w.casefold(), set(titled_cf))
        ]
        others = [
            w
            for w in titled[j1:j2]
            if is_lookup_word(w.casefold()) and not has_word(w.casefold(), in_question)
        ]
        if len(names) == 1 and others:
            swaps.append((names[0], others[0]))
    return swaps


def title_has_none_of(question: str, title: str) -> bool:
    """True when an English ``question`` short enough to name a title (``SHORT_QUESTION_WORDS``)
    has no word, not even one typo away or as a plural, in the record's ``title``: the record
    was found by the author's name or by words its description merely mentions ("master and
    commander patrick o'brian" against "Red Gold", whose description names O'Brian). Read in
    any case, as shoppers type titles in lower case; not in Portuguese (its words come
    translated, "Coelho" as "rabbit").

    >>> title_has_none_of("master and commander patrick o'brian", "Red Gold")
    True
    >>> title_has_none_of("the yearling marjorie kinnan rawlings", "The Yearling (50th Edition)")
    False
    >>> title_has_none_of("potatos country gardn cookbook", "Potatoes: A Country Garden Cookbook")
    False
    >>> title_has_none_of("a sea story for fans of patrick o'brian and forester novels", "Red Gold")
    False
    >>> title_has_none_of("vocês têm O Alquimista do Paulo Coelho?", "Mog and Bunny")
    False
    """
    if is_portuguese(question):
        return False
    words = set(filter(is_lookup_word, WORD.findall(english_query(question).casefold())))
    if not words or len(words) > SHORT_QUESTION_WORDS:
        return False
    titled = set(WORD.findall(title.casefold()))
    return not any(has_word(w, titled) for w in words)


def retrieval_doubtful(sources: list[Source], abstain_below: float, question: str) -> bool:
    """True when the gate is on and the first record's score is under ``abstain_below`` times
    the second's, its title numbers a word of the ``question`` otherwise (``names_other_numbers``),
    or numbers a later one of the series than the first the question asks for
    (``asks_first_of_a_later``), it lacks a word the question names while under ``NAMED_LEAD``
    times ahead or alone (``names_what_record_lacks``, ``title_has_none_of``), its title swaps
    the asked name (``swaps_a_title_word``), its description names the asked title as another
    book (``mentions.description_names_asked_title``), a short question names another title
    than its main title (``other_title.asks_another_title``), or nothing was retrieved (the
    reason: ``doubt_reason``). One record alone has no rival to be ahead of: only the names it
    lacks can make it doubtful ("The Silmarillion" retrieved "The History of Middle-Earth
    Index" alone, which was quoted).

    >>> s = lambda score, title="t": Source("u", title, "c", score)
    >>> retrieval_doubtful([s(2.0), s(1.0)], 1.3, "q"), retrieval_doubtful([s(1.2), s(1.0)], 1.3, "q")
    (False, True)
    >>> retrieval_doubtful([s(1.2), s(1.0)], 0.0, "q"), retrieval_doubtful([s(0.5)], 1.3, "q")
    (False, False)
    >>> retrieval_doubtful([], 1.3, "q"), retrieval_doubtful([], 0.0, "q")
    (True, False)
    >>> alone = [s(0.5, "The History of Middle-Earth Index")]
    >>> retrieval_doubtful(alone, 1.3, "The Silmarillion"), retrieval_doubtful(alone, 1.3, "index")
    (True, False)
    >>> retrieval_doubtful([s(9.0, "Calendar 2014"), s(1.0)], 1.3, "calendar 2015")
    True
    >>> [retrieval_doubtful([s(lead, "Paddington Races Ahead"), s(1.0)], 1.3, "Paddington Helps")
    ...  for lead in (3.0, 5.0)]
    [True, False]
    """
    return doubt_reason(sources, abstain_below, question) is not None


def doubt_reason(sources: list[Source], abstain_below: float, question: str) -> str | None:
    """Why the gate abstains on ``question``, said to the shopper by ``ask`` and ``serve``
    (``doubt_rule``'s words); None when it does not.

    >>> s = lambda score, title="t": Source("u", title, "c", score)
    >>> doubt_reason([s(1.2), s(1.0)], 1.4, "q")
    "the first record's score is only 1.20 times the second's (under 1.4)"
    >>> cup = "The Loving Cup (The Poldark novels)"
    >>> doubt_reason([s(9.0, cup), s(1.0)], 1.4, "ross poldark winston graham")
    'the question names another title than "The Loving Cup (The Poldark novels)"'
    """
    found = doubt_rule(sources, abstain_below, question)
    return found[1] if found else None


def doubt_rule(
    sources: list[Source], abstain_below: float, question: str
) -> tuple[str, str] | None:
    """(the rule that fires first in ``retrieval_doubtful``'s order, the reason in words), or
    None when the gate lets the question through. Rules: ``RULES``.

    >>> doubt_rule([Source("u", "Calendar 2014", "c", 9.0)], 1.4, "calendar 2015")[0]
    'numbers'

    The ratio rule abstains *under* the ratio: a lead of exactly 2.0 at 2.0 goes through.

    >>> [doubt_rule([Source("u", "t", "c", lead), Source("v", "t", "c", 1.0)], 2.0, "t")
    ...  for lead in (1.99, 2.0)]  # doctest: +NORMALIZE_WHITESPACE
    [('ratio', "the first record's score is only 1.99 times the second's (under 2)"), None]

    The title rules read a first record whose lead is under ``NAMED_LEAD`` (4.0), not at it:

    >>> pair = lambda lead: [Source("u", "Paddington Races Ahead", "A bear.", lead),
    ...                      Source("v", "t", "c", 1.0)]
    >>> [doubt_rule(pair(lead), 1.3, "Paddington Helps Out") for lead in (3.99, 4.0)]
    [('lacks', '"Paddington Races Ahead" has no "Helps", which the question names'), None]
    """
    if abstain_below <= 0:
        return None
    if not sources:
        return "nothing", "nothing in the catalogue matched the question"
    first = sources[0]
    title = first.title[:80]
    if names_other_numbers(question, first.title):
        return "numbers", f'"{title}" numbers another year, volume or edition than the question'
    if asks_first_of_a_later(question, first.title):
        return "later", f'the question asks for the first of a series and "{title}" is a later one'
    second = sources[1] if len(sources) > 1 else None
    if (
        second is not None
        and first.score < abstain_below * second.score
        and not names_first_title_only(question, first.title, second.title)
    ):
        lead = first.score / second.score  # retrieval's scores are positive
        why = f"the first record's score is only {lead:.2f} times the second's"
        return "ratio", f"{why} (under {abstain_below:g})"
    swaps = swaps_a_title_word(question, first.title)
    if swaps:
        return "swap", f'"{title}" has "{swaps[0][1]}" where the question asks "{swaps[0][0]}"'
    phrase = description_names_asked_title(question, first.title, first.content)
    if phrase:
        return "mentions", f'the description of "{title}" names "{phrase}" as another book'
    if asks_another_title(question, first.title):
        return "other title", f'the question names another title than "{title}"'
    near = len(sources) == 1 or first.score < NAMED_LEAD * sources[1].score  # alone: no lead
    if near:
        lacks = names_what_record_lacks(question, first.title, first.content)
        if lacks:
            return "lacks", f'"{title}" has no "{lacks[0]}", which the question names'
        if title_has_none_of(question, first.title):
            return "none of", f'"{title}" has none of the question\'s words in its title'
    return None


RULES = (
    "nothing",
    "numbers",
    "later",
    "ratio",
    "swap",
    "mentions",
    "other title",
    "lacks",
    "none of",
)
"""``doubt_rule``'s names, in the order it tries them (``nothing``: no record retrieved)."""


@torch.no_grad()
def likeliest_abstention(model, tok, prompt_ids: list[int]) -> str:
    """The abstention (``prompts.ABSTENTIONS``, one per language taught) the model finds likeliest
    after ``prompt_ids``, each scored whole (its tokens, then EOS) as training taught it."""
    device = next(model.parameters()).device
    texts = list(ABSTENTIONS.values())
    best, best_logp = texts[0], -float("inf")
    for text, answer in zip(texts, hf_encoder(tok)(texts)):
        answer = [*answer, tok.eos_token_id]
        ids = torch.tensor([[*prompt_ids, *answer]], device=device)
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
        target = torch.tensor(answer, device=device)
        logp = torch.log_softmax(logits, -1).gather(1, target[:, None]).sum().item()
        if logp > best_logp:
            best, best_logp = text, logp
    return best


def gate_abstention(model, tok, prompt_ids: list[int], question: str) -> str:
    """The abstention the gate answers with: the Portuguese one for a question plainly in
    Portuguese (``is_portuguese``, strict: training taught each question's abstention in its language,
    and an untuned or briefly tuned model finds the English one likelier after any prompt: a
    base model declined "Vocês vendem O Pequeno Príncipe?" in English), else the one the model
    finds likeliest (``likeliest_abstention``)."""
    if "pt" in ABSTENTIONS and is_portuguese(question, strict=True):
        return ABSTENTIONS["pt"]
    return likeliest_abstention(model, tok, prompt_ids)


def retrieval_sure(sources: list[Source], abstain_below: float, question: str) -> bool:
    """True when the gate is on and lets the ``question`` through: a first record to quote.

    >>> s = lambda score: Source("u", "t", "c", score)
    >>> retrieval_sure([s(2.0), s(1.0)], 1.3, "q"), retrieval_sure([s(1.2), s(1.0)], 1.3, "q")
    (True, False)
    >>> retrieval_sure([s(2.0), s(1.0)], 0.0, "q"), retrieval_sure([], 1.3, "q")
    (False, False)
    """
    doubtful = retrieval_doubtful(sources, abstain_below, question)
    return abstain_below > 0 and bool(sources) and not doubtful
