"""When retrieval is sure (``--quote-when-sure`` with ``--abstain-below RATIO``), the answer cites
its first record.

When the first record's score *is* RATIO times the second's, retrieval is sure the product is
there, and it is rarely wrong: on the real dev questions at 1.4 the gate let 96 of the 101
questions about a product through, and the first record was the asked product for all 96
(docs/results.md). So the answer must then be about that record. The model's answer stands when
it cites that record (alone) and copies its description from the start, or is whole sentences of
it (an attribute question's answer leads with the sentence that answers it). Any other answer (it declines, copies another shown record, cites
none or another) becomes the record as training taught the answer: its description as the
prompt showed it, then its citation; the model's own opening is kept as far as it copied that
description, so what was already streamed stays true (``answer_when_sure``).

While the answer streams, a piece is shown only once it is sure to open the final answer: while
the text so far copies the first record's description from its start (spaces aside) and holds no
``[``; from the first piece that does not, the rest is held until the answer ends
(``HeldForFirstRecord``). So the stream always equals the final answer, and text that is
replaced is never shown. The cost: behind the gate the citation is retrieval's choice, not the
model's, and an absent product that gets past the gate is answered with a record.
"""

from __future__ import annotations

from amazon_sft.prompts import cited_uids, grounded_answer

MIN_COPIED_WORDS = 3
"""The fewest words of the description a kept answer copies (all of a shorter description):
"A [source: X]" copied one character and gave the shopper no description."""


def copied_prefix(text: str, shown: str) -> tuple[int, int]:
    """How far ``text`` copies ``shown`` from its start, spaces ignored (decoding may space
    punctuation differently): (characters of ``text``, characters of ``shown``) up to the last
    character that agrees.

    >>> copied_prefix("A soft  bear, blue", "A soft bear , red")
    (13, 13)
    >>> copied_prefix("The catalogue has no record", "The book")
    (3, 3)
    >>> copied_prefix("", "A bear"), copied_prefix("A bear", "")
    ((0, 0), (0, 0))
    """
    i = j = used = upto = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        while j < len(shown) and shown[j].isspace():
            j += 1
        if i == len(text) or j == len(shown) or text[i] != shown[j]:
            return used, upto
        i, j = i + 1, j + 1
        used, upto = i, j


def whole_sentences_of(text: str, shown: str) -> bool:
    """``text`` is one or more whole sentences of ``shown`` in a row, spaces ignored: how an
    attribute question is answered (``grounded_answer``'s ``lead``), cut as training cut it
    (``question_kinds.sentences``).

    >>> shown = "A soft bear. It is 30 cm tall! Ages 3+."
    >>> whole_sentences_of("It is 30 cm  tall! Ages 3+.", shown), whole_sentences_of("Ages 3", shown)
    (True, False)
    >>> whole_sentences_of("", shown), whole_sentences_of("30 cm tall!", shown)
    (False, False)
    """
    from amazon_sft.data.question_kinds import sentences

    wanted = "".join(text.split())
    if not wanted:
        return False
    parts = ["".join(p.split()) for p in sentences(shown)]
    for start in range(len(parts)):
        run = ""
        for part in parts[start:]:
            run += part
            if len(run) >= len(wanted):
                break
        if run == wanted:
            return True
    return False


