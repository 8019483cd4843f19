"""The manifest's counts come from prepare's report by name (a readability review: a count the
report renamed was written 0, and a folder that taught grounded examples read as closed-book)."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from amazon_sft.data.manifest import COUNTS, Manifest, read_manifest

pytestmark = pytest.mark.unit

NOT_COUNTS = {"files", "file_digests", "format_version", "split_version", "amazon_sft_version"}
NOT_COUNTS |= {"integrity"}


def test_every_count_of_the_manifest_is_taken_from_the_report():
    defaulted = {
        f.name
        for f in dataclasses.fields(Manifest)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    sizes = {"rows", "tokens", "answer_tokens", "fill_ratio"}  # required: no manifest lacks them
    assert defaulted - NOT_COUNTS == set(COUNTS) - sizes


def test_a_prepared_manifest_holds_the_reports_counts(prepared):
    report = json.loads((prepared / "report.json").read_text())
    manifest = read_manifest(prepared)
    assert {k: getattr(manifest, k) for k in COUNTS} == {k: report[k] for k in COUNTS}
    assert manifest.train_docs > 0 and manifest.kept > 0


def test_a_report_without_a_count_fails_prepare_rather_than_write_it_0(
    monkeypatch, catalogue, tmp_path
):
    from amazon_sft import prepare as P
    from amazon_sft.config import load_run_config

    real = P.build_report

    def renamed(*args, **kwargs):
        report = real(*args, **kwargs)
        report["grounded_examples"] = report.pop("grounded_docs")
        return report

    monkeypatch.setattr(P, "build_report", renamed)
    with pytest.raises(KeyError, match="grounded_docs"):
        P.prepare(catalogue, tmp_path / "data", load_run_config("tiny"), progress=False)
    assert not (tmp_path / "data").exists()  # nothing half-written left as whole


def test_a_folder_still_being_prepared_is_said_so(tmp_path):
    """An outside trial: ``train data.path=DIR`` while ``prepare --out DIR`` ran said "manifest
    not found: run amazon-sft prepare ... first", advice that prepare itself then refuses. The
    folder's writer is named, and the reader told to wait."""
    from amazon_sft.errors import UserError
    from amazon_sft.output_lock import OutputLock

    target = tmp_path / "prepared"
    with OutputLock(target, "amazon-sft prepare"), pytest.raises(UserError) as caught:
        read_manifest(target)
    said = str(caught.value)
    assert "being written" in said and f"pid {os.getpid()}" in said and "wait" in said, said
    with pytest.raises(UserError, match="not found: run `amazon-sft prepare"):
        read_manifest(target)  # the writer gone: as before
