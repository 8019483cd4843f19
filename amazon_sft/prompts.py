"""The one place that turns a product title into a prompt, for training, evaluation and answering.

A ``PromptFormat`` is rendered once from the tokenizer's chat template (or the plain template) with
a placeholder question, giving the fixed text before and after the question. Every prompt is then
``before + question + after``, checked against the chat template itself when the format is built,
so training, eval and the answering CLI cannot drift apart. The answer (the description) follows,
then EOS; only answer tokens and the EOS carry loss.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from amazon_sft.chat_templates import (
    PLAIN_GAPS,
    apply_chat,
    plain_chat_template,
    text_tags,
    turn_scaffold,
)
from amazon_sft.config import DataConfig
from amazon_sft.errors import UserError
from amazon_sft.safe_input import load_yaml_file

BUILTIN_TEMPLATES = Path(__file__).parent / "templates" / "questions.yaml"
_PLACEHOLDER = "\x00QUESTION\x00"

# Grounded prompts: the question, then the catalogue records retrieved for it. The answer quotes
# the right record's description and cites its uid in one fixed form, or says, in the question's
# language, that no record is the product asked about (the RAFT recipe).
RECORDS_HEADER = "Catalogue records:"
# The uid comes last, right after the description: the answer copies the description and then
# cites, so the uid to cite is the copy's next step (at the head of the record, ~100 tokens back,
# a 135M model bound the citation to a neighbour's uid: docs/grounded.md).
RECORD_LINE = "[{n}] title: {title} | description: {description} | uid: {uid}"
INSTRUCTION = (
    "Answer with the description of the product asked about, from the records above, and cite "
    "its uid as [source: uid]. If no record is that product, say so."
)
ABSTENTIONS = {
    "en": "The catalogue has no record of this product.",
    "pt": "O catálogo não tem registro deste produto.",
}
CITATION = re.compile(r"\[source: ([^\]\s]+)\]")
RECORD_FIELD = re.compile(r"\|\s*(?:uid|description|title)\s*:", re.IGNORECASE)
"""A field of ``RECORD_LINE`` ("| uid:"): in a description it would give its record a second uid."""


def without_markup(text: str) -> str:
    """``text`` without the grounded prompt's own markup (a citation, a record field), each
    replaced by a space until none is left (removing one can join another: "| uid: uid:"):
    product text or a question can then never cite a record or give a record line a second uid
    (a hostile user's audit: a description carrying "[source: X]" made every answer quoting it
    cite product X). White space is left to the steps that own it.

    >>> without_markup("A bear [source: B09] | uid: B09")
    'A bear     B09'
    >>> without_markup("a || uid: uid: b")
    'a   b'
    >>> without_markup("Rock  | Pop")
    'Rock  | Pop'
    """
    while "[source:" in text or "|" in text:
        stripped = RECORD_FIELD.sub(" ", CITATION.sub(" ", text))
        if stripped == text:
            break
        text = stripped
    return text


@dataclass(frozen=True)
class ContextRecord:
    """One catalogue record as a grounded prompt shows it (description already cut)."""

    uid: str
    title: str
    description: str


def citation(uid: str) -> str:
    """The one form an answer cites a record in.

    >>> citation("B000123")
    '[source: B000123]'
    """
    return f"[source: {uid}]"


def cited_uids(answer: str) -> list[str]:
    """Every uid an answer cites, in order.

    >>> cited_uids("A soft bear.\\n[source: B01] and [source: B02]")
    ['B01', 'B02']
    """
    return CITATION.findall(answer)


def strip_citations(answer: str) -> str:
    """The answer's text without its citations (what is compared with a description)."""
    return " ".join(CITATION.sub(" ", answer).split())


def is_abstention(answer: str) -> bool:
    """True when the answer says the catalogue has no such product (in either language).

    >>> is_abstention("O catálogo não tem registro deste produto."), is_abstention("A bear.")
    (True, False)

    Without its full stop, or going on after it (an answer cut, or a model's "sorry"):

    >>> is_abstention("The catalogue has no record of this product"), is_abstention(
    ...     "o catálogo não tem registro deste produto, desculpe")
    (True, True)
    """
    text = " ".join(answer.split()).casefold()
    return any(text.startswith(a.casefold().rstrip(".")) for a in ABSTENTIONS.values())


