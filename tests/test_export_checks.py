"""``export``'s own checks at the unit level (a mutation audit found each unchecked): the logit
comparison refuses a NaN and allows a big model's rounding, and ``--overwrite`` takes a link
in place of a file it wrote, or a folder that merely holds a file of its names, for the user's."""

from __future__ import annotations

import json
import os

import pytest
import torch

from amazon_sft.errors import UserError

pytestmark = pytest.mark.unit


def test_logits_that_are_not_a_number_are_refused_like_ones_that_differ():
    """A merge or file that gives NaN logits compares as "not above the tolerance" (every
    comparison with NaN is False): it must be refused, not exported."""
    from amazon_sft.answering.export import _check

    expected = torch.tensor([[2.0, -3.0]])
    _check(1e-4, "the exported model's", expected)
    for diff in (float("nan"), 0.5):
        with pytest.raises(UserError, match="the exported model's logits differ"):
            _check(diff, "the exported model's", expected)


def test_the_allowed_difference_grows_with_the_logits_size():
    """A merge sums in another order than base + adapter: a 7B model's logits are tens, and
    its rounding is allowed in proportion, never less than for logits of size 1."""
    from amazon_sft.answering.export import LOGIT_TOLERANCE, _check

    big = torch.tensor([[30.0, -1.0]])
    _check(20 * LOGIT_TOLERANCE, "the merged model's", big)  # allowed: 30 x the tolerance
    with pytest.raises(UserError, match=r"allowed 3\.0e-02"):
        _check(40 * LOGIT_TOLERANCE, "the merged model's", big)
    _check(LOGIT_TOLERANCE, "the merged model's", torch.tensor([[0.01]]))  # at least size 1


def _export(folder):
    from amazon_sft.answering.export_files import record_export

    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    record_export(folder)
    return folder


def test_a_link_put_in_place_of_an_exported_file_is_the_users(tmp_path):
    """A user who replaced the exported weights by a link (to a copy of their own, to a
    folder, or to nothing now) made that entry theirs: ``--overwrite`` would delete it, and a
    link to a folder or to nothing was read as a file (a traceback)."""
    from amazon_sft.answering.export_files import export_not_as_written

    out = _export(tmp_path / "model")
    assert export_not_as_written(out) == ([], [])
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"weights")  # the same bytes: only the link says it is theirs
    for target in (mine, tmp_path, tmp_path / "gone"):
        (out / "model.safetensors").unlink()
        os.symlink(target, out / "model.safetensors")
        assert export_not_as_written(out) == (["model.safetensors"], []), target


def test_a_folder_that_only_holds_a_file_of_an_exports_names_is_not_taken_for_one(tmp_path):
    """An export from before the record is known by its config and its checksums together: a
    folder of the user's holding one of them is refused as theirs, not as an old export that
    "cannot be told" and is left for them to remove."""
    from amazon_sft.answering.export import _check_target

    for name in ("checksums.json", "amazon_sft_config.yaml"):
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        (folder / name).write_text(json.dumps({"mine": 1}))
        (folder / "notes.txt").write_text("mine")
        with pytest.raises(UserError, match="which export did not write") as err:
            _check_target(folder, overwrite=True)
        assert "from before" not in str(err.value)
    old = tmp_path / "old"
    old.mkdir()
    for name in ("checksums.json", "amazon_sft_config.yaml"):
        (old / name).write_text("{}")
    with pytest.raises(UserError, match="from before exports kept a record"):
        _check_target(old, overwrite=True)


def test_an_unmerged_lora_model_generates_and_exports_with_token_ids_only():
    """peft generates, merges and saves with the wrapped model's generation_config: reducing
    only the wrapper's left a LoRA run's answers and export reading every setting of
    generation_config.json, a full run's not (a review of the change)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from amazon_sft.evaluation.generation import token_ids_only

    base = LlamaForCausalLM(
        LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=2)
    )  # fmt: skip
    base.generation_config.suppress_tokens = [5]
    base.generation_config.eos_token_id = [2, 7]
    lora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"]))
    token_ids_only(lora)
    inner = lora.get_base_model().generation_config
    assert inner.suppress_tokens is None and inner.eos_token_id == [2, 7]
    assert lora.merge_and_unload().generation_config.suppress_tokens is None
