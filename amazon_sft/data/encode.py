"""Turn batches of cleaned (uid, title, content) into token ids: prompt ids + answer ids + EOS.

Only the tokenizer's exact ids are ever used; the speed comes from not encoding what is known:

- Prompts: the plain template's text has no special tokens, so the SentencePiece library may
  encode it when it matches the fast tokenizer; a chat template's fixed head (system turn, user
  header) is encoded once and its ids reused when that splice equals whole-string encoding.
  Each shortcut is checked on the first documents of the run and dropped if any id differs.
- Answers: encoded on their own, which is how the model meets them at generation time (it writes
  answer tokens after the prompt's last token). A description far longer than the token budget is
  cut at a space well past the budget before encoding: tokenizers do not merge across whitespace,
  so the first ``budget`` ids are unchanged, and the cut is only trusted when it still yields more
  than ``budget + margin`` ids (otherwise the whole text is encoded). "Far longer" is measured
  on the run's own tokenizer: the most characters per token among the sample documents, with
  head room, so a tokenizer of ~1.8 characters a token cuts at ~600 characters, not 1,400.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from amazon_sft.prompts import PromptFormat
from amazon_sft.tokenizer import (
    Encoder,
    answer_encoder,
    choose_pad_id,
    hf_encoder,
    special_token_texts,
)

CHARS_PER_TOKEN_CUT = 8  # real descriptions average ~4.5 characters per token
CUT_MARGIN_TOKENS = 16
CUT_HEADROOM = 1.25  # above the sample's densest text: the re-encode stays rare
CUT_MIN_SAMPLE_TOKENS = 32  # shorter sample texts say little about a long text's density


@dataclass
class EncodedBatch:
    tokens: np.ndarray  # int32, the documents one after another
    doc_lens: list[int]
    prompt_lens: list[int]
    answer_lens: list[int]  # after truncation, EOS excluded


class SpecialTextScrubber:
    """Removes special-token texts ("<|im_end|>", "</s>") that product text must not inject, and
    the tags ``fmt`` writes as plain text ("[/INST]"), which would end the user's turn early."""

    def __init__(self, tok, fmt: PromptFormat | None = None) -> None:
        specials = special_token_texts(tok) + list(fmt.text_tags if fmt is not None else ())
        self._pattern = re.compile("|".join(map(re.escape, specials))) if specials else None
        self.removed = 0

    def __call__(self, text: str) -> str:
        if self._pattern is None or self._pattern.search(text) is None:
            return text
        self.removed += 1
        return " ".join(self._pattern.sub(" ", text).split())


class PromptEncoder:
    """Prompt texts -> ids, by the fastest path that gives the fast tokenizer's exact ids."""

    def __init__(
        self, tok, fmt: PromptFormat, sample_prompts: list[str], sp: Encoder | None
    ) -> None:
        self.fmt, self.hf = fmt, hf_encoder(tok)
        self._bos = fmt.bos
        self._head = self.hf([fmt.before])[0] if fmt.before else []
        whole = self._whole(sample_prompts)
        has_specials = any(t in fmt.before + fmt.after for t in special_token_texts(tok))
        self.path = "whole prompt (fast tokenizer)"
        self._encode = self._whole
        if sp is not None and not has_specials and self._with(sp, sample_prompts) == whole:
            self.path, self._sp = "sentencepiece", sp
            self._encode = lambda texts: self._with(self._sp, texts)
        elif fmt.chat and self._spliced(sample_prompts) == whole:
            self.path, self._encode = "cached head + rest", self._spliced

    def __call__(self, prompts: list[str]) -> list[list[int]]:
        return self._encode(prompts)

    def whole(self, prompts: list[str]) -> list[list[int]]:
        """Whole-prompt encoding by the fast tokenizer: always exact, used for prompts whose
        shape the fast paths were not checked on (grounded prompts)."""
        return self._whole(prompts)

    def _whole(self, prompts: list[str]) -> list[list[int]]:
        return [self._bos + ids for ids in self.hf(prompts)]

    def _with(self, encode: Encoder, prompts: list[str]) -> list[list[int]]:
        return [self._bos + ids for ids in encode(prompts)]

    def _spliced(self, prompts: list[str]) -> list[list[int]]:
        n = len(self.fmt.before)
        return [self._bos + self._head + ids for ids in self.hf([p[n:] for p in prompts])]


