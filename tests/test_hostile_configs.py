"""A hostile user's configs and overrides (the forty-seventh session's trial): deep nesting was a
RecursionError traceback, a local file named like a shipped config replaced it silently, a
``data={}`` override emptied the section, and an empty or wrong data path was given advice
that prepare then refused."""

from __future__ import annotations

import pytest

from .conftest import train_overrides
from .test_hostile import _assert_one_line, _run_cli

pytestmark = pytest.mark.hostile


def test_yaml_nested_too_deeply_is_one_line(tmp_path, capsys):
    deep = tmp_path / "deep.yaml"
    deep.write_text("x: " + "[" * 5000 + "]" * 5000 + "\n")
    code, err = _run_cli(capsys, "train", "--config", str(deep), "--check-world", "1")
    _assert_one_line(code, err, "train", str(deep), "nested too deeply")
    value = "[" * 50000 + "]" * 50000
    code, err = _run_cli(
        capsys, "train", "--config", "tiny", "--check-world", "1", f"train.lr={value}"
    )
    _assert_one_line(code, err, "train", "train.lr", "nested too deeply")


@pytest.mark.parametrize("made", ["file", "folder"])
def test_a_file_here_named_like_a_shipped_config_is_not_taken_silently(
    tmp_path, capsys, monkeypatch, made
):
    """``--config tiny`` read an empty ``./tiny`` (every value the default config's, 2048-token
    rows); a folder named ``tiny`` made the shipped config unreachable."""
    monkeypatch.chdir(tmp_path)
    if made == "file":
        (tmp_path / "tiny").write_text("# notes\n")
    else:
        (tmp_path / "tiny").mkdir()
    code, err = _run_cli(capsys, "train", "--config", "tiny", "--check-world", "1")
    _assert_one_line(code, err, "train", "shipped config", "./tiny")


@pytest.mark.parametrize("override", ["data={}", "train={}", "lora={}"])
def test_an_override_never_replaces_a_whole_section(capsys, override):
    """``train={}`` dropped the config's and the earlier overrides' values: a run asked for
    ``train.max_steps=1 train.trackers=[]`` trained 100 steps with TensorBoard on."""
    code, err = _run_cli(
        capsys, "train", "--config", "tiny", "--check-world", "1", "train.max_steps=1", override
    )
    _assert_one_line(code, err, "train", override, "one by one")


def test_a_run_folder_or_an_empty_path_given_for_data_says_so(
    tuned_run, tiny_model_dir, tmp_path, capsys
):
    """``data.path=RUN`` was told to run ``prepare --out RUN`` (which prepare refuses);
    ``data.path=`` to prepare into the current folder; ``resume=`` read as the current folder."""
    out = str(tmp_path / "run")
    for data, said in ((tuned_run, "training run's folder"), ("", "path is empty")):
        args = train_overrides(data, tiny_model_dir, out, "train.max_steps=1")
        code, err = _run_cli(capsys, "train", "--config", "tiny", *args)
        _assert_one_line(code, err, "train", said)
        assert "amazon-sft prepare" not in err
    code, err = _run_cli(capsys, "eval", "--data", str(tuned_run), "--model", "config:tiny")
    _assert_one_line(code, err, "eval", "training run's folder")
    # a relative out_dir is inside the current folder, which an empty data.path was read as:
    # "out_dir=runs/q is inside data.path=" (an ML engineer's trial)
    args = train_overrides("", tiny_model_dir, "runs/q", "train.max_steps=1")
    code, err = _run_cli(capsys, "train", "--config", "tiny", *args)
    _assert_one_line(code, err, "train", "data.path is empty")
    args = train_overrides(tuned_run, tiny_model_dir, out, "resume=")
    code, err = _run_cli(capsys, "train", "--config", "tiny", *args)
    _assert_one_line(code, err, "train", "resume is empty")
