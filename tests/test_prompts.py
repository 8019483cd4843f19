import pytest

from amazon_sft.config import DataConfig
from amazon_sft.errors import UserError
from amazon_sft.prompts import ContextRecord, PromptFormat, build_prompt_format, load_templates


def test_builtin_templates_include_english_and_portuguese():
    phrasings = load_templates("builtin")["phrasings"]
    assert any("descrição" in p for p in phrasings)
    assert any(p.startswith("What") for p in phrasings)
    assert all("{title}" in p for p in phrasings)


def test_plain_template_when_no_chat_template(tiny_tok):
    fmt = build_prompt_format(tiny_tok, DataConfig())
    assert not fmt.chat
    prompt = fmt.render("Quiet River", 0)
    assert prompt.startswith("### Question:\n") and prompt.endswith("### Answer:\n")
    assert fmt.bos_id == tiny_tok.bos_token_id
    assert '"Quiet River"' in prompt


def test_chat_template_rendering_matches_apply_chat_template(chat_tok):
    fmt = build_prompt_format(chat_tok, DataConfig(system_prompt="Be brief."))
    assert fmt.chat
    for i, title in enumerate(["Mog's Kittens", "Girls Ballet Tutu"]):
        q = fmt.question(title, i)
        expected = chat_tok.apply_chat_template(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}],
            tokenize=False,
            add_generation_prompt=True,
        )
        assert fmt.render(title, i) == expected


def test_template_fingerprint_changes_with_the_template(chat_tok, tiny_tok):
    a = build_prompt_format(chat_tok, DataConfig())
    b = build_prompt_format(tiny_tok, DataConfig())
    c = build_prompt_format(chat_tok, DataConfig(system_prompt="x"))
    assert len({a.fingerprint(), b.fingerprint(), c.fingerprint()}) == 3
    assert a.fingerprint() == build_prompt_format(chat_tok, DataConfig()).fingerprint()


def test_the_fingerprint_changes_with_each_part_of_the_prompt():
    """A mutation audit: the only edited-template test changed ``before``; a fingerprint that
    left out the answer header (``after``) let eval and answering take another prompt."""
    import dataclasses

    fmt = PromptFormat("### Question: ", "\n### Answer:", ("{title}?",), False, 1, ("en",))
    changed = {
        "before": "### Q: ",
        "after": "\n### Answer: ",
        "phrasings": ("{title}",),
        "chat": True,
        "bos_id": None,
        "languages": ("pt",),
    }
    for field, value in changed.items():
        other = dataclasses.replace(fmt, **{field: value})
        assert other.fingerprint() != fmt.fingerprint(), field


def test_phrasing_choice_is_stable_and_spread():
    from amazon_sft.prompts import PromptFormat

    fmt = PromptFormat("", "", ("a {title}", "b {title}", "c {title}"), chat=False)
    picks = [fmt.phrasing_for(str(uid)) for uid in range(300)]
    assert picks == [fmt.phrasing_for(str(uid)) for uid in range(300)]
    assert set(picks) == {0, 1, 2}


def test_user_template_file_is_validated(tmp_path, tiny_tok):
    bad = tmp_path / "q.yaml"
    bad.write_text("questions:\n  en:\n    - 'no placeholder here'\n")
    with pytest.raises(UserError, match="title"):
        build_prompt_format(tiny_tok, DataConfig(templates=str(bad)))
    with pytest.raises(UserError, match="does not exist"):
        build_prompt_format(tiny_tok, DataConfig(templates=str(tmp_path / "missing.yaml")))
    good = tmp_path / "good.yaml"
    good.write_text("questions:\n  pt:\n    - 'Fale de {title}'\n")
    assert (
        build_prompt_format(tiny_tok, DataConfig(templates=str(good)))
        .render("X")
        .endswith("Fale de X\n\n### Answer:\n")
    )


def test_grounded_record_ends_with_its_uid_where_the_answer_cites_it():
    # The answer copies a record's description and then cites its uid: with the uid at the head
    # of the record (~100 tokens back) a 135M model cited a neighbour's uid in 8 of 13 misses on
    # the real rows (docs/results.md). The uid follows the description, so the citation is the
    # copy's next step.
    fmt = PromptFormat("", "", ("{title}",), chat=False)
    records = [ContextRecord("B01", "Bear", "A soft bear."), ContextRecord("B02", "Cat", "A cat.")]
    lines = [line for line in fmt.grounded("Bear?", records).splitlines() if line.startswith("[")]
    assert lines == [
        "[1] title: Bear | description: A soft bear. | uid: B01",
        "[2] title: Cat | description: A cat. | uid: B02",
    ]


