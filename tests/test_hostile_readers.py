"""A hostile user of eval, index and ask against prepare (the forty-eighth session's trial):
a prepare during an eval, ask or serve, an index damaged where its sampled digests do not
look, a hand-edited prepare report, and control characters in a question file's kinds."""

from __future__ import annotations

import gc
import json
import shutil
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from amazon_sft.errors import UserError
from amazon_sft.output_lock import DataReadLock

from .test_hostile import _assert_one_line as _one_line
from .test_hostile import _run_cli

pytestmark = pytest.mark.hostile


@pytest.fixture()
def data(prepared, tmp_path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(prepared, copy)
    return copy


def _first_title(data: Path) -> str:
    return json.loads((data / "catalogue.jsonl").read_text().splitlines()[0])["title"]


def _questions(data: Path, path: Path, kind: str = "title") -> Path:
    row = json.loads((data / "catalogue.jsonl").read_text().splitlines()[0])
    line = {"question": f"tell me about {row['title']}", "uid": row["uid"], "kind": kind}
    path.write_text(json.dumps(line) + "\n")
    return path


def test_eval_is_refused_while_prepare_replaces_its_data(data, tuned_run, tmp_path, capsys):
    """A prepare --overwrite started just before an eval: eval read the old folder's
    questions and report, waited for the index lock, then retrieved from the new catalogue:
    every figure 0, exit 0, a report naming the old data."""
    questions = _questions(data, tmp_path / "q.jsonl")
    out = tmp_path / "eval"
    with DataReadLock(data, shared=False):  # prepare writing there
        code, err = _run_cli(
            capsys, "eval", "--data", str(data), "--model", str(tuned_run),
            "--questions", str(questions), "--out", str(out),
        )  # fmt: skip
    _one_line(code, err, "eval", f"--data {data}", "being prepared again", "wait")
    assert not out.exists()


def test_ask_is_refused_while_prepare_replaces_its_index(data, capsys):
    """One ``ask --sources-only`` of 25 during prepares read the new catalogue at the old
    index's offsets ("catalogue ... is unreadable or corrupt")."""
    with DataReadLock(data, shared=False):
        code, err = _run_cli(capsys, "ask", "anything", "--index", str(data), "--sources-only")
    _one_line(code, err, "ask", f"--index {data}", "being prepared again")


def test_prepare_is_refused_while_an_answering_command_reads_the_folder(data, catalogue, capsys):
    """``serve`` went on answering from a catalogue ``prepare --overwrite`` had replaced, without
    a word, while ``ask`` on the same folder answered from the new one. The index ask, chat and
    serve open holds the folder for reading while the process lives."""
    from amazon_sft.answering.commands import index_for

    before = (data / "manifest.json").read_bytes()
    index = index_for(Namespace(index=str(data), model=None), 0.0)
    args = ("prepare", str(catalogue), "--out", str(data), "--config", "tiny", "--quiet")
    code, err = _run_cli(capsys, *args, "--overwrite")
    _one_line(code, err, "prepare", "being read by a training run, eval, ask, chat or serve")
    assert (data / "manifest.json").read_bytes() == before
    del index  # a long-lived caller drops it (its scorer refers back to it: a cycle)
    gc.collect()
    code, err = _run_cli(capsys, *args, "--overwrite")
    assert code == 0, err[-2000:]


def test_postings_damaged_where_the_digests_do_not_read_are_refused_at_load(data, monkeypatch):
    """At 1.3M products the sampled digests read about 0.1% of a posting file: a same-size edit
    elsewhere (row ids 2147483647) was an IndexError traceback at the first question."""
    from amazon_sft.answering import index as index_module
    from amazon_sft.answering.index_build import build_index

    build_index(data)
    path = data / "index" / "description" / "indices.csc.index.npy"
    rows = np.load(path)
    rows[:] = np.iinfo(np.int32).max  # every word's: the question below reads some
    np.save(path, rows)
    monkeypatch.setattr(index_module, "check_index", lambda folder, catalogue: None)  # missed
    with pytest.raises(UserError, match=r"postings point outside the index.*amazon-sft index"):
        index_module.CatalogueIndex(data).search(_first_title(data), 3)


def test_an_edited_prepare_report_is_not_repeated_in_the_eval_report(data):
    """A hand-edited ``report.json`` put "prepared from /the/real/amazon/trn.json.gz: 1300000
    products" into the report of a generated catalogue's figures."""
    from amazon_sft.evaluation.end_to_end_run import catalogue_said

    assert catalogue_said(data, []).startswith("prepared from ")
    path = data / "report.json"
    made = json.loads(path.read_text())
    path.write_text(json.dumps({**made, "input": "/the/real/amazon/trn.json.gz", "kept": 1300000}))
    assert catalogue_said(data, []) == ""


def test_control_characters_in_a_kind_never_reach_the_report(data, tmp_path):
    """``"kind": "x\\u001b[2J"`` was written raw into report.md's heading (an escape sequence
    that clears a terminal that cats the file)."""
    from amazon_sft.evaluation.question_file import read_questions

    path = _questions(data, tmp_path / "q.jsonl", kind="x\u001b[2J\u0007")
    assert [q.kind for q in read_questions(path)] == ["x[2j"]
    _questions(data, path, kind="\u001b\u0007")
    with pytest.raises(UserError, match="'kind' must be non-empty text"):
        read_questions(path)
