"""The end-to-end report's one typed reader: a file that is not such a report is one line
naming the file and what it lacks, never a KeyError in the demo or the GPU check."""

import json

import pytest

from amazon_sft.errors import UserError
from amazon_sft.evaluation.end_to_end_types import (
    EndToEndReport,
    Figure,
    GroupFigures,
    ModelRun,
    OwnRight,
    read_end_to_end_report,
)

pytestmark = pytest.mark.unit


def _report() -> EndToEndReport:
    def group(v: float) -> GroupFigures:
        return GroupFigures(4, {"right_record_cited": Figure(v, None, 1.0, of=3)})

    return EndToEndReport(
        "prepared", "q.jsonl", 4, [7], None, None, 64, 1, 2.0, True, 4.0, 0,
        models={"model": ModelRun("tiny", "runs/tiny", 3, 96)},
        groups={"model": {"all": group(0.5), "kind typo": group(1.0)}},
        own_right={"model": OwnRight(1, 3)},
    )  # fmt: skip


def test_a_report_reads_back_as_written(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(_report().to_json()))
    assert read_end_to_end_report(path) == _report()
    assert json.loads(path.read_text())["groups"]["model"]["all"]["n"] == 4  # the layout users read


def test_a_report_from_before_record_tokens_were_recorded_reads(tmp_path):
    """A review: reports written before the models' ``record_tokens`` were refused."""
    raw = _report().to_json()
    del raw["models"]["model"]["record_tokens"]
    path = tmp_path / "report.json"
    path.write_text(json.dumps(raw))
    assert read_end_to_end_report(path).models["model"].record_tokens is None


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda r: {"splits": {}, "models": {}, "data": "d"}, "oracle-context report?"),
        (lambda r: [r], "oracle-context report?"),
        (lambda r: {k: v for k, v in r.items() if k != "groups"}, 'no "groups"'),
        (lambda r: r | {"models": []}, '"models" is not an object'),
        (lambda r: r | {"asked": "many"}, "invalid literal"),
    ],
)
def test_a_file_that_is_not_an_end_to_end_report_is_one_line(tmp_path, change, needle):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(change(_report().to_json())))
    with pytest.raises(UserError) as e:
        read_end_to_end_report(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message and needle in message, message
    assert "eval --questions" in message


def test_a_missing_or_broken_file_is_one_line(tmp_path):
    with pytest.raises(UserError, match="cannot read it"):
        read_end_to_end_report(tmp_path / "report.json")
    (tmp_path / "report.json").write_text("{")
    with pytest.raises(UserError, match="is not the report of amazon-sft eval --questions"):
        read_end_to_end_report(tmp_path / "report.json")


@pytest.mark.parametrize(
    "change, said",
    [
        ({}, ["a score ratio of 2", "`--meaning-weight 4`", "is replaced by it"]),
        (
            {"abstain_below": 0.0, "quote_when_sure": False, "meaning_weight": 0.0},
            ["no retrieval gate", "words alone", "as the model wrote them"],
        ),
    ],
)
def test_the_markdown_report_says_its_gate_whatever_it_is(change, said):
    """An outside trial: with ``--gate off`` the report's gate lines just vanished, so the same
    headings ("right record cited") carried another protocol unsaid. One line names the
    protocol in every report: retrieval, the gate and whose answer is scored."""
    import dataclasses

    from amazon_sft.evaluation.end_to_end_report import render_markdown

    report = dataclasses.replace(_report(), **change)
    if not report.quote_when_sure:
        report = dataclasses.replace(report, own_right=None)
    rows = [{"doubtful": {"model": False}, "quoted": {"model": False}}] * 4
    md = render_markdown(report, rows, n_examples=0)
    protocol = [line for line in md.splitlines() if line.startswith("Protocol: end to end")]
    assert len(protocol) == 1, md
    for words in said:
        assert words in protocol[0], (words, protocol[0])


def test_the_gate_line_counts_each_rule_apart_and_the_header_counts_every_source():
    """An outside audit: "abstains when the first record's score is under 2.0 times the
    second's: model 4 of 4" counted abstentions the title rules made (ratio 7.35); and the
    header's "the questions are about the AmazonTitles rows (2 questions)" left out the
    questions that name no source."""
    from pathlib import Path
    from types import SimpleNamespace

    from amazon_sft.evaluation.end_to_end_report import render_markdown
    from amazon_sft.evaluation.end_to_end_run import catalogue_said

    rules = ["ratio", "ratio", "numbers", None]
    rows = [
        {
            "doubtful": {"model": r is not None},
            "doubt_rule": {"model": r},
            "quoted": {"model": False},
        }
        for r in rules
    ]
    md = render_markdown(_report(), rows, n_examples=0)
    gate = next(line for line in md.splitlines() if line.startswith("Abstains without"))
    assert "model 3 of 4 questions (score ratio 2, another number 1)" in gate, gate
    said = catalogue_said(
        Path("/nowhere"),
        [SimpleNamespace(source=s) for s in ("real", "real", "unlabelled", "unlabelled")],
    )
    assert "the AmazonTitles rows (2 questions)" in said and "2 questions name no source" in said, (
        said
    )
    # every rule of the gate has its words (a review: "none of 1, nothing 1")
    from amazon_sft.answering.doubt import RULES
    from amazon_sft.evaluation.end_to_end_report import RULE_WORDS

    assert set(RULE_WORDS) == set(RULES)


def test_a_run_that_held_rows_back_is_said_beside_its_model(tmp_path):
    """An outside review: the oracle report says a run held rows back for its validation loss
    (a product taught only in them counts as seen, untrained); the end-to-end report did not
    (the 7-8B configs hold back 256 rows). Said, and read back from report.json."""
    import dataclasses

    from amazon_sft.evaluation.end_to_end_report import render_markdown

    held = ModelRun("tiny", "runs/tiny", 3, 96, validation_rows=256)
    report = dataclasses.replace(_report(), models={"model": held})
    rows = [{"doubtful": {"model": False}, "quoted": {"model": False}}] * 4
    md = render_markdown(report, rows, n_examples=0)
    assert "its run held back 256 prepared rows for its validation loss" in md
    assert "held back" not in render_markdown(_report(), rows, n_examples=0)
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report.to_json()))
    assert read_end_to_end_report(path).models["model"].validation_rows == 256