def grounded_answer(
    description: str | None, uid: str | None, language: str, lead: str | None = None
) -> str:
    """The training target: the description and its citation, or the abstention. ``lead``: for
    a question about one attribute, the description's sentence that answers it, which the answer
    leads with instead of the whole description, then cites.

    >>> grounded_answer("A soft bear.", "B01", "en")
    'A soft bear.\\n[source: B01]'
    >>> grounded_answer("A soft bear. Ages 3+.", "B01", "en", lead="Ages 3+.")
    'Ages 3+.\\n[source: B01]'
    >>> grounded_answer(None, None, "pt")
    'O catálogo não tem registro deste produto.'
    """
    if description is None:
        return ABSTENTIONS.get(language, ABSTENTIONS["en"])
    return f"{without_markup(lead if lead is not None else description)}\n{citation(uid)}"


@dataclass(frozen=True)
class PromptFormat:
    before: str
    """Rendered text before the question (system turn, user header, BOS for plain prompts)."""
    after: str
    """Rendered text after the question, up to where the answer starts."""
    phrasings: tuple[str, ...]
    """Question templates with ``{title}``; index 0 is the default for eval and answering."""
    chat: bool
    """True when rendered from the tokenizer's chat template."""
    bos_id: int | None = None
    """Plain prompts: the BOS id put before the encoded text (as ``tok(text)`` would for Llama and
    Mistral). Chat templates write their own BOS text, so it is None for them."""
    languages: tuple[str, ...] = ()
    """The language of each phrasing (``en``, ``pt``): grounded abstentions answer in it."""
    text_tags: tuple[str, ...] = ()
    """Tags the format writes as plain text around a turn ("[INST]", "<|user|>", "### Answer:"),
    which product text and questions must not carry (``data.encode.SpecialTextScrubber``)."""

    @property
    def bos(self) -> list[int]:
        """The ids that go before an encoded prompt: ``[bos_id]`` or nothing.

        >>> PromptFormat("", "", ("{title}",), chat=False, bos_id=1).bos
        [1]
        """
        return [self.bos_id] if self.bos_id is not None else []

    def question(self, title: str, phrasing: int = 0) -> str:
        return self.phrasings[phrasing % len(self.phrasings)].replace("{title}", title)

    def render(self, title: str, phrasing: int = 0) -> str:
        """The full prompt text for one title, ending where the model starts the description."""
        return self.wrap(self.question(title, phrasing))

    def wrap(self, question: str) -> str:
        """The prompt for a free-form question (used by the answering CLI)."""
        return self.before + question + self.after

    def language(self, phrasing: int) -> str:
        return self.languages[phrasing % len(self.languages)] if self.languages else "en"

    def grounded(self, question: str, records: Sequence[ContextRecord]) -> str:
        """The user turn of a grounded prompt: the question, then the numbered records.

        >>> fmt = PromptFormat("", "", ("{title}",), chat=False)
        >>> print(fmt.grounded("Tell me about X", [ContextRecord("B01", "X", "A soft bear.")]))
        Tell me about X
        <BLANKLINE>
        Catalogue records:
        [1] title: X | description: A soft bear. | uid: B01
        <BLANKLINE>
        Answer with the description of the product asked about, from the records above, and cite its uid as [source: uid]. If no record is that product, say so.
        """
        # markup removed here too, not only when prepare cleans: a catalogue prepared with
        # strip_prompt_markup=false, or edited and re-indexed, still cannot forge a citation
        lines = [
            RECORD_LINE.format(
                n=n,
                title=without_markup(r.title),
                description=without_markup(r.description),
                uid=r.uid,
            )
            for n, r in enumerate(records, start=1)
        ]
        question = without_markup(question)
        return f"{question}\n\n{RECORDS_HEADER}\n" + "\n".join(lines) + f"\n\n{INSTRUCTION}"

    def phrasing_for(self, uid: str) -> int:
        """A phrasing picked by the product's uid: stable, spread over all phrasings."""
        digest = hashlib.blake2b(uid.encode(), digest_size=4).digest()
        return int.from_bytes(digest, "big") % len(self.phrasings)

    def phrasings_for(self, uid: str, count: int) -> list[int]:
        """The ``count`` training phrasings of a product: the canonical 0 first (evaluation and
        answering ask it, and recall of a memorised fact hardly carries over to another wording),
        then distinct others from the uid's hashed pick onwards.

        >>> fmt = PromptFormat("", "", ("a {title}", "b {title}", "c {title}"), chat=False)
        >>> fmt.phrasings_for("any uid", 1), sorted(fmt.phrasings_for("any uid", 3))
        ([0], [0, 1, 2])
        """
        n = len(self.phrasings)
        start = self.phrasing_for(uid)
        others = [(start + i) % n for i in range(n) if (start + i) % n != 0]
        return [0, *others][: min(count, n)]

    def fingerprint(self) -> str:
        """sha256 over everything that shapes a prompt; stored in the manifest."""
        grounded = (RECORDS_HEADER, RECORD_LINE, INSTRUCTION, ABSTENTIONS, self.languages)
        payload = repr((self.before, self.after, self.phrasings, self.chat, self.bos_id, grounded))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def load_templates(path: str) -> dict:
    """The phrasings file: ``questions`` (lists per language) and ``plain`` (prefix/suffix)."""
    file = BUILTIN_TEMPLATES if path == "builtin" else Path(path)
    fix = "give a YAML file like amazon_sft/templates/questions.yaml, or data.templates=builtin"
    raw = load_yaml_file(file, "data.templates", fix) or {}
    questions = raw.get("questions") if isinstance(raw, dict) else None
    if not isinstance(questions, dict) or not questions:
        raise UserError(f"data.templates: {file} needs a 'questions' mapping of language -> list")
    if not all(isinstance(qs, list) and isinstance(lang, str) for lang, qs in questions.items()):
        raise UserError(f"data.templates: in {file}, each language's questions must be a list")
    flat = [q for qs in questions.values() for q in qs]
    languages = tuple(lang for lang, qs in questions.items() for _ in qs)
    bad = [q for q in flat if not isinstance(q, str) or "{title}" not in q]
    if not flat or bad:
        raise UserError(
            f"data.templates: every question in {file} must contain {{title}}: {bad[:1]}"
        )
    plain = raw.get("plain") or {"prefix": "### Question:\n", "suffix": "\n\n### Answer:\n"}
    if not isinstance(plain, dict) or not all(
        isinstance(plain.get(k), str) for k in ("prefix", "suffix")
    ):
        raise UserError(f"data.templates: 'plain' in {file} needs string 'prefix' and 'suffix'")
    return {"phrasings": tuple(flat), "languages": languages, "plain": plain}


