"""What an exported folder carries besides its weights, so that a serving stack that never saw
amazon_sft (plain transformers, vLLM, TGI) reads the model as trained, builds the prompt it was
trained on, and stops where ``ask`` stops.

A helper's audit found the files ``save_pretrained`` writes under transformers 5 read wrongly
by transformers 4 stacks: ``rope_theta`` only inside ``rope_parameters`` (4.x silently took
10000 for SmolLM2's 100000: logits off by up to 9.3) and a tokenizer class 4.x lacks; a
``generation_config.json`` whose defaults stopped after 20 tokens (before the citation); pads
that disagreed; a plain-prompt model with no chat template at all; and a README that said
nothing about the prompt. Written by hand: no library writes both generations' keys.
"""

from __future__ import annotations

import json
from pathlib import Path

from amazon_sft.chat_templates import PLAIN_GAPS, chat_messages, fixed_clock, plain_chat_template
from amazon_sft.data.cutting import RUNS_ON
from amazon_sft.data.shards import sha256_file
from amazon_sft.prompts import ContextRecord, PromptFormat
from amazon_sft.run_files import RunSummary

ANSWER_TOKENS = 160
"""``max_new_tokens`` the export's generation config asks for: ``ask``'s default."""
FAST_TOKENIZER = "PreTrainedTokenizerFast"
"""A tokenizer class both transformers 4 and 5 know (5 writes ``TokenizersBackend``)."""


def portable_config(config: dict) -> dict:
    """``config.json`` readable by transformers 4 and 5 alike: 4 reads ``rope_theta`` and
    ``rope_scaling`` at the top and ``torch_dtype``; 5 writes them into ``rope_parameters`` and
    ``dtype`` (and still reads the old keys).

    >>> portable_config({"rope_parameters": {"rope_theta": 1e5, "rope_type": "default"},
    ...                  "dtype": "float32"})["rope_theta"]
    100000.0
    >>> portable_config({"rope_parameters": {"rope_theta": 5e5, "rope_type": "llama3",
    ...                  "factor": 8.0}})["rope_scaling"]
    {'rope_type': 'llama3', 'factor': 8.0}
    """
    out = dict(config)
    rope = out.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:
        out.setdefault("rope_theta", rope["rope_theta"])
        if rope.get("rope_type", "default") != "default":
            out.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
    if "dtype" in out:
        out.setdefault("torch_dtype", out["dtype"])
    return out


def portable_tokenizer_config(config: dict, pad_token: str | None) -> dict:
    """``tokenizer_config.json`` with a class both generations know, the pad the model was
    trained with (``config.json``'s ``pad_token_id``) and left padding, which batched
    generation needs.

    >>> portable_tokenizer_config({"tokenizer_class": "TokenizersBackend"}, "<pad>")
    {'tokenizer_class': 'PreTrainedTokenizerFast', 'pad_token': '<pad>', 'padding_side': 'left'}
    >>> portable_tokenizer_config({}, None)["tokenizer_class"]  # none written: one both read
    'PreTrainedTokenizerFast'
    """
    out = dict(config)
    if out.get("tokenizer_class") in (None, "TokenizersBackend"):
        out["tokenizer_class"] = FAST_TOKENIZER
    if pad_token is not None:
        out["pad_token"] = pad_token
    out["padding_side"] = "left"
    return out


SAMPLING = ("temperature", "top_p", "top_k", "min_p", "typical_p", "repetition_penalty")
"""The base model's decoding settings that ``ask`` does not use: a server that reads them and
not ``do_sample`` would sample (Llama 3.1's temperature 0.6, top_p 0.9), and a repetition
penalty (Qwen2.5's 1.05) penalises the record words a grounded answer copies."""


def generation_defaults(config: dict, pad_id: int | None, eos_ids: list[int]) -> dict:
    """``generation_config.json`` asking for what ``ask`` does: greedy, up to
    ``ANSWER_TOKENS`` new tokens, stopping at the EOS the answers were trained to end with
    (first) and the base model's own.

    >>> generation_defaults({"max_length": 20, "temperature": 0.6}, 0, [2])
    {'do_sample': False, 'max_new_tokens': 160, 'pad_token_id': 0, 'eos_token_id': 2}
    >>> generation_defaults({}, None, [128009, 128001, 128009])["eos_token_id"]
    [128009, 128001]
    """
    drop = ("max_length", *SAMPLING)  # max_length: a cap of 20 in all
    out = {k: v for k, v in config.items() if k not in drop}
    out.update(do_sample=False, max_new_tokens=ANSWER_TOKENS)
    if pad_id is not None:
        out["pad_token_id"] = pad_id
    out.update(_eos(eos_ids))
    return out


