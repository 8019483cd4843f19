"""Resolve what ``--model`` names into (model, tokenizer, run config, label), never through ZeRO-3.

- ``config:NAME`` (or a config YAML): the *base* model of that run config, before any tuning.
- a training ``out_dir`` or its ``final/`` folder: the saved result. A LoRA adapter is put on the
  base model named in the saved config; a full model is read as it was written (consolidated
  16-bit weights under ZeRO-3, so evaluation never generates through sharded parameters).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from amazon_sft.checkpointing import CHECKSUMS, CorruptCheckpoint, verify_checkpoint
from amazon_sft.config import RunConfig, load_run_config
from amazon_sft.data.manifest import shaping_overrides
from amazon_sft.errors import UserError
from amazon_sft.lora_base import check_lora_base
from amazon_sft.modeling import load_model, peft_quietly
from amazon_sft.ownership import RUN_MARKER
from amazon_sft.prompts import build_prompt_format
from amazon_sft.tokenizer import choose_pad_id, load_tokenizer
from amazon_sft.trained_on import TEMPLATES, own_templates, read_trained_on

SAVED_CONFIG = "amazon_sft_config.yaml"


def names_a_config(spec: str) -> bool:
    """``spec`` is a run config (``config:NAME`` or a YAML): its base model, never trained.

    >>> names_a_config("config:tiny"), names_a_config("my.yaml"), names_a_config("runs/x")
    (True, True, False)
    """
    return spec.startswith("config:") or spec.endswith((".yaml", ".yml"))


def load_for_eval(
    spec: str,
    overrides: list[str],
    device: str,
    what: str = "--model",
    merge: bool = True,
    runs_only: bool = False,
):
    """(model in eval mode on ``device``, tokenizer, run config, label); errors name the model
    as ``what`` ``spec`` (export's is its RUN argument) and, with ``runs_only`` (export), ask
    for a training run alone. A LoRA run comes merged into its base unless ``merge`` is False
    (export: its check compares the merge with the adapters apart)."""
    from accelerate.utils import set_seed  # seeds as training does (train.build_model)

    dtype = answering_dtype(device)

    if names_a_config(spec):
        cfg = load_run_config(spec.removeprefix("config:"), overrides)
        tok = load_tokenizer(cfg.model)
        set_seed(cfg.seed)  # a random-init base is then the very model training starts from
        model = load_model(
            _no_lora(cfg), len(tok), choose_pad_id(tok), "no", dtype=dtype, bos_eos=_ends(tok)
        )
        return _ready(model, device), tok, cfg, f"base {cfg.model.path}"
    folder = _run_folder(spec, what, runs_only)
    has_weights = any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))
    if not has_weights:
        raise UserError(
            f"{what} {spec}: {folder} holds no weights (*.safetensors); the run did not finish"
        )
    if not (folder / "tokenizer_config.json").is_file():
        raise UserError(
            f"{what} {spec}: {folder} holds no tokenizer; re-save it with the training run"
        )
    if not (folder / CHECKSUMS).is_file():  # never skip the check because its list is gone
        raise UserError(
            f"{what} {spec}: {CHECKSUMS} is missing from {folder}, so its weights cannot be "
            "verified: copy the whole folder again"
        )
    try:
        verify_checkpoint(folder)
    except CorruptCheckpoint as err:
        raise UserError(
            f"{what} {spec}: {err}; the saved model is damaged or was edited: put the file "
            "back as it was saved, or copy the folder again"
        ) from None
    cfg = _saved_config(folder, overrides)
    tok = load_tokenizer(cfg.model, location=str(folder))
    check_prompts(folder, cfg, tok, what, spec)
    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        cfg = _base_found(folder, cfg)
        settled = check_lora_base(folder, cfg, what, spec)  # False: a hub name, asked again
        set_seed(cfg.seed)  # a random base (model.path: random) is the one training drew
        try:
            base = load_model(
                _no_lora(cfg), len(tok), choose_pad_id(tok), "no", dtype=dtype, bos_eos=_ends(tok)
            )
        except UserError as err:  # ask and export take no model.path=: say where it is named
            raise UserError(
                f"{what} {spec}: its LoRA base {cfg.model.path!r} does not load ({err}); put the "
                "base back there, or a link there to where it is now (its weight files are "
                f"checked against the adapter's record; {SAVED_CONFIG} is in its checksums)"
            ) from None
        if not settled:  # the load brought a hub name's weights, or a newer revision of them
            check_lora_base(folder, cfg, what, spec, loaded=True)
        # merged for answering: one matmul a projection, not three (the demo's SmolLM2 run
        # generates 1.38x faster on 2 cores, the same tokens: bench/lora_merged.py)
        with peft_quietly():
            model = PeftModel.from_pretrained(base, str(folder))
        model = merge_adapters(model) if merge else model
        label = f"tuned {folder} ({cfg.lora.describe()} on {cfg.model.path}{_trained(folder, cfg)})"
        return _ready(model, device), tok, cfg, label
    full = _no_lora(cfg)
    full.model.path, full.model.gguf_file = str(folder), None
    model = load_model(full, len(tok), choose_pad_id(tok), "no", dtype=dtype, bos_eos=_ends(tok))
    trained = _trained(folder, cfg)  # an export has no record of its training
    how = f" (full fine-tune of {cfg.model.path}{trained})" if trained else ""
    return _ready(model, device), tok, cfg, f"tuned {folder}{how}"


def _trained(folder: Path, cfg: RunConfig) -> str:
    """How a training run's saved model was trained, for a report's reader (a new user found
    no recipe in the demo's): its steps, rows a step and learning rate, from its
    ``run_summary.json`` (empty for a folder without one: an export)."""
    from amazon_sft.run_files import read_run_summary

    summary = read_run_summary(folder)
    if summary is None:
        return ""
    stopped = f", stopped early by {summary.stopped_by}" if summary.stopped_by else ""
    return (
        f"; {summary.steps} steps of {cfg.train.global_batch_size} rows, lr {cfg.train.lr:g}"
        + stopped
    )


def merge_adapters(model):
    """A LoRA model merged into its base (peft ``merge_and_unload``), a weight its input and
    output embeddings share untied first where an adapter sits on either; other models as they
    are. The one merge answering and export make."""
    if not hasattr(model, "merge_and_unload"):
        return model
    untie_adapted_embeddings(model)
    with peft_quietly():
        return model.merge_and_unload()


def untie_adapted_embeddings(model) -> bool:
    """Give the output layer its own copy of a weight it shares with the input embeddings when
    an adapter sits on either (LoRA on ``lm_head`` or ``embed_tokens`` of SmolLM2, Llama-3.2):
    training changed one side only, and a merge into the shared weight changes both (an export
    review: logits 0.35 off, the top token changed). The model then saves untied. Returns
    whether it untied."""
    base = model.get_base_model()
    inputs, outputs = base.get_input_embeddings(), base.get_output_embeddings()
    if outputs is None:
        return False
    shared = getattr(inputs, "base_layer", inputs).weight
    head = getattr(outputs, "base_layer", outputs)
    adapted = hasattr(inputs, "base_layer") or hasattr(outputs, "base_layer")
    if head.weight is not shared or not adapted:
        return False
    head.weight = torch.nn.Parameter(shared.detach().clone(), requires_grad=False)
    for config in {id(c): c for c in (base.config, base.config.get_text_config())}.values():
        config.tie_word_embeddings = False
    return True


def check_prompts(folder: Path, cfg: RunConfig, tok, what: str, spec: str) -> None:
    """Refuse a run whose prompts, rendered now from its config, are not those it was trained
    on: its ``data.templates`` file edited since (ask, chat and serve used it unsaid)."""
    record = read_trained_on(folder)
    if record is None or not record.prompt_format:
        return
    now = build_prompt_format(tok, cfg.data).fingerprint()
    if now != record.prompt_format:
        own = own_templates(folder)
        fix = (
            f"put back {folder / TEMPLATES}, the copy the run carries (or a copy of the file "
            "it was trained with)"
            if own
            else "put back the templates file it was trained with (the builtin one: `git "
            "checkout amazon_sft/templates/questions.yaml`)"
            + (
                ""  # an export's checksums cover its config: an edit there reads as damage
                if _config_checked(folder)
                else f", or set data.templates in {folder / SAVED_CONFIG} to a copy of it"
            )
        )
        raise UserError(
            f"{what} {spec}: data.templates={cfg.data.templates} renders other prompts than it "
            f"was trained on (fingerprint {now} != {record.prompt_format}): {fix}"
        )


def _config_checked(folder: Path) -> bool:
    """Whether the folder's checksums cover its config (an export's do; a run's cover weights)."""
    try:
        return SAVED_CONFIG in json.loads((folder / CHECKSUMS).read_text())
    except (OSError, ValueError, TypeError):
        return False


def _set_aside(run: Path) -> str:
    """Where ``overwrite=true`` set the run's earlier model aside (the newest, saved): a second
    ``make demo`` stopped while training left its first one there, unnamed (a new user's trial).

    >>> import tempfile; run = Path(tempfile.mkdtemp())
    >>> _set_aside(run)
    ''
    >>> (run / "previous" / "20261206T005325Z" / "final").mkdir(parents=True)
    >>> _set_aside(run).endswith("previous/20261206T005325Z (overwrite=true set it aside)")
    True
    """
    from amazon_sft.ownership import PREVIOUS_RUNS

    kept = sorted((run / PREVIOUS_RUNS).glob("*/final"))
    return (
        f"; the run's earlier model is in {kept[-1].parent} (overwrite=true set it aside)"
        if kept
        else ""
    )


def _run_folder(spec: str, what: str = "--model", runs_only: bool = False) -> Path:
    """The saved model's folder a training ``out_dir`` (or its ``final/``) names; where
    ``runs_only`` (export: a base model needs none), its errors do not offer ``config:NAME``."""
    folder = Path(spec)
    if (folder / "final").is_dir():
        folder = folder / "final"
    if not folder.is_dir():
        takes = "a training" if runs_only else "config:NAME or a training"
        raise UserError(f"{what} {spec}: not a folder; give {takes} out_dir / final folder")
    if (folder / "trainer_state.json").is_file():  # checkpoints/step-N: state for resume
        raise UserError(
            f"{spec} is a training checkpoint (what resume=auto continues from), not a saved "
            "model: give the run's folder (its final/), or let the run finish (resume=auto)"
        )
    if not (folder / SAVED_CONFIG).is_file() and (folder / "checkpoints").is_dir():
        raise UserError(
            f"{what} {spec}: the run has no saved model (final/) yet, only checkpoints: let it "
            "finish (train ... resume=auto), or set train.max_steps to its last checkpoint's step "
            "(train.epochs=0 if its config sizes it in epochs)"
        )
    if not (folder / SAVED_CONFIG).is_file() and (folder / RUN_MARKER).is_file():
        raise UserError(
            f"{what} {spec}: the run has no saved model (final/) yet, nor a checkpoint: let it "
            f"train (train ... resume=auto), or give a finished run{_set_aside(folder)}"
        )
    if not (folder / SAVED_CONFIG).is_file():
        raise UserError(
            f"{what} {spec}: no {SAVED_CONFIG} in {folder}; is it an amazon_sft training output?"
        )
    return folder


def _ends(tok) -> tuple[int | None, int | None]:
    """The BOS and EOS a random model's config records (``modeling.random_arch_config``)."""
    return tok.bos_token_id, tok.eos_token_id


def config_of(specs: list[str], overrides: list[str]) -> list[str] | None:
    """The run config the last of ``specs`` that names one is read with (``config:NAME``, a
    YAML, a saved run's own config file) and the overrides that shape the data, for the prepare
    command a refusal suggests; None where none names one.

    >>> config_of(["config:tiny", "runs/none"], ["data.seed=3"])
    ['tiny', 'data.seed=3']
    """
    for spec in reversed(specs):
        if spec.startswith("config:"):
            return [spec[len("config:") :], *shaping_overrides(overrides)]
        if spec.endswith((".yaml", ".yml")):
            return [spec, *shaping_overrides(overrides)]
        with contextlib.suppress(UserError):
            folder = _run_folder(spec)  # with its own templates, as it is read
            if (folder / SAVED_CONFIG).is_file():
                own = [*own_templates(folder), *overrides]
                return [str(folder / SAVED_CONFIG), *shaping_overrides(own)]
    return None


def compared_overrides(specs: dict[str, str], overrides: list[str]) -> dict[str, list[str]]:
    """Each model's overrides. Compared models are asked the same prompts, so a base read from
    a config (``config:NAME``, a YAML) is given the tuned run's own templates (its config's
    would be refused against data prepared with the user's); the user's overrides come after
    and win. A saved run always reads its own (``_saved_config``)."""
    own: list[str] = []
    if "tuned" in specs:
        with contextlib.suppress(UserError):  # not a run: nothing to share
            own = own_templates(_run_folder(specs["tuned"]))
    return {
        name: [*own, *overrides] if saved_folder(spec) is None else list(overrides)
        for name, spec in specs.items()
    }


def saved_folder(spec: str) -> Path | None:
    """The saved model's folder ``--model`` names, None for a base model (``config:NAME``)."""
    if names_a_config(spec):
        return None
    return _run_folder(spec)


def run_config_for(spec: str, overrides: list[str]) -> RunConfig:
    """The run config ``--model`` names, read without loading a model (what needs only the
    config is refused before a load that takes SmolLM2 25 s)."""
    if names_a_config(spec):
        return load_run_config(spec.removeprefix("config:"), overrides)
    return _saved_config(_run_folder(spec), overrides)


def held_back_rows(spec: str) -> int:
    """The prepared rows ``spec``'s run held back from training for its validation loss
    (``train.validation_rows``; 0 for a config's base model): a product taught only in them
    was not trained on, yet counts as seen. As the run trained: eval's overrides change the
    config it answers with, not its past."""
    return 0 if names_a_config(spec) else run_config_for(spec, []).train.validation_rows


def _saved_config(folder: Path, overrides: list[str]) -> RunConfig:
    """A saved model's config, its templates read from its own copy (the user's overrides
    after: eval's, for both models)."""
    return load_run_config(str(folder / SAVED_CONFIG), [*own_templates(folder), *overrides])


def _base_found(folder: Path, cfg: RunConfig) -> RunConfig:
    """A LoRA run's config with ``model.path`` as training named it whole, where the path as
    typed finds nothing from here (ask from another folder; a project moved whole still reads
    ``base`` from its root). The base's weights are compared with the adapter's record after."""
    import dataclasses
    import os

    record = read_trained_on(folder)
    typed = cfg.model.path
    if record is None or not record.model_path or os.path.exists(typed) or typed == "random":
        return cfg
    if not os.path.isdir(record.model_path):
        return cfg  # the load says the base is not there, naming the config to set
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=record.model_path))


def _no_lora(cfg: RunConfig) -> RunConfig:
    """The same config without adapters or gradient checkpointing (inference needs neither)."""
    import dataclasses

    return dataclasses.replace(
        cfg,
        lora=dataclasses.replace(cfg.lora, enabled=False),
        train=dataclasses.replace(cfg.train, gradient_checkpointing=False, attention="sdpa"),
        model=dataclasses.replace(cfg.model),
    )


def _ready(model, device: str):
    from amazon_sft.evaluation.generation import token_ids_only

    model.config.use_cache = True  # generation wants the KV cache (training turned it off)
    token_ids_only(model)  # answers decode as Decoding says, whatever generation_config.json adds
    return model.to(device).eval()


def answering_dtype(device: str) -> torch.dtype:
    """bf16 on a GPU that has it (fp32 there doubled an 8B model's 16 GB of weights and halved
    generation speed; training computes in bf16 under autocast anyway), fp32 on CPU."""
    from amazon_sft.distributed import native_bf16_gpu  # as training decides it

    native = str(device).startswith("cuda") and native_bf16_gpu()
    return torch.bfloat16 if native else torch.float32


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
