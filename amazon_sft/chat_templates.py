"""Chat templates as prompts use them: the turns rendered, the template's own text tags, a
clock pinned to one day, and the plain prompt written as a template for an export.

``prompts.build_prompt_format`` renders the tokenizer's template through ``apply_chat`` once;
export writes ``plain_chat_template`` for a model trained on the plain format.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
from typing import TYPE_CHECKING

from amazon_sft.errors import UserError

if TYPE_CHECKING:
    from amazon_sft.prompts import PromptFormat


PLAIN_GAPS = ("", " ")
"""Text between the BOS and the prefix in an exported plain template: training encodes the
prefix after the BOS id, so a SentencePiece tokenizer (``legacy: false``) gives its first word
the word-start mark; in text after "<s>" it does not ("<s>###" is "## #", not "▁###"), unless a
space comes first. Export picks the gap whose ids are training's (``export_files``)."""


def plain_text_of(tok, prompt: str, ids: list[int]) -> str:
    """A plain format's ``prompt`` as the text a server adding no special tokens reads as
    ``ids`` (BOS first): BOS's text, the first of ``PLAIN_GAPS`` that gives ``ids``, the prompt
    (BOS's text and the prompt when none does)."""
    for gap in PLAIN_GAPS:
        text = tok.bos_token + gap + prompt
        if tok(text, add_special_tokens=False)["input_ids"] == ids:
            return text
    return tok.bos_token + prompt


def plain_chat_template(fmt: PromptFormat, gap: str = "") -> str:
    """A chat template rendering amazon_sft's plain prompt (BOS, prefix, the last user turn,
    suffix), for a tokenizer that has none: chat endpoints refuse a tokenizer without one, and
    ``tok(text)`` alone left out the BOS training put first. ``gap``: ``PLAIN_GAPS``.

    >>> from amazon_sft.prompts import PromptFormat
    >>> fmt = PromptFormat("### Question:\\n", "\\n\\n### Answer:\\n", ("{title}",), False, 1)
    >>> print(plain_chat_template(fmt))
    {{ bos_token }}{{ "### Question:\\n" }}{{ messages[-1]['content'] }}{{ "\\n\\n### Answer:\\n" }}
    """
    bos = "{{ bos_token }}" if fmt.bos_id is not None else ""
    before, after = json.dumps(gap + fmt.before), json.dumps(fmt.after)
    return f"{bos}{{{{ {before} }}}}{{{{ messages[-1]['content'] }}}}{{{{ {after} }}}}"


# Tags some prompt formats write as plain text, not special tokens: Mistral v0.1/v0.2's "[INST]",
# Llama 2's "<<SYS>>", Zephyr's "<|user|>", the plain template's "### Answer:"
_TEXT_TAG = re.compile(r"\[/?[A-Z][A-Z_]*\]|<</?[A-Z]+>>|<\|[a-z_]+\|>|#{2,} ?[A-Z][a-z]+:")


def text_tags(scaffold: str) -> tuple[str, ...]:
    """The tags in a format's own text (``turn_scaffold``: never a system prompt, where "[DVD]"
    is no tag).

    >>> text_tags("<s>[INST] Q [/INST]"), text_tags("<|user|>\\nQ</s>"), text_tags("### Answer:")
    (('[/INST]', '[INST]'), ('<|user|>',), ('### Answer:',))
    """
    return tuple(sorted(set(_TEXT_TAG.findall(scaffold))))


def turn_scaffold(tok) -> str:
    """The chat template's text around the turns, with no user text in it: rendered with a
    one-letter system turn (Zephyr's "<|system|>" is built from the role name) and without
    one (a template may refuse a system turn), and the template's source."""
    scaffold = [tok.get_chat_template()]
    for system in ("S", None):
        with contextlib.suppress(UserError):  # apply_chat's one-line refusal
            scaffold.append(apply_chat(tok, "Q", system))
    return "\n".join(scaffold)


TEMPLATE_DATE = datetime.date(2024, 7, 26)
"""The day a chat template that reads the clock is rendered on (transformers' ``strftime_now``:
Llama 3.2's and 3.3's, SmolLM3's "Today Date: ..."). A prompt that carried the day it was
rendered would change at midnight: data prepared one day would be refused by a training run,
a resume after a requeue or an eval the next (the template fingerprint in the manifest), and
the tuned model would be asked in prompts it was not trained on. Llama 3.1's own fallback date."""
_CLOCK_MACRO = "{% macro strftime_now(format) %}"
_CLOCK_CALL = re.compile(r"strftime_now\(\s*(['\"])([^'\"{}]*)\1\s*\)")


def fixed_clock(template: str) -> str:
    """``template`` with ``strftime_now`` answering ``TEMPLATE_DATE`` for every format it asks
    (a macro of the same name defined first shadows transformers' function; callables cannot be
    passed as template variables). Unchanged when the template does not read the clock.

    >>> fixed_clock("{{ bos }}") == "{{ bos }}"
    True
    >>> from jinja2 import Template
    >>> Template(fixed_clock("Today: {{ strftime_now('%d %b %Y') }}|")).render()
    'Today: 26 Jul 2024|'
    >>> fixed_clock(fixed_clock("{{ strftime_now('%Y') }}")) == fixed_clock("{{ strftime_now('%Y') }}")
    True
    """
    if "strftime_now" not in template or template.startswith(_CLOCK_MACRO):
        return template
    formats = dict.fromkeys(m.group(2) for m in _CLOCK_CALL.finditer(template)) or {"%d %b %Y": 0}
    branches = "".join(
        f"{{%- {'el' * (n > 0)}if format == {fmt!r} -%}}{TEMPLATE_DATE.strftime(fmt)}"
        for n, fmt in enumerate(formats)
    )
    default = TEMPLATE_DATE.strftime("%d %b %Y")  # a format the template builds at run time
    return (
        f"{_CLOCK_MACRO}{branches}{{%- else -%}}{default}{{%- endif -%}}{{% endmacro %}}{template}"
    )


def chat_messages(question: str, system_prompt: str | None) -> list[dict]:
    """The turns a prompt renders: ``data.system_prompt``'s (when set, empty too), the question.

    >>> [m["role"] for m in chat_messages("Q", None)], [m["role"] for m in chat_messages("Q", "")]
    (['user'], ['system', 'user'])
    """
    messages = [{"role": "user", "content": question}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def apply_chat(tok, question: str, system_prompt: str | None) -> str:
    messages = chat_messages(question, system_prompt)
    try:
        template = fixed_clock(tok.get_chat_template())
    except ValueError as err:  # named templates ("rag", "tool_use") and no default among them
        first = str(err).split("!")[0]
        raise UserError(
            f"the model's chat templates have no default ({first}); name one in the "
            "tokenizer's chat_template, or set data.use_chat_template=false"
        ) from None
    from jinja2 import TemplateError

    try:
        return tok.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=True
        )
    except TemplateError as err:  # Mistral v0.1/v0.2: "Only user and assistant roles ..."
        fix = "set data.use_chat_template=false to use the plain template"
        if system_prompt is not None:
            fix = f"unset data.system_prompt, or {fix}"
        raise UserError(
            f"the model's chat template refuses this conversation ({err}); {fix}"
        ) from None
