import json
import re
import subprocess

import pytest
import yaml

from amazon_sft.config import RunConfig, load_run_config
from amazon_sft.config_loader import builtin_config_names, to_dict, write_resolved
from amazon_sft.data.manifest import DataIdentity
from amazon_sft.errors import UserError
from amazon_sft.resume_config import changes_on_resume

SAME = DataIdentity("d", "d")
"""The data a saved record names (``"d"``), prepared again: the same."""


@pytest.mark.parametrize("name", builtin_config_names())
def test_every_shipped_config_loads_and_validates(name):
    cfg = load_run_config(name)
    assert isinstance(cfg, RunConfig)
    assert cfg.data.max_seq_len >= 16


def test_shipped_configs_cover_the_documented_set():
    expected = {
        "tiny",
        "smollm2-135m",
        "smollm2-135m-grounded",
        "mistral-7b-lora",
        "mistral-7b-full",
        "llama3-8b-lora",
        "llama3-8b-full",
    }
    assert expected <= set(builtin_config_names())


@pytest.mark.parametrize(
    "name", [n for n in builtin_config_names() if n.endswith(("-lora", "-full"))]
)
def test_a_config_named_lora_trains_adapters_and_one_named_full_all_weights(name):
    """The 7B/8B configs' names are what they run (the -lora ones ran a full fine-tune, LoRA being
    off by default), and a full fine-tune of a 7-8B model is not run at LoRA's rate."""
    cfg = load_run_config(name)
    assert cfg.lora.enabled is name.endswith("-lora")
    assert cfg.train.epochs == 1  # not the default 100 steps: under 1% of the catalogue
    if name.endswith("-full"):
        assert cfg.train.lr <= 5e-5


@pytest.mark.parametrize(
    "name", [n for n in builtin_config_names() if n.endswith(("-lora", "-full"))]
)
def test_the_7b_and_8b_configs_teach_the_grounded_path_ask_takes(name):
    """An ML engineer's review: the four 7-8B configs trained closed-book only (grounded 0.0),
    the mode the docs measure as failing on unseen products, while `ask` answers grounded. They
    teach the measured data recipe (``smollm2-135m-grounded``'s), records cut to fit their rows."""
    cfg, measured = load_run_config(name).data, load_run_config("smollm2-135m-grounded").data
    for key in ("grounded_fraction", "closed_book_fraction", "absent_fraction", "paired_absent"):
        assert getattr(cfg, key) == getattr(measured, key), key
    assert cfg.question_mix == measured.question_mix and cfg.context_records == 3
    shown = cfg.context_records * cfg.context_record_tokens + cfg.max_answer_tokens
    assert shown < cfg.max_seq_len / 2  # a grounded example fits a row with room for the prompt
    train = load_run_config(name).train  # a run of hours reports a validation loss on the way
    assert train.validation_rows > 0 and train.validation_every > 0


def test_the_grounded_recipe_is_the_one_measured():
    """docs/results.md "Retrained between the two recipes" measured these settings (its prepare
    and train commands); the shipped config must stay that recipe, or the docs say otherwise."""
    cfg = load_run_config("smollm2-135m-grounded")
    data = cfg.data
    assert (data.grounded_fraction, data.closed_book_fraction, data.absent_fraction) == (
        1.0,
        0.15,
        0.5,
    )
    assert data.paired_absent and not cfg.lora.enabled
    assert (data.context_records, data.context_record_tokens, data.max_answer_tokens) == (
        3,
        96,
        128,
    )
    mix = to_dict(data.question_mix)
    assert mix == {
        "title": 0.55,
        "fragment": 0.1,
        "reorder": 0.05,
        "typo": 0.1,
        "portuguese": 0.1,
        "descriptive": 0.05,
        "attribute": 0.05,
    }
    assert (cfg.train.max_steps, cfg.train.global_batch_size, cfg.train.lr) == (148, 4, 2e-4)


def test_dotted_overrides_are_typed():
    cfg = load_run_config(
        "tiny",
        [
            "data.max_seq_len=512",
            "data.heldout_fraction=5e-2",
            "out_dir=x/y",
            "data.clean.drop_duplicates=false",
        ],
    )
    assert cfg.data.max_seq_len == 512
    assert cfg.data.heldout_fraction == pytest.approx(0.05)
    assert cfg.out_dir == "x/y"
    assert cfg.data.clean.drop_duplicates is False


