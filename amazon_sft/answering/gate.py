"""Retrieval's gate for grounded answers as one setting: the preset ``--gate`` names, each of
``--abstain-below``, ``--quote-when-sure`` / ``--no-quote-when-sure`` and ``--meaning-weight``
the user gives replacing its part. ask, chat, serve and eval's end-to-end mode read it alike.

The default is the setting whose end-to-end figures docs/results.md reports (``meaning``:
picked on the real rows' dev questions, measured on questions never tuned on), so that a
plain ``amazon-sft ask`` answers as the figures say, not a weaker way nobody measured.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

from amazon_sft.answering.option_checks import check_abstain_below, check_meaning_weight
from amazon_sft.errors import UserError


@dataclass(frozen=True)
class Gate:
    abstain_below: float
    """Abstain, without generating, when the first record's score is under this many times the
    second's (answering/doubt.py); 0: never."""
    quote_when_sure: bool
    """Above that lead, an answer that does not cite the first record becomes that record's
    (answering/sure.py); needs ``abstain_below`` > 0."""
    meaning_weight: float
    """Re-score retrieval's first 50 records by meaning too (answering/meaning.py); 0: words
    only. It changes the scale of the ratio ``abstain_below`` reads."""


GATES = {
    "meaning": Gate(abstain_below=2.0, quote_when_sure=True, meaning_weight=4.0),
    "words": Gate(abstain_below=1.4, quote_when_sure=True, meaning_weight=0.0),
    "off": Gate(abstain_below=0.0, quote_when_sure=False, meaning_weight=0.0),
}
"""``meaning``: words and meaning, sure at 2.0 (bench/static_embedding_fusion.py on the real dev
questions); ``words``: words only, sure at 1.4 (bench/abstain_gate.py; the demo's generated
catalogue, whose descriptions share one template, so meaning cannot tell them apart);
``off``: every grounded question answered by the model alone."""
DEFAULT_GATE = "meaning"

_PARTS = (
    ("--abstain-below", "abstain_below"),
    ("--quote-when-sure", "quote_when_sure"),
    ("--meaning-weight", "meaning_weight"),
)


def add_gate_flags(p) -> None:
    """``--gate`` and the flags that replace one of its parts."""
    p.add_argument(
        "--gate",
        choices=tuple(GATES),
        default=None,
        help=f"retrieval's gate for grounded answers (default {DEFAULT_GATE}: the setting "
        "docs/results.md measures; words: words only, sure at 1.4, for a catalogue whose "
        "descriptions share one template; off: the model alone). The flags below replace one "
        "part of it (answering/gate.py, docs/grounded.md)",
    )
    p.add_argument(
        "--abstain-below",
        type=float,
        default=None,
        metavar="RATIO",
        help="say the catalogue has no such product, without generating, when the first "
        "record's retrieval score is under RATIO times the second's (0: never; 1: the gate's "
        "other rules only; the gate's: 2.0 with meaning, 1.4 words only)",
    )
    p.add_argument(
        "--quote-when-sure",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="when the first record is that far ahead, the answer must cite it: an answer that "
        "declines, cites another record or none becomes that record's (its description as "
        "shown, cited); on in the meaning and words gates (--no-quote-when-sure: the model's "
        "answer is kept)",
    )
    p.add_argument(
        "--meaning-weight",
        type=float,
        default=None,
        metavar="GAMMA",
        help="re-score retrieval's first 50 records by meaning too: (score + 0.2) x exp(GAMMA x "
        "cosine) in a static embedding (wordllama), GAMMA from 0 (words only) to 20 (the "
        "meaning gate's: 4). It changes the scale of the ratio --abstain-below reads "
        "(answering/meaning.py)",
    )