def test_fingerprint_covers_the_grounded_record_layout(monkeypatch):
    # Data prepared with another record layout must be refused by train and eval, not scored
    # against prompts the model never saw.
    import amazon_sft.prompts as prompts

    fmt = PromptFormat("", "", ("{title}",), chat=False)
    before = fmt.fingerprint()
    monkeypatch.setattr(prompts, "RECORD_LINE", "[{n}] uid: {uid} | {title} | {description}")
    assert fmt.fingerprint() != before


# Llama 3.2/3.3's and SmolLM3's chat templates put today's date in the system turn through
# transformers' strftime_now (Llama 3.1's falls back to "26 Jul 2024" when no date is given).
DATED_TEMPLATE = (
    "{%- if not date_string is defined %}{%- if strftime_now is defined %}"
    "{%- set date_string = strftime_now('%d %b %Y') %}{%- else %}"
    "{%- set date_string = '26 Jul 2024' %}{%- endif %}{%- endif %}"
    "Today Date: {{ date_string }} ({{ strftime_now('%Y-%m-%d') }})\n"
    "{%- for m in messages %}\n{{ m['role'] }}: {{ m['content'] }}{%- endfor %}"
    "{%- if add_generation_prompt %}\nassistant: {% endif %}"
)


def test_a_chat_template_that_reads_the_clock_renders_the_same_prompts_every_day(
    tiny_cfg, monkeypatch
):
    """Data prepared one day must train, resume, evaluate and answer on the next: the prompt
    (and its fingerprint, which train and eval check against the manifest) cannot carry the
    day it was rendered."""
    import datetime as dt

    import transformers.utils.chat_template_utils as ctu

    from amazon_sft.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_cfg.model)
    tok.chat_template = DATED_TEMPLATE

    def on(day: dt.datetime):
        class Clock(dt.datetime):
            @classmethod
            def now(cls, tz=None):
                return day

        monkeypatch.setattr(ctu, "datetime", Clock)
        return build_prompt_format(tok, DataConfig())

    first, next_day = on(dt.datetime(2026, 12, 2, 23, 59)), on(dt.datetime(2026, 12, 3, 0, 1))
    assert first.fingerprint() == next_day.fingerprint()
    assert first.render("Mog", 0) == next_day.render("Mog", 0)
    # what the model's own template renders on that one fixed day
    on(dt.datetime(2024, 7, 26, 12, 0))
    asked = [{"role": "user", "content": first.question("Mog", 0)}]
    on_the_day = tok.apply_chat_template(asked, tokenize=False, add_generation_prompt=True)
    assert first.render("Mog", 0) == on_the_day
    assert on_the_day.startswith("Today Date: 26 Jul 2024 (2024-07-26)")


def test_an_export_prompts_on_the_day_it_was_trained(tiny_cfg, tmp_path, monkeypatch):
    """The exported tokenizer's template, as a serving stack renders it on any day, builds the
    very prompt the model was trained on (``export``'s ``write_portable``)."""
    import datetime as dt
    import json

    import transformers.utils.chat_template_utils as ctu
    from transformers import AutoTokenizer

    from amazon_sft.answering.export_files import write_portable
    from amazon_sft.tokenizer import load_tokenizer

    class Later(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime(2031, 5, 1)

    tok = load_tokenizer(tiny_cfg.model)
    tok.chat_template = DATED_TEMPLATE
    fmt = build_prompt_format(tok, DataConfig())
    tok.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "eos_token_id": 2}))
    write_portable(tmp_path, fmt, tok.pad_token, [tok.eos_token_id])
    monkeypatch.setattr(ctu, "datetime", Later)
    served = AutoTokenizer.from_pretrained(tmp_path)
    asked = [{"role": "user", "content": fmt.question("Mog", 0)}]
    rendered = served.apply_chat_template(asked, tokenize=False, add_generation_prompt=True)
    assert rendered == fmt.render("Mog", 0)
    # also in tokenizer_config.json: TGI and older stacks read the template only there
    in_config = json.loads((tmp_path / "tokenizer_config.json").read_text())["chat_template"]
    assert (tmp_path / "chat_template.jinja").read_text() == in_config
