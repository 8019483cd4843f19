"""Optional vLLM generation backend for ``amazon-sft eval --backend vllm``.

vLLM reads a Hugging Face model folder, not our in-memory model: the evaluated model (a LoRA
adapter merged onto its base, a full save, or a base loaded from GGUF) is written once to a
temporary folder with its tokenizer, and vLLM loads it from there. Prompts go in as token ids,
so vLLM sees exactly the ids the HF backend would; greedy decoding (temperature 0), the same
``max_new_tokens``, repetition penalty and EOS. Perplexity stays with the HF model
(teacher forcing is a single forward pass; vLLM adds nothing there).

One process drives vLLM, which spreads over GPUs itself (``--vllm-tensor-parallel``), so this
backend refuses to run under a multi-process ``accelerate launch``.
"""

from __future__ import annotations

import gc
import importlib.util
import tempfile
from pathlib import Path

from amazon_sft.errors import UserError
from amazon_sft.evaluation.generation import Decoding, Generated, stop_ids


def check_vllm_usable(decoding: Decoding, num_processes: int) -> None:
    """Refuse early, before any model is loaded, what the vLLM backend cannot do."""
    if importlib.util.find_spec("vllm") is None:
        raise UserError(
            "--backend vllm: vLLM is not installed (pip install vllm), or use --backend hf"
        )
    if decoding.no_repeat_ngram_size:
        raise UserError(
            "--backend vllm has no no-repeat n-gram constraint: drop --no-repeat-ngram-size "
            "or use --backend hf"
        )
    if num_processes > 1:
        raise UserError(
            "--backend vllm runs in one process (vLLM spreads over GPUs itself): launch without "
            "accelerate's multi-process launcher and pass --vllm-tensor-parallel N"
        )


def export_for_vllm(model, tok, folder: Path) -> Path:
    """Write ``model`` (merging a LoRA adapter into a copy of its weights) as a plain HF folder."""
    if hasattr(model, "merge_and_unload"):  # a peft model: vLLM wants one set of weights
        model = model.merge_and_unload()
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def generate_with_vllm(
    model,
    tok,
    prompt_ids: list[list[int]],
    decoding: Decoding,
    seed: int,
    tensor_parallel: int = 1,
    gpu_memory_utilization: float = 0.85,
) -> list[Generated]:
    """One ``Generated`` per prompt, in the prompts' order. ``model`` is moved to the CPU
    first, so vLLM has the GPU memory to itself."""
    import torch
    from vllm import LLM, SamplingParams

    stops = stop_ids(tok, model)
    with tempfile.TemporaryDirectory(prefix="amazon_sft_vllm_") as tmp:
        export_for_vllm(model.to("cpu"), tok, Path(tmp))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        llm = LLM(
            model=tmp,
            tokenizer=tmp,
            dtype="auto",
            seed=seed,
            tensor_parallel_size=tensor_parallel,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        params = SamplingParams(
            temperature=0.0,  # greedy, as the HF backend
            max_tokens=decoding.max_new_tokens,
            repetition_penalty=decoding.repetition_penalty,
            stop_token_ids=stops,
            skip_special_tokens=True,
        )
        outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params)
        results = [_to_generated(out.outputs[0], tok, stops) for out in outputs]
        del llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return results


def _to_generated(completion, tok, stops: list[int]) -> Generated:
    """vLLM's completion -> ours: text decoded from the ids (as the HF backend does), EOS-ended
    when vLLM stopped on a stop token rather than on the length cap."""
    ids = list(completion.token_ids)
    if ids and ids[-1] in stops:
        ids = ids[:-1]
    ended = completion.finish_reason == "stop"
    return Generated(tok.decode(ids, skip_special_tokens=True).strip(), ended, len(ids))