def test_a_text_setting_given_on_the_command_line_is_the_text_as_typed():
    """YAML reads ``0x10`` as 16, ``1:30`` as 90 (base 60) and ``2024-01-01`` as a date: a text
    setting given one of those on the command line became "16" or "90", or was refused as not
    text. The command line's own text is what a user typed."""
    cfg = load_run_config(
        "tiny",
        [
            "data.path=0x10",
            "data.system_prompt=1:30",
            "out_dir=2024-01-01",
            "model.tokenizer=1e3",
            "data.templates='quoted'",
        ],
    )
    assert cfg.data.path == "0x10" and cfg.data.system_prompt == "1:30"
    assert cfg.out_dir == "2024-01-01" and cfg.model.tokenizer == "1e3"
    assert cfg.data.templates == "quoted"
    assert load_run_config("tiny", ["data.system_prompt=null"]).data.system_prompt is None
    assert load_run_config("tiny", ["data.max_seq_len=0x100"]).data.max_seq_len == 256


def test_a_whole_number_in_exponent_form_is_taken_for_an_integer():
    """``train.max_steps=1e3`` is how people write a thousand steps; 2.5 steps still is not."""
    cfg = load_run_config("tiny", ["train.max_steps=1e3", "train.global_batch_size=8.0"])
    assert cfg.train.max_steps == 1000 and isinstance(cfg.train.max_steps, int)
    assert cfg.train.global_batch_size == 8
    with pytest.raises(UserError, match=r"train\.max_steps.*must be an integer.*2\.5"):
        load_run_config("tiny", ["train.max_steps=2.5"])


def test_one_and_zero_are_taken_for_true_and_false():
    """``lora.enabled=1`` is how shell scripts and env files say true; 2 still is not."""
    cfg = load_run_config("tiny", ["lora.enabled=1", "data.clean.drop_duplicates=0"])
    assert cfg.lora.enabled is True and cfg.data.clean.drop_duplicates is False
    with pytest.raises(UserError, match=r"lora\.enabled.*true or false.*got 2"):
        load_run_config("tiny", ["lora.enabled=2"])


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("data.max_seq_lenn=5", "data.max_seq_lenn"),
        ("data.max_seq_len=abc", "data.max_seq_len"),
        ("data.max_seq_len=8", "data.max_seq_len must be >= 16"),
        ("data.heldout_fraction=1.5", "data.heldout_fraction"),
        ("data.clean.drop_duplicates=maybe", "data.clean.drop_duplicates"),
        ("data.tokenizer_backend=fast", "data.tokenizer_backend"),
        ("nonsense", "dotted.key=value"),
        # each named alone with its value (a review: all three keys of a check were listed)
        ("train.min_lr_ratio=2", "train.min_lr_ratio must be in [0, 1], got 2"),
        ("train.warmup_steps=-1", "train.warmup_steps must be >= 0, got -1"),
        ("train.max_grad_norm=-1", "train.max_grad_norm must be >= 0, got -1"),
        ("lora.dropout=1", "lora.dropout must be in [0, 1), got 1"),
        ("lora.r=0", "lora.r must be >= 1, got 0"),
        ("data.probe_size=-1", "data.probe_size must be >= 0, got -1"),
        ("data.shard_rows=0", "data.shard_rows must be >= 1, got 0"),
    ],
)
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(UserError, match=re.escape(needle)):
        load_run_config("tiny", [override])


def test_unknown_config_name_lists_the_choices():
    with pytest.raises(UserError, match="tiny"):
        load_run_config("no-such-config")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_run_config("tiny", ["data.max_seq_len=300"])
    write_resolved(cfg, tmp_path / "config.yaml")
    again = load_run_config(str(tmp_path / "config.yaml"))
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["data"]["max_seq_len"] == 300


def test_resume_takes_a_key_added_since_the_checkpoint_at_its_default_and_refuses_it_changed():
    new = to_dict(RunConfig())
    saved = to_dict(RunConfig())
    del saved["data"]["series_distractors"]  # a checkpoint written before the key existed
    del saved["data"]["question_mix"]
    assert changes_on_resume({"config": saved, "data_integrity": "d"}, new, SAME) == []
    new["data"]["series_distractors"] = 3
    with pytest.raises(ValueError, match=r"data\.series_distractors"):
        changes_on_resume({"config": saved, "data_integrity": "d"}, new, SAME)


