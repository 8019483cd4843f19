"""What a run folder promises, read at the unit level (a mutation audit found each unchecked):
the final save refuses a save that is empty, incomplete or differs from the trained weights;
the loss read back from ``metrics.jsonl`` is its last row for the step, and only a finite one;
a requeue keeps ``final/`` only when it holds this very step, whole; a folder holding a
finished run is never started over, nor another run resumed into it; and a resume passes over
a checkpoint any rank cannot load, but keeps one that only ran out of memory."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from amazon_sft.errors import UserError

pytestmark = pytest.mark.unit


# --- saving: the final save's read-back, the logged loss, a finished run's final/ -------------


def _saved(folder: Path, tensors: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def test_a_save_that_differs_from_the_trained_weights_is_refused(tmp_path):
    """The read-back is what catches ZeRO-3's empty local shards (TRL #4416) and a save of
    other weights: each must be an error, not a final/ that loads as trained."""
    from amazon_sft.saving import verify_saved

    trained = {"w": torch.ones(2, 3), "lm_head.weight": torch.ones(4, 2)}
    tied = {"lm_head.weight"}  # saved once, as the input embedding it is
    verify_saved(_saved(tmp_path / "same", {"w": torch.ones(2, 3)}), trained, tied)
    with pytest.raises(UserError, match="differs from the trained weights at w"):
        verify_saved(_saved(tmp_path / "other", {"w": torch.zeros(2, 3)}), trained, tied)
    with pytest.raises(UserError, match="empty tensors"):
        verify_saved(_saved(tmp_path / "shard", {"w": torch.ones(0)}), trained, tied)
    with pytest.raises(UserError, match="is missing b"):
        verify_saved(_saved(tmp_path / "cut", {"w": torch.ones(2, 3)}), {"b": torch.ones(1)}, tied)


def test_a_save_without_the_output_layer_of_a_model_that_does_not_tie_it_is_refused(tmp_path):
    """Llama-2 and Mistral keep an ``lm_head`` of their own: a save that left it out is not the
    trained model (it would load with a fresh random head), whatever its name says. Only a
    head the model ties to its input embedding is saved once and may be absent."""
    from amazon_sft.saving import verify_saved

    trained = {"w": torch.ones(2, 3), "lm_head.weight": torch.ones(4, 2)}
    with pytest.raises(UserError, match=r"is missing lm_head\.weight"):
        verify_saved(_saved(tmp_path / "untied", {"w": torch.ones(2, 3)}), trained, set())


def test_the_logged_loss_is_the_last_finite_one_of_its_step(tmp_path):
    """A run finalised without a step in this launch takes its final loss from
    ``metrics.jsonl``: the step's last row (a row written again after it), and none at all
    rather than a NaN or an infinity, which would make the summary unreadable."""
    from amazon_sft.saving import logged_loss

    metrics = tmp_path / "metrics.jsonl"
    rows = [{"step": 2, "loss": 2.0}, {"step": 2, "loss": 1.5, "val_loss": 1.7}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert logged_loss(metrics, 2) == 1.5 and logged_loss(metrics, 2, "val_loss") == 1.7
    for bad in ("NaN", "Infinity", "-Infinity"):
        metrics.write_text(f'{{"step": 3, "loss": {bad}, "val_loss": {bad}}}\n')
        assert logged_loss(metrics, 3) is None and logged_loss(metrics, 3, "val_loss") is None


def test_a_requeue_keeps_final_only_when_it_holds_this_very_step(tmp_path):
    """``final/`` of a later step (the run resumed from an older checkpoint and stopped there)
    is not this run's result: it is saved again, not kept as finished."""
    from amazon_sft.checkpoint_checksums import FINAL_UNLISTED, write_checksums
    from amazon_sft.run_files import RunSummary, write_run_summary
    from amazon_sft.saving import finished_before

    final = _saved(tmp_path / "final", {"w": torch.ones(2)})
    write_run_summary(final, RunSummary(steps=6, final_loss=1.25, tokens_seen=60))
    write_checksums(final, skip=FINAL_UNLISTED)
    assert finished_before(tmp_path, RunSummary(steps=6, final_loss=None, tokens_seen=60))
    assert not finished_before(tmp_path, RunSummary(steps=2, final_loss=None, tokens_seen=20))
    assert not finished_before(tmp_path, RunSummary(steps=8, final_loss=None, tokens_seen=80))


