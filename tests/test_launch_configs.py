"""Every shipped accelerate YAML and DeepSpeed JSON loads and passes the libraries' own checks."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from amazon_sft.config import load_run_config
from amazon_sft.deepspeed_config import DS_CONFIG_DIR, deepspeed_config_path, fill_deepspeed_config
from amazon_sft.distributed import plan_batches
from amazon_sft.errors import UserError

REPO = Path(__file__).resolve().parents[1]
YAMLS = sorted((REPO / "launch" / "accelerate").glob("*.yaml"))
DS_JSONS = sorted((REPO / "ds_configs").glob("*.json"))


def test_the_documented_launch_configs_exist():
    names = {p.stem for p in YAMLS}
    assert {"single_gpu", "multi_gpu", "zero2", "zero3", "zero3_offload"} <= names
    assert {p.stem for p in DS_JSONS} == {"zero2", "zero3", "zero3_offload"}


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.stem)
def test_accelerate_yaml_loads_and_points_at_a_real_deepspeed_config(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    ds = (config.deepspeed_config or {}).get("deepspeed_config_file")
    if str(config.distributed_type) == "DistributedType.DEEPSPEED":
        assert ds and (REPO / ds).is_file()
        stage3 = "zero3" in ds
        assert config.deepspeed_config["zero3_init_flag"] is stage3
    else:
        assert ds is None


@pytest.mark.parametrize("path", DS_JSONS, ids=lambda p: p.stem)
@pytest.mark.parametrize("precision", ["bf16", "no"])
def test_deepspeed_json_filled_from_the_run_config_passes_deepspeed(path, precision):
    from deepspeed.runtime.config import DeepSpeedConfig

    cfg = load_run_config(
        "tiny",
        ["train.global_batch_size=16", "train.micro_batch_size=2", "train.max_grad_norm=0.5"],
    )
    plan = plan_batches(cfg, world_size=1)  # DeepSpeedConfig checks against this process's world
    filled = fill_deepspeed_config(path, cfg, plan, precision)
    assert "auto" not in str(filled)
    checked = DeepSpeedConfig(filled)
    assert checked.train_batch_size == 16
    assert checked.train_micro_batch_size_per_gpu == 2
    assert checked.gradient_accumulation_steps == 8
    assert checked.gradient_clipping == 0.5
    assert checked.bfloat16_config.enabled is (precision == "bf16")
    assert checked.zero_optimization_stage == int(path.stem[4])


def test_batch_arithmetic_errors_carry_the_numbers():
    cfg = load_run_config("tiny", ["train.global_batch_size=10", "train.micro_batch_size=2"])
    with pytest.raises(
        UserError, match=r"global_batch_size=10 .*micro_batch_size=2 x world size 4 = 8"
    ):
        plan_batches(cfg, world_size=4)
    plan = plan_batches(
        load_run_config("tiny", ["train.global_batch_size=16", "train.micro_batch_size=2"]), 4
    )
    assert plan.accumulation_steps == 2 and "micro 2 x accumulation 2 x world 4" in plan.describe()


def test_deepspeed_names_resolve_and_unknown_ones_explain():
    assert deepspeed_config_path(load_run_config("tiny", ["deepspeed=zero3"])).name == "zero3.json"
    with pytest.raises(UserError, match="zero2, zero3, zero3_offload"):
        deepspeed_config_path(load_run_config("tiny", ["deepspeed=zero9"]))


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.stem)
def test_every_deepspeed_config_launches_one_world_across_nodes(path):
    """launch/slurm_node.sh runs ``accelerate launch --num_machines N --machine_rank R`` on each
    node. Without ``deepspeed_multinode_launcher: standard`` accelerate hands a DeepSpeed launch
    of several machines to the ``deepspeed`` runner over pdsh, which finds no hostfile and starts
    a world of one node on every node (a cluster user's review: the default sbatch's 2-node
    ZeRO-2/3 jobs trained each node alone). Resolved as accelerate resolves it."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.constants import DEEPSPEED_MULTINODE_LAUNCHERS

    given = ["--config_file", str(path), "--num_machines", "2", "--num_processes", "16",
             "--machine_rank", "1", "--main_process_ip", "node0", "--main_process_port", "29500",
             "--rdzv_backend", "static", "amazon_sft/train.py"]  # fmt: skip
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(given))
    if args.use_deepspeed:  # accelerate's own test for its deepspeed-runner path
        assert args.deepspeed_multinode_launcher == DEEPSPEED_MULTINODE_LAUNCHERS[1], path.name


def _ds_json(tmp_path, body: dict):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(body))
    return path


