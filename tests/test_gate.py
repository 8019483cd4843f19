"""Retrieval's gate as one setting (answering/gate.py): a plain ``ask``, ``chat``, ``serve`` and
``eval --questions`` answer through the gate whose figures docs/results.md reports, not an
ungated path nobody measured; ``--gate`` names another, each of its flags replaces one part."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from amazon_sft.answering.gate import DEFAULT_GATE, GATES, Gate, for_mode, given, resolve_gate
from amazon_sft.errors import UserError

pytestmark = pytest.mark.unit


def _args(**given_flags) -> SimpleNamespace:
    flags = {"gate": None, "abstain_below": None, "quote_when_sure": None, "meaning_weight": None}
    return SimpleNamespace(**{**flags, **given_flags})


def test_the_default_is_the_measured_gate_and_each_flag_replaces_one_part():
    """The measured setting (docs/results.md: ``--meaning-weight 4 --abstain-below 2.0
    --quote-when-sure``) needed three flags a new user never passed: ``ask`` without them
    answered ungated, words only. It is the default now; a flag changes its own part only."""
    assert resolve_gate(_args()) == Gate(2.0, True, 4.0) == GATES[DEFAULT_GATE]
    assert resolve_gate(_args(abstain_below=3.0)) == Gate(3.0, True, 4.0)
    assert resolve_gate(_args(meaning_weight=0.0)) == Gate(2.0, True, 0.0)
    assert resolve_gate(_args(quote_when_sure=False)) == Gate(2.0, False, 4.0)
    assert resolve_gate(_args(gate="words")) == Gate(1.4, True, 0.0)
    assert resolve_gate(_args(gate="off")) == Gate(0.0, False, 0.0)
    assert resolve_gate(_args(gate="off", abstain_below=1.4)) == Gate(1.4, False, 0.0)
    # no ratio left to be sure above: the preset's quote goes, one asked for is refused
    assert resolve_gate(_args(abstain_below=0.0)) == Gate(0.0, False, 4.0)
    with pytest.raises(UserError, match="--quote-when-sure needs --abstain-below"):
        resolve_gate(_args(abstain_below=0.0, quote_when_sure=True))
    for bad, named in (({"abstain_below": 0.5}, "under 1"), ({"meaning_weight": -1.0}, "-1")):
        with pytest.raises(UserError, match=named):
            resolve_gate(_args(**bad))
    assert given(_args(gate="words", quote_when_sure=False)) == [
        "--gate words",
        "--no-quote-when-sure",
    ]


def test_a_closed_book_answer_drops_the_default_gate_and_refuses_one_asked_for():
    """A closed-book model's answer has no records to read: the default gate goes quietly (a
    plain ``ask`` on it must not fail), a ratio the user gave is refused naming it."""
    assert for_mode(resolve_gate(_args()), "closed", _args()) == Gate(0.0, False, 4.0)
    assert for_mode(resolve_gate(_args()), "grounded", _args()) == Gate(2.0, True, 4.0)
    asked = _args(abstain_below=1.4)
    with pytest.raises(UserError, match=r"--abstain-below 1.4: the gate reads .* leave --abstain-"):
        for_mode(resolve_gate(asked), "closed", asked)
    off = _args(gate="off")
    assert for_mode(resolve_gate(off), "closed", off) == Gate(0.0, False, 0.0)


def test_a_plain_ask_answers_through_the_measured_gate(prepared, tuned_run, capsys):
    """Through ``cli.main`` as a user types it, no gate flag: the records are re-scored by
    meaning and the gate's verdict is given (``--sources-only``), and a grounded answer is
    gated or quoted as the figures were measured; ``--gate off`` is the model alone. A
    closed-book model is answered without the gate, not refused."""
    from amazon_sft.cli import main

    def ask_json(*args: str) -> dict:
        assert main(["ask", *args, "--json"]) == 0, args
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    title = json.loads((prepared / "catalogue.jsonl").read_text().splitlines()[0])["title"]
    question = f"Tell me about {title}"
    only = ask_json(question, "--index", str(prepared), "--sources-only")
    assert "doubtful" in only and all("cosine" in s for s in only["sources"])
    model = ("--model", str(tuned_run), "--index", str(prepared), "--max-new-tokens", "4")
    grounded = ask_json(question, *model, "--grounded")
    # the tiny random model cites nothing: the gate abstains or quotes the first record
    assert grounded["doubtful"] or grounded["quoted"], grounded
    alone = ask_json(question, *model, "--grounded", "--gate", "off")
    assert not alone["doubtful"] and not alone["quoted"]
    closed = ask_json(question, *model)  # tuned_run taught closed-book answers
    assert closed["mode"] == "closed" and not closed["doubtful"] and not closed["quoted"]


def test_refusals_name_what_the_user_gave():
    """A review found two messages that named the wrong cause: "--gate off" advised to a user
    who gave it, and the words gate said to have no ratio when the user's 0 removed it."""
    closed = _args(gate="off", abstain_below=2.0)
    with pytest.raises(UserError, match="or leave --abstain-below 2 out"):
        for_mode(resolve_gate(closed), "closed", closed)
    zeroed = _args(gate="words", abstain_below=0.0, quote_when_sure=True)
    with pytest.raises(UserError) as err:
        resolve_gate(zeroed)
    assert "has none" not in str(err.value) and "--abstain-below RATIO > 0" in str(err.value)