def test_numbers_written_as_yaml_reads_them_as_text_are_numbers(tmp_path):
    """PyYAML reads ``lr: 1e-3`` (no dot: YAML 1.1) as the text '1e-3'; the same value given on
    the command line is a number. A config file that says so was refused."""
    from amazon_sft.config_loader import CONFIG_DIR

    path = tmp_path / "run.yaml"
    raw = yaml.safe_load((CONFIG_DIR / "tiny.yaml").read_text())
    raw["train"] = {"lr": "1e-3", "max_steps": "1e3", "weight_decay": "0.1"}
    path.write_text(yaml.safe_dump(raw))
    cfg = load_run_config(str(path))
    assert (cfg.train.lr, cfg.train.max_steps, cfg.train.weight_decay) == (1e-3, 1000, 0.1)
    assert isinstance(cfg.train.max_steps, int)
    for key, bad, needle in (
        ("lr", "fast", "must be a number"),
        ("lr", "nan", "finite"),
        ("max_steps", "2.5", "must be an integer"),
    ):
        raw["train"][key] = bad
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(UserError, match=needle):
            load_run_config(str(path))
        raw["train"].update({"lr": "1e-3", "max_steps": "1e3"})


def test_a_config_file_naming_a_gguf_package_without_its_file_says_which_key_to_set(tmp_path):
    """A config file of one line (``seed: 1``) starts from the bare defaults: the SmolLM2 package,
    whose folder holds only a GGUF file, with no ``model.gguf_file``. The tokenizer load then
    failed with "Couldn't instantiate the backend tokenizer from one of: "."""
    from amazon_sft.tokenizer import check_gguf_named

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "Model.Q4.gguf").write_bytes(b"GGUF")
    with pytest.raises(UserError, match=r"model\.gguf_file=Model\.Q4\.gguf"):
        check_gguf_named(str(pkg), None, "pkg:thing")
    check_gguf_named(str(pkg), "Model.Q4.gguf", "pkg:thing")  # named: nothing to say
    (pkg / "config.json").write_text("{}")
    check_gguf_named(str(pkg), None, "pkg:thing")  # a transformers folder beside it


def test_trackers_are_ones_accelerate_knows_and_that_are_installed(monkeypatch):
    """train.trackers=[nonsense] was accelerate's ValueError traceback; [wandb] without wandb
    only a warning, and the run went on unlogged."""
    import importlib.util

    from amazon_sft.trackers import checked_trackers

    assert checked_trackers(["tensorboard"]) == ["tensorboard"]
    with pytest.raises(UserError, match=r"'nonsense' is not a tracker accelerate knows.*wandb"):
        checked_trackers(["nonsense"])
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a)
    )
    with pytest.raises(UserError, match="wandb is not installed: pip install wandb"):
        checked_trackers(["wandb"])


def test_epochs_and_steps_are_not_both_given():
    """A smoke test's train.max_steps=50 on a config sized in epochs would otherwise run the
    whole epoch (or be cut to 50 steps of a schedule made for the epoch)."""
    for steps in (50, 100):  # 100, the default steps, too (it was taken for "not given")
        with pytest.raises(UserError, match=rf"train\.epochs=1 and train\.max_steps={steps} both"):
            load_run_config("mistral-7b-lora", [f"train.max_steps={steps}"])
    assert load_run_config("tiny").train.max_steps == 100
    assert load_run_config("mistral-7b-lora", ["train.epochs=0", "train.max_steps=50"])
    with pytest.raises(UserError, match=r"train\.epochs must be"):
        load_run_config("tiny", ["train.epochs=-1"])


def test_a_cut_line_in_the_change_history_is_skipped_and_said(tmp_path):
    """A kill or a full disk mid-append left half a line in config_changes.jsonl: every later
    resume=auto was a JSONDecodeError traceback, and the next change was glued onto the cut."""
    from amazon_sft.resume_config import CHANGES, Change, history_header, record_changes

    record_changes(tmp_path, 4, [Change("train.lr", 1e-4, 5e-5)])
    with open(tmp_path / CHANGES, "a") as fh:
        fh.write('{"step": 9, "key": "train.max')  # cut
    record_changes(tmp_path, 12, [Change("train.max_steps", 100, 200)])
    header = history_header(tmp_path)
    assert "train.lr: 0.0001 -> 5e-05" in header and "train.max_steps: 100 -> 200" in header
    assert "1 unreadable line" in header


