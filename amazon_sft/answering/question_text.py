"""A shopper's question as it may enter a prompt, and why a prompt cannot take it: the
question-text half of answering (ask, chat, serve and eval all clean a question here)."""

from __future__ import annotations

import re
import unicodedata

from amazon_sft.data.cleaning import INVISIBLE, MAX_PASSES, settled
from amazon_sft.data.encode import SpecialTextScrubber
from amazon_sft.errors import RequestError
from amazon_sft.prompts import PromptFormat, without_markup
from amazon_sft.terminal import printable
from amazon_sft.tokenizer import hf_encoder

MAX_QUESTION_CHARS = 2000


def clean_question(question: str, tok, fmt: PromptFormat | None = None) -> str:
    """The user's text as it may enter a prompt: whitespace collapsed, length capped, and any
    special-token text ("<|im_end|>", "</s>") or tag ``fmt`` writes as text ("[/INST]")
    removed, so a question can never close the user turn or open a system one (product text is
    scrubbed the same way at prepare time), nor carry a citation or a record field. Repeated
    until nothing changes, as prepare's cleaning is: a character removed (a NUL, a bidi or
    zero-width mark) or a removal itself can join what is left into "<|im_end|>"."""
    scrub = SpecialTextScrubber(tok, fmt)
    text = settled(lambda t: normalise_question(without_markup(scrub(t))), normalise_question(question))  # fmt: skip
    if text is not None:
        return text
    raise RequestError(
        "the question still holds special-token text after cleaning it "
        f"{MAX_PASSES} times: ask in plain words"
    )


def record_text_for_prompt(text: str, scrub: SpecialTextScrubber) -> str:
    """A record's title or description as a prompt may show it: prepare scrubbed it for the
    tokenizer it prepared with, but an index may be asked with another model (``--index``),
    or hand-written, so special-token text of the answering tokenizer, and tags its format
    writes as text, are removed here too, with markup, until nothing changes (a removal can
    join what is left). Unlike a question, nothing is refused: a record emptied is empty."""
    return settled(lambda t: scrub(without_markup(t)), text) or ""  # still forging: nothing


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def without_lone_surrogates(text: str) -> str:
    """A lone surrogate (argv's bytes that are not UTF-8, or JSON's ``"\\ud800"``) as U+FFFD.

    >>> without_lone_surrogates("cats " + chr(0xD800)) == "cats \N{REPLACEMENT CHARACTER}"
    True
    """
    return _LONE_SURROGATE.sub("\ufffd", text)


def normalise_question(question: str) -> str:
    """Whitespace collapsed, control, bidi and zero-width characters and soft hyphens removed
    (``terminal.printable``, ``cleaning.INVISIBLE``), a lone surrogate (argv's or stdin's bytes that
    are not UTF-8) replaced by U+FFFD, composed accents (NFC), length capped; an empty
    question is refused."""
    question = printable(_LONE_SURROGATE.sub("\ufffd", INVISIBLE.sub("", question)))
    question = unicodedata.normalize("NFC", question)  # as the catalogue is indexed
    question = " ".join(question.split())[:MAX_QUESTION_CHARS]
    if not question:
        raise RequestError(
            "the question is empty: ask about a product, e.g. 'Tell me about <title>'"
        )
    return question


def does_not_fit(
    tok, question: str, records: int, prompt_tokens: int, context: int, max_new_tokens: int
) -> str:
    """Why the prompt and the answer length do not fit the model's context, naming what to
    change: a shorter answer when some fits, fewer records when there are several (k), a
    shorter question when it is long or there is one record."""
    asked = len(hf_encoder(tok)([question])[0])
    fixes = [f"ask for fewer records (k; {records} now)"] if records > 1 else []
    if records <= 1 or asked >= context // 4:
        fixes.append("shorten the question")
    room = context - prompt_tokens
    what = (
        f"max_new_tokens={max_new_tokens} does not fit the model's context"
        if room > 0
        else "the prompt does not fit the model's context"
    )
    shorter = f"ask for at most {room} new tokens, or " if room > 0 else ""
    shown = f"its {records} records and " if records else ""  # a closed-book prompt has none
    return (
        f"{what}: the prompt takes {prompt_tokens} of {context} tokens (the question {asked}, "
        f"{shown}the instructions the rest); {shorter}" + " or ".join(fixes)
    )