def test_serve_keeps_the_gate_for_grounded_requests_to_a_closed_book_model(
    prepared, tuned_run, capsys
):
    """serve answers each request in the mode it asks: with a closed-book model's default the
    gate was dropped at start, so a request asking ``"mode": "grounded"`` went ungated, and
    ``serve --gate meaning`` was refused. The gate stays (it reads grounded answers only); ask
    and chat, one mode a run, still drop it for a closed-book answer."""
    from amazon_sft.answering.commands import _checked_session, add_commands

    parser = __import__("argparse").ArgumentParser()
    add_commands(parser.add_subparsers())
    model = ["--model", str(tuned_run), "--index", str(prepared)]
    served = _checked_session(parser.parse_args(["serve", *model]), serving=True)()
    assert (served.abstain_below, served.quote_when_sure) == (2.0, True)
    answer = served(f"Tell me about {_first_title(prepared)}", mode="grounded", max_new_tokens=4)
    assert answer.doubtful or answer.quoted  # gated, as ask --grounded is
    asked = _checked_session(parser.parse_args(["ask", "x", *model]))()
    assert (asked.abstain_below, asked.quote_when_sure) == (0.0, False)
    gated = parser.parse_args(["serve", *model, "--gate", "meaning"])
    assert _checked_session(gated, serving=True)().abstain_below == 2.0  # not refused


def test_sources_only_closed_book_reports_no_gate(prepared, capsys):
    from amazon_sft.cli import main

    args = ["ask", _first_title(prepared), "--index", str(prepared), "--sources-only", "--json"]
    assert main([*args, "--closed-book"]) == 0
    assert "doubtful" not in json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_a_closed_book_answer_refuses_what_asks_for_the_gate_and_takes_what_asks_for_none(
    prepared, capsys
):
    """A flag asking for a part of the gate cannot apply to a closed-book answer (refused,
    naming it with its value, and the remedy works: leaving it out); one asking for the part's
    absence (``--gate off``, ``--abstain-below 0``, ``--no-quote-when-sure``) says what the answer
    does anyway and is taken, as ``--meaning-weight`` (it ranks the sources). ``--sources-only``
    writes no answer: ``--quote-when-sure`` is refused before the closed-book check, whose
    remedy (``--grounded``) would only meet that refusal next (a review's finding)."""
    from amazon_sft.cli import main

    for flags in ({"quote_when_sure": True}, {"gate": "words"}, {"abstain_below": 1.4}):
        asked = _args(**flags)
        with pytest.raises(UserError, match="would be closed-book: add --grounded, or leave"):
            for_mode(resolve_gate(asked), "closed", asked)
    for flags in ({"quote_when_sure": False}, {"abstain_below": 0.0}, {"gate": "off"}):
        absent = _args(**flags, meaning_weight=2.0)
        assert for_mode(resolve_gate(absent), "closed", absent) == Gate(0.0, False, 2.0)
    only = ["ask", _first_title(prepared), "--index", str(prepared), "--sources-only"]
    assert main([*only, "--closed-book", "--quote-when-sure"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--sources-only writes no answer" in err and len(err.splitlines()) == 1, err
    assert main([*only, "--no-quote-when-sure"]) == 0


def _first_title(prepared) -> str:
    return json.loads((prepared / "catalogue.jsonl").read_text().splitlines()[0])["title"]
