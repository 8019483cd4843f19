"""The fast paths give the fast tokenizer's exact ids, or are not used."""

import json

import orjson
import pytest

from amazon_sft.config import DataConfig, ModelConfig, load_run_config
from amazon_sft.data import encode
from amazon_sft.data.encode import DocumentEncoder
from amazon_sft.data.shards import read_manifest
from amazon_sft.data.synthetic import generate_rows
from amazon_sft.errors import UserError
from amazon_sft.prepare import prepare
from amazon_sft.prompts import build_prompt_format
from amazon_sft.tokenizer import (
    choose_pad_id,
    load_tokenizer,
    resolve_location,
    sentencepiece_folder,
)


def _sp_tokenizer_dir(folder, normalization):
    """A small SentencePiece BPE model trained offline, loaded as a Llama tokenizer folder."""
    import sentencepiece as spm

    folder.mkdir(parents=True)

    texts = []
    for line in generate_rows(1500, seed=11)[0]:
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(row, dict):
            texts += [str(row.get("title")), str(row.get("content"))]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_prefix=str(folder / "tokenizer"),
        vocab_size=600,
        model_type="bpe",
        byte_fallback=True,
        minloglevel=2,
        normalization_rule_name=normalization,
        remove_extra_whitespaces=normalization != "identity",
    )
    return sentencepiece_folder(folder / "tokenizer.model", folder)


@pytest.mark.parametrize(
    ("normalization", "prompt_path"),
    [("identity", "sentencepiece"), ("nmt_nfkc", "whole prompt (fast tokenizer)")],
)
def test_sentencepiece_path_writes_the_same_shards_as_the_fast_tokenizer(
    normalization, prompt_path, catalogue, tmp_path
):
    """Llama/Mistral models use identity normalisation: both paths apply. NFKC turns the prompt's
    newlines into spaces in the C++ library only, so the check must refuse that path."""
    sp_tokenizer_dir = _sp_tokenizer_dir(tmp_path / "tok", normalization)
    outs = {}
    for backend in ("auto", "hf"):
        cfg = load_run_config("tiny", [f"data.tokenizer_backend={backend}"])
        outs[backend] = prepare(
            catalogue, tmp_path / backend, cfg, tokenizer=str(sp_tokenizer_dir), progress=False
        )
    report = json.loads((tmp_path / "auto" / "report.json").read_text())
    assert report["tokenizer_backend"] == "sentencepiece"
    assert report["prompt_encoding"] == prompt_path
    assert [s.sha256 for s in outs["auto"].shards] == [s.sha256 for s in outs["hf"].shards]
    assert (
        read_manifest(tmp_path / "auto").tokenizer_fingerprint == outs["hf"].tokenizer_fingerprint
    )


def test_sentencepiece_backend_is_refused_without_a_model_file(catalogue, tmp_path):
    cfg = load_run_config("tiny", ["data.tokenizer_backend=sentencepiece"])
    with pytest.raises(UserError, match="sentencepiece is not usable"):
        prepare(catalogue, tmp_path / "o", cfg, progress=False)


def test_precut_long_descriptions_keep_the_exact_first_ids(tiny_tok):
    fmt = build_prompt_format(tiny_tok, DataConfig())
    words = "The Zentra headphones deliver noise cancelling in a bright navy case. " * 400
    batch = [("u1", "Zentra X10", words), ("u2", "Short", "A short description of a small thing.")]
    enc = DocumentEncoder(
        tiny_tok, fmt, max_seq_len=256, max_answer_tokens=64, backend="hf", sample=batch
    )
    out = enc.encode(batch)
    assert enc.precut == 1 and enc.truncated == 1
    full = tiny_tok(words, add_special_tokens=False).input_ids[:64]
    first_doc = out.tokens[: out.doc_lens[0]].tolist()
    answer = first_doc[out.prompt_lens[0] : -1]  # cut at a whole word: up to 64 ids
    assert answer == full[: len(answer)] and len(answer) > 64 - encode.WORD_BACKOFF_TOKENS
    assert first_doc[-1] == tiny_tok.eos_token_id


