"""Cutting texts to a token budget at a sentence or word boundary: the descriptions in grounded
prompts (prepare, eval and answering cut them alike)."""

from __future__ import annotations

import re

CHARS_PER_TOKEN_READ = 6
"""Characters of a text read per token of budget when cutting it: more than the tokens of the
usual tokenizers hold on average in English (~4 for Llama/Mistral's SentencePiece, ~2 for the
tiny one), so the budget usually ends inside what was read; where it does not (digits, other
scripts), the whole text is tokenized."""
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'“])")
"""Where one sentence ends and the next begins: after ``.``, ``!`` or ``?``, before a capital, a
digit or a quote (question_kinds reads a description's sentences by it too)."""
SENTENCE_KEEPS = 0.8
"""A cut text ends at its last whole sentence when that keeps at least this share of what the
word boundary kept (on the real rows at 96 tokens: 39% of the cut records, 4% of their
characters lost); else it ends at the word, then ``RUNS_ON``. A grounded answer copies the
record as shown, so a record cut mid-sentence was answered mid-sentence with nothing to say so
("... the book features a [source: B01]": a new user's trial of the demo). Not every cut ends at
a sentence: ROUGE-L is scored against the whole description, and a shorter record is a shorter
answer."""
NOT_AN_END = re.compile(
    r"(?:^|[^\w.])(?:[A-Z]|St|Mr|Mrs|Ms|Dr|Prof|Vol|Vols|No|Nos|Ed|Eds|Fig|pp|approx|vs|etc|"
    r"Inc|Ltd|Co|Jr|Sr|e\.g|i\.e|U\.S|U\.K|Ph\.D)\.$"
)
"""A full stop that ends an initial or an abbreviation, not a sentence: "by J. K.", "Vol.",
"approx." (the record would stop mid-sentence without its ``RUNS_ON``: a review found "... from
interiors of St." among the real rows' cuts). ``question_kinds.sentences`` splits there still:
an attribute's sentence is the same either way."""
RUNS_ON = "…"
"""Ends a text cut inside a sentence: the record, and the answer that copies it, say that the
description goes on (its citation names where)."""
TOKENS_PAST_CUT = 8
"""Whole tokens that must follow the cut inside what was read, so that the tokens before it are
the ones the whole text gives (a tokenizer merges within a few characters of a word)."""


def cut_to_tokens(tok, texts: list[str], budget: int) -> list[str]:
    """Each text cut to about ``budget`` tokens of ``tok``: at the end of its last whole
    sentence within them where that keeps most of them (``SENTENCE_KEEPS``), else at the last
    space before the cut (a cut word would teach the model to stop mid-word) followed by
    ``RUNS_ON``, whose tokens are counted in the budget (a character of several tokens at the
    cut can pass it by a token or two, as the word cut could).

    Only the opening of a long text is tokenized (``CHARS_PER_TOKEN_READ`` characters a token
    of budget, up to a space): descriptions run to 197k characters and only ~160 tokens are
    kept. Where the opening holds fewer than ``budget + TOKENS_PAST_CUT`` tokens, the whole text
    is tokenized, so the cut is the one the whole text gives."""
    if not texts:
        return []
    limit = budget * CHARS_PER_TOKEN_READ
    heads = [_opening(t, limit) for t in texts]
    offsets = tok(heads, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    offsets = list(offsets)
    redo = [
        i
        for i, (text, head, o) in enumerate(zip(texts, heads, offsets))
        if len(head) < len(text) and len(o) < budget + TOKENS_PAST_CUT
    ]
    if redo:
        whole = tok([texts[i] for i in redo], add_special_tokens=False, return_offsets_mapping=True)
        for i, o in zip(redo, whole["offset_mapping"]):
            offsets[i] = o
    runs_on = tok([RUNS_ON], add_special_tokens=False, return_offsets_mapping=True)
    runs_on = len(runs_on["offset_mapping"][0])
    return _cut_at(texts, offsets, budget, runs_on)


def _opening(text: str, limit: int) -> str:
    """``text`` up to the last space before ``limit`` characters (whole words only)."""
    if len(text) <= limit:
        return text
    space = text.rfind(" ", 0, limit)
    return text[:space] if space > 0 else text


def _cut_at(texts: list[str], offset_lists, budget: int, runs_on_tokens: int) -> list[str]:
    """Each text whole if its tokens (``offset_lists``) fit ``budget``, else ``_ending`` of its
    first ``budget - runs_on_tokens`` tokens, to the last space."""
    out = []
    for text, offsets in zip(texts, offset_lists):
        if len(offsets) <= budget:
            out.append(text)
            continue
        end = offsets[max(1, budget - runs_on_tokens) - 1][1]
        space = text.rfind(" ", 0, end + 1)
        out.append(_ending(text, text[: space if space > end // 2 else end].rstrip()))
    return out


def _ending(text: str, kept: str) -> str:
    """``kept``, an opening of ``text`` cut at a word, ended as a reader should see it: at its
    last whole sentence of ``text`` where that keeps ``SENTENCE_KEEPS`` of it, else followed by
    ``RUNS_ON``.

    >>> text = "A soft bear for small hands. It is 30 cm tall and comes in blue or red"
    >>> _ending(text, text[:33])  # "It is" dropped: the sentence keeps 28 of 33 characters
    'A soft bear for small hands.'
    >>> _ending(text, text[:49])  # it would keep 28 of 49: the word cut stays, said to go on
    'A soft bear for small hands. It is 30 cm tall and…'
    >>> _ending("Ages 3+. Batteries included", "Ages 3+.")  # a cut at a sentence's end
    'Ages 3+.'
    >>> _ending("Drawn by J. K. Lee for all", "Drawn by J. K.")  # initials end no sentence
    'Drawn by J. K.…'
    """
    window = len(kept) + 64  # the spaces after a full stop, then the next sentence's first
    ends = [m.start() for m in SENTENCE_BREAK.finditer(text, 0, window) if m.start() <= len(kept)]
    ends = [e for e in ends if not NOT_AN_END.search(text, max(0, e - 12), e)]
    if ends and ends[-1] >= SENTENCE_KEEPS * len(kept):
        return text[: ends[-1]]
    return kept + RUNS_ON
