"""The final save: adapter or full model as safetensors, tokenizer, config, model card; verified.

The state dict is gathered with ``accelerator.get_state_dict`` (under ZeRO-3: the consolidated
16-bit weights), and passed to ``save_pretrained``. Saving a peft model under ZeRO-3 without it
writes the empty local shards (TRL #4416, peft #2892). After writing, the files are read back and
compared with the gathered tensors; an empty or different save is an error, not a warning.
Rank 0 writes into a staging folder beside ``final/`` and swaps it in whole (``atomic``): a
resumed run that already has a ``final/`` never leaves new weights under the old config, or an
old run's files beside the new ones, when it is killed mid-save.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

import torch

from amazon_sft.atomic import new_staging, swap_into_place
from amazon_sft.checkpoint_checksums import (
    CHECKSUMS,
    FINAL_UNLISTED,
    CorruptCheckpoint,
    verify_checkpoint,
    write_checksums,
)
from amazon_sft.config import RunConfig
from amazon_sft.config_loader import write_resolved
from amazon_sft.distributed import agreed, reduce_sum
from amazon_sft.errors import UserError
from amazon_sft.ownership import (
    PREVIOUS_RUNS,
    SAVED_LIST,
    foreign_in_final,
    saved_entries,
    utc_stamp,
)
from amazon_sft.resume_config import history_header
from amazon_sft.run_files import RunSummary, metrics_lines, read_run_summary, write_run_summary
from amazon_sft.tied_weights import tied_names
from amazon_sft.trained_on import TrainedOn, keep_templates, write_trained_on

log = logging.getLogger("amazon_sft.train")
LORA_BASE = "lora_base.json"
"""In a LoRA run's final/: the base model's weight files and their digests when it trained."""
LM_PREFIX = "lm."  # the SummedAnswerLoss wrapper's attribute name


def save_final(
    accelerator,
    cfg: RunConfig,
    model,
    tok,
    out_dir: Path,
    summary: dict,
    trained_on: TrainedOn,
    base_weights: dict | None = None,
    templates: bytes | None = None,
) -> Path:
    """Every rank calls this (the gather is collective); rank 0 writes and verifies.
    ``base_weights``: a LoRA run's ``frozen_base_of``, which loading checks the base against;
    ``templates``: the ``data.templates`` file as training read it (``templates_read``)."""
    final = out_dir / "final"
    refuse_non_finite(accelerator, model)
    if summary.final_loss is None:  # no step ran in this launch (resume=auto finalising)
        # (its val_loss: train.finish, Trainer.score_unscored)
        summary = replace(summary, final_loss=logged_loss(out_dir / "metrics.jsonl", summary.steps))
    state = accelerator.get_state_dict(model)  # collective; None on non-main ranks under DeepSpeed

    def write() -> None:  # rank 0 only: the others learn whether it failed (``agreed``)
        lm = accelerator.unwrap_model(model).lm
        lm_state = {k.removeprefix(LM_PREFIX): v for k, v in state.items()}
        staging = new_staging(final)  # only rank 0 writes, so no name need be agreed
        lm.save_pretrained(staging, state_dict=lm_state, safe_serialization=True)
        readable_like_the_rest(staging)
        expected = _expected_tensors(lm, lm_state, cfg.lora.enabled)
        verify_saved(staging, expected, tied_names(lm))
        tok.save_pretrained(staging)
        # the changes made on resume, as the run's config.yaml says them
        saved = keep_templates(cfg, staging, templates)  # its prompts, wherever it is read
        write_resolved(saved, staging / "amazon_sft_config.yaml", history_header(Path(cfg.out_dir)))
        (staging / "README.md").write_text(model_card(cfg, summary))
        write_run_summary(staging, summary)
        write_trained_on(staging, trained_on)
        if base_weights:  # the adapter is put on model.path when loaded: it must be this base
            (staging / LORA_BASE).write_text(json.dumps(base_weights, indent=1) + "\n")
        write_checksums(staging, skip=FINAL_UNLISTED)  # checked by every command that loads it
        (staging / SAVED_LIST).write_text(json.dumps(saved_entries(staging), indent=1))
        aside = set_aside_foreign_final(out_dir)
        if aside is not None:
            log.warning(
                "final/ held files training did not write, or edited since: the old final/ is "
                "in %s",
                aside,
            )
        swap_into_place(staging, final)

    agreed(accelerator, write, "while writing the final model", main_only=True)
    return final


def set_aside_foreign_final(out_dir: Path) -> Path | None:
    """Move ``final/`` to ``previous/<UTC time>-final/`` when it holds a file no save wrote (put
    there while the run trained: the start refuses one already there), so the swap that follows
    deletes nothing of the user's. Returns where it went, None when nothing was moved."""
    final = out_dir / "final"
    if not foreign_in_final(final):
        return None
    aside = out_dir / PREVIOUS_RUNS / f"{utc_stamp()}-final"
    aside.parent.mkdir(parents=True, exist_ok=True)
    final.rename(aside)
    return aside


