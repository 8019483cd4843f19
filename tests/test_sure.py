"""When retrieval is sure, the answer cites its first record, and what streams is always the
final answer (answering/sure.py): every answer a model may write, cut into pieces anywhere, as
a streamer cuts them (pieces ending in spaces included)."""

import random

import pytest

from amazon_sft.answering.sure import HeldForFirstRecord, answer_when_sure

SHOWN = "The soft plush bear , for new babies [0-12 months]. Machine washable."
OTHER = "A wooden train set for toddlers, with twelve pieces."

ANSWERS = {
    "its own, citing the first": f"{SHOWN}\n[source: B1]",
    "its own, cut short": "The soft plush bear, for new babies",
    "drifts after copying, cites another": "The soft plush bear , for new babies. A train. [source: B2]",
    "starts mid-description": "Machine washable. Also a train.\n[source: B2]",
    "lower case": "the soft plush bear , for new babies\n[source: B2]",
    "citation on the same line": "The soft plush bear , for new babies [source: B2]",
    "declines": "The catalogue has no record of this product.",
    "another record": f"{OTHER}\n[source: B2]",
    "spaced differently": "The soft plush bear, for new babies [0-12 months] . Machine washable.",
    "nothing": "",
    # a new user's walkthrough: another record's text under the first record's citation
    "another record's text, citing the first": f"{OTHER}\n[source: B1]",
    "drifts after copying, cites the first": "The soft plush bear , for new babies. A train. [source: B1]",
}


def _pieces(text: str, rng: random.Random) -> list[str]:
    if not text:
        return []
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 12))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


@pytest.mark.parametrize("why", list(ANSWERS))
@pytest.mark.parametrize("shown", [SHOWN, ""])
def test_the_stream_is_always_the_final_answer(why, shown):
    rng = random.Random(why)
    for _ in range(200):
        streamed: list[str] = []
        held = HeldForFirstRecord(streamed.append, shown)
        raw = " " + ANSWERS[why] if rng.random() < 0.5 else ANSWERS[why]
        for piece in _pieces(raw, rng):
            held(piece)
        final, rewritten = answer_when_sure(raw.strip(), "B1", shown)
        held.finish(final)
        assert "".join(streamed) == final, (why, streamed)
        assert final.endswith("[source: B1]") and "B2" not in final, why
        # with nothing shown there is nothing to compare with: citing the first record is kept
        kept = why == "its own, citing the first" or (not shown and "[source: B1]" in raw)
        assert rewritten == (not kept)


def test_a_rewritten_answer_is_the_first_record_as_shown():
    """Whatever the model wrote, a rewritten answer is the description as shown (the model's
    spacing kept where it copied it), then the citation: never the other record's words."""
    for why, text in ANSWERS.items():
        final, rewritten = answer_when_sure(text, "B1", SHOWN)
        if rewritten:
            body = final.rsplit("\n", 1)[0]
            assert "".join(body.split()) == "".join(SHOWN.split()), why


@pytest.mark.parametrize("bare", ["[source: B1]", "  \n[source: B1]", "[source: B1] [source: B1]"])
def test_a_bare_citation_is_no_answer_when_retrieval_is_sure(bare):
    """A new user's walkthrough: the tuned model answered "mogs kitens" with its citation alone;
    it passed as the model's own answer (nothing before the citation contradicted the record,
    as nothing was there), the shopper got no description, and eval counted it as the model's
    own right answer. It becomes the record's answer."""
    shown = "A soft plush bear for new babies. Machine washable."
    answer, rewritten = answer_when_sure(bare, "B1", shown)
    assert rewritten and answer.startswith(shown) and answer.endswith("[source: B1]")


@pytest.mark.parametrize(
    "near_bare", ["A\n[source: B1]", "A soft [source: B1]", "A  soft\n[source: B1]"]
)
def test_a_word_or_two_then_the_citation_is_no_answer_either(near_bare):
    """The last session's note: "A [source: X]" still passed as the model's own answer (it
    copies the description's first character); the shopper gets no description either."""
    shown = "A soft plush bear for new babies. Machine washable."
    answer, rewritten = answer_when_sure(near_bare, "B1", shown)
    assert rewritten and answer.endswith("[source: B1]")
    assert " ".join(answer.split()).startswith(shown)  # the model's spacing is kept


def test_a_copy_of_a_short_description_stands_whole():
    """A description of fewer words than the least kept copy stands when copied whole."""
    assert answer_when_sure("Blue mug.\n[source: B1]", "B1", "Blue mug.") == (
        "Blue mug.\n[source: B1]",
        False,
    )
    assert answer_when_sure("A soft plush\n[source: B1]", "B1", "A soft plush bear.")[1] is False