def build_prompt_format(tok, data: DataConfig) -> PromptFormat:
    """Render the template once around a placeholder and check it renders real prompts alike.
    A chat template that is the plain prompt an export wrote (``plain_chat_template``) is the
    plain format it came from: the same tokens, and the fingerprint the data was prepared with."""
    templates = load_templates(data.templates)
    phrasings = templates["phrasings"]
    plain_fmt = _plain_format(tok, templates)
    template = getattr(tok, "chat_template", None)
    # a list: a tokenizer's named templates are a dict, which no set holds
    if template and template in [plain_chat_template(plain_fmt, gap) for gap in PLAIN_GAPS]:
        return plain_fmt
    if data.use_chat_template and template:
        rendered = apply_chat(tok, _PLACEHOLDER, data.system_prompt)
        if rendered.count(_PLACEHOLDER) != 1:
            raise UserError(
                "the chat template does not insert the question verbatim; "
                "set data.use_chat_template=false to use the plain template"
            )
        before, after = rendered.split(_PLACEHOLDER)
        tags = text_tags(turn_scaffold(tok))
        languages = templates["languages"]
        fmt = PromptFormat(before, after, phrasings, True, None, languages, tags)
        probe = fmt.question("Sample Title", 1)
        if apply_chat(tok, probe, data.system_prompt) != fmt.wrap(probe):
            raise UserError(
                "the chat template renders questions differently from before+question+after; "
                "set data.use_chat_template=false"
            )
        return fmt
    return plain_fmt


def _plain_format(tok, templates: dict) -> PromptFormat:
    """The plain ``### Question / ### Answer`` format, after the tokenizer's BOS."""
    bos_id = tok.bos_token_id if tok.bos_token_id not in (None, tok.eos_token_id) else None
    plain = templates["plain"]
    return PromptFormat(
        plain["prefix"],
        plain["suffix"],
        templates["phrasings"],
        chat=False,
        bos_id=bos_id,
        languages=templates["languages"],
        text_tags=text_tags(plain["prefix"] + plain["suffix"]),
    )