def test_a_card_says_citations_only_for_a_run_taught_grounded_answers():
    """The card of a closed-book run (``data.grounded_fraction`` 0, the default) told users it
    answers with ``[source: uid]``, which it was never taught."""
    from amazon_sft.config import load_run_config
    from amazon_sft.run_files import RunSummary
    from amazon_sft.saving import model_card

    closed = model_card(
        load_run_config("tiny", ["data.grounded_fraction=0"]), RunSummary(1, 2.0, 9)
    )
    assert "the answer is the product's description" in closed and "[source" not in closed
    grounded = load_run_config("tiny", ["data.grounded_fraction=0.5"])
    assert "`[source: uid]`" in model_card(grounded, RunSummary(1, 2.0, 9))


# --- ownership: a folder holding a finished run ------------------------------------------------


def _finished_run(root: Path, *, checkpoint: bool) -> Path:
    """A run folder as a finished run leaves it, its checkpoints deleted unless ``checkpoint``
    (freeing disk is what users do)."""
    from amazon_sft.ownership import COMPLETE, RUN_MARKER

    run = root / "run"
    (run / "final").mkdir(parents=True)
    (run / RUN_MARKER).write_text("{}\n")
    (run / "config.yaml").write_text("seed: 0\n")
    if checkpoint:
        step = run / "checkpoints" / "step-00000002"
        step.mkdir(parents=True)
        (step / COMPLETE).write_text("")
        (step / "trainer_state.json").write_text("{}")
    return run


def test_a_folder_holding_only_a_finished_final_is_never_started_over(tmp_path):
    """Its checkpoints and log deleted, ``final/`` is all that is left of the run: a new run
    with ``resume=none`` would swap its own final/ over it."""
    from amazon_sft.ownership import check_run_dir

    run = _finished_run(tmp_path, checkpoint=False)
    with pytest.raises(UserError, match=r"already holds a run \(final\)"):
        check_run_dir(str(run), "none", False)
    check_run_dir(str(run), "none", True)  # overwrite=true moves it aside: allowed


def test_another_runs_checkpoint_is_refused_into_a_folder_holding_only_a_final(tmp_path):
    """No checkpoint left, but a saved model: resuming another run's checkpoint there would
    replace this run's final/ with the other run's continuation."""
    from amazon_sft.ownership import check_run_dir

    run = _finished_run(tmp_path, checkpoint=False)
    other = _finished_run(tmp_path / "a", checkpoint=True) / "checkpoints" / "step-00000002"
    with pytest.raises(UserError, match="another run's checkpoint"):
        check_run_dir(str(run), str(other), False)


