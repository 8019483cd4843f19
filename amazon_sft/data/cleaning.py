"""Clean one (title, content) pair; every step is switchable and counted.

The steps, in order: HTML entities unescaped (once), then until the text no longer changes:
stray tags replaced by a space, the "--This text refers to ... edition." note removed, the
tokenizer's special-token text removed (prepare's scrub), control characters and invisible
marks (soft hyphens, zero-width spaces) removed and whitespace collapsed, the grounded prompt's
markup ("[source: X]", "| uid:") removed. Repeated, because each step can rebuild what an
earlier one removed ("[source:<b></b> X]" is a citation once the tag and the doubled space go). Then the row is dropped when its content is (near)
empty, equal to its title, a repeat of an earlier (title, content) pair, or under a uid a kept
row has.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections import Counter
from collections.abc import Callable

from amazon_sft.config import CleanConfig
from amazon_sft.data.reading import note_first_line
from amazon_sft.prompts import without_markup

# A tag: a name, then attributes after whitespace *or a slash* ("<svg/onload=...>" is a tag to a
# browser), or a self-closing slash; or a comment. No length limit: neither branch can run past
# the next "<", so a text of unclosed "<a ..." or "<!--" is still scanned in linear time.
_TAG = re.compile(r"<(?:/?[A-Za-z][A-Za-z0-9]*(?:[\s/][^<>]*)?|!--[^<]*?--)>")
# Amazon's note has lost its spaces in the dump ("thePaperbackedition"), so match loosely; a note
# cut short by a truncated description ("--This text refers to an out of...") runs to the end; the
# commonest ends "...unavailable edition of this title." (its tail was left in 102 of 1,000 rows)
_EDITION = re.compile(
    r"\s*-*\s*This text refers to\b(?:[^.]{0,120}?edition(?:\s*of\s*this\s*title)?\.?|.{0,120}$)",
    re.IGNORECASE | re.DOTALL,
)

_NEEDS_SPACING = re.compile(r"\s\s|[^\S ]|^\s|\s$")
# Control characters that are not whitespace (NUL, bell, escape, DEL, C1): removed by the
# whitespace step, so a terminal escape or a NUL never reaches catalogue.jsonl or a prompt.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")
INVISIBLE = re.compile("[\u00ad\u200b\u2060\ufeff]")
"""Marks of format a web page's text carries inside words (soft hyphens, zero-width spaces, word
joiners, byte-order marks): retrieval's words split at them ("Cloi\u00adster" is "cloi" and
"ster"), so the catalogue, a retrieved record and the question (question_text) drop them. The
zero-width (non-)joiners stay: they join an emoji sequence or shape a Persian word."""


MAX_PASSES = 8
"""Passes of the text steps before a text that keeps changing is given up (emptied: no real
text needs more than two)."""


def settled(step: Callable[[str], str], text: str) -> str | None:
    """``step`` applied to ``text`` until it no longer changes it (a removal can join what is
    left into something to remove again); None when it still changes after ``MAX_PASSES``.

    >>> settled(lambda t: t.replace("<<>>", "<>"), "<<<<>>>>"), settled(lambda t: t + "x", "")
    ('<>', None)
    """
    for _ in range(MAX_PASSES):
        again = step(text)
        if again == text:
            return text
        text = again
    return None


def clean_text(
    text: str,
    cfg: CleanConfig,
    modified: Counter,
    field: str,
    scrub: Callable[[str], str] | None = None,
) -> str:
    """Apply the text steps to one field, counting each change as ``<step>_<field>`` (once per
    field). ``scrub``: prepare's removal of the tokenizer's special-token text.

    >>> c = Counter()
    >>> clean_text("Mog&#8217;s <b>best</b>  book--This text refers to thePaperbackedition.",
    ...            CleanConfig(), c, "content")
    'Mog’s best book'
    >>> clean_text("Toy [source:<b></b> B01] ok", CleanConfig(), c, "content")
    'Toy ok'
    """
    if cfg.unescape_html and "&" in text:
        unescaped = html.unescape(text)
        if unescaped != text:
            modified[f"html_unescaped_{field}"] += 1
            text = unescaped
    changed: set[str] = set()
    # still changing after every pass: nothing trustworthy is left
    text = settled(lambda t: _one_pass(t, cfg, changed, scrub), text) or ""
    for step in changed:
        modified[f"{step}_{field}"] += 1
    return text


def _one_pass(text: str, cfg: CleanConfig, changed: set[str], scrub) -> str:
    """The text steps after unescaping, once; the names of those that changed it go to
    ``changed``."""
    if cfg.strip_tags and "<" in text:
        stripped = _TAG.sub(" ", text)
        if stripped != text:
            changed.add("tags_stripped")
            text = stripped
    if cfg.strip_edition_boilerplate and "text refers to" in text:
        stripped = _EDITION.sub("", text)
        if stripped != text:
            changed.add("edition_note_stripped")
            text = stripped
    if scrub is not None:
        text = scrub(text)
    if cfg.normalise_whitespace and _CONTROL.search(text):
        text = _CONTROL.sub("", text)
        changed.add("control_characters_removed")
    if cfg.normalise_whitespace and INVISIBLE.search(text):
        text = INVISIBLE.sub("", text)
        changed.add("invisible_marks_removed")
    if cfg.normalise_whitespace and _NEEDS_SPACING.search(text):  # most texts are already clean
        text = " ".join(text.split())
    if cfg.strip_prompt_markup:
        stripped = without_markup(text)
        if stripped != text:
            changed.add("prompt_markup_stripped")
            text = " ".join(stripped.split()) if cfg.normalise_whitespace else stripped
    return text


def _key(text: str) -> str:
    return " ".join(text.casefold().split())


class Cleaner:
    """Cleans rows one by one and remembers which (title, content) pairs it has kept."""

    def __init__(self, cfg: CleanConfig, scrub: Callable[[str], str] | None = None) -> None:
        self.cfg = cfg
        self.scrub = scrub
        self._uids: set[bytes] = set()  # a citation names one record: a uid's first row is kept
        self.modified: Counter = Counter()
        self.dropped: Counter = Counter()
        self._seen: set[bytes] = set()  # 8-byte digests: ~70 B per kept row, not the text
        self.first_lines: dict[str, list[int]] = {}
        """Reason -> the first line numbers dropped for it (the report's column; it was empty
        for cleaning's reasons: an outside trial)."""

    def _drop(self, reason: str, line_no: int | None) -> None:
        self.dropped[reason] += 1
        if line_no is not None:
            note_first_line(self.first_lines, reason, line_no)

    def __call__(
        self, title: str, content: str, uid: str | None = None, line_no: int | None = None
    ) -> tuple[str, str] | None:
        """The cleaned pair, or None after counting why the row was dropped (and keeping its
        ``line_no`` among the reason's first). A row under a ``uid`` a kept row has is dropped
        (``uid_repeated``) after the duplicate check, and neither its pair nor its uid is
        remembered: only kept rows are."""
        cfg = self.cfg
        title = clean_text(title, cfg, self.modified, "title", self.scrub)
        content = clean_text(content, cfg, self.modified, "content", self.scrub)
        if len(title) < cfg.min_title_chars:
            return self._drop("title_too_short" if title else "title_empty", line_no)
        if not content:
            return self._drop("content_empty", line_no)
        if len(content) < cfg.min_content_chars:
            return self._drop("content_too_short", line_no)
        near_title_length = len(content) <= 2 * len(title) + 8  # skips the compare for real texts
        if cfg.drop_content_equal_title and near_title_length and _key(content) == _key(title):
            return self._drop("content_equals_title", line_no)
        digest = hashlib.blake2b(f"{title}\x00{content}".encode(), digest_size=8).digest()
        if cfg.drop_duplicates and digest in self._seen:
            return self._drop("duplicate", line_no)
        uid_key = None if uid is None else hashlib.blake2b(uid.encode(), digest_size=8).digest()
        if uid_key is not None and uid_key in self._uids:  # another product under a kept uid
            return self._drop("uid_repeated", line_no)  # (or a title repeated without one)
        if cfg.drop_duplicates:
            self._seen.add(digest)
        if uid_key is not None:
            self._uids.add(uid_key)
        return title, content