def test_pad_is_never_eos(tiny_tok, chat_tok):
    for tok in (tiny_tok, chat_tok):
        assert choose_pad_id(tok) != tok.eos_token_id
    tok = load_tokenizer(
        ModelConfig(path="random", tokenizer="builtin:tiny", arch={"model_type": "llama"})
    )
    tok.pad_token = tok.eos_token  # as SmolLM2 ships it
    assert choose_pad_id(tok) not in (tok.eos_token_id, None)


def test_locations_resolve_or_explain(tmp_path):
    assert resolve_location("builtin:tiny").endswith("tiny-tokenizer")
    with pytest.raises(UserError, match="pip install --no-deps no-such-pkg"):
        resolve_location("pkg:no_such_pkg")
    with pytest.raises(UserError, match="could not load tokenizer"):
        load_tokenizer(ModelConfig(path=str(tmp_path)))  # a folder without a tokenizer
    with pytest.raises(UserError, match=r"^model\.path .*/empty: no such folder here"):
        load_tokenizer(ModelConfig(path=str(tmp_path / "empty")))


def test_a_relative_path_inside_a_folder_here_is_no_hub_id(tmp_path, monkeypatch):
    """``model.path=models/typo`` with a ``models`` folder here was read as a hub id and told
    "couldn't connect to huggingface.co" (an ML engineer's trial)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(UserError, match=r"^model\.path models/typo: no such folder here"):
        resolve_location("models/typo", "model.path")


def test_cut_is_sized_from_the_sample_and_a_sparser_text_is_still_exact(tiny_tok):
    """The cut follows the tokenizer's characters per token on the sample (tighter than the
    fixed bound for the tiny tokenizer); a later text with far more characters per token than
    the sample's is re-encoded whole, so its first ids are still the plain encoding's."""
    fmt = build_prompt_format(tiny_tok, DataConfig())
    dense = " ".join(str(i % 97) for i in range(400))  # digits: few characters a token
    sample = [("u1", "Numbers", dense)]
    enc = DocumentEncoder(
        tiny_tok, fmt, max_seq_len=256, max_answer_tokens=64, backend="hf", sample=sample
    )
    fixed = (64 + encode.CUT_MARGIN_TOKENS) * encode.CHARS_PER_TOKEN_CUT
    assert enc.cut_chars < fixed
    sparse = "the " * 3000  # a very common word: many characters per token
    out = enc.encode([("u2", "Sparse", sparse), ("u3", "Dense", dense * 5)])
    full = tiny_tok(sparse, add_special_tokens=False).input_ids[:64]
    first = out.tokens[: out.doc_lens[0]].tolist()[out.prompt_lens[0] : -1]
    assert first == full[: len(first)] and len(first) > 64 - encode.WORD_BACKOFF_TOKENS
    second = out.tokens[out.doc_lens[0] : out.doc_lens[0] + out.doc_lens[1]].tolist()
    second = second[out.prompt_lens[1] : -1]
    dense_ids = tiny_tok(dense * 5, add_special_tokens=False).input_ids
    assert second == dense_ids[: len(second)] and len(second) > 64 - encode.WORD_BACKOFF_TOKENS
    assert enc.precut >= 1  # the dense one was cut and trusted


def test_an_answer_exactly_at_its_budget_is_not_counted_as_cut(tiny_tok):
    """A mutation audit: only answers far over the budget were counted; one of exactly
    ``max_answer_tokens`` is whole, and the report's ``answer_truncated`` must not count it."""
    fmt = build_prompt_format(tiny_tok, DataConfig())
    text = "A short description of a small thing."
    n = len(tiny_tok(text, add_special_tokens=False).input_ids)
    sample = [("u1", "Thing", text)]
    enc = DocumentEncoder(
        tiny_tok, fmt, max_seq_len=256, max_answer_tokens=n, backend="hf", sample=sample
    )
    out = enc.encode(sample)
    assert out.answer_lens == [n] and enc.truncated == 0


