"""Training on a folder prepare did not finish: one clear error on every rank, before any
barrier (a rank that got past the data check would wait at the next barrier for the others
until the collective timeout: 30 minutes, the trl#4578 failure mode)."""

from __future__ import annotations

import shutil

import pytest
import torch
from accelerate import Accelerator

from amazon_sft.errors import UserError
from amazon_sft.train import main as train_main


def _half_written(prepared, tmp_path):
    """Shards there, manifest not yet (prepare writes it last, then renames the folder)."""
    folder = tmp_path / "half"
    shutil.copytree(prepared, folder)
    (folder / "manifest.json").unlink()
    return folder


def _cut_shard(prepared, tmp_path):
    folder = tmp_path / "cut"
    shutil.copytree(prepared, folder)
    ids = folder / "shard-00000" / "input_ids.npy"
    ids.write_bytes(ids.read_bytes()[: ids.stat().st_size // 2])
    return folder


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p, t: t / "never", "amazon-sft prepare"),
        (lambda p, t: (t / "empty").mkdir() or t / "empty", "amazon-sft prepare"),
        (_half_written, "amazon-sft prepare"),
        (_cut_shard, "prepare"),
    ],
    ids=["missing", "empty", "no-manifest", "cut-shard"],
)
def test_an_unprepared_folder_fails_at_once_before_any_barrier(
    prepared, tmp_path, monkeypatch, make, says
):
    barriers = []
    monkeypatch.setattr(Accelerator, "wait_for_everyone", lambda self: barriers.append("acc"))
    monkeypatch.setattr(torch.distributed, "barrier", lambda *a, **k: barriers.append("dist"))
    folder = make(prepared, tmp_path)
    with pytest.raises(UserError, match=says) as err:
        train_main(["--config", "tiny", f"data.path={folder}", f"out_dir={tmp_path / 'run'}"])
    assert str(folder) in str(err.value) and "\n" not in str(err.value)
    assert barriers == []  # every rank runs the same check first: none is left waiting
    assert not (tmp_path / "run").exists()