def test_a_change_the_checkpoint_was_saved_with_again_is_not_forgotten(tmp_path):
    """A launch that changed train.lr at step 1 and was stopped within its first step saved
    step 1 again, with the new lr; the next resume=auto found no change against it and
    forgot the one recorded at step 1: config.yaml's history lost it (an outside review).
    Changes after the step resumed from are forgotten; at it, only those the checkpoint lacks."""
    from amazon_sft.resume_config import (
        CHANGES,
        Change,
        forget_changes_from,
        history_header,
        record_changes,
    )

    record_changes(tmp_path, 1, [Change("train.lr", 3e-3, 1e-3)])
    record_changes(tmp_path, 1, [Change("train.max_steps", 1, 3)])
    record_changes(tmp_path, 2, [Change("train.warmup_steps", 1, 2)])
    resaved = {"config": {"train": {"lr": 1e-3, "max_steps": 1}}, "precision": "no"}
    forget_changes_from(tmp_path, 1, resaved)
    header = history_header(tmp_path)
    assert "train.lr: 0.003 -> 0.001" in header  # the checkpoint holds it: it happened
    assert "max_steps" not in header and "warmup_steps" not in header
    forget_changes_from(tmp_path, 1, {"config": {"train": {"lr": 3e-3}}})  # an older one
    assert history_header(tmp_path) == ""  # no header left with no change under it
    assert (tmp_path / CHANGES).read_text() == ""


def test_a_home_folder_path_is_the_users_home_not_a_folder_named_tilde(tmp_path, monkeypatch):
    """``out_dir: ~/runs/x`` wrote into ``./~/runs/x`` while the log said ``~/runs/x/final``;
    cleaning that up with ``rm -rf ~`` deletes the home folder (an outside review)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_run_config(
        "tiny", ["out_dir=~/runs/x", "data.path=~/data", "resume=~/runs/x/checkpoints/step-2"]
    )
    assert cfg.out_dir == str(tmp_path / "runs/x") and cfg.data.path == str(tmp_path / "data")
    assert cfg.resume == str(tmp_path / "runs/x/checkpoints/step-2")
    # a docs review: data.templates=~/t.yaml was "does not exist", the file there
    cfg = load_run_config("tiny", ["data.templates=~/t.yaml", "deepspeed=~/ds.json"])
    assert cfg.data.templates == str(tmp_path / "t.yaml")
    assert cfg.deepspeed == str(tmp_path / "ds.json")
    assert load_run_config("tiny").data.templates == "builtin"


def test_model_arch_given_for_a_saved_model_is_refused_not_recorded(tmp_path):
    """``model.arch.num_hidden_layers=7`` with a saved model trained its 2 layers and the run's
    config.yaml said 7 (an outside review): ``model.arch`` shapes only ``model.path=random``."""
    with pytest.raises(UserError, match=r"model\.arch.*model\.path=random"):
        load_run_config("tiny", [f"model.path={tmp_path}", "model.arch.num_hidden_layers=7"])
    load_run_config("tiny", [f"model.path={tmp_path}"])  # tiny.yaml's own arch: not asked for


@pytest.mark.parametrize("text", ["train:\n  on: 1\n", "2: x\nfoo: 1\n"])
def test_a_yaml_key_that_is_not_text_is_one_line(text, tmp_path):
    """``on:`` is a boolean key to YAML, ``2:`` a number: the loader died in a TypeError."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match="key"):
        load_run_config(str(path), [])


@pytest.mark.parametrize(
    "override, needle",
    [
        ("lora.target_modules=[]", "lora.target_modules"),
        ("lora.modules_to_save=[1]", "lora.modules_to_save"),
        ("lora.target_modules=[q_proj, 3]", "lora.target_modules"),
    ],
)
def test_lora_module_lists_must_be_names(override, needle):
    """An empty target list or a number among the names passed every check and failed in
    peft after the model had loaded (an outside review)."""
    with pytest.raises(UserError, match=needle):
        load_run_config("tiny", ["lora.enabled=true", override])


def test_a_negative_peak_is_refused():
    """``train.peak_tflops=-5`` was taken and logged ``mfu: -0.0031`` (an outside review)."""
    with pytest.raises(UserError, match=r"train\.peak_tflops"):
        load_run_config("tiny", ["train.peak_tflops=-5"])


def test_an_empty_target_list_is_fine_while_lora_is_off():
    """A review: ``lora.target_modules=[]`` was refused with LoRA off."""
    load_run_config("tiny", ["lora.enabled=false", "lora.target_modules=[]"])