def answer_when_sure(text: str, first_uid: str, shown: str) -> tuple[str, bool]:
    """The answer when retrieval is sure of its first record (``shown``: its description as the
    prompt showed it), and whether it was rewritten: the model's own when it cites that record
    alone and all it wrote before is a copy of the description (perhaps cut short, but at least
    ``MIN_COPIED_WORDS`` of it: a bare citation gave the shopper no description); else the model's text as far as it copies the description, the rest of the description, then the
    record's citation (a new user's walkthrough: another record's text under the first
    record's citation was kept, and scored right).

    >>> shown = "A soft plush bear for new babies. Machine washable."
    >>> answer_when_sure("A soft plush bear.\\n[source: B1]", "B1", shown)
    ('A soft plush bear for new babies. Machine washable.\\n[source: B1]', True)
    >>> answer_when_sure("A soft plush bear for new\\n[source: B1]", "B1", shown)
    ('A soft plush bear for new\\n[source: B1]', False)
    >>> answer_when_sure("A wooden train.\\n[source: B1]", "B1", shown)
    ('A soft plush bear for new babies. Machine washable.\\n[source: B1]', True)
    >>> answer_when_sure("A soft plush bear for new babies.\\n[source: B2]", "B1", shown)
    ('A soft plush bear for new babies. Machine washable.\\n[source: B1]', True)
    >>> answer_when_sure("The catalogue has no record of this product.", "B1", shown)
    ('A soft plush bear for new babies. Machine washable.\\n[source: B1]', True)
    >>> answer_when_sure("[source: B1]", "B1", shown)
    ('A soft plush bear for new babies. Machine washable.\\n[source: B1]', True)

    An attribute question's answer, as training teaches it, is the description's sentence that
    answers it, then the citation (a review: it was replaced by the whole description):

    >>> told = "A soft plush bear. Written by Ana Lopes in 1999."
    >>> answer_when_sure("Written by Ana Lopes in 1999.\\n[source: B1]", "B1", told)
    ('Written by Ana Lopes in 1999.\\n[source: B1]', False)
    >>> answer_when_sure("bear. Written by Ana Lopes in 1999.\\n[source: B1]", "B1", told)[1]
    True
    >>> answer_when_sure("Machine washable.\\n[source: B1]", "B1", shown)[1]  # a word or two
    True
    """
    body = text.split("[", 1)[0]
    used, upto = copied_prefix(body, shown)
    # a bare citation, or a word or two of it, gives the shopper no description (both were kept)
    enough = min(MIN_COPIED_WORDS, len(shown.split()))
    copies = (
        not shown
        or (used > 0 and len(body[:used].split()) >= enough and not body[used:].strip())
        or (whole_sentences_of(body, shown) and len(body.split()) >= enough)
    )
    if cited_uids(text) == [first_uid] and copies:
        return text, False
    return grounded_answer((body[:used] + shown[upto:]).strip(), first_uid, "en").strip(), True


class HeldForFirstRecord:
    """Streams the answer to ``on_text`` only as far as it is sure to open the final answer
    (see the module's docstring); ``finish`` passes on the rest of the final answer.

    >>> shown, out = "A soft plush bear for new babies. Machine washable.", []
    >>> held = HeldForFirstRecord(out.append, shown)
    >>> for piece in [" A soft ", "plush bear ", "for new babies. ", "A train. ", "[source: B2]"]:
    ...     held(piece)
    >>> out
    ['A soft', ' plush bear', ' for new babies.']
    >>> final, _ = answer_when_sure(held.text, "B1", shown)
    >>> held.finish(final); "".join(out) == final
    True
    """

    def __init__(self, on_text, shown: str) -> None:
        self.on_text = on_text
        self.shown = shown
        self.text = ""
        """Everything the model wrote so far."""
        self.streamed = ""
        """What ``on_text`` was given so far: always a prefix of the final answer."""
        self.holding = False

    def __call__(self, piece: str) -> None:
        self.text += piece
        if self.holding:
            return
        opening = self.text.strip()
        used, _ = copied_prefix(self.text, self.shown)
        if "[" in self.text or used < len(self.text.rstrip()):
            self.holding = True  # a citation (may be corrected) or a departure from the record
            return
        self._stream(opening)

    def _stream(self, upto: str) -> None:
        if upto.startswith(self.streamed) and len(upto) > len(self.streamed):
            self.on_text(upto[len(self.streamed) :])
            self.streamed = upto

    def finish(self, answer: str) -> None:
        """The answer is final: pass on what it adds to what was streamed."""
        if answer.startswith(self.streamed):
            self._stream(answer)
        else:  # cannot happen (the module's docstring says why); never show less than it
            self.on_text("\n" + answer)