def test_a_checkpoint_named_as_the_docs_write_it_is_the_runs_own(tmp_path, monkeypatch):
    """``resume=step-N`` and ``resume=checkpoints/step-N`` name the run's own checkpoints,
    whatever the working folder: not another run's, refused as going into a folder that holds
    a run."""
    from amazon_sft.ownership import check_run_dir, inside_run

    run = _finished_run(tmp_path, checkpoint=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for given in ("step-2", "checkpoints/step-00000002"):
        assert inside_run(Path(given), run), given
        check_run_dir(str(run), given, False)


def test_resume_auto_goes_on_from_the_newest_complete_checkpoint(tmp_path):
    """A step folder without ``COMPLETE`` was cut mid-save (or is being copied in): resuming from
    it loads half a checkpoint. The newest complete one is tried first, then the ones before."""
    from amazon_sft.checkpointing import resume_candidates
    from amazon_sft.ownership import complete_checkpoints

    run = _finished_run(tmp_path, checkpoint=True)  # step 2, complete
    for step in (4, 6):
        (run / "checkpoints" / f"step-{step:08d}").mkdir()
    (run / "checkpoints" / "step-00000004" / "COMPLETE").write_text("")
    (run / "checkpoints" / "step-00000006" / "model.safetensors").write_bytes(b"cut")
    assert [p.name for p in resume_candidates("auto", run)] == ["step-00000004", "step-00000002"]
    assert [p.name for p in complete_checkpoints(run)] == ["step-00000002", "step-00000004"]


# --- resuming: which checkpoint every rank goes on from ----------------------------------------


class _Loader:
    def __init__(self):
        self.loaded = None

    def load_state_dict(self, state):
        self.loaded = state

    def state_dict(self):
        return {"epoch": 0, "cursor": 0}


def _accelerator(other_ranks: list[list[float]], main: bool = False, index: int = 0):
    """Rank ``index`` of 2; ``other_ranks``: the other rank's part of each all-reduce, in turn
    (its failure code in its own slot)."""

    def reduce(values, reduction):
        assert reduction == "sum"
        return values + torch.tensor(other_ranks.pop(0), dtype=values.dtype)

    return SimpleNamespace(
        num_processes=2,
        process_index=index,
        device="cpu",
        is_main_process=main,
        reduce=reduce,
        wait_for_everyone=lambda: None,
        save_state=lambda *a, **k: None,
        get_state_dict=lambda model: None,
    )


TIDIED = [[0, 0], [0, 0], [0, 0]]
"""The other rank's part of the three agreements after a load (a branch's history forgotten,
the config's changes applied, newer checkpoints set aside): all went well."""


def _resume(monkeypatch, tmp_path, accelerator, failing: dict[str, BaseException]):
    """``resuming.resume`` over checkpoints 4 (newest) and 2, ``failing``: what this rank's
    load of each raises. Returns the state it resumed from and the checkpoints it loaded."""
    from amazon_sft import resuming
    from amazon_sft.trainer_state import TrainerState

    loaded = []

    def load(accelerator, model, path):
        loaded.append(path.name)
        if path.name in failing:
            raise failing[path.name]
        return TrainerState(step=int(path.name[5:]), loader={"epoch": 0, "cursor": 1})

    monkeypatch.setattr(resuming, "load_checkpoint", load)
    monkeypatch.setattr(resuming, "apply_config_changes", lambda *a: None)
    cfg = SimpleNamespace(resume="auto", out_dir=str(tmp_path))
    checkpoints = tmp_path / "checkpoints"
    planned = {checkpoints / "step-00000004": [], checkpoints / "step-00000002": []}
    state = resuming.resume(cfg, accelerator, None, _Loader(), None, None, tmp_path, planned)
    return state, loaded


def test_a_checkpoint_another_rank_cannot_load_is_passed_over_here_too(tmp_path, monkeypatch):
    """Rank 0 loads step 4, rank 1 cannot: a rank that went on from step 4 while the other
    went back to step 2 trains from other weights. Both go back."""
    accelerator = _accelerator([[0, 1], [0, 0], *TIDIED])
    state, loaded = _resume(monkeypatch, tmp_path, accelerator, {})
    assert state.step == 2 and loaded == ["step-00000004", "step-00000002"]


def test_ranks_that_list_different_checkpoints_are_refused_before_any_loads(tmp_path, monkeypatch):
    """A review's suspicion: resume agreed whether each rank loaded, not which checkpoint. A
    node whose listing of the shared folder lags (NFS's attribute cache) saw no checkpoint and
    started over while rank 0 loaded step 2, or loaded an older step. Rank 0 here lists none,
    rank 1 (its part of the reduce) step 2: refused on every rank, the listings named."""
    import zlib

    from amazon_sft import resuming

    monkeypatch.setattr(resuming, "resume_candidates", lambda resume, out_dir: [])
    cfg = SimpleNamespace(resume="auto")
    agreeing = _accelerator([[0, 0], [0, 0]])  # raise_if_any_rank, then the listing's digest
    assert resuming.plan_resume(cfg, agreeing, None, tmp_path, None) == {}
    differing = _accelerator([[0, 0], [0, zlib.crc32(b"step-00000002")]])
    with pytest.raises(UserError, match=r"list different checkpoints .*\(rank 0: none\)"):
        resuming.plan_resume(cfg, differing, None, tmp_path, None)


def test_ranks_that_chose_different_precisions_are_refused():
    """``train.precision=auto`` reads each rank's own GPU: on a job mixing GPU kinds one rank
    trained bf16, another fp32."""
    from amazon_sft.distributed import check_same_precision

    here = _accelerator([[0, 2]])  # rank 1's code in its slot: bf16 (2), as here
    here.mixed_precision = "bf16"
    check_same_precision(here)
    here = _accelerator([[0, 0]])  # rank 1 chose fp32 ("no", 0)
    here.mixed_precision = "bf16"
    with pytest.raises(UserError, match=r"different precisions \(rank 0: bf16, rank 1: no"):
        check_same_precision(here)


def test_a_check_another_rank_refused_before_the_load_stops_this_one(monkeypatch, tmp_path):
    """The memory check reads a rank's own GPU: on a job mixing kinds rank 1 refused and rank 0
    loaded the model, then waited at its first collective for a rank that had gone."""
    from amazon_sft import train

    monkeypatch.setattr(train, "check_full_fine_tune_fits", lambda cfg, accelerator: None)
    monkeypatch.setattr(train, "running_engine", lambda accelerator: SimpleNamespace(zero_stage=0))  # fmt: skip
    monkeypatch.setattr(train, "refuse_undrawable_base", lambda cfg, stage: None)
    cfg = SimpleNamespace(
        lora=SimpleNamespace(unused=lambda: []), model=SimpleNamespace(path="random")
    )
    with pytest.raises(UserError, match="rank 1 failed before the model loaded"):
        train.check_before_load(cfg, _accelerator([[0, 1]], main=True))
    # a node-local copy of the model missing on this node: said here, and heard by the others
    cfg.model.path = str(tmp_path / "models" / "llama")
    with pytest.raises(UserError, match=r"model.path .*llama: no such folder here"):
        train.check_before_load(cfg, _accelerator([[0, 0]], main=True))


def test_a_checkpoint_that_ran_out_of_memory_is_kept_not_passed_over(tmp_path, monkeypatch):
    """Out of memory is not damage: falling back would set step 4 aside and train it again."""
    full = torch.OutOfMemoryError("CUDA out of memory")
    with pytest.raises(UserError, match=r"not enough memory to load checkpoint .*step-00000004"):
        _resume(monkeypatch, tmp_path, _accelerator([[0, 0], [0, 0]]), {"step-00000004": full})
    with pytest.raises(UserError, match="rank 1 ran out"):  # on the other rank: said here too
        _resume(monkeypatch, tmp_path, _accelerator([[0, 2]]), {})
    state, _ = _resume(
        monkeypatch,
        tmp_path,
        _accelerator([[0, 0], [0, 0], *TIDIED]),
        {"step-00000004": OSError("cut")},
    )
    assert state.step == 2  # damage: the one before


def test_a_start_over_forgets_the_steps_a_killed_launch_logged(tmp_path):
    """``resume=auto`` before the first checkpoint starts at step 0: the rows the killed launch
    logged are run again, and ``metrics.jsonl`` never repeats a step."""
    from amazon_sft.resuming import resume

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.9}\n')
    cfg = SimpleNamespace(resume="auto", out_dir=str(tmp_path))
    state = resume(
        cfg, _accelerator([[0, 0]], main=True), None, _Loader(), None, None, tmp_path, {}
    )
    assert state.step == 0 and state.loader == {"epoch": 0, "cursor": 0}
    assert (tmp_path / "metrics.jsonl").read_text() == ""