def _eos(eos_ids: list[int]) -> dict:
    """``{"eos_token_id": ...}``, one id or the list without repeats (none: nothing)."""
    stops = list(dict.fromkeys(eos_ids))
    return {"eos_token_id": stops[0] if len(stops) == 1 else stops} if stops else {}


def example_prompt(fmt: PromptFormat, k: int) -> str:
    """A grounded user turn as ``ask`` builds it, records numbered 1..k, for the README."""
    records = [
        ContextRecord(f"B00000000{n}", f"Title {n}", f"Description {n}, cut to its tokens.")
        for n in range(1, k + 1)
    ]
    return fmt.grounded("Tell me about Title 1", records)


def _how_to_prompt(fmt: PromptFormat, data, turn: str, system: str) -> str:
    """The card's prompt instructions, as the run was trained: grounded (records retrieved, an
    answer citing ``[source: uid]``) only when it was taught grounded examples."""
    head = (
        f"One user turn, rendered by {turn} {system}, with the generation prompt\n"
        "(`apply_chat_template(messages, add_generation_prompt=True)`)."
    )
    closed = (
        f"one question about an exact title, `{fmt.question('TITLE')}` (`ask --closed-book` asks it "
        "of the best-matching title;\n"
        f"`data.closed_book_fraction` {data.closed_book_fraction} in the run's config)."
    )
    if data.grounded_fraction <= 0:  # ask's own default mode for it (ask.default_mode)
        return (
            f"{head} It was taught {closed} It answers with the product's description and cites\n"
            "nothing: it was not taught to read catalogue records (`data.grounded_fraction` 0 in "
            "the run's\nconfig), and `amazon-sft ask` asks it closed-book.\n"
        )
    other = (
        f"The closed-book form (no records) is {closed}"
        if data.closed_book_fraction > 0
        else "It was not taught closed-book questions (`data.closed_book_fraction` 0 in the run's\n"
        "config): send the records with every question."
    )
    return f"""{head} A grounded question (how
`amazon-sft ask` answers) sends the question, then the {data.context_records} records retrieval
found, each description cut to {data.context_record_tokens} tokens of this tokenizer (at a word,
then "{RUNS_ON}"):

```text
{example_prompt(fmt, data.context_records)}
```

The model answers with the description of the product asked about and `[source: uid]`, or says
the catalogue has no record of it. {other}
"""


def export_readme(name: str, label: str, cfg, fmt: PromptFormat, summary: RunSummary | None) -> str:
    """The exported folder's README: what it is, and how to prompt it as it was trained."""
    data, lora = cfg.data, cfg.lora
    how = f"{lora.describe()}, merged" if lora.enabled else "full fine-tune"
    trained = (
        f"{summary.steps} optimizer steps, final loss {summary.final_loss:.4g}, "
        f"{summary.tokens_seen:,} tokens"
        if summary and summary.final_loss is not None
        else "see the run's final/run_summary.json"
    )
    system = (
        f"with the system message `{data.system_prompt}`"
        if data.system_prompt is not None
        else "with the template's own default system message (send none)"
    )
    turn = "the chat template" if fmt.chat else "the chat template written here (plain format)"
    cap = (
        " (the citation comes last: a shorter cap cuts it off)"
        if data.grounded_fraction > 0
        else ""
    )
    return f"""# {name}: {label}, exported by amazon_sft

Standalone weights of a model fine-tuned by amazon_sft ({how}) on `{cfg.model.path}`, with
a product catalogue in AmazonTitles-1.3MM's `trn.json` format ({trained}). Load it with
`AutoModelForCausalLM.from_pretrained("{name}")` and `AutoTokenizer.from_pretrained("{name}")`
(transformers 4 and 5 read the same files). `amazon_sft_config.yaml` is the run's config.

## Prompt it as it was trained

{_how_to_prompt(fmt, data, turn, system)}
`generation_config.json` asks for what `ask` does: greedy, up to {ANSWER_TOKENS} new tokens,
stopping at EOS{cap}. `ask` also removes
special-token text (such as `<|im_end|>`) from questions before rendering them: do the same
before a user's text reaches the template.
"""


