"""Hostile and careless inputs, one test (or a parametrised family) per class of issue 13:
numbers that make no sense, code shipped in a run folder, corrupt or truncated files, outputs
replaced non-atomically, unbounded work. The web server's classes are in tests/test_serve.py."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from amazon_sft.config import load_run_config
from amazon_sft.errors import UserError

from .conftest import train_overrides

pytestmark = pytest.mark.hostile
REPO = Path(__file__).resolve().parents[1]


def _cli(*args, timeout=300):
    proc = subprocess.run(
        [sys.executable, "-m", "amazon_sft.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )
    return proc


def _one_line_error(proc, command: str, *needles: str) -> None:
    """Exit 2, one ``amazon-sft X: error:`` line naming what is wrong, no traceback."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [x for x in proc.stderr.splitlines() if x.startswith(f"amazon-sft {command}: error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


# --- class 3: numbers that pass validation but make no sense ---------------------------------


@pytest.mark.parametrize(
    "override",
    [
        "train.lr=.nan",
        "train.lr=.inf",
        "train.max_grad_norm=-.inf",
        "train.min_lr_ratio=.nan",
        "lora.dropout=.nan",
        "data.heldout_fraction=.nan",
        "train.adam_betas=[.nan,0.95]",
        "train.peak_tflops=.inf",
    ],
)
def test_non_finite_numbers_are_refused_by_name(override):
    key = override.split("=")[0]
    with pytest.raises(UserError, match=f"'{key}' must be a finite number"):
        load_run_config("tiny", [override])


def test_a_run_whose_last_step_is_non_finite_does_not_report_success(
    prepared, tiny_model_dir, tmp_path
):
    out = tmp_path / "run"
    extra = ("train.max_steps=2", "train.lr=1e30", "train.warmup_steps=0", "train.max_grad_norm=0")
    cmd = [sys.executable, str(REPO / "amazon_sft" / "train.py"), "--config", "tiny"]
    proc = subprocess.run(
        [*cmd, *train_overrides(prepared, tiny_model_dir, out, *extra)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    _one_line_error(proc, "train", "last step (2)")
    assert not (out / "final").exists()


def test_the_final_save_refuses_non_finite_weights(tmp_path):
    from accelerate import Accelerator

    from amazon_sft.saving import refuse_non_finite

    model = torch.nn.Linear(3, 3)
    refuse_non_finite(Accelerator(cpu=True), model)  # finite: nothing to say
    with torch.no_grad():
        model.weight[1, 2] = float("nan")
    with pytest.raises(UserError, match=r"not finite.*weight"):
        refuse_non_finite(Accelerator(cpu=True), model)


# --- class 6: a run folder must not grant itself the right to run its own code ---------------

EVIL = """
from pathlib import Path
Path({marker!r}).write_text("ran")
from transformers import PreTrainedTokenizerFast as EvilTokenizer
"""


def test_a_downloaded_run_folder_cannot_run_its_own_code(tuned_run, prepared, tmp_path):
    folder = tmp_path / "downloaded"
    shutil.copytree(tuned_run, folder)
    final = folder / "final"
    marker = tmp_path / "marker"
    (final / "tokenization_evil.py").write_text(EVIL.format(marker=str(marker)))
    config = final / "tokenizer_config.json"
    tok_cfg = json.loads(config.read_text())
    tok_cfg["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    tok_cfg.pop("tokenizer_class", None)
    config.write_text(json.dumps(tok_cfg))
    saved = final / "amazon_sft_config.yaml"
    saved.write_text(
        saved.read_text().replace("trust_remote_code: false", "trust_remote_code: true")
    )
    assert "trust_remote_code: true" in saved.read_text()
    args = ("ask", "Tell me about X", "--model", str(folder), "--index", str(prepared))
    proc = _cli(*args, "--max-new-tokens", "4")
    assert not marker.exists(), "the folder's own Python ran"
    assert "files cannot grant it" in proc.stderr
    # the person running the command can still grant it, on the command line
    _cli(*args, "--max-new-tokens", "4", "--trust-remote-code")
    assert marker.exists()