# --- rank 0's writes of a save: every rank learns of their failure ------------------------------


def _rank_one(rank_zero_says: list[list[float]]):
    """Rank 1 of 2, not the main process; ``rank_zero_says``: rank 0's part of each all-reduce."""
    return _accelerator(rank_zero_says, index=1)


def test_a_checkpoint_rank_0_could_not_finish_stops_every_rank_naming_it(tmp_path):
    """Rank 0 alone writes a checkpoint's list, marks and swap; a full disk there raised on rank
    0 while the others waited at the barrier after it until the launcher killed them (a review:
    10 minutes' NCCL timeout across nodes, a traceback on each). They now stop with one line."""
    from amazon_sft.checkpointing import save_checkpoint
    from amazon_sft.trainer_state import TrainerState

    model = torch.nn.Linear(2, 2)
    ok, failed = [0.0, 0.0], [1.0, 0.0]  # rank 0's code, then this rank's slot
    # rank 0 failed making the staging folder, in the save itself, or writing its list and swap
    for says in ([failed], [ok, failed], [ok, ok, failed]):
        with pytest.raises(UserError, match=r"rank 0 failed while saving checkpoint step-0+3"):
            save_checkpoint(_rank_one(says), model, tmp_path, TrainerState(step=3), 2, {})
    save_checkpoint(_rank_one([ok, ok, ok]), model, tmp_path, TrainerState(step=3), 2, {})