def test_resume_compares_the_precision_that_ran_not_the_word_auto():
    """An outside review: ``train.precision=auto`` is fp32 on a CPU and bf16 on an Ampere GPU;
    resumed there with ``auto``, an fp32 checkpoint went on in bf16 unreported (and under ZeRO-2
    it failed to load, telling the user to start over). Asking for what it saved
    (``train.precision=fp32``) was refused as another run. The checkpoint records the precision
    that ran; resume compares that."""
    from amazon_sft.resume_config import run_record

    config = to_dict(RunConfig())
    assert config["train"]["precision"] == "auto"
    saved = run_record(config, "d", None, precision="no")  # auto, resolved on a CPU
    with pytest.raises(ValueError, match=r"train\.precision.*fp32.*bf16"):
        changes_on_resume(saved, config, SAME, precision="bf16")
    fp32 = to_dict(RunConfig())
    fp32["train"]["precision"] = "fp32"
    assert changes_on_resume(saved, fp32, SAME, precision="no") == []  # what ran: accepted
    assert changes_on_resume(saved, config, SAME, precision="no") == []
    before = {"config": config, "data_integrity": "d"}  # a checkpoint from before the record
    assert changes_on_resume(before, config, SAME, precision="bf16") == []


def test_refusals_name_the_section_and_a_batch_that_works():
    """A mutation audit: the tests read only the key's name, not the section whose keys the
    refusal lists, nor the global batch it suggests when it is under micro x world."""
    from amazon_sft.distributed import plan_batches

    with pytest.raises(UserError, match=r"keys allowed in train: .*\blr\b"):
        load_run_config("tiny", ["train.lrr=1"])
    small = load_run_config("tiny", ["train.global_batch_size=2", "train.micro_batch_size=4"])
    with pytest.raises(UserError, match=r"use e\.g\. train\.global_batch_size=4\b"):
        plan_batches(small, 1)


def test_lora_settings_without_lora_enabled_are_named_as_unused(tiny_model_dir, prepared, tmp_path):
    """An outside review: ``lora.r=8 lora.alpha=16`` without ``lora.enabled=true`` ran a full
    fine-tune, unwarned, its config.yaml recording r 8 and alpha 16. Train warns, naming them
    (not refused: ``lora.enabled=false`` over a LoRA config of one's own is a full run)."""
    from amazon_sft.config_run_parts import LoraConfig
    from tests.conftest import train_command

    assert LoraConfig(r=8, alpha=16).unused() == ["lora.r=8", "lora.alpha=16"]
    assert LoraConfig(enabled=True, r=8).unused() == [] and LoraConfig().unused() == []
    cmd = train_command(prepared, tiny_model_dir, tmp_path / "run", "train.max_steps=1", "lora.r=8")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    warned = [line for line in proc.stderr.splitlines() if "WARNING" in line and "lora.r=8" in line]
    assert warned and "lora.enabled" in warned[0], proc.stderr[-2000:]


def test_a_batch_larger_than_the_data_is_said_to_be_padding_not_repeated_rows(caplog):
    """An outside review: above the prepared rows, the warning (and the refusal, and the
    setting's docstring) said rows repeat within a step; each step is one pass over the rows,
    the rest of it empty padding rows computed for nothing (``loader.epoch_order``)."""
    import logging

    from amazon_sft.bounds import check_epochs_per_step
    from amazon_sft.data.loader import epoch_order

    order = epoch_order(54, seed=0, epoch=0, rows_per_step=128)
    assert sorted(order[order >= 0].tolist()) == list(range(54)) and (order < 0).sum() == 74
    with caplog.at_level(logging.WARNING, logger="amazon_sft.bounds"):
        check_epochs_per_step(128, 54, "d")
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "74 empty" in said and "<= 54" in said and "repeat" not in said, said
    with pytest.raises(UserError) as refused:
        check_epochs_per_step(1000, 54, "d")
    assert "repeat" not in str(refused.value) and "<= 54" in str(refused.value)


def test_the_run_config_says_what_precision_and_engine_ran(tuned_run):
    """An outside review: config.yaml said ``precision: auto, deepspeed: null`` for a run that
    ran bf16 under ZeRO-2 (accelerate's config chose the engine): the written config did not
    say what ran. A comment line at its top does."""
    text = (tuned_run / "config.yaml").read_text()
    first = next(line for line in text.splitlines() if line.startswith("# this launch ran"))
    assert "mixed precision fp32" in first and "DistributedType.NO" not in first
    assert "1 process" in first and yaml.safe_load(text)["train"]["precision"] == "auto"