WORD_BACKOFF_TOKENS = 16
"""Tokens a cut answer may give back to end at a whole word."""
_SPACE_MARKS = (
    "\u0120",
    "\u2581",
    "\u010a",
    " ",
    "\n",
)  # byte-level BPE space, SentencePiece, newline


def _starts_word(token: str | None) -> bool:
    """Whether a vocabulary token begins a word: it carries a space marker, or its first
    character is ASCII punctuation (cutting before it leaves the word whole). A byte-level
    token drawn as another non-letter ("\u00b6", "\u00a4": a UTF-8 continuation byte) goes on
    a character: cutting before it would split the character (an outside review).

    >>> [_starts_word(t) for t in ("\u0120quiet", "\u2581quiet", "ing", ".", "<|im_end|>")]
    [True, True, False, True, True]
    >>> _starts_word("\u00b6")
    False
    >>> [_starts_word(t) for t in ("<0x80>", "<0xE2>", "<0x0A>", "<0x41>")]
    [False, False, True, False]
    """
    if not token:
        return True
    if byte := _BYTE_TOKEN.fullmatch(token):  # SentencePiece's byte fallback: "<0xE2>"
        value = int(byte.group(1), 16)  # a non-ASCII byte goes on a character (a review: cut
        return value < 0x80 and not chr(value).isalnum()  # there, answers ended "time.\ufffd")
    first = token[0]
    return token.startswith(_SPACE_MARKS) or (first.isascii() and not first.isalnum())


_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def word_starts(tok) -> list[bool]:
    """Per token id of ``tok``: does it begin a word (``_starts_word``)."""
    return [_starts_word(t) for t in tok.convert_ids_to_tokens(list(range(len(tok))))]


def cut_at_word(ids: list[int], budget: int, starts: list[bool]) -> list[int]:
    """The first ``budget`` ids, or fewer: where the id after them goes on a word, the cut backs
    off to before that word (at most ``WORD_BACKOFF_TOKENS``; a longer "word", a URL, is cut
    where it is). A cut word would teach the model to stop mid-word. ``starts``:
    ``word_starts``.

    >>> starts = [True, False, True, False]  # ids 0 and 2 begin a word
    >>> cut_at_word([0, 1, 2, 3, 2], 4, starts), cut_at_word([0, 1, 2, 3], 3, starts)
    ([0, 1, 2, 3], [0, 1])
    """
    if budget >= len(ids) or starts[ids[budget]]:
        return ids[:budget]
    for i in range(budget - 1, max(0, budget - WORD_BACKOFF_TOKENS), -1):
        if starts[ids[i]]:
            return ids[:i]
    return ids[:budget]


def closed_book_answer(
    prompt_len: int, answer: list[int], max_answer_tokens: int, max_seq_len: int, starts: list[bool]
) -> list[int]:
    """A closed-book answer as prepare teaches it (the EOS goes after): cut at a word to what the
    row leaves after the prompt, at most ``max_answer_tokens``; eval scores its reference the
    same way (it cut mid-word, a place the model was taught never to stop at).

    >>> starts = [True, False, True, False]  # ids 0 and 2 begin a word
    >>> closed_book_answer(5, [0, 1, 2, 3], 3, 100, starts)  # 3 would cut the word "2 3"
    [0, 1]
    >>> closed_book_answer(98, [0, 1, 2, 3], 3, 100, starts)  # the row leaves 1
    [0]

    A prompt that leaves the row no room is not taught (prepare drops it): its reference is cut
    at ``max_answer_tokens`` alone (a review: an empty one, or the whole description).

    >>> closed_book_answer(99, [0, 1, 2, 3], 3, 100, starts), closed_book_answer(150, [0, 1, 2, 3], 3, 100, starts)
    ([0, 1], [0, 1])
    """
    budget = min(max_answer_tokens, max_seq_len - prompt_len - 1)
    if budget < 1:
        budget = max_answer_tokens
    return cut_at_word(answer, budget, starts) if len(answer) > budget else answer


