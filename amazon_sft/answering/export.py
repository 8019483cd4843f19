"""``amazon-sft export RUN --out DIR``: a standalone model plain transformers (and vLLM) loads.

A LoRA run is merged into its base (peft ``merge_and_unload``); a full fine-tune is re-saved. The
result (safetensors, tokenizer, model card) is reloaded and its logits compared with the trained
model's on a sample prompt; a difference beyond fp32 rounding is an error.
"""

from __future__ import annotations

from pathlib import Path

import torch

from amazon_sft.errors import UserError
from amazon_sft.evaluation.loading import load_for_eval
from amazon_sft.prompts import build_prompt_format
from amazon_sft.tokenizer import hf_encoder

LOGIT_TOLERANCE = 1e-3


def export_model(run: str, out_dir: str | Path, overrides: list[str] | None = None) -> dict:
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"--out {out_dir} exists and is not empty: choose another folder")
    trained, tok, cfg, label = load_for_eval(run, overrides or [], "cpu")
    fmt = build_prompt_format(tok, cfg.data)
    sample = fmt.bos + hf_encoder(tok)([fmt.render("Sample product")])[0]
    ids = torch.tensor([sample])
    with torch.no_grad():
        expected = trained(input_ids=ids).logits
    merged = trained.merge_and_unload() if hasattr(trained, "merge_and_unload") else trained
    merged.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    (out_dir / "README.md").write_text(
        f"# {label}, exported by amazon_sft\n\nStandalone weights (LoRA merged when there was one); load with\n"
        f'`AutoModelForCausalLM.from_pretrained("{out_dir.name}")`. Prompts: amazon_sft\'s prompt format '
        f"({'chat template' if fmt.chat else 'plain template'}).\n"
    )
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(out_dir).eval()
    with torch.no_grad():
        got = reloaded(input_ids=ids).logits
    diff = float((got - expected).abs().max())
    if not diff <= LOGIT_TOLERANCE:
        raise UserError(
            f"the exported model's logits differ from the trained model's by {diff:.2e}"
        )
    return {"out": str(out_dir), "max_logit_diff": diff, "source": label}
