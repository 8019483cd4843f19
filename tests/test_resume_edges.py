"""Resuming where there is nothing to resume, or into another model (an ML engineer's trial,
2026-12-01): a SLURM requeue of a finished run rewrote its final/ (losing its final loss), a
smaller ``train.max_steps`` was taken, and a change of LoRA made every checkpoint "unusable"
with advice to start over."""

from pathlib import Path

import pytest

from .conftest import train_overrides
from .test_hostile import _cli, _metrics, _one_line_error

pytestmark = pytest.mark.e2e


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_finished_run_resumed_again_keeps_its_final(prepared, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    base = ("train", "--config", "tiny", *train_overrides(prepared, tiny_model_dir, out))
    first = _cli(*base, "train.max_steps=3", "resume=auto")
    assert first.returncode == 0, first.stderr[-2000:]
    before = _files(out / "final")
    again = _cli(*base, "train.max_steps=3", "resume=auto")  # a requeue after the end
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already finished at step 3" in again.stderr
    assert _files(out / "final") == before  # its final loss and card too
    back = _cli(*base, "train.max_steps=2", "resume=auto")
    _one_line_error(back, "train", "train.max_steps=2", "step 3")
    assert _files(out / "final") == before and [r["step"] for r in _metrics(out)] == [1, 2, 3]


def test_resume_into_lora_is_refused_with_its_diff_not_as_unusable_checkpoints(
    prepared, tiny_model_dir, tmp_path
):
    out = tmp_path / "run"
    base = ("train", "--config", "tiny", *train_overrides(prepared, tiny_model_dir, out))
    first = _cli(*base, "train.max_steps=2", "checkpoint.every_steps=1", "checkpoint.keep_last=2")
    assert first.returncode == 0, first.stderr[-2000:]
    again = _cli(*base, "train.max_steps=3", "resume=auto", "lora.enabled=true")
    _one_line_error(again, "train", "another run", "lora.enabled: False -> True")
    assert "unusable" not in again.stderr and "overwrite=true" not in again.stderr