def test_a_zero3_json_that_cannot_save_the_model_is_refused_before_training(tmp_path):
    """ZeRO-3 without stage3_gather_16bit_weights_on_model_save trained to the end and then
    died in the final save (accelerate's get_state_dict raises): no final/ after hours."""
    cfg = load_run_config("tiny", [])
    plan = plan_batches(cfg, world_size=1)
    base = json.loads((DS_CONFIG_DIR / "zero3.json").read_text())
    for value in (False, None):
        body = json.loads(json.dumps(base))
        if value is None:
            del body["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
        else:
            body["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = value
        with pytest.raises(UserError, match=r"stage3_gather_16bit_weights_on_model_save.*true"):
            fill_deepspeed_config(_ds_json(tmp_path, body), cfg, plan, "no")
    body["zero_optimization"]["stage3_gather_fp16_weights_on_model_save"] = True  # the old name
    assert fill_deepspeed_config(_ds_json(tmp_path, body), cfg, plan, "no")


@pytest.mark.parametrize(
    ("section", "enabled", "precision"),
    [("bf16", True, "no"), ("bf16", False, "bf16"), ("fp16", True, "bf16"), ("fp16", True, "no")],
)
def test_a_deepspeed_json_whose_precision_disagrees_with_the_run_is_refused(
    tmp_path, section, enabled, precision
):
    """train.precision=fp32 with a JSON saying bf16 enabled trained in bf16, while config.yaml
    (and what resume compares) said fp32."""
    cfg = load_run_config("tiny", [])
    plan = plan_batches(cfg, world_size=1)
    body = json.loads((DS_CONFIG_DIR / "zero2.json").read_text())
    body[section] = {"enabled": enabled}
    with pytest.raises(UserError, match=rf"{section}\.enabled={str(enabled).lower()} .*precision"):
        fill_deepspeed_config(_ds_json(tmp_path, body), cfg, plan, precision)
    body[section] = {"enabled": precision == "bf16" and section == "bf16"}  # agrees: taken
    assert fill_deepspeed_config(_ds_json(tmp_path, body), cfg, plan, precision)


@pytest.mark.parametrize("name", ["llama3-8b-full", "llama3-8b-lora", "mistral-7b-full", "mistral-7b-lora"])  # fmt: skip
def test_the_7b_8b_configs_split_their_batch_over_one_gpu_to_eight_nodes_of_eight(name):
    """Their batch of 8 rows failed the README's 2-node job (16 GPUs) at start."""
    cfg = load_run_config(name, [])
    for world in (1, 2, 4, 8, 16, 32, 64):
        assert plan_batches(cfg, world).global_batch_size == cfg.train.global_batch_size


def test_deepspeed_flags_are_read_as_deepspeed_reads_them(tmp_path, monkeypatch):
    """A review: "enabled": "false" (DeepSpeed: False) was refused under fp32, and a gather flag
    "auto", which accelerate fills from ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL, always."""
    cfg = load_run_config("tiny", [])
    plan = plan_batches(cfg, world_size=1)
    body = json.loads((DS_CONFIG_DIR / "zero3.json").read_text())
    body["bf16"] = {"enabled": "false"}
    assert fill_deepspeed_config(_ds_json(tmp_path, body), cfg, plan, "no")
    body["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = "auto"
    monkeypatch.delenv("ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL", raising=False)
    with pytest.raises(UserError, match="stage3_gather_16bit"):
        fill_deepspeed_config(_ds_json(tmp_path, body), cfg, plan, "no")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL", "true")
    assert fill_deepspeed_config(_ds_json(tmp_path, body), cfg, plan, "no")


def test_check_world_reads_the_accelerate_config_as_accelerate_does(tmp_path):
    """`train --check-world N --accelerate-config YAML` checks the JSON the YAML names, quoted
    and commented as YAML allows (the sbatch's sed kept the quotes and the comment: a review),
    and refuses a world of 0 (it started a real run)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    bad = json.loads((DS_CONFIG_DIR / "zero3.json").read_text())
    del bad["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    for json_name, ok in ((str(DS_CONFIG_DIR / "zero3.json"), True), (str(tmp_path / "bad.json"), False)):  # fmt: skip
        yaml_path = tmp_path / "mine.yaml"
        yaml_path.write_text(
            f"distributed_type: DEEPSPEED\ndeepspeed_config:\n"
            f'  deepspeed_config_file: "{json_name}"  # ours\n'
        )
        run = subprocess.run(
            [sys.executable, "amazon_sft/train.py", "--config", "tiny", "--check-world", "8",
             "--accelerate-config", str(yaml_path)],
            capture_output=True, text=True, cwd=repo,
        )  # fmt: skip
        assert (run.returncode == 0) is ok, run.stderr
        assert ("8 processes can run" in run.stdout) is ok
        # a new user's walkthrough: it read as "fits"; memory is not what it checks
        assert not ok or "memory is not checked" in run.stdout
        assert not ok or "nor is the prepared data" in run.stdout  # a new user trusted it
        assert ok or "stage3_gather_16bit_weights_on_model_save" in run.stderr
    zero = subprocess.run(
        [sys.executable, "amazon_sft/train.py", "--config", "tiny", "--check-world", "0"],
        capture_output=True, text=True, cwd=repo,
    )  # fmt: skip
    assert zero.returncode == 2 and "1 or more" in zero.stderr


def test_an_accelerate_config_with_deepspeed_inline_is_refused_before_any_load(tmp_path):
    """What ``accelerate config`` writes (``zero_stage: 2`` and no ``deepspeed_config_file``)
    passed ``--check-world`` and stopped the launch in accelerate's ValueError after the model
    loaded; a tracker not installed passed it too (an outside review)."""
    inline = tmp_path / "inline.yaml"
    inline.write_text(
        "distributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 2\n  offload_optimizer_device: none\n"
        "num_processes: 2\nmixed_precision: bf16\n"
    )
    check = [sys.executable, "amazon_sft/train.py", "--config", "tiny", "--check-world", "2"]
    proc = subprocess.run(
        [*check, "--accelerate-config", str(inline)], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "deepspeed_config_file" in proc.stderr and "deepspeed=zero2" in proc.stderr
    named = [*check, "--accelerate-config", str(inline), "deepspeed=zero2"]  # as the line says
    proc = subprocess.run(named, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [*check, "train.trackers=[wandb]"], capture_output=True, text=True, cwd=REPO
    )
    if importlib.util.find_spec("wandb") is None:
        assert proc.returncode != 0 and "wandb is not installed" in proc.stderr, proc.stderr


def test_overrides_may_follow_an_option_as_in_prepare():
    """``train --config tiny train.lr=1 --check-world 2 train.global_batch_size=4``: the second
    override was "unrecognized arguments" in train and eval, accepted by prepare."""
    proc = subprocess.run(
        [sys.executable, "amazon_sft/train.py", "--config", "tiny", "train.lr=1e-3",
         "--check-world", "2", "train.global_batch_size=4"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("version", ["0.16.0", "0.19.1", "0.19.2"])
def test_a_deepspeed_older_than_the_fixes_training_needs_is_refused(version, monkeypatch):
    """DeepSpeed up to 0.19.1 cast RoPE's inv_freq to bf16 with the model (DeepSpeed #8066:
    rotations off by up to 1.5 at position 2047 for Mistral's shape, silently), and up to
    0.19.2 every LoRA + ZeRO-3 run failed at the first backward (the tied head's checkpointed
    recompute, DeepSpeed #8148); the package asked for >= 0.16 (an outside review)."""
    import re

    import deepspeed

    from amazon_sft.deepspeed_config import MIN_DEEPSPEED

    requires = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert f'"deepspeed>={MIN_DEEPSPEED}' in requires and MIN_DEEPSPEED == "0.19.3"
    cfg = load_run_config("tiny", ["train.global_batch_size=4", "train.micro_batch_size=2"])
    path = DS_CONFIG_DIR / "zero3.json"
    monkeypatch.setattr(deepspeed, "__version__", version)
    with pytest.raises(UserError, match=re.escape(f"deepspeed {version} is older than 0.19.3")):
        fill_deepspeed_config(path, cfg, plan_batches(cfg, world_size=1), "bf16")
    monkeypatch.setattr(deepspeed, "__version__", "0.19.3")
    fill_deepspeed_config(path, cfg, plan_batches(cfg, world_size=1), "bf16")


def test_a_deepspeed_config_without_deepspeed_installed_is_one_line(monkeypatch):
    """A machine without deepspeed (a lent GPU, a fresh venv) was a ModuleNotFoundError
    traceback from the version check (a review of the change): one line saying what to
    install."""
    import sys

    cfg = load_run_config("tiny", ["train.global_batch_size=4", "train.micro_batch_size=2"])
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # import deepspeed raises ImportError
    with pytest.raises(UserError, match=r"DeepSpeed.* not installed.*pip install 'deepspeed>="):
        fill_deepspeed_config(DS_CONFIG_DIR / "zero3.json", cfg, plan_batches(cfg, 1), "bf16")


def test_an_out_dir_a_rank_does_not_share_is_refused_naming_it(tmp_path):
    """A multi-node review: ``OUT`` on node-local scratch trained and "succeeded": each rank
    wrote its ZeRO shard into its own node's folder, rank 0 marked checkpoints complete from
    what it saw, and a requeue refused them with false advice ("saved on 1 process"). Every
    rank reads back a file rank 0 wrote there before anything else is written."""
    from amazon_sft.distributed import shared_folder_error

    seen = tmp_path / "node0"
    seen.mkdir()
    (seen / ".probe").write_text("4f2a")
    assert shared_folder_error(seen, ".probe", "4f2a", "out_dir") is None
    other = tmp_path / "node1"  # the same path on another node's own disk
    other.mkdir()
    err = shared_folder_error(other, ".probe", "4f2a", "out_dir")
    assert "out_dir" in str(err) and "shared filesystem" in str(err) and str(other) in str(err)
    (other / ".probe").write_text("an earlier run's")
    assert shared_folder_error(other, ".probe", "4f2a", "out_dir") is not None


def test_a_probe_rank_0_cannot_write_is_a_one_line_error(tmp_path, monkeypatch):
    """A review of the check above: a full disk or quota at the probe (the first write of a
    ``resume=auto`` launch) was an OSError traceback on rank 0, a torn connection on the
    others, and the new run folder stayed. It is a UserError every rank raises."""
    from amazon_sft import distributed
    from amazon_sft.errors import UserError

    class Rank0:
        num_processes, is_main_process, process_index = 2, True, 0

    def full(self, *args, **kwargs):
        self.touch()  # created, then the write fails (a review: the empty probe kept the folder)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    monkeypatch.setattr("accelerate.utils.broadcast_object_list", lambda probe: probe)
    raised = []
    monkeypatch.setattr(distributed, "raise_if_any_rank", lambda acc, err: raised.append(err))
    distributed.check_shared_folder(Rank0(), tmp_path, "out_dir")
    assert len(raised) == 1 and isinstance(raised[0], UserError)
    assert "out_dir" in str(raised[0]) and "No space left" in str(raised[0])
    assert not list(tmp_path.iterdir())  # no probe left to keep the new run folder


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (b"[1, 2]", "not a JSON object"),
        (b'{"zero_optimization": "3"}', "zero_optimization"),
        (b'{"bf16": true}', "bf16"),
        (b'{"train_batch_size": "auto", "x": "caf\xe9"}', "not UTF-8"),
    ],
)
def test_a_deepspeed_json_of_the_wrong_shape_is_one_line(tmp_path, text, needle):
    """A list, ``"zero_optimization": "3"`` or a Latin-1 byte was an AttributeError or a
    UnicodeDecodeError traceback at ``--check-world`` and in a real launch (an outside review)."""
    path = tmp_path / "mine.json"
    path.write_bytes(text)
    cfg = load_run_config("tiny", [])
    with pytest.raises(UserError, match=needle) as err:
        fill_deepspeed_config(path, cfg, plan_batches(cfg, 2), "bf16")
    assert str(path) in str(err.value)


def test_a_folder_named_as_a_deepspeed_json_is_said_to_be_a_folder(tmp_path):
    (tmp_path / "mine.json").mkdir()
    cfg = load_run_config("tiny", [f"deepspeed={tmp_path / 'mine.json'}"])
    with pytest.raises(UserError, match="is a folder"):
        deepspeed_config_path(cfg)


@pytest.mark.parametrize(
    ("text", "needle"),
    [(b"distributed_type: NO\nx: caf\xe9\n", "not UTF-8"), (b"- a\n- b\n", "not a mapping")],
)
def test_an_accelerate_config_that_is_not_utf8_or_a_mapping_is_one_line(tmp_path, text, needle):
    """A Latin-1 byte was a UnicodeDecodeError traceback; a list passed without a word."""
    from amazon_sft.deepspeed_config import deepspeed_json_of, refuse_one_process_launch

    path = tmp_path / "accel.yaml"
    path.write_bytes(text)
    for check in (lambda: refuse_one_process_launch(str(path), 16), lambda: deepspeed_json_of(str(path))):  # fmt: skip
        with pytest.raises(UserError, match=needle):
            check()


def test_deepspeed_none_under_a_deepspeed_launcher_names_the_conflict():
    """``deepspeed=none`` with launch/accelerate/zero3.yaml said the YAML names no JSON and to
    launch with zero3.yaml, the launcher in use (an outside review)."""
    proc = subprocess.run(
        [sys.executable, "amazon_sft/train.py", "--config", "tiny", "--check-world", "2",
         "--accelerate-config", "launch/accelerate/zero3.yaml", "deepspeed=none"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "deepspeed=none" in proc.stderr and "multi_gpu.yaml" in proc.stderr, proc.stderr
    assert "without a deepspeed_config_file" not in proc.stderr
