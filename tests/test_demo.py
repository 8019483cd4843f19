"""The demo pipeline on the tiny model: the same code path as `make demo`, in seconds."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_demo_runs_the_whole_story_on_the_tiny_model(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "amazon_sft.cli",
            "demo",
            "--config",
            "tiny",
            "--out",
            str(out),
            "--rows",
            "400",
            "--steps",
            "4",
            "--n",
            "4",
            "--max-new-tokens",
            "8",
            "--max-seq-len",
            "1024",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for name in (
        "prepared/manifest.json",
        "run/final/adapter_model.safetensors",
        "eval/report.md",
        "eval/report.png",
        "answers.json",
        "demo.log",
    ):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "prepared" / "manifest.json").read_text())
    assert manifest["grounded_docs"] > 0 and manifest["closed_book_products"] > 0
    answers = json.loads((out / "answers.json").read_text())["questions"]
    assert len(answers) == 4 and all(a["sources"] for a in answers)
    assert all(set(a) >= {"before_closed", "before_grounded", "after_grounded"} for a in answers)
    report = json.loads((out / "eval" / "report.json").read_text())
    assert report["mode"] == "both" and "heldout absent" in report["splits"]
    assert "== Summary" in proc.stdout and "Report:" in proc.stdout