def test_a_text_setting_keeps_what_follows_a_hash_on_the_command_line():
    """YAML reads `` #`` as a comment: ``data.system_prompt=You are assistant #2. Be brief.``
    trained the prompt "You are assistant", and ``out_dir=runs/exp #3`` ran in runs/exp (an
    outside review). A text setting is the text as typed; quoted, YAML's reading."""
    cfg = load_run_config(
        "tiny", ["data.system_prompt=You are assistant #2. Be brief.", "out_dir=runs/exp #3"]
    )
    assert cfg.data.system_prompt == "You are assistant #2. Be brief."
    assert cfg.out_dir == "runs/exp #3"
    assert load_run_config("tiny", ["data.system_prompt=~"]).data.system_prompt is None
    assert load_run_config("tiny", ['out_dir="runs/a b"']).out_dir == "runs/a b"
    # a review of the change: quoted then a comment is YAML's reading; a text YAML cannot read
    # ("mapping values are not allowed") is the text as typed, not refused
    assert load_run_config("tiny", ['out_dir="runs/x" #try 2']).out_dir == "runs/x"
    prompt = "Rule: answer: briefly"
    assert load_run_config("tiny", [f"data.system_prompt={prompt}"]).data.system_prompt == prompt
    assert load_run_config("tiny", ["data.system_prompt=[draft] {v2}"]).data.system_prompt == (
        "[draft] {v2}"
    )


def test_a_text_setting_a_yaml_file_gives_as_a_number_is_refused_not_rewritten(tmp_path):
    """``out_dir: 0630`` in a config file is the octal 408 to YAML: the run went to ./408 and
    its config.yaml said so; ``system_prompt: 1.10`` became "1.1" (an outside review). The text
    it was cannot be read back, so the key is named with the quoting that keeps it."""
    for text, key in (("out_dir: 0630\n", "out_dir"), ("data:\n  system_prompt: 1.10\n", "data")):
        path = tmp_path / "exp.yaml"
        path.write_text(text)
        with pytest.raises(UserError, match=rf"{key}.*must be text.*quote it"):
            load_run_config(str(path))
    path.write_text("out_dir: '0630'\n")
    assert load_run_config(str(path)).out_dir == "0630"


def test_model_arch_a_saved_model_contradicts_is_said_when_it_loads(tiny_model_dir, caplog):
    """A copy of tiny.yaml with ``path:`` set to a saved model and ``num_hidden_layers: 1``
    trained the saved model's 2 layers while config.yaml said 1, silently (an outside review).
    Loading the model names each ``model.arch`` setting it contradicts."""
    from amazon_sft.modeling import load_model

    cfg = load_run_config("tiny", [f"model.path={tiny_model_dir}"])
    cfg.model.arch["num_hidden_layers"] = 99
    with caplog.at_level("WARNING"):
        load_model(cfg, 512, 0, "fp32")
    said = [r.getMessage() for r in caplog.records if "model.arch is not used" in r.getMessage()]
    assert len(said) == 1 and "num_hidden_layers: 99 (the model has" in said[0], said
    assert "model_type" not in said[0]  # what agrees is not named
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_model(load_run_config("tiny", [f"model.path={tiny_model_dir}"]), 512, 0, "fp32")
    assert not any("model.arch" in r.getMessage() for r in caplog.records)


def test_a_yaml_syntax_error_names_its_line_and_problem(tmp_path):
    """A tab said only "while scanning for the next token", ``system_prompt: Answer: briefly``
    only "mapping values are not allowed here", with no line (an outside review)."""
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  lr: 0.001\ndata:\n  system_prompt: Answer: briefly\n")
    with pytest.raises(UserError, match=r"exp\.yaml is not valid YAML: line 4 .*mapping values"):
        load_run_config(str(path))
    path.write_text("train:\n\tlr: 0.001\n")
    with pytest.raises(UserError, match=r"line 2 column 1: found character '\\t'") as err:
        load_run_config(str(path))
    assert len(str(err.value).splitlines()) == 1


def test_resume_takes_every_prepare_speed_and_layout_setting_train_does_not_read():
    """``data.shard_rows`` (how prepare lays out its files; train reads the folder as it is)
    refused a resume as "another run" while the other three such settings were taken (an
    outside review)."""
    from amazon_sft.run_data import PREPARE_SPEED

    saved = to_dict(RunConfig())
    for key in PREPARE_SPEED:
        new = to_dict(RunConfig())
        value = new["data"][key]
        new["data"][key] = (value or 1) * 2 if isinstance(value, int) else "other"
        found = changes_on_resume({"config": saved, "data_integrity": "d"}, new, SAME)
        assert [c.key for c in found] == [f"data.{key}"]


