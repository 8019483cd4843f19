"""The data config's two sub-configs (``data.clean``, ``data.question_mix``), apart so that
config.py stays one screenful a section; amazon_sft.config re-exports both."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from amazon_sft.errors import UserError


@dataclass
class CleanConfig:
    unescape_html: bool = True
    """Turn HTML entities (``&amp;``, ``&#8217;``) into characters in titles and content."""
    strip_tags: bool = True
    """Replace stray HTML tags (``<br>``, ``<b>``) with a space."""
    normalise_whitespace: bool = True
    """Collapse runs of whitespace to one space and trim the ends; remove control characters
    that are not whitespace (NUL, bell, escape, DEL) and the invisible marks inside words (soft
    hyphens, zero-width spaces), which split a word for retrieval."""
    strip_edition_boilerplate: bool = True
    """Remove the "--This text refers to ... edition." note Amazon appends to book texts."""
    strip_prompt_markup: bool = True
    """Remove text shaped like the grounded prompt's markup, citations ("[source: B00...]") and
    record fields ("| uid: B00..."): a record carrying them would have answers cite another
    product."""
    min_content_chars: int = 20
    """Drop rows whose cleaned content is shorter than this (empty and "TUtu"-like rows)."""
    min_title_chars: int = 2
    """Drop rows whose cleaned title is shorter than this."""
    drop_content_equal_title: bool = True
    """Drop rows whose content just repeats the title (it teaches nothing)."""
    drop_duplicates: bool = True
    """Drop repeated (title, content) pairs after cleaning."""
    max_line_bytes: int = 1_000_000
    """Skip input lines longer than this many bytes (counted as ``line_too_long``)."""

    def __post_init__(self) -> None:
        for key in ("min_content_chars", "min_title_chars", "max_line_bytes"):
            if getattr(self, key) < 0:
                raise UserError(f"data.clean.{key} must be >= 0, got {getattr(self, key)}")


@dataclass
class QuestionMix:
    """Shares of grounded training questions per kind (amazon_sft/data/question_kinds.py), drawn
    per product by a stable hash of its uid and kept over each batch of 256 products (a kind a
    record cannot make goes to another that can); >= 0 each, summing to 1. Every kind but ``title``
    retrieves its records for the question as typed, so retrieval misses teach abstention."""

    title: float = 1.0
    """The template phrasings around the exact title (EN/PT), right record always shown."""
    fragment: float = 0.0
    """A run of consecutive title words ("tutu neon")."""
    reorder: float = 0.0
    """The title words with one dropped and the rest shuffled."""
    typo: float = 0.0
    """The title with one or two words misspelt (character edits)."""
    portuguese: float = 0.0
    """Portuguese phrasings around the English title; abstentions answer in Portuguese."""
    descriptive: float = 0.0
    """Description words that are not in the title ("the one about a cat who has kittens")."""
    attribute: float = 0.0
    """One fact of the description ("who wrote ...?"); the answer leads with its sentence."""

    def __post_init__(self) -> None:
        shares = dataclasses.asdict(self)
        for key, value in shares.items():
            if not isinstance(value, (int, float)) or value < 0:
                raise UserError(f"data.question_mix.{key} must be a number >= 0, got {value!r}")
        if abs(sum(shares.values()) - 1.0) > 1e-6:
            raise UserError(
                f"data.question_mix: the shares must sum to 1, got {sum(shares.values()):.4g} "
                f"({', '.join(f'{k}={v}' for k, v in shares.items() if v)})"
            )