def served_ids(
    tok, question: str, template: str | None = None, system_prompt: str | None = None
) -> list[int]:
    """The ids a server prompts with: ``apply_chat_template`` on the turns training rendered
    (``data.system_prompt``'s, then the question)."""
    ids = tok.apply_chat_template(
        chat_messages(question, system_prompt),
        chat_template=template,
        add_generation_prompt=True,
        tokenize=True,
    )
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def plain_template_for(tok, fmt: PromptFormat, trained: list[int], question: str) -> str:
    """The plain chat template (``plain_chat_template``) whose rendering of ``question`` the
    tokenizer turns into ``trained``, the ids training used; the first gap when none does (the
    export's own check then refuses it)."""
    for gap in PLAIN_GAPS:
        template = plain_chat_template(fmt, gap)
        if served_ids(tok, question, template) == trained:
            return template
    return plain_chat_template(fmt)


def write_portable(
    folder: Path, fmt: PromptFormat, pad_token: str | None, stops: list[int], plain: str = ""
) -> None:
    """Rewrite the saved config, tokenizer config and generation config in ``folder``
    (``stops``: the ids generation stops at, ``generation.stop_ids``; ``plain``: the chat
    template of a plain-format run, ``plain_template_for``)."""
    config = json.loads((folder / "config.json").read_text())
    # the model config's EOS too: stacks that read it (TGI's fallback, older vLLM) stopped at
    # the base's alone, after the turn end the answers were trained to close with
    _write_json(folder / "config.json", {**portable_config(config), **_eos(stops)})
    tok_path = folder / "tokenizer_config.json"
    tok_config = json.loads(tok_path.read_text())
    jinja = folder / "chat_template.jinja"
    # the template the model was trained with: a plain-format run's own (not the base's chat
    # template, which use_chat_template=false left unused), a chat run's on the trained date
    # (chat_templates.TEMPLATE_DATE); in tokenizer_config.json as well as its own file: TGI and
    # transformers before the .jinja file read it only there
    if not fmt.chat:
        template = plain or plain_chat_template(fmt)
    elif jinja.exists():
        template = fixed_clock(jinja.read_text())
    else:
        template = tok_config.get("chat_template")
        template = fixed_clock(template) if isinstance(template, str) else template
    if jinja.exists():
        jinja.write_text(template)
    if template is not None:
        tok_config["chat_template"] = template
    _write_json(tok_path, portable_tokenizer_config(tok_config, pad_token))
    gen_path = folder / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
    _write_json(gen_path, generation_defaults(gen, config.get("pad_token_id"), stops))


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


EXPORT_MARKER = ".amazon_sft_export.json"
"""In an export: the names of the files it wrote and the sha256 of each but the weights (whose
size and quick digest ``checksums.json`` holds): what ``export --overwrite`` may replace."""


def record_export(folder: Path) -> None:
    """Written last into a finished export (before it is renamed into place): every file's
    sha256, the weights' too (a same-size edit escapes a sampled digest)."""
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    digests = {n: sha256_file(folder / n) for n in files}
    (folder / EXPORT_MARKER).write_text(json.dumps({"files": files, "sha256": digests}, indent=1))


def export_not_as_written(folder: Path) -> tuple[list[str], list[str]]:
    """(files in ``folder`` an export did not write, files it wrote that were edited since);
    every file is the user's in a folder without the record (no export, or one from before)."""
    present = sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if (p.is_file() or p.is_symlink()) and p != folder / EXPORT_MARKER
    )
    try:
        record = json.loads((folder / EXPORT_MARKER).read_text())
        listed, digests = set(record["files"]), dict(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return present, []
    theirs = [n for n in present if n not in listed or (folder / n).is_symlink()]
    edited = [
        n
        for n in present
        if n not in theirs and (n not in digests or sha256_file(folder / n) != digests[n])
    ]
    return theirs, edited


def looks_like_an_export(folder: Path) -> bool:
    """An export from before the record: its config and checksums, no record."""
    return (folder / "amazon_sft_config.yaml").is_file() and (folder / "checksums.json").is_file()
