"""A record retrieval returned for a question, and what the answer made of it: the one type
``ask``, ``chat``, ``serve`` and end-to-end eval read an answer's sources through."""

from __future__ import annotations

from dataclasses import dataclass

from amazon_sft.answering.index import Source


@dataclass(frozen=True)
class AnswerSource:
    """A record retrieval returned for the question, and what the answer made of it."""

    record: Source
    answer_rougeL: float | None = None
    """ROUGE-L of the answer (citations stripped) against the record's description."""
    cited: bool | None = None
    """Grounded mode: the answer cites it; None closed-book (the model was given no records)."""

    @property
    def uid(self) -> str:
        return self.record.uid

    def shown(self) -> dict:
        """As ``ask --json``, the API and the page show it: the record's fields, then these.

        >>> AnswerSource(Source("u", "T", "c", 2.0), 0.5, True).shown()
        {'uid': 'u', 'title': 'T', 'content': 'c', 'score': 2.0, 'answer_rougeL': 0.5, 'cited': True}
        """
        made = {"answer_rougeL": self.answer_rougeL, "cited": self.cited}
        return self.record.shown() | {k: v for k, v in made.items() if v is not None}