class DocumentEncoder:
    def __init__(
        self,
        tok,
        fmt: PromptFormat,
        max_seq_len: int,
        max_answer_tokens: int,
        backend: str,
        sample: list[tuple[str, str, str]],
        phrasings_per_doc: int = 1,
    ) -> None:
        self.fmt, self.max_seq_len, self.max_answer_tokens = fmt, max_seq_len, max_answer_tokens
        self.phrasings_per_doc = phrasings_per_doc
        self.eos = tok.eos_token_id
        # shown in the prepare report: the end token is the chat template's (tokenizer.py)
        self.end_token, self.pad_token = (
            tok.eos_token,
            tok.convert_ids_to_tokens(choose_pad_id(tok)),
        )
        self.encode_answers, self.backend = answer_encoder(tok, backend, [c for _, _, c in sample])
        sp = self.encode_answers if self.backend == "sentencepiece" else None
        self.encode_prompts = PromptEncoder(tok, fmt, self._prompts(sample), sp)
        self.cut_chars = self._cut_chars([c for _, _, c in sample])
        self.dropped: Counter = Counter()
        self.untaught: set[str] = set()
        """uids whose every closed-book prompt was too long for a row: not taught closed-book."""
        self.taught_grounded: set[str] = set()
        """uids of at least one grounded example kept whose answer is their own record (not an
        abstention): the products taught grounded (``encode_pairs``'s ``answered``)."""
        self.truncated = 0
        self.precut = 0
        self.word_start = word_starts(tok)
        """Per token id: does it begin a word (a space marker, or not a letter or digit)."""

    def cut_at_word(self, ids: list[int], budget: int) -> list[int]:
        """``cut_at_word`` with this tokenizer's word starts."""
        return cut_at_word(ids, budget, self.word_start)

    def _prompts(self, batch: list[tuple[str, str, str]]) -> list[str]:
        """Every product's prompts, ``phrasings_per_doc`` consecutive ones each."""
        k = self.phrasings_per_doc
        return [
            self.fmt.render(title, p)
            for uid, title, _ in batch
            for p in self.fmt.phrasings_for(uid, k)
        ]

    def _cut_chars(self, contents: list[str]) -> int:
        """Characters kept of a long description before encoding: the token budget times the
        sample's highest characters per token (with head room), never above the fixed bound.
        Only speed depends on it: a cut that leaves too few ids is re-encoded whole."""
        keep = self.max_answer_tokens + CUT_MARGIN_TOKENS
        ratios = [
            len(text) / len(ids)
            for text, ids in zip(contents, self.encode_answers(contents))
            if len(ids) >= CUT_MIN_SAMPLE_TOKENS
        ]
        per_token = min(max(ratios) * CUT_HEADROOM, CHARS_PER_TOKEN_CUT) if ratios else None
        return int(keep * (per_token or CHARS_PER_TOKEN_CUT))

    def _answers(self, contents: list[str]) -> list[list[int]]:
        limit = self.cut_chars
        cut = {}
        texts = list(contents)
        for i, text in enumerate(contents):
            if len(text) > limit:
                space = text.rfind(" ", 0, limit)
                if space > 0:
                    texts[i] = text[:space]
                    cut[i] = True
        ids = self.encode_answers(texts)
        redo = [i for i in cut if len(ids[i]) <= self.max_answer_tokens + CUT_MARGIN_TOKENS]
        if redo:  # unusually dense text: the cut might have touched the kept ids
            for i, full in zip(redo, self.encode_answers([contents[i] for i in redo])):
                ids[i] = full
        self.precut += len(cut) - len(redo)
        return ids

    def encode(self, batch: list[tuple[str, str, str]]) -> EncodedBatch:
        prompt_ids = self.encode_prompts(self._prompts(batch))
        answer_ids = self._answers([content for _, _, content in batch])
        pieces, doc_lens, prompt_lens, answer_lens = [], [], [], []
        eos = [self.eos]
        per_product = min(self.phrasings_per_doc, len(self.fmt.phrasings))  # as _prompts made them
        kept = Counter()
        for j, p in enumerate(prompt_ids):
            a = answer_ids[j // per_product]
            budget = min(self.max_answer_tokens, self.max_seq_len - len(p) - 1)
            if budget < 1:
                self.dropped["prompt_too_long"] += 1
                continue
            kept[j // per_product] += 1
            if len(a) > budget:  # the description is cut; the EOS kept after
                a = closed_book_answer(
                    len(p), a, self.max_answer_tokens, self.max_seq_len, self.word_start
                )
                self.truncated += 1
            pieces += (p, a, eos)
            doc_lens.append(len(p) + len(a) + 1)
            prompt_lens.append(len(p))
            answer_lens.append(len(a))
        self.untaught.update(uid for i, (uid, _, _) in enumerate(batch) if not kept[i])
        return _batch(pieces, doc_lens, prompt_lens, answer_lens)

    def encode_pairs(
        self,
        prompts: list[str],
        answers: list[str],
        answered: list[str | None] | None = None,
        groups: list[int] | None = None,
    ) -> tuple[EncodedBatch, list[bool]]:
        """(prompt, answer) texts -> (documents, which pairs were kept), never cut: a grounded
        answer ends with its citation, so one that does not fit ``max_seq_len`` is dropped and
        counted. ``answered``: each pair's product uid when the answer is its record (None for
        an abstention); the kept ones go to ``taught_grounded``. ``groups``: pairs sharing a
        number are kept or dropped together (an abstention and its twin: the abstention kept
        alone, as its longer twin was dropped, taught the question's wording to predict it, an
        outside audit), the others counted ``grounded_twin_dropped``."""
        encoded = list(zip(self.encode_prompts.whole(prompts), self.encode_answers(answers)))
        fits = [len(p) + len(a) + 1 <= self.max_seq_len for p, a in encoded]
        groups = groups or list(range(len(encoded)))
        whole = {g: True for g in groups}
        for g, fit in zip(groups, fits):
            whole[g] = whole[g] and fit
        kept = [whole[g] for g in groups]
        pieces, doc_lens, prompt_lens, answer_lens = [], [], [], []
        owners = answered or [None] * len(prompts)
        for (p, a), uid, fit, keep in zip(encoded, owners, fits, kept):
            if not keep:
                self.dropped["grounded_too_long" if not fit else "grounded_twin_dropped"] += 1
                continue
            if uid is not None:
                self.taught_grounded.add(uid)
            pieces += (p, a, [self.eos])
            doc_lens.append(len(p) + len(a) + 1)
            prompt_lens.append(len(p))
            answer_lens.append(len(a))
        return _batch(pieces, doc_lens, prompt_lens, answer_lens), kept


def _batch(pieces, doc_lens, prompt_lens, answer_lens) -> EncodedBatch:
    flat = itertools.chain.from_iterable(pieces)  # C-level walk, no per-token Python frame
    tokens = np.fromiter(flat, dtype=np.int32, count=sum(doc_lens))
    return EncodedBatch(tokens, doc_lens, prompt_lens, answer_lens)


_RELAX = {
    "line_too_long": "raise data.clean.max_line_bytes",
    "content_too_short": "lower data.clean.min_content_chars",
    "title_too_short": "lower data.clean.min_title_chars",
    "content_equals_title": "set data.clean.drop_content_equal_title=false",
}
"""The setting that lets the most common skip reason's rows through (a review: every reason
was told to relax ``min_content_chars``, lines too long too)."""


def nothing_left_remedy(skipped: Counter, max_seq_len: int) -> str:
    """What to change when nothing is left: the setting behind the most common skip reason.

    >>> nothing_left_remedy(Counter(prompt_too_long=260), 16)
    'raise data.max_seq_len (16 tokens holds no prompt)'
    >>> nothing_left_remedy(Counter(line_too_long=3, content_empty=1), 1024)
    'check the file, or raise data.clean.max_line_bytes'
    >>> nothing_left_remedy(Counter(content_empty=3), 1024)[:14]
    'check the file'
    """
    top = skipped.most_common(1)[0][0] if skipped else None
    if top == "prompt_too_long":
        return f"raise data.max_seq_len ({max_seq_len} tokens holds no prompt)"
    if top in _RELAX:
        return f"check the file, or {_RELAX[top]}"
    return "check the file, or relax data.clean / data.heldout_fraction"
