"""Validation loss: packed rows held back from training (``train.validation_rows``) and scored
every ``train.validation_every`` steps and after the last one."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amazon_sft.config import load_run_config
from amazon_sft.data.loader import PackedLoader
from amazon_sft.errors import UserError
from amazon_sft.validation import RowView, held_back_rows, split_rows

from .conftest import train_here, train_overrides

REPO = Path(__file__).resolve().parents[1]


class _NumberedRows:
    """Shards whose row ``i`` holds token ``i``: a batch says which rows it read."""

    max_seq_len, pad_id, manifest, path = 4, 0, None, Path("numbered")

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def row(self, index: int):
        return np.full(4, index + 1), np.ones(4, np.uint8), np.array([4])


def _rows_read(view, micro: int, world: int, epochs: int = 1) -> list[int]:
    read = []
    for rank in range(world):
        loader = PackedLoader(view, micro, rank, world, seed=3)
        for _ in range(epochs):
            for batch in loader:
                read += [int(r[0]) - 1 for r in batch.input_ids.tolist() if r[0] != 0]
    return read


@pytest.mark.unit
def test_the_rows_held_back_are_fixed_by_the_data_alone():
    held = held_back_rows(1000, 20)
    assert held.tolist() == sorted(set(held.tolist())) and len(held) == 20
    assert held.tolist() == held_back_rows(1000, 20).tolist()  # no seed, world or batch in it
    assert held_back_rows(1000, 0).tolist() == []
    assert not np.array_equal(held, np.arange(20))  # drawn over the whole data, not its head


@pytest.mark.unit
@pytest.mark.parametrize(("micro", "world"), [(1, 1), (2, 2), (3, 2)])
def test_training_never_reads_a_held_back_row(micro, world):
    shards = _NumberedRows(50)
    train, valid = split_rows(shards, 7)
    held = set(held_back_rows(50, 7).tolist())
    assert len(train) == 43 and len(valid) == 7
    trained = _rows_read(train, micro, world, epochs=2)
    assert set(trained) == set(range(50)) - held  # every other row, two passes
    assert sorted(_rows_read(valid, micro, world)) == sorted(held)  # each once, padding aside


@pytest.mark.unit
def test_nothing_held_back_is_the_data_itself():
    shards = _NumberedRows(5)
    train, valid = split_rows(shards, 0)
    assert train is shards and valid is None


@pytest.mark.unit
def test_holding_back_every_row_is_refused_naming_the_key():
    with pytest.raises(UserError, match=r"train\.validation_rows=5 .* all 5 prepared rows"):
        split_rows(_NumberedRows(5), 5)


@pytest.mark.unit
def test_a_row_view_renumbers_from_zero():
    view = RowView(_NumberedRows(10), np.array([2, 7]))
    assert len(view) == 2 and int(view.row(1)[0][0]) == 8
    assert view.max_seq_len == 4 and view.pad_id == 0


@pytest.mark.unit
@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["train.validation_rows=-1"], "train.validation_rows must be >= 0"),
        (["train.validation_every=-2"], "train.validation_every must be >= 0"),
        (["train.validation_every=10"], "train.validation_every=10 scores no rows"),
    ],
)
def test_validation_settings_are_checked(overrides, says):
    with pytest.raises(UserError, match=says):
        load_run_config("tiny", overrides)


def _train(*args, check=True):
    cmd = [sys.executable, str(REPO / "amazon_sft" / "train.py"), "--config", "tiny", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.e2e
def test_validation_loss_is_logged_and_leaves_training_as_it_was(
    prepared, tiny_model_dir, tmp_path
):
    shape = ["train.global_batch_size=4", "train.micro_batch_size=2", "train.max_steps=4"]
    held = "train.validation_rows=5"
    every = tmp_path / "every"
    proc = _train(
        *train_overrides(prepared, tiny_model_dir, every, *shape, held), "train.validation_every=2"
    )
    rows = _rows(every)
    assert [r["step"] for r in rows if "val_loss" in r] == [2, 4]
    assert all(np.isfinite(r["val_loss"]) and r["val_tokens"] > 0 for r in rows if "val_loss" in r)
    assert "validation loss" in proc.stderr and "5 rows held back" in proc.stderr
    # other rows held back on resume would make training read other rows: refused, one line
    again = _train(
        *train_overrides(prepared, tiny_model_dir, every, *shape, "train.validation_rows=6"),
        "resume=auto",
        check=False,
    )
    assert again.returncode != 0 and "Traceback" not in again.stderr
    assert "train.validation_rows" in again.stderr
    last = tmp_path / "last"  # validation_every 0: after the last step only
    _train(*train_overrides(prepared, tiny_model_dir, last, *shape, held))
    only = _rows(last)
    assert [r["step"] for r in only if "val_loss" in r] == [4]
    # scoring in between changes no weight, no RNG stream and no row read
    assert [r["loss"] for r in only] == [r["loss"] for r in rows]
    assert only[-1]["val_loss"] == pytest.approx(rows[-1]["val_loss"], rel=1e-6)
    summary = json.loads((last / "final" / "run_summary.json").read_text())
    assert summary["val_loss"] == pytest.approx(only[-1]["val_loss"])


@pytest.mark.e2e
def test_holding_back_all_the_rows_is_one_line(prepared, tiny_model_dir, tmp_path):
    from amazon_sft.data.manifest import read_manifest

    rows = read_manifest(prepared).rows
    proc = _train(
        *train_overrides(
            prepared, tiny_model_dir, tmp_path / "run", f"train.validation_rows={rows}"
        ),
        check=False,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"train.validation_rows={rows}" in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.unit
def test_a_batch_too_big_for_the_rows_left_names_the_rows_held_back():
    """A review: the refusal said "the 1 rows of DATA" of a folder of 428 rows, 427 held back."""
    from amazon_sft.train import hold_back

    cfg = load_run_config("tiny", ["train.validation_rows=427", "train.global_batch_size=16"])
    with pytest.raises(UserError, match=r"the 1 rows .* after train\.validation_rows=427"):
        hold_back(cfg, _NumberedRows(428))


@pytest.mark.e2e
def test_a_run_finished_by_a_resume_that_ran_no_step_is_scored_too(
    prepared, tiny_model_dir, tmp_path
):
    """A review: resumed with train.max_steps lowered to the step it had reached, the run ran
    no step in that launch, and final/ was saved never scored (val_loss null)."""
    import shutil

    out = tmp_path / "run"
    shape = ["train.global_batch_size=4", "train.micro_batch_size=2", "train.validation_rows=5"]
    base = train_overrides(prepared, tiny_model_dir, out, *shape, "checkpoint.every_steps=2")
    train_here(*base, "train.max_steps=4")
    shutil.rmtree(out / "final")
    shutil.rmtree(out / "checkpoints" / "step-00000004")
    proc = _train(*base, "train.max_steps=2", "resume=auto")
    assert "resumed from" in proc.stderr
    summary = json.loads((out / "final" / "run_summary.json").read_text())
    assert summary["steps"] == 2 and np.isfinite(summary["val_loss"])
    assert "validation loss at step 2" in proc.stderr
    again = _train(*base, "train.max_steps=2", "resume=auto")  # a requeue of the finished run
    assert "already finished at step 2" in again.stderr
    assert "validation loss at step" not in again.stderr  # not scored again (a review)


@pytest.mark.unit
def test_the_seen_split_says_when_a_run_held_rows_back():
    """A review: a seen-probe product taught only in held-back rows was scored as taught."""
    from amazon_sft.evaluation.oracle_types import OracleModel
    from amazon_sft.evaluation.report import seen_note

    models = {"tuned": OracleModel("runs/x", validation_rows=21)}
    note = seen_note("seen", True, models, data_rows=428)
    assert "runs/x held back 21 of the 428 prepared rows" in note
    assert "held back" not in seen_note("seen", True, {"base": OracleModel("b")}, data_rows=428)