def test_a_final_model_rank_0_could_not_write_stops_every_rank_naming_it(tmp_path):
    from amazon_sft.config import load_run_config
    from amazon_sft.run_files import RunSummary
    from amazon_sft.saving import save_final

    model = torch.nn.Linear(2, 2)
    accelerator = _rank_one([[0.0], [1.0, 0.0]])  # finite weights everywhere; rank 0 failed
    with pytest.raises(UserError, match="rank 0 failed while writing the final model"):
        save_final(
            accelerator, load_run_config("tiny"), model, None, tmp_path, RunSummary(2, 1.5, 9), None
        )


def test_an_action_that_fails_on_rank_0_is_raised_there_after_every_rank_heard(tmp_path):
    from amazon_sft.distributed import agreed

    heard = []
    zero = SimpleNamespace(
        num_processes=2,
        process_index=0,
        device="cpu",
        is_main_process=True,
        reduce=lambda values, reduction: heard.append(values.tolist()) or values,
    )

    def full_disk():
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):  # its own error, for disk_full to say
        agreed(zero, full_disk, "while saving", main_only=True)
    assert heard == [[1.0, 0.0]]


def test_a_resume_whose_tidying_failed_on_another_rank_stops_here_too(tmp_path, monkeypatch):
    """Rank 0 alone forgets a branch's later history and sets newer checkpoints aside; a failure
    there left the other ranks at the barrier after it."""
    loaded, failed = [0, 0], [1, 0]  # rank 0's part: it loaded; it failed
    for says in ([loaded, failed], [loaded, *TIDIED[:1], failed], [loaded, *TIDIED[:2], failed]):
        with pytest.raises(UserError, match="rank 0 failed while resuming from step-00000004"):
            _resume(monkeypatch, tmp_path, _rank_one(says), {})
    state, _ = _resume(monkeypatch, tmp_path, _rank_one([loaded, *TIDIED]), {})
    assert state.step == 4


def test_a_failed_write_is_said_even_when_the_other_ranks_cannot_hear_of_it():
    """The all-reduce after rank 0's failure may fail itself (a peer gone, NCCL's timeout):
    rank 0's own error (a full disk, for ``disk_full`` to say) is what is raised, not that."""
    from amazon_sft.distributed import agreed

    def gone(values, reduction):
        raise RuntimeError("NCCL communicator was aborted")

    zero = SimpleNamespace(
        num_processes=2, process_index=0, device="cpu", is_main_process=True, reduce=gone
    )

    def full_disk():
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        agreed(zero, full_disk, "while saving", main_only=True)


def test_a_config_yaml_rank_0_could_not_write_stops_every_rank(tmp_path):
    """A review's remainder: rank 0 alone writes config.yaml at the start (and the trackers'
    files); a full disk there raised on rank 0 while the others went on to the first step's
    all-reduce and waited there for the launcher. Agreed: rank 1 hears of it."""
    from amazon_sft.config import load_run_config
    from amazon_sft.train import start_logging

    cfg = load_run_config("tiny", [f"out_dir={tmp_path}"])
    rank1 = _accelerator([[1, 0]], index=1)  # rank 0's failure code in its slot
    rank1.mixed_precision, rank1.state = "no", SimpleNamespace(deepspeed_plugin=None)
    with pytest.raises(UserError, match=r"rank 0 failed while writing config\.yaml"):
        start_logging(rank1, cfg, None, None, None, tmp_path, 0)


def test_a_base_one_rank_cannot_read_after_the_load_is_agreed(monkeypatch, tmp_path):
    """A review of the change: a LoRA resume reads a hub base's files again after the load on
    every rank; an OSError there raised on that rank alone, before the agreement the others
    waited at. It is this rank's refusal now, heard by the others (its code in the reduce)."""
    from amazon_sft import resuming

    def unreadable(cfg):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(resuming, "frozen_base_of", unreadable)
    cfg = SimpleNamespace(lora=SimpleNamespace(enabled=True), model=SimpleNamespace(path="org/base"))  # fmt: skip
    with pytest.raises(UserError, match=r"model.path org/base: its files could not be read"):
        resuming.base_after_load(cfg, _accelerator([[0, 0]]), {}, tmp_path, {"w": "x"})