def given(args) -> list[str]:
    """The gate's flags the user gave (``--gate`` first), with their values.

    >>> from types import SimpleNamespace as N
    >>> given(N(gate="off", abstain_below=1.4, quote_when_sure=False, meaning_weight=None))
    ['--gate off', '--abstain-below 1.4', '--no-quote-when-sure']
    """
    out = [f"--gate {args.gate}"] if getattr(args, "gate", None) else []
    for flag, field in _PARTS:
        value = getattr(args, field, None)
        if isinstance(value, bool):
            out.append(flag if value else "--no-quote-when-sure")
        elif value is not None:
            out.append(f"{flag} {value:g}")
    return out


def resolve_gate(args) -> Gate:
    """The gate ``args`` asks for: ``--gate``'s preset (else the default), each part the user
    gave replacing the preset's, checked. A quote the preset asks for is dropped when the
    user's ``--abstain-below 0`` leaves nothing to be sure above; one the user asked for is
    refused then.

    >>> from types import SimpleNamespace as N
    >>> resolve_gate(N(gate=None, abstain_below=None, quote_when_sure=None, meaning_weight=None))
    Gate(abstain_below=2.0, quote_when_sure=True, meaning_weight=4.0)
    >>> resolve_gate(N(gate="words", abstain_below=0.0, quote_when_sure=None, meaning_weight=None))
    Gate(abstain_below=0.0, quote_when_sure=False, meaning_weight=0.0)
    >>> resolve_gate(N(gate="off", abstain_below=None, quote_when_sure=True, meaning_weight=None))
    Traceback (most recent call last):
    amazon_sft.errors.UserError: --quote-when-sure needs --abstain-below RATIO > 0: retrieval is sure above it (the gate off has none)
    """
    preset = GATES[getattr(args, "gate", None) or DEFAULT_GATE]
    gate = replace(
        preset,
        **{
            field: getattr(args, field)
            for _, field in _PARTS
            if getattr(args, field, None) is not None
        },
    )
    abstain_below = check_abstain_below(gate.abstain_below)
    meaning = check_meaning_weight(gate.meaning_weight)
    quote = gate.quote_when_sure
    if quote and not abstain_below:
        if getattr(args, "quote_when_sure", None):
            preset_has_none = getattr(args, "abstain_below", None) is None
            where = f" (the gate {getattr(args, 'gate', None)} has none)" if preset_has_none else ""
            raise UserError(
                "--quote-when-sure needs --abstain-below RATIO > 0: retrieval is sure above it"
                + where
            )
        quote = False
    return Gate(abstain_below, quote, meaning)


def for_mode(gate: Gate, mode: str, args) -> Gate:
    """The gate reads the records of a grounded answer: a closed-book one (``mode``: the one
    the answer would take, given or the model's) answers without it, the default's meaning
    kept for the sources it lists. A flag that asks for a part of the gate (a ratio, a quote,
    ``--gate meaning`` or ``words``) cannot apply then and is refused, naming it; one that asks
    for a part's absence (``--gate off``, ``--abstain-below 0``, ``--no-quote-when-sure``) says
    what a closed-book answer does anyway, so a script that passes it everywhere still runs."""
    if mode != "closed":
        return gate
    absence = ("--gate off", "--abstain-below 0", "--no-quote-when-sure")
    asked = [f for f in given(args) if f not in absence and not f.startswith("--meaning-weight")]
    if asked:
        raise UserError(
            f"{' '.join(asked)}: the gate reads the records of a grounded answer; this one "
            f"would be closed-book: add --grounded, or leave {' '.join(asked)} out"
        )
    return replace(gate, abstain_below=0.0, quote_when_sure=False)


def check_no_quote(args) -> None:
    """``--sources-only`` writes no answer, so none can be the first record's:
    ``--quote-when-sure`` is refused, not silently ignored (``--no-quote-when-sure`` asks for
    what happens anyway)."""
    if getattr(args, "quote_when_sure", None):
        raise UserError(
            "--quote-when-sure replaces an answer with the first record's, and --sources-only "
            "writes no answer: leave one out"
        )
