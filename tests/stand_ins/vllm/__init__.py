"""A stand-in for vLLM's offline API (``LLM``, ``SamplingParams``), as documented, for the tests
of ``amazon-sft eval --backend vllm`` on a machine where vLLM cannot be installed (no CUDA).

It loads the folder it is given with transformers (so the folder must be a complete HF model),
decodes each token prompt greedily one at a time, and answers in vLLM's shapes:
``RequestOutput.outputs[0]`` with ``token_ids`` (the stop token included, as vLLM reports it)
and ``finish_reason`` ``"stop"`` or ``"length"``. Every constructor call is appended to the
JSON-lines file named by ``$FAKE_VLLM_LOG``.
"""

import json
import os
from dataclasses import dataclass, field


@dataclass
class SamplingParams:
    temperature: float = 1.0
    max_tokens: int = 16
    repetition_penalty: float = 1.0
    stop_token_ids: list = field(default_factory=list)
    skip_special_tokens: bool = True


@dataclass
class CompletionOutput:
    token_ids: list
    finish_reason: str
    text: str = ""


@dataclass
class RequestOutput:
    prompt_token_ids: list
    outputs: list


class LLM:
    def __init__(self, model, tokenizer=None, dtype="auto", seed=0, **kwargs):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model).eval()
        if os.environ.get("FAKE_VLLM_LOG"):
            with open(os.environ["FAKE_VLLM_LOG"], "a") as fh:
                fh.write(json.dumps({"model": model, "tokenizer": tokenizer, **kwargs}) + "\n")

    def generate(self, prompts, params, use_tqdm=True):
        import torch

        assert params.temperature == 0.0, "the stand-in only decodes greedily"
        results = []
        for prompt in prompts:
            ids = list(prompt["prompt_token_ids"])
            with torch.no_grad():
                out = self.model.generate(
                    input_ids=torch.tensor([ids]),
                    attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                    max_new_tokens=params.max_tokens,
                    do_sample=False,
                    repetition_penalty=params.repetition_penalty,
                    eos_token_id=params.stop_token_ids,
                    pad_token_id=params.stop_token_ids[0],
                )
            new = out[0, len(ids) :].tolist()
            stop = next((k for k, t in enumerate(new) if t in params.stop_token_ids), None)
            if stop is not None:
                results.append(RequestOutput(ids, [CompletionOutput(new[: stop + 1], "stop")]))
            else:
                results.append(RequestOutput(ids, [CompletionOutput(new, "length")]))
        return results