def test_a_lora_run_may_resume_on_its_base_copied_elsewhere():
    """A requeue that copies the base to node-local storage changed model.path and was refused
    as another run, though a LoRA checkpoint's record of the base's weight files proves the
    same base (an outside review). The path may move when those files are the same; other
    files are still refused, and a full fine-tune (no such record) still refuses the move."""
    saved_cfg, new = to_dict(RunConfig()), to_dict(RunConfig())
    new["model"]["path"] = "/local/copy"
    files = {"model.safetensors": "abc123"}
    saved = {"config": saved_cfg, "data_integrity": "d", "base_weights": files}
    assert [c.key for c in changes_on_resume(saved, new, SAME, files)] == ["model.path"]
    with pytest.raises(ValueError, match=r"model\.path"):
        changes_on_resume(saved, new, SAME, {"model.safetensors": "other"})
    with pytest.raises(ValueError, match=r"model\.path"):
        changes_on_resume({"config": saved_cfg, "data_integrity": "d"}, new, SAME, None)


def test_a_batch_the_processes_cannot_split_names_a_micro_batch_that_can():
    """Global 4 rows with micro 3 said only "use e.g. train.global_batch_size=3", which resume
    refuses as another run (a review): the micro-batch that splits it is named too."""
    from amazon_sft.distributed import plan_batches

    cfg = load_run_config("tiny", ["train.global_batch_size=4", "train.micro_batch_size=3"])
    with pytest.raises(UserError, match=r"or train\.micro_batch_size=2\b"):
        plan_batches(cfg, world_size=1)
    cfg = load_run_config("tiny", ["train.global_batch_size=12", "train.micro_batch_size=4"])
    with pytest.raises(UserError, match=r"or train\.micro_batch_size=3\b"):
        plan_batches(cfg, world_size=2)  # 6 rows a process
    cfg = load_run_config("tiny", ["train.global_batch_size=5", "train.micro_batch_size=1"])
    with pytest.raises(UserError) as refused:
        plan_batches(cfg, world_size=2)  # no micro-batch splits 5 rows over 2 processes
    assert "micro_batch_size=" not in str(refused.value).split(";")[-1]


def test_a_random_model_records_the_tokenizers_bos_and_eos():
    """A review with a Llama-3-style tokenizer: ``model.path=random`` kept transformers' default
    bos/eos ids 1 and 2 in the config saved with the run, and answering, eval and export then
    stopped at id 2 too ("#" there, in 162 of the real rows). Only the builtin tokenizer's ids
    agreed, by chance. Training and answering hand the tokenizer's ids to the config."""
    from amazon_sft.modeling import load_model

    model = load_model(load_run_config("tiny"), 512, 0, "fp32", bos_eos=(5, 7))
    assert (model.config.bos_token_id, model.config.eos_token_id) == (5, 7)
    assert model.generation_config.eos_token_id == 7
    kept = load_model(load_run_config("tiny"), 512, 0, "fp32")  # nothing given: as before
    assert kept.config.eos_token_id == 2


def test_a_mixture_of_experts_model_is_refused_before_training():
    """A review: a tiny Mixtral trained (its MFU 3.6x too high: every expert counted for every
    token), then its final save failed after the last step. Refused at the load, in one line."""
    from amazon_sft.modeling import load_model

    cfg = load_run_config("tiny", ["model.arch.model_type=mixtral"])
    with pytest.raises(UserError, match="mixture of experts"):
        load_model(cfg, 512, 0, "fp32")


def test_each_step_logs_its_flops(tuned_run):
    """A review: MFU could not be recomputed from metrics.jsonl (the attention term needs each
    document's length), though the code said it could; each row logs the step's FLOPs."""
    rows = [json.loads(x) for x in (tuned_run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["flops"] > 0 for r in rows)
    assert all(r["tokens_per_sec"] == pytest.approx(r["real_tokens"] / r["seconds"]) for r in rows)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("model.gguf_file=foo.gguf", "model.gguf_file"),
        ("model.arch.vocab_size=10", "model.arch.vocab_size"),
        ("model.arch.eos_token_id=3", "model.arch.eos_token_id"),
    ],
)
def test_a_setting_model_path_random_never_reads_is_said_and_not_recorded(
    override, needle, caplog, tmp_path
):
    """A random model ignored ``model.gguf_file`` and took the tokenizer's vocabulary size and
    special ids over ``model.arch``'s, while the run's config.yaml recorded the ignored values
    (an outside review). Said and dropped, not refused: a run saved with them still loads (a
    review of the first fix, which refused them)."""
    with caplog.at_level("WARNING", logger="amazon_sft.config"):
        cfg = load_run_config("tiny", [override])
    assert needle in caplog.text and "not read" in caplog.text
    write_resolved(cfg, tmp_path / "config.yaml")
    written = (tmp_path / "config.yaml").read_text()
    unread = "foo.gguf" if "gguf" in override else needle.rsplit(".", 1)[-1] + ":"
    assert unread not in written, written


