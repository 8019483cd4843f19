"""The checks of the answering options that ask, chat, serve, eval's end-to-end mode and the
demo share: each refuses a value that cannot work with a one-line error naming the option and
what to give instead."""

from __future__ import annotations

from amazon_sft.errors import UserError

MAX_MEANING_WEIGHT = 20.0
"""A cosine is at most 1: beyond exp(20) the words' score no longer counts."""


def check_meaning_weight(value: float) -> float:
    if not 0 <= value <= MAX_MEANING_WEIGHT:
        raise UserError(
            f"--meaning-weight must be between 0 and {MAX_MEANING_WEIGHT:g}, got {value}"
        )
    return value


def check_abstain_below(value: float) -> float:
    """0 (no gate) or a finite ratio of at least 1: the first record scores at least the
    second, so a ratio under 1 never doubts and the gate would call every question sure."""
    if not value >= 0 or value == float("inf"):
        raise UserError(f"--abstain-below must be a finite number >= 0, got {value}")
    if 0 < value < 1:
        raise UserError(
            f"--abstain-below {value:g} is under 1, and the first record always scores at least "
            "the second, so it would never doubt: give 0 (no gate), 1 (the gate's other rules "
            "only) or a ratio such as 2.0"
        )
    return value


def check_counts(k: int | None, max_new_tokens: int | None = None) -> None:
    """``--k`` (records in the prompt) and ``--max-new-tokens`` are counts of at least 1; the
    refusal names the one that is wrong."""
    for flag, value in (("--k", k), ("--max-new-tokens", max_new_tokens)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")


def check_question_length(question: str) -> None:
    """A question longer than ``question_text.MAX_QUESTION_CHARS`` (spaces collapsed) is refused, not cut."""
    from amazon_sft.answering.question_text import MAX_QUESTION_CHARS

    chars = len(" ".join(question.split()))
    if chars > MAX_QUESTION_CHARS:
        raise UserError(
            f"the question is {chars} characters; at most {MAX_QUESTION_CHARS}: ask it shorter"
        )


def check_questions(questions: list[str]) -> None:
    """Each of ``ask``'s questions, before a model loads or any is answered: not empty (spaces
    do not count), not over ``question_text.MAX_QUESTION_CHARS``; the refusal names it by its position."""
    from amazon_sft.answering.question_text import normalise_question

    for n, question in enumerate(questions, 1):
        try:
            check_question_length(question)
            normalise_question(question)  # refuses an empty one
        except UserError as err:
            raise for_question(err, n, len(questions)) from None


def for_question(err: UserError, n: int, total: int) -> UserError:
    """``err`` naming its question by position among ``total`` ("the question is empty" ->
    "question 2 of 3 is empty"), as it is when there is one question.

    >>> str(for_question(UserError("the question is empty: ask"), 2, 3))
    'question 2 of 3 is empty: ask'
    """
    text, which = str(err), f"question {n} of {total}"
    if total == 1:
        return err
    if text.startswith("the question"):
        return UserError(which + text.removeprefix("the question"))
    return UserError(f"{which}: {text}")
