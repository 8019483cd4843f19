"""``amazon-sft export RUN --out DIR``: a standalone model plain transformers (and vLLM) loads.

A LoRA run is merged into its base (peft ``merge_and_unload``); a full fine-tune is re-saved. The
result (safetensors, tokenizer, model card) is reloaded and its logits compared with the trained
model's on a sample prompt; a difference beyond fp32 rounding is an error. Everything is
written into a hidden sibling folder and renamed into place once checked, as prepare does.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from amazon_sft.answering.export_files import (
    EXPORT_MARKER,
    export_not_as_written,
    export_readme,
    looks_like_an_export,
    plain_template_for,
    record_export,
    served_ids,
    write_portable,
)
from amazon_sft.atomic import (
    new_staging,
    refuse_mount_point,
    remove_stale,
    swap_into_place,
    take_on,
)
from amazon_sft.checkpointing import write_checksums
from amazon_sft.config_loader import write_resolved
from amazon_sft.errors import UserError
from amazon_sft.evaluation.generation import stop_ids
from amazon_sft.evaluation.loading import (
    load_for_eval,
    merge_adapters,
    names_a_config,
    saved_folder,
)
from amazon_sft.output_lock import OutputLock
from amazon_sft.output_places import refuse_inside_another_output
from amazon_sft.outputs import check_output_folder, disk_full
from amazon_sft.ownership import listing, utc_stamp
from amazon_sft.prompts import build_prompt_format
from amazon_sft.run_files import RunSummary, read_run_summary
from amazon_sft.saving import readable_like_the_rest
from amazon_sft.tokenizer import hf_encoder
from amazon_sft.trained_on import (
    keep_templates,
    read_trained_on,
    whole_model_path,
    write_trained_on,
)

log = logging.getLogger(__name__)

EDITABLE = ("README.md", "generation_config.json")
"""An export's files left out of its checksums: the model card and generation defaults (edited
before an upload). The record of the data it was trained on is listed: deleted, it turned the
prompt check off (a hostile user's trial)."""
LOGIT_TOLERANCE = 1e-3
"""Of the largest logit's size (at least 1): what a correct merge and reload may differ by."""


def export_model(
    run: str,
    out_dir: str | Path,
    overrides: list[str] | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
) -> dict:
    """Merge, save into a hidden sibling folder, reload and compare there, then rename it into
    place: ``out_dir`` is either absent, or holds the whole checked export. Another ``dtype``
    than float32: the merge is checked in float32, then the saved file against the merged
    model cast to it (the cast's own rounding is the user's choice, not checked away).
    ``overwrite``: an earlier export in ``out_dir`` is replaced, if nothing in it was edited or
    added since it was written."""
    if names_a_config(run):  # its card says tuned
        raise UserError(
            f"RUN {run} is a base model, not a training run: it needs no export (load "
            "model.path as it is); export takes a training run's out_dir or its final/"
        )
    out_dir = check_output_folder(out_dir, "--out")
    refuse_inside_another_output(out_dir, "--out", replaces="export")
    try:
        source = saved_folder(run)
    except UserError:  # said below, in RUN's words, by the load
        source = None
    if source is not None and out_dir.resolve() in (source.resolve(), source.resolve().parent):
        raise UserError(
            f"--out {out_dir} is the folder RUN {run} is read from: export into another folder"
        )
    refuse_mount_point(out_dir, "--out", "the export")
    replacing = _check_target(out_dir, overwrite)
    # the adapters kept apart: the merge is checked against them (merged on load, as answering
    # loads a run, the check compared the merge with itself)
    trained, tok, cfg, label = load_for_eval(
        run, overrides or [], "cpu", what="RUN", merge=False, runs_only=True
    )
    base = whole_model_path(cfg.model.path) if cfg.lora.enabled else ""  # "": no folder
    if base and Path(base).resolve() == out_dir.resolve():
        raise UserError(
            f"--out {out_dir} is the base the LoRA run {run} loads (model.path): replaced, the "
            "run could not be loaded again; export into another folder"
        )
    fmt = build_prompt_format(tok, cfg.data)
    question = fmt.question("Sample product")
    sample = fmt.bos + hf_encoder(tok)([fmt.wrap(question)])[0]
    plain = "" if fmt.chat else plain_template_for(tok, fmt, sample, question)
    ids = torch.tensor([sample])
    with torch.no_grad():
        expected = trained(input_ids=ids).logits
    merged = merge_adapters(trained)  # a tied embedding untied first, as answering merges
    # the merge against the adapters kept apart (two computations: float rounding apart)
    merge_diff = _max_diff(merged, ids, expected)
    _check(merge_diff, "the merged model's", expected)
    if dtype != "float32":
        # compared in float32 on both sides: half-precision attention rounds differently in
        # each implementation (1.3 apart on SmolLM2), which would hide or fake a bad file
        with torch.no_grad():  # the weights rounded as saved, computed in fp32 (buffers kept:
            for param in merged.parameters():  # RoPE's inv_freq is not saved, but recomputed)
                param.data = param.data.to(getattr(torch, dtype)).float()
            expected = merged(input_ids=ids).logits
        merged = merged.to(getattr(torch, dtype))
    with OutputLock(out_dir, "amazon-sft export"):  # one writer; checked again under it
        remove_stale(out_dir)  # an earlier export killed mid-swap: its old folder back first
        # checked whole above and again before the swap; here only whether there is one
        replacing = overwrite and out_dir.exists() and any(out_dir.iterdir())
        if not replacing:
            _check_target(out_dir, overwrite)  # one arrived meanwhile without --overwrite
        staging = new_staging(out_dir)
        try:
            kept = f"nothing was written to {out_dir} and the run {run} is unchanged"
            with disk_full(out_dir.parent, "export", kept):
                summary = _run_summary(run)
                _keep_trained_on(run, staging)  # before _write lists the files
                _write(merged, tok, staging, out_dir.name, label, cfg, fmt, summary, plain)
                record_export(staging)
            _check_served(staging, question, sample, cfg.data.system_prompt if fmt.chat else None)
            diff = _max_logit_diff(staging, ids, expected)
            _check(diff, "the exported model's", expected)
            if replacing and out_dir.exists():
                _check_target(out_dir, overwrite)  # nothing edited while this one was made
                swap_into_place(staging, out_dir)  # with the folder's mode and group
            else:  # (an export replaced that the user removed meanwhile: put in place)
                _into_place(staging, out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return {
        "out": str(out_dir),
        "max_logit_diff": diff,
        "merge_logit_diff": merge_diff,
        "source": label,
    }


def _check_target(out_dir: Path, overwrite: bool) -> bool:
    """Whether ``out_dir`` holds an earlier export to replace (``overwrite``); refused when it
    holds anything without ``overwrite``, or a file export did not write, or one edited since."""
    if not (out_dir.exists() and any(out_dir.iterdir())):
        return False
    if not overwrite:
        raise UserError(
            f"--out {out_dir} exists and is not empty: pass --overwrite to replace an earlier "
            "export there, or choose another folder"
        )
    theirs, edited = export_not_as_written(out_dir)
    if theirs and not (out_dir / EXPORT_MARKER).exists() and looks_like_an_export(out_dir):
        raise UserError(
            f"--out {out_dir} holds an export from before exports kept a record of their files "
            f"({EXPORT_MARKER}), so whether any was edited cannot be told: remove it yourself "
            "or choose another folder"
        )
    if theirs:
        raise UserError(
            f"--out {out_dir} holds {listing(theirs)}, which export did not write: --overwrite "
            "replaces only an earlier export; move them out or choose another folder"
        )
    if edited:
        raise UserError(
            f"--out {out_dir}: {listing(edited)} edited since export wrote it, and --overwrite "
            "would replace it: move it out (or undo the edit), or choose another folder"
        )
    return True


def _into_place(staging: Path, out_dir: Path) -> None:
    """The finished export renamed to ``out_dir``, empty when checked; a file the user put there
    since is kept, and so is the export, beside it under a name of its own. An empty folder the
    user made (a team's: its group, setgid, 2770) gives the export its mode and group."""
    try:
        if out_dir.exists():
            take_on(out_dir.stat(), staging)
            out_dir.rmdir()
        staging.rename(out_dir)
    except OSError:  # ENOTEMPTY / EEXIST: files arrived while the export was written
        keep = out_dir.with_name(f"{out_dir.name}.export-{utc_stamp()}")
        staging.rename(keep)
        held = listing(sorted(p.name for p in out_dir.iterdir())) if out_dir.is_dir() else "a file"
        raise UserError(
            f"--out {out_dir} got {held} while the export was written: it is kept there, and "
            f"the export is in {keep}"
        ) from None


def _write(model, tok, folder: Path, name: str, label: str, cfg, fmt, summary, plain) -> None:
    model.save_pretrained(folder, safe_serialization=True)
    readable_like_the_rest(folder)
    tok.save_pretrained(folder)
    pad_id = model.config.pad_token_id
    pad = tok.convert_ids_to_tokens(pad_id) if pad_id is not None else None
    write_portable(folder, fmt, pad, stop_ids(tok, model), plain)  # the trained EOS first
    write_resolved(keep_templates(cfg, folder), folder / "amazon_sft_config.yaml")
    (folder / "README.md").write_text(export_readme(name, label, cfg, fmt, summary))
    # ask, eval and serve verify every file (weights, tokenizer, chat template, config) but the
    # model card and the generation defaults, the user's to edit before an upload
    write_checksums(folder, skip=EDITABLE)


def _keep_trained_on(run: str, folder: Path) -> None:
    """The run's record of the prepared folder it was trained on: ``eval --model EXPORT``
    refuses another folder's "held-out" products as it refuses them for the run."""
    source = saved_folder(run)
    record = read_trained_on(source) if source else None
    if record is not None:
        write_trained_on(folder, record)


def _run_summary(run: str) -> RunSummary | None:
    """The run's ``run_summary.json`` (steps, final loss, tokens), None for a base model."""
    folder = saved_folder(run)
    return read_run_summary(folder) if folder else None


def _check_served(folder: Path, question: str, trained: list[int], system: str | None) -> None:
    """The export's tokenizer and chat template, as a server loads them, prompt with the ids
    training used (a review: a base SentencePiece model's plain template did not), with the
    system prompt the run was trained with (``system``) as the export's README asks."""
    from transformers import AutoTokenizer

    served = served_ids(AutoTokenizer.from_pretrained(folder), question, system_prompt=system)
    if served != trained:
        at = next((i for i, (a, b) in enumerate(zip(served, trained)) if a != b), None)
        at = min(len(served), len(trained)) if at is None else at
        raise UserError(
            f"the exported chat template prompts with other token ids than training used (from "
            f"token {at}: {served[at : at + 3]} against {trained[at : at + 3]}): a server would "
            "ask the model what it was not trained on; nothing was exported (report this with "
            "the tokenizer's name)"
        )


def _check(diff: float, what: str, expected: torch.Tensor) -> None:
    """``diff`` within LOGIT_TOLERANCE of the logits' own size: a merge sums in another order
    than base + adapter, and that rounding grows with depth and logit size (a 7B model's are
    tens), far below what a wrong merge or file changes."""
    allowed = LOGIT_TOLERANCE * max(1.0, float(expected.abs().max()))
    if not diff <= allowed:
        raise UserError(
            f"{what} logits differ from the trained model's by {diff:.2e} (allowed {allowed:.1e})"
        )


def _max_diff(model, ids: torch.Tensor, expected: torch.Tensor) -> float:
    with torch.no_grad():
        got = model(input_ids=ids).logits
    return float((got.float() - expected.float()).abs().max())


def _max_logit_diff(folder: Path, ids: torch.Tensor, expected: torch.Tensor) -> float:
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return _max_diff(reloaded, ids, expected)