def test_train_help_lists_every_key_with_its_value_and_doc(capsys):
    """``amazon-sft train --help`` named no key: they were in config.py and the docs' table
    only. It lists each leaf key of the run config with the value a run without ``--config``
    takes (the default config's, not the dataclass default: a review) and the docstring under
    its field; every field has one (the config's own rule)."""
    from amazon_sft.config import DEFAULT_CONFIG
    from amazon_sft.config_keys import config_keys
    from amazon_sft.train import parse_config

    default = load_run_config(None)
    keys = config_keys(default)
    assert len(keys) > 60 and all(k.doc for k in keys), [k.key for k in keys if not k.doc]
    with pytest.raises(SystemExit) as done:
        parse_config(["--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    listed = re.findall(r"^  (\S+): ", shown, flags=re.M)
    assert listed == [k.key for k in keys]
    assert f"values in the default config ({DEFAULT_CONFIG})" in shown
    assert f"\n  data.max_seq_len: {default.data.max_seq_len}\n" in shown
    assert f"\n  model.gguf_file: {default.model.gguf_file}\n" in shown
    assert "\n  model.tokenizer: null\n" in shown and "\n  train.trackers: [tensorboard]\n" in shown
    assert "  data.question_mix.fragment: " in shown  # a nested section's keys, dotted
    assert "Rank-stabilised LoRA" in " ".join(shown.split())


def test_prepare_help_lists_the_keys_prepare_reads(capsys):
    """``amazon-sft prepare --help`` named no key although prepare takes dotted overrides: it
    lists the data keys and the model keys the tokenizer load reads, with their values in the
    default config, and no training key."""
    from amazon_sft.cli import build_parser
    from amazon_sft.config_keys import config_keys, prepare_reads

    default = load_run_config(None)
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["prepare", "--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    listed = re.findall(r"^  ([a-z_]+\.\S+): ", shown, flags=re.M)
    data_keys = [k.key for k in config_keys(default) if prepare_reads(k.key)]
    assert set(data_keys) <= set(listed) and len(data_keys) > 30
    assert {"model.path", "model.tokenizer", "model.gguf_file"} <= set(listed)
    assert not [k for k in listed if k.split(".")[0] in ("train", "lora", "checkpoint")]
    assert set(listed) == {k.key for k in config_keys(default) if prepare_reads(k.key)}
    assert "data.path" not in listed and "data.verify" not in listed  # training's, not prepare's
    # the description is wrapped as before; only the key list is appended as it is
    head = shown.split("config keys it reads")[0]
    assert max(map(len, head.splitlines())) <= 100, head  # unwrapped, it was one 120-char line
    assert f"\n  data.max_seq_len: {default.data.max_seq_len}\n" in shown
    with pytest.raises(SystemExit):  # other commands' help is as before: no keys
        build_parser().parse_args(["index", "--help"])
    assert "data.max_seq_len" not in capsys.readouterr().out


def test_amazon_sft_version_prints_the_version(capsys):
    """A hostile user's review: ``amazon-sft --version`` said "command required"."""
    from amazon_sft import __version__
    from amazon_sft.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"amazon-sft {__version__}"


def test_a_config_file_cannot_grant_its_folder_the_right_to_run_code(tmp_path, caplog):
    """A downloaded run folder carries its own config: ``model.trust_remote_code: true`` read
    from a file would let the folder run its own Python. Only the command line grants it (the
    end-to-end case: test_hostile.py's downloaded run folder)."""
    from amazon_sft.config_loader import CONFIG_DIR

    path = tmp_path / "run.yaml"
    raw = yaml.safe_load((CONFIG_DIR / "tiny.yaml").read_text())
    raw.setdefault("model", {})["trust_remote_code"] = True
    path.write_text(yaml.safe_dump(raw))
    with caplog.at_level("WARNING"):
        assert load_run_config(str(path)).model.trust_remote_code is False
    assert "files cannot grant it" in caplog.text and str(path) in caplog.text
    granted = load_run_config(str(path), ["model.trust_remote_code=true"])
    assert granted.model.trust_remote_code is True