def readable_like_the_rest(folder: Path) -> None:
    """transformers writes its safetensors files 0600 and the rest by the umask: a serving
    account could read a folder's config and tokenizer but not its weights. They get the mode
    the same save gave ``config.json`` (``adapter_config.json`` for LoRA adapters)."""
    config = next(
        (c for c in (folder / "config.json", folder / "adapter_config.json") if c.is_file()), None
    )
    if config is None:
        return
    mode = config.stat().st_mode & 0o666
    for file in folder.glob("*.safetensors"):
        file.chmod(mode)


def logged_loss(metrics: Path, step: int, key: str = "loss") -> float | None:
    """The loss (``key``: or the validation loss) ``metrics.jsonl`` logged at ``step`` (its
    last row for it), None when it logged none there or cannot be read."""
    loss = None
    try:
        for _, row in metrics_lines(metrics):
            if row is not None and row["step"] == step:
                loss = row.get(key)
    except OSError:
        return None
    return loss if isinstance(loss, (int, float)) and math.isfinite(loss) else None


def finished_before(out_dir: Path, summary: RunSummary) -> bool:
    """This process ran no step and ``final/`` already holds the model of this very step, whole
    (a requeue of a finished run): saving again would only lose its final loss. Read from the
    shared run folder, so every rank gives the same answer."""
    final = out_dir / "final"
    saved = read_run_summary(final)
    if saved is None or summary.final_loss is not None:
        return False
    if saved.steps != summary.steps or not (final / CHECKSUMS).is_file():
        return False
    try:  # saved again when it lost or changed a file (an edited one is kept, set aside whole)
        verify_checkpoint(final)
    except CorruptCheckpoint:
        return False
    return True


def refuse_non_finite(accelerator, model) -> None:
    """A model with NaN/inf weights is not a result: every rank checks its own weights (its
    partition under ZeRO-3) and all agree, so all stop together instead of saving it."""
    bad = next(
        (
            name
            for name, p in model.named_parameters()
            if (t := getattr(p, "ds_tensor", p)).numel() and not bool(torch.isfinite(t).all())
        ),
        None,
    )
    if reduce_sum(accelerator, torch.tensor([float(bad is not None)])).item():
        where = f" (first at {bad})" if bad else " on another rank"
        raise UserError(
            f"the trained weights are not finite{where}; no final model was saved: lower "
            "train.lr or check the data, then resume from an earlier checkpoint"
        )


def _expected_tensors(lm, lm_state: dict, lora: bool) -> dict[str, torch.Tensor]:
    if lora:
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(lm, state_dict=lm_state)
    return lm_state


def verify_saved(
    folder: Path, expected: dict[str, torch.Tensor], saved_once: Collection[str]
) -> None:
    """Read every safetensors file back; each expected tensor must be there, non-empty, equal.
    ``saved_once``: names the model ties to its input embedding (``tied_weights.tied_names``),
    which transformers saves once, under the embedding's name; any other name missing is a
    save that lost a weight (an untied ``lm_head`` would load fresh and random)."""
    from safetensors.torch import load_file

    saved: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        saved.update(load_file(str(file)))
    if not saved:
        raise UserError(f"the save in {folder} wrote no safetensors file")
    empty = [k for k, v in saved.items() if v.numel() == 0]
    if empty:
        raise UserError(
            f"the save in {folder} holds empty tensors (e.g. {empty[0]}): ZeRO-3 shards were saved"
        )
    for key, tensor in expected.items():
        match = saved.get(key)
        if match is None:
            if key in saved_once:
                continue
            raise UserError(f"the save in {folder} is missing {key}")
        if match.shape != tensor.shape or not torch.equal(
            match.to(tensor.dtype).cpu(), tensor.cpu()
        ):
            raise UserError(f"the save in {folder} differs from the trained weights at {key}")


def model_card(cfg: RunConfig, summary: RunSummary) -> str:
    mode = cfg.lora.describe() if cfg.lora.enabled else "full fine-tune"
    rows = "\n".join(f"| {k} | {v} |" for k, v in summary.as_dict().items())
    answers = (
        "grounded questions (the question and the records retrieval found) are answered with "
        "the product's description and `[source: uid]`, or an abstention when no record is the "
        "product"
        if cfg.data.grounded_fraction > 0
        else "the answer is the product's description"
    )
    base = ""
    if cfg.lora.enabled and cfg.model.gguf_file:
        base = (
            f"\nThe adapter's base is `{cfg.model.gguf_file}` as converted once into amazon_sft's "
            "conversion cache (`~/.cache/amazon_sft`, or `AMAZON_SFT_CACHE`), which "
            "`adapter_config.json` names: plain transformers loads this folder only while that "
            "cache is there. `amazon-sft export` this run for a standalone model.\n"
        )
    return f"""# amazon_sft fine-tune of {cfg.model.path}

Trained with amazon_sft ({mode}) on a product catalogue in AmazonTitles-1.3MM's `trn.json`
format, prepared in `{cfg.data.path}`: {answers}. Serve it with `amazon-sft ask/chat/serve
--model` this run, or `amazon-sft export` it to a standalone folder (LoRA merged) whose README
says how to prompt it.
{base}
| run | value |
|---|---|
{rows}

The full resolved config is in `amazon_sft_config.yaml`.
"""
