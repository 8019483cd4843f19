"""A checkpoint whose ``trainer_state.json`` was edited and its checksums written again (a
hostile user's trial, 2026-12-06): ``"step": -5`` was resumed, and trained steps -4, -3, ...;
a ``step-2`` folder holding step 1's state was resumed as step 2's. Each is now unusable, said
in one line, and resume goes on from the checkpoint before it."""

import json
import shutil

import pytest

from .conftest import train_overrides
from .test_hostile import _cli
from .test_resume_edges import two_steps  # noqa: F401 - the fixture

SAVED = {"step": 2, "bad_in_row": 0, "tokens_seen": 90, "train_seconds": 1.5}
LOADER = {"epoch": 0, "cursor": 2, "seed": 0}


@pytest.mark.parametrize(
    "forged, said",
    [
        ({"step": -5}, "step -5 is not a count"),
        ({"step": 1}, "holds step 1, in a folder named step-00000002"),
        ({"step": "2"}, "step '2'"),
        ({"step": True}, "step True"),
        ({"tokens_seen": -1}, "tokens_seen -1"),
        ({"train_seconds": float("nan")}, "train_seconds nan"),
        ({"train_seconds": -1.0}, "train_seconds -1.0"),
        ({"loader": []}, "loader []"),
        ({"extra": 1}, "'extra' is not a field"),
    ],
)
def test_a_trainer_state_no_save_wrote_is_a_corrupt_checkpoint(tmp_path, forged, said):
    from amazon_sft.checkpoint_checksums import STATE, CorruptCheckpoint
    from amazon_sft.trainer_state import read_trainer_state

    step = tmp_path / "step-00000002"
    step.mkdir()
    (step / STATE).write_text(json.dumps({**SAVED, "loader": LOADER}))
    assert read_trainer_state(step).step == 2
    (step / STATE).write_text(json.dumps({**SAVED, "loader": LOADER, **forged}))
    with pytest.raises(CorruptCheckpoint, match=said.replace("[", r"\[").replace("]", r"\]")):
        read_trainer_state(step)


@pytest.mark.e2e
def test_a_forged_step_is_unusable_and_resume_goes_on_from_the_one_before(
    two_steps,  # noqa: F811
    prepared,
    tiny_model_dir,
    tmp_path,
):
    from amazon_sft.checkpoint_checksums import STATE, write_checksums

    out = tmp_path / "run"
    shutil.copytree(two_steps, out, symlinks=True)
    shutil.rmtree(out / "final")  # a run stopped after its second save
    step = out / "checkpoints" / "step-00000002"
    state = json.loads((step / STATE).read_text())
    (step / STATE).write_text(json.dumps({**state, "step": -5}))
    write_checksums(step)  # the forger's: the list agrees with the edit
    base = ("train", "--config", "tiny", *train_overrides(prepared, tiny_model_dir, out))
    again = _cli(*base, "train.max_steps=3", "checkpoint.every_steps=1", "resume=auto")
    assert again.returncode == 0, again.stderr[-2000:]
    unusable = [line for line in again.stderr.splitlines() if "is unusable" in line]
    assert len(unusable) == 1 and "step -5 is not a count" in unusable[0], again.stderr[-2000:]
    assert "step-00000001 at step 1" in again.stderr


def test_a_rank_without_random_states_is_warned_not_resumed_as_exact(
    two_steps,  # noqa: F811
    prepared,
    tiny_model_dir,
    tmp_path,
):
    """A resume on more processes than the save had: accelerate skips the missing rank's random
    states at INFO, and the README's "bit for bit" resume was not, unsaid."""
    from amazon_sft.checkpoint_checksums import write_checksums

    out = tmp_path / "run"
    shutil.copytree(two_steps, out, symlinks=True)
    shutil.rmtree(out / "final")
    step = out / "checkpoints" / "step-00000002"
    (step / "random_states_0.pkl").unlink()  # as rank 2 of a 2-process save would find it
    write_checksums(step)
    base = ("train", "--config", "tiny", *train_overrides(prepared, tiny_model_dir, out))
    again = _cli(*base, "train.max_steps=3", "checkpoint.every_steps=1", "resume=auto")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "holds no random states for rank 0" in again.stderr, again.stderr[-2000:]
