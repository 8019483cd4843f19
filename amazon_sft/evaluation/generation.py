"""Batched greedy generation and teacher-forced reference scoring, spread over ranks.

Prompts are sorted by length (so a batch pads little), left-padded (so every prompt ends where
generation starts), and decoded with the KV cache. Each rank takes a contiguous slice of the
sorted work and the results are gathered back into the original order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int = 128
    """Hard cap on generated tokens; an answer that hits it without EOS counts as not stopping."""
    repetition_penalty: float = 1.0
    """>1 discourages repeating tokens (1.0 = off, the recorded default)."""
    no_repeat_ngram_size: int = 0
    """Forbid repeating any n-gram of this many tokens (0 = off)."""
    batch_size: int = 8
    """Prompts per generate call."""


@dataclass
class Generated:
    text: str
    ended_with_eos: bool
    new_tokens: int


def stop_ids(tok, model) -> list[int]:
    """The ids generation stops at: the EOS the answers were trained to end with, then the
    model's own (its generation_config.json: Llama 3.1's [128001, 128008, 128009], Qwen2.5
    base's <|endoftext|> beside the template's <|im_end|>), as an export of it stops.

    >>> from types import SimpleNamespace as NS
    >>> stop_ids(NS(eos_token_id=9), NS(generation_config=NS(eos_token_id=[1, 9])))
    [9, 1]
    """
    own = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    own = own if isinstance(own, list) else [] if own is None else [own]
    return list(dict.fromkeys([tok.eos_token_id, *own]))


def greedy_config(pad_id: int, decoding: Decoding, stops: list[int]):
    """Greedy decoding as ``decoding`` says, not as the model's generation_config.json does
    (Qwen2.5-Instruct's asks for sampling and repetition_penalty 1.05, which would penalise the
    record words a grounded answer copies): the settings base models ship (sampling, penalties,
    lengths, stops) are given here; transformers 5 fills the ones left unset from the model's."""
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=decoding.max_new_tokens,
        min_new_tokens=0,
        do_sample=False,
        num_beams=1,
        temperature=1.0,
        top_k=50,
        top_p=1.0,
        repetition_penalty=decoding.repetition_penalty,
        no_repeat_ngram_size=decoding.no_repeat_ngram_size,
        eos_token_id=stops,
        pad_token_id=pad_id,
        use_cache=True,
    )


TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
"""What answering reads of a model's generation_config.json: its token ids (``stop_ids``)."""


def token_ids_only(model) -> None:
    """Reduce ``model.generation_config`` to its ``TOKEN_IDS``: transformers fills every setting
    ``greedy_config`` leaves unset from it, and the file is outside a saved model's checksums
    (the user's to edit before an upload): a ``suppress_tokens``, ``bad_words_ids`` or
    ``min_length`` put there changed the greedy answers eval scored, unsaid (a review).

    >>> from transformers import GenerationConfig
    >>> from types import SimpleNamespace as NS
    >>> m = NS(generation_config=GenerationConfig(eos_token_id=[1, 9], suppress_tokens=[5]))
    >>> token_ids_only(m)
    >>> m.generation_config.eos_token_id, m.generation_config.suppress_tokens
    ([1, 9], None)
    """
    from transformers import GenerationConfig

    # a LoRA model unmerged: peft generates (and merges, and saves) with the wrapped model's
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    for m in (model, inner) if inner is not model else (model,):
        own = getattr(m, "generation_config", None)
        if own is not None:
            ids = {k: getattr(own, k, None) for k in TOKEN_IDS}
            m.generation_config = GenerationConfig(
                **{k: v for k, v in ids.items() if v is not None}
            )


def own_settings_only(model) -> dict:
    """``generate``'s keyword that keeps ``greedy_config`` whole: transformers 4.50 to 4.x
    replace a setting equal to the library default (repetition_penalty 1.0) by the model's
    unless told not to; 5 fills only settings left unset, and has no such keyword."""
    import inspect

    takes = "use_model_defaults" in inspect.signature(model.generate).parameters
    return {"use_model_defaults": False} if takes else {}


def _rank_slice(accelerator, items: list) -> list:
    if accelerator is None or accelerator.num_processes == 1:
        return items
    with accelerator.split_between_processes(items) as mine:
        return list(mine)


def _gather(accelerator, local: list) -> list:
    if accelerator is None or accelerator.num_processes == 1:
        return local
    from accelerate.utils import gather_object

    return gather_object(local)


@torch.no_grad()
def generate_answers(
    model,
    tok,
    prompt_ids: list[list[int]],
    decoding: Decoding,
    pad_id: int,
    accelerator=None,
    desc: str = "generate",
) -> list[Generated]:
    """One ``Generated`` per prompt, in the prompts' order, computed across all ranks."""
    device = next(model.parameters()).device
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    mine = _rank_slice(accelerator, order)
    stops = stop_ids(tok, model)
    config = greedy_config(pad_id, decoding, stops)
    local = []
    show = accelerator is None or accelerator.is_main_process
    for start in tqdm(range(0, len(mine), decoding.batch_size), desc=desc, disable=not show):
        batch = mine[start : start + decoding.batch_size]
        width = max(len(prompt_ids[i]) for i in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):  # left padding: the prompt ends where generation starts
            ids[row, width - len(prompt_ids[i]) :] = torch.tensor(prompt_ids[i])
            mask[row, width - len(prompt_ids[i]) :] = 1
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            generation_config=config,
            **own_settings_only(model),
        )
        for row, i in enumerate(batch):
            new = out[row, width:].tolist()
            end = next((n for n, t in enumerate(new) if t in stops), None)
            ended = end is not None
            if ended:
                new = new[:end]
            new = [t for t in new if t != pad_id]
            local.append(
                (i, Generated(tok.decode(new, skip_special_tokens=True).strip(), ended, len(new)))
            )
    results = dict(_gather(accelerator, local))
    return [results[i] for i in range(len(prompt_ids))]


@torch.no_grad()
def reference_nll(
    model,
    prompt_ids: list[list[int]],
    answer_ids: list[list[int]],
    pad_id: int,
    batch_size: int = 8,
    accelerator=None,
) -> list[tuple[float, int]]:
    """(summed negative log-likelihood, tokens) of each reference answer + EOS given its prompt,
    teacher-forced, in the inputs' order."""
    device = next(model.parameters()).device
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]) + len(answer_ids[i]))
    mine = _rank_slice(accelerator, order)
    local = []
    for start in range(0, len(mine), batch_size):
        batch = mine[start : start + batch_size]
        seqs = [prompt_ids[i] + answer_ids[i] for i in batch]
        width = max(map(len, seqs))
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (i, seq) in enumerate(zip(batch, seqs)):  # right padding: positions start at 0
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
            labels[row, len(prompt_ids[i]) : len(seq)] = torch.tensor(answer_ids[i])
        logits = model(
            input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False
        ).logits.float()
        nll = F.cross_entropy(
            logits[:, :-1].transpose(1, 2),
            labels[:, 1:].to(device),
            reduction="none",
            ignore_index=-100,
        )
        for row, i in enumerate(batch):
            local.append((i, (float(nll[row].sum()), len(answer_ids[i]))))
    results = dict(_gather(accelerator, local))
    return [results[i] for i in range(len(prompt_ids))]