def test_the_tokenizer_fingerprint_changes_with_the_pad_id(tiny_tok):
    """A mutation audit: a fingerprint without the pad id let shards padded with another id
    be trained on (no test changed the pad alone)."""
    import copy

    from amazon_sft.tokenizer import choose_pad_id, tokenizer_fingerprint

    other = copy.deepcopy(tiny_tok)
    specials = [t for t in other.all_special_tokens if other.convert_tokens_to_ids(t) not in
                (choose_pad_id(tiny_tok), other.eos_token_id)]  # fmt: skip
    other.pad_token = specials[0]
    assert other.backend_tokenizer.to_str() == tiny_tok.backend_tokenizer.to_str()  # the id only
    assert choose_pad_id(other) != choose_pad_id(tiny_tok)
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tiny_tok)


def test_a_cut_closed_book_answer_ends_at_a_word_not_inside_one(tiny_tok):
    """An outside review: closed-book answers over ``max_answer_tokens`` were cut at the token
    budget, mid-word, and EOS followed ("With that one fl<|im_end|>"): the model was taught to
    stop inside a word. The cut now backs off to the last whole word (grounded records were
    already cut so, data/cutting.py)."""
    fmt = build_prompt_format(tiny_tok, DataConfig())
    words = "Zentraphonics headphones deliver extraordinarily quiet listening everywhere. " * 60
    batch = [("u1", "Zentra X10", words)]
    cuts = []
    for budget in range(20, 44):
        enc = DocumentEncoder(
            tiny_tok, fmt, max_seq_len=256, max_answer_tokens=budget, backend="hf", sample=batch
        )
        out = enc.encode(batch)
        answer = out.tokens[out.prompt_lens[0] : out.doc_lens[0] - 1].tolist()
        text = tiny_tok.decode(answer)
        assert len(answer) <= budget and words.startswith(text), (budget, text)
        whole = text.endswith(" ") or words[len(text)] in " ."  # a whole word, then EOS
        assert whole, (budget, text[-30:])
        full = tiny_tok(words, add_special_tokens=False).input_ids
        assert answer == full[: len(answer)]  # the first ids, exactly as encoded
        cuts.append(len(answer) < budget)
    assert any(cuts)  # some budgets fell inside a word and were backed off


def test_a_word_cut_never_splits_a_character(tiny_tok):
    """A review of the change above: a byte-level token that starts with a UTF-8 continuation
    byte ("¶", "¤" as drawn) counted as a word start, and the back-off cut "schö" into
    "sch\\ufffd". Where the plain cut kept whole characters, the word cut does too."""
    fmt = build_prompt_format(tiny_tok, DataConfig())
    words = "Ein schönes Märchen über Größe, Mühe und naïve Träume für Kinder. " * 40
    full = tiny_tok(words, add_special_tokens=False).input_ids
    for budget in range(8, 60):
        enc = DocumentEncoder(
            tiny_tok, fmt, max_seq_len=256, max_answer_tokens=budget, backend="hf",
            sample=[("u", "T", words)],
        )  # fmt: skip
        out = enc.encode([("u", "T", words)])
        answer = out.tokens[out.prompt_lens[0] : out.doc_lens[0] - 1].tolist()
        if "\ufffd" not in tiny_tok.decode(full[:budget]):
            assert "\ufffd" not in tiny_tok.decode(answer), (budget, tiny_tok.decode(answer)[-20:])


@pytest.mark.parametrize("text", ["[]", '{"model": {"type": "Nope"}}'])
def test_a_tokenizer_json_of_the_wrong_shape_is_one_line(tmp_path, text):
    """A ``tokenizer.json`` of the wrong structure was a KeyError or TypeError traceback (an
    outside review)."""
    from amazon_sft.config import ModelConfig
    from amazon_sft.errors import UserError
    from amazon_sft.tokenizer import load_tokenizer

    (tmp_path / "tokenizer.json").write_text(text)
    (tmp_path / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "PreTrainedTokenizerFast"}'
    )
    with pytest.raises(UserError, match="could not load tokenizer"):
        load_tokenizer(ModelConfig(path=str(tmp_path)))


