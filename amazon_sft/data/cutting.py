"""Cutting texts to a token budget at a word boundary, marked as cut: the descriptions in grounded
prompts (prepare, eval and answering cut them alike)."""

from __future__ import annotations

CHARS_PER_TOKEN_READ = 6
"""Characters of a text read per token of budget when cutting it: more than the tokens of the
usual tokenizers hold on average in English (~4 for Llama/Mistral's SentencePiece, ~2 for the
tiny one), so the budget usually ends inside what was read; where it does not (digits, other
scripts), the whole text is tokenized."""
RUNS_ON = "…"
"""Ends a cut text. A grounded answer copies the record as shown, so a record cut at a word was
answered mid-sentence with nothing to say so ("... the book features a [source: B01]": a new
user's trial of the demo); now the record, and the answer that copies it, say that the
description goes on (its citation names where). Ending a cut at its last whole sentence instead
was tried and dropped (docs/results.md, forty-fourth session): the demo's tuned model's own
answers cited the right record for 9 of 24 questions against 17 with ``RUNS_ON`` (a full stop
is no sign that a record ends; this is), and a shorter record is a shorter answer, while ROUGE-L
is scored against the whole description (0.848 against 0.857 for the right record as shown)."""
TOKENS_PAST_CUT = 8
"""Whole tokens that must follow the cut inside what was read, so that the tokens before it are
the ones the whole text gives (a tokenizer merges within a few characters of a word)."""


def cut_to_tokens(tok, texts: list[str], budget: int) -> list[str]:
    """Each text cut to about ``budget`` tokens of ``tok``, at the last space before the cut (a
    cut word would teach the model to stop mid-word) and followed by ``RUNS_ON``, whose tokens
    are counted in the budget (a character of several tokens at the cut can pass it by a token
    or two).

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
    """Each text whole if its tokens (``offset_lists``) fit ``budget``, else its first
    ``budget - runs_on_tokens`` tokens to the last space, then ``RUNS_ON``.

    >>> text = "A soft bear for small hands. It is 30 cm tall"
    >>> offsets = [m.span() for m in __import__("re").finditer(r"\\S+", text)]
    >>> _cut_at([text], [offsets], 8, 1)
    ['A soft bear for small hands. It…']
    >>> _cut_at([text], [offsets], 11, 1)
    ['A soft bear for small hands. It is 30 cm tall']
    """
    out = []
    for text, offsets in zip(texts, offset_lists):
        if len(offsets) <= budget:
            out.append(text)
            continue
        end = offsets[max(1, budget - runs_on_tokens) - 1][1]
        space = text.rfind(" ", 0, end + 1)
        out.append(text[: space if space > end // 2 else end].rstrip() + RUNS_ON)
    return out
