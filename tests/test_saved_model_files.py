"""A saved model's files beyond its weights (a hostile user's trial of export and saved models,
2026-12-06): an edited tokenizer, chat template or ``amazon_sft_config.yaml`` in ``final/``
changed every answer without a word, and ``export`` sealed the edit into an export that then
passed its own check; a deleted ``trained_on.json`` turned the prompt check off; ``[]`` in it
was a traceback; ``export --overwrite`` could replace the base its own LoRA run loads."""

import json
import shutil
import subprocess

import pytest

from .conftest import REPO, save_random_model, train_command, train_overrides
from .test_hostile import _cli
from .test_resume_edges import two_steps  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e


def _copy(run, to):
    shutil.copytree(run, to, symlinks=True)
    return to


def _lora_step(prepared, base, run) -> None:
    """One LoRA step on ``base`` into ``run``, through the real entrypoint."""
    extra = ("train.max_steps=1", "lora.enabled=true", "lora.r=2")
    proc = subprocess.run(
        train_command(prepared, base, run, *extra), capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def _edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda f: None, None),  # nothing changed: it loads
        # the model card is the user's to edit before an upload (a mutation audit): it loads
        (lambda f: (f / "README.md").write_text("# My product model\n"), None),
        (lambda f: (f / "tokenizer_config.json").write_text(
            (f / "tokenizer_config.json").read_text().replace("</s>", "<unk>")),
         r"tokenizer_config\.json (does not match|is missing or has the wrong size)"),
        (lambda f: (f / "chat_template.jinja").write_text("Q: {{ messages[-1]['content'] }}\nA:"),
         r"chat_template\.jinja is loaded but not in checksums\.json"),
        (lambda f: _edit(f / "amazon_sft_config.yaml", "seed: ", "seed: 7"),
         r"amazon_sft_config\.yaml (does not match|is missing or has the wrong size)"),
        (lambda f: (f / "trained_on.json").unlink(), r"trained_on\.json is missing"),
    ],
)  # fmt: skip
def test_a_saved_models_answer_files_are_checked_like_its_weights(
    tuned_run, tmp_path, change, named
):
    from amazon_sft.errors import UserError
    from amazon_sft.evaluation.loading import load_for_eval

    run = _copy(tuned_run, tmp_path / "run")
    change(run / "final")
    if named is None:
        load_for_eval(str(run), [], "cpu")
        return
    with pytest.raises(UserError, match=named):
        load_for_eval(str(run), [], "cpu")
    from amazon_sft.answering.export import export_model

    with pytest.raises(UserError, match=named):  # export seals nothing it could not verify
        export_model(str(run), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_exports_record_of_its_data_and_its_chat_template_are_checked(tuned_run, tmp_path):
    from amazon_sft.answering.export import export_model
    from amazon_sft.errors import UserError
    from amazon_sft.evaluation.loading import load_for_eval

    out = tmp_path / "out"
    export_model(str(tuned_run), out)
    assert "trained_on.json" in json.loads((out / "checksums.json").read_text())
    added = _copy(out, tmp_path / "added")
    (added / "chat_template.jinja").write_text("Q: {{ messages[-1]['content'] }}\nA:")
    with pytest.raises(UserError, match=r"chat_template\.jinja is loaded but not in"):
        load_for_eval(str(added), [], "cpu")
    gone = _copy(out, tmp_path / "gone")
    (gone / "trained_on.json").unlink()
    with pytest.raises(UserError, match=r"trained_on\.json is missing"):
        load_for_eval(str(gone), [], "cpu")


@pytest.mark.parametrize("text", ["[]", '{"folder": ["x"], "data_integrity": "d"}'])
def test_a_trained_on_record_of_another_shape_is_damaged_in_one_line(tmp_path, text):
    from amazon_sft.errors import UserError
    from amazon_sft.trained_on import read_trained_on

    (tmp_path / "trained_on.json").write_text(text)
    with pytest.raises(UserError, match=r"trained_on\.json is damaged: copy the saved model"):
        read_trained_on(tmp_path)


def test_export_never_replaces_the_base_its_lora_run_loads(prepared, tiny_cfg, tiny_tok, tmp_path):
    from amazon_sft.answering.export import export_model
    from amazon_sft.errors import UserError

    first = save_random_model(tmp_path / "first", tiny_cfg, tiny_tok, "llama", tied=False)
    run = tmp_path / "lora"
    _lora_step(prepared, first, run)
    base = tmp_path / "base"
    export_model(str(run), base)  # an export, then trained on as a base: the helper's case
    lora = tmp_path / "lora2"
    _lora_step(prepared, base, lora)
    weights = (base / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match=r"is the base the LoRA run \S+ loads"):
        export_model(str(lora), base, overwrite=True)
    assert (base / "model.safetensors").read_bytes() == weights


def test_an_export_listing_its_tokenizer_but_not_its_data_record_loads_as_before(
    tuned_run, tmp_path
):
    """Exports of 2026-12-03 listed their tokenizer files but not ``amazon_sft_config.yaml`` or
    the rest (a review of this change: they were refused as damaged)."""
    from amazon_sft.answering.export import export_model
    from amazon_sft.checkpoint_checksums import write_checksums
    from amazon_sft.evaluation.loading import load_for_eval

    out = tmp_path / "out"
    export_model(str(tuned_run), out)
    then = ("*.safetensors", "config.json", "tokenizer*.json")
    write_checksums(out, then)
    load_for_eval(str(out), [], "cpu")


def test_export_into_a_folder_named_random_is_not_a_random_bases_folder(
    prepared, tmp_path, monkeypatch
):
    """``model.path: random`` names no folder: ``export --out random --overwrite`` was refused
    as "the base the LoRA run loads" (a review)."""
    from amazon_sft.answering.export import export_model

    run = tmp_path / "lora"
    _lora_step(prepared, "random", run)
    monkeypatch.chdir(tmp_path)
    export_model(str(run), "random")
    export_model(str(run), "random", overwrite=True)


def test_a_finished_run_whose_final_lost_a_file_is_finished_again(
    two_steps,  # noqa: F811
    prepared,
    tiny_model_dir,
    tmp_path,
):
    """``final/`` with a file gone, and the run launched again with ``resume=auto`` (as the
    damaged model's message said): "already finished at step 2: final/ is kept as it is", and
    final/ stayed unloadable (a review). It is saved again from the last checkpoint."""
    from amazon_sft.evaluation.loading import load_for_eval

    run = _copy(two_steps, tmp_path / "run")
    (run / "final" / "amazon_sft_config.yaml").unlink()
    base = ("train", "--config", "tiny", *train_overrides(prepared, tiny_model_dir, run))
    again = _cli(*base, "train.max_steps=2", "checkpoint.every_steps=1", "resume=auto")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already finished" not in again.stderr
    load_for_eval(str(run), [], "cpu")


def test_an_edited_generation_config_changes_no_answer_eval_or_ask_gives(tuned_run, tmp_path):
    """``generation_config.json`` is left out of the checksums (the user's, edited before an
    upload), and answering decodes as ``Decoding`` says; but transformers fills each setting
    the decoding leaves unset from it: ``suppress_tokens``, ``bad_words_ids``, ``min_length``
    added there changed the greedy answers eval scores, without a word (a review)."""
    from amazon_sft.evaluation.generation import Decoding, generate_answers
    from amazon_sft.evaluation.loading import load_for_eval
    from amazon_sft.tokenizer import choose_pad_id

    def answers(run):
        model, tok, _, _ = load_for_eval(str(run), [], "cpu")
        ids = [tok("Tell me about the", add_special_tokens=False)["input_ids"]]
        out = generate_answers(model, tok, ids, Decoding(max_new_tokens=6), choose_pad_id(tok))
        return [(a.text, a.new_tokens, a.ended_with_eos) for a in out], tok

    run = _copy(tuned_run, tmp_path / "run")
    first, tok = answers(run)
    said = tok(first[0][0], add_special_tokens=False)["input_ids"]
    edited = run / "final" / "generation_config.json"
    config = json.loads(edited.read_text()) if edited.is_file() else {}
    banned = sorted(set(said)) or [tok.eos_token_id]
    config.update(suppress_tokens=banned, min_length=40, bad_words_ids=[[i] for i in banned])
    edited.write_text(json.dumps(config))
    assert answers(run)[0] == first