def test_an_exported_plain_template_prompts_with_the_trained_ids(tmp_path):
    """A review at Mistral/Llama-2 base shapes: training encodes the plain prompt after the BOS
    id, so a SentencePiece tokenizer (``legacy: false``, as ``sentencepiece_folder`` writes)
    marks its first word ("<s> ▁###"); the exported template rendered "<s>###", which the same
    tokenizer reads as "<s> ## #": every server prompt began with tokens never trained on.
    Export picks the template whose ids are training's, and loading the export reads it back as
    the same plain format."""
    from amazon_sft.answering.export_files import plain_template_for, served_ids
    from amazon_sft.chat_templates import plain_chat_template
    from amazon_sft.tokenizer import hf_encoder

    tok = load_tokenizer(ModelConfig(path=str(_sp_tokenizer_dir(tmp_path / "tok", "identity"))))
    fmt = build_prompt_format(tok, DataConfig())
    assert not fmt.chat
    question = fmt.question("Mog's Kittens")
    trained = fmt.bos + hf_encoder(tok)([fmt.wrap(question)])[0]
    assert served_ids(tok, question, plain_chat_template(fmt)) != trained  # the bug's shape
    template = plain_template_for(tok, fmt, trained, question)
    assert served_ids(tok, question, template) == trained
    tok.chat_template = template
    assert build_prompt_format(tok, DataConfig()).fingerprint() == fmt.fingerprint()


def test_the_prompt_ask_reports_reads_back_as_the_ids_it_sent(tmp_path, prepared):
    """``ask --json``, the API and the stream report the prompt as text, "to send an exported
    model elsewhere as it was trained": BOS's text, then the prompt. For a base SentencePiece
    model (``legacy: false``) "<s>###" reads back as "<s> ## #" (the export's template had the
    same defect, mended last session): the reported text is now the one whose ids are the ids
    the model was given."""
    from amazon_sft.answering.ask import plan_answer
    from amazon_sft.answering.index import CatalogueIndex

    tok = load_tokenizer(ModelConfig(path=str(_sp_tokenizer_dir(tmp_path / "tok", "identity"))))
    data = DataConfig()
    fmt = build_prompt_format(tok, data)
    assert not fmt.chat and fmt.bos
    index = CatalogueIndex(prepared)
    for mode in ("grounded", "closed"):
        plan = plan_answer("Tell me about the kitten book", None, tok, fmt, index, data, mode=mode)
        assert tok(plan.sent, add_special_tokens=False)["input_ids"] == plan.ids, mode


def test_an_abstention_is_written_with_its_twin_or_not_at_all(tiny_tok):
    """A review of the pairing fix: the prepare test passed with pairs grouped wrongly. Here
    the cited twins of two pairs are too long for a row: each pair goes whole, the pair that
    fits and the unpaired examples stay, and nothing is kept alone."""
    from amazon_sft.data.grounded import GroundedExample, pair_groups

    fmt = build_prompt_format(tiny_tok, DataConfig())
    long = "word " * 300

    def ex(absent: bool, paired: bool, answer: str = "short") -> GroundedExample:
        return GroundedExample("u", "q", "en", [], absent, "a prompt", answer, paired=paired)

    examples = [
        ex(False, False),  # 0 alone, fits
        ex(True, True), ex(False, True, long),  # 1-2: the twin too long: both go
        ex(True, True), ex(False, True),  # 3-4: both fit: both stay
        ex(True, False),  # 5 an unpaired abstention, fits
        ex(True, True), ex(False, True, long),  # 6-7: both go
        ex(False, False, long),  # 8 alone, too long
    ]  # fmt: skip
    enc = DocumentEncoder(
        tiny_tok, fmt, max_seq_len=64, max_answer_tokens=512, backend="hf", sample=[]
    )
    out, kept = enc.encode_pairs(
        [e.prompt for e in examples], [e.answer for e in examples], None, pair_groups(examples)
    )
    assert kept == [True, False, False, True, True, True, False, False, False]
    assert len(out.doc_lens) == 4
    assert enc.dropped == {"grounded_too_long": 3, "grounded_twin_dropped": 2}
