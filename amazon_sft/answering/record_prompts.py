"""The prompts answering renders from retrieved records, and the record text they show: one
place for ask, chat, serve and eval's end-to-end mode (``prompts.PromptFormat`` renders; this
module picks what of a record goes in, made safe for the answering tokenizer)."""

from __future__ import annotations

from amazon_sft.answering.index import Source
from amazon_sft.answering.question_text import record_text_for_prompt
from amazon_sft.config import DataConfig
from amazon_sft.data.cutting import cut_to_tokens
from amazon_sft.data.encode import SpecialTextScrubber
from amazon_sft.prompts import ContextRecord, PromptFormat, grounded_answer


def build_prompt(
    fmt: PromptFormat, tok, data: DataConfig, question: str, sources: list[Source], mode: str
) -> str:
    """The prompt training taught for this mode: grounded records cut to the same budget, or
    the closed-book question about the best-matching title. Record text is scrubbed of the
    answering tokenizer's special-token text (prepare scrubbed it for its own tokenizer; an
    index may be asked with another model, or be hand-written: a review)."""
    scrub = SpecialTextScrubber(tok, fmt)
    if mode == "grounded":
        shown = cut_to_tokens(tok, [s.content for s in sources], data.context_record_tokens)
        records = [
            ContextRecord(*(record_text_for_prompt(t, scrub) for t in (s.uid, s.title, text)))
            for s, text in zip(sources, shown)
        ]
        return fmt.wrap(fmt.grounded(question, records))
    if not sources:
        return fmt.wrap(question)
    # the title as prepare rendered it for training (markup kept where cleaning kept it), less
    # special-token text (removed with a space: no removal joins what is left into another)
    return fmt.render(scrub(sources[0].title), 0)


def shown_description(tok, data: DataConfig, source: Source, fmt: PromptFormat) -> str:
    """The record's description as a grounded prompt shows it (cut as in training, scrubbed as
    ``build_prompt`` scrubs it): what the gate quotes when retrieval is sure."""
    text = cut_to_tokens(tok, [source.content], data.context_record_tokens)[0]
    return record_text_for_prompt(text, SpecialTextScrubber(tok, fmt))


def quote_record(tok, data: DataConfig, source: Source, fmt: PromptFormat) -> str:
    """The answer training taught for this record: its description cut as the prompt shows it,
    then its citation."""
    return grounded_answer(shown_description(tok, data, source, fmt), source.uid, "en")
