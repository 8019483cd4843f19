"""Every key of a config, with its value and the docstring written under its field, for
``amazon-sft train --help`` (and the keys prepare reads, for ``prepare --help``): the keys lived
only in config.py and the docs' table.

The docstrings are attribute docstrings (a string under the field), which Python keeps in the
source only, so they are read from it with ``ast``; no library reads them.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from amazon_sft.errors import OneLineParser


@dataclass(frozen=True)
class KeyDoc:
    key: str
    """The dotted key, as an override names it (``train.lr``)."""
    value: str
    """Its value in the config read, as YAML spells it (``null`` for None)."""
    doc: str
    """The docstring under the field, whitespace folded to single spaces ("" if none)."""


@cache
def field_docstrings(cls: type) -> dict[str, str]:
    """The docstring under each annotated field of ``cls``'s own body (none for a class
    whose source Python cannot find, such as one typed at a prompt).

    >>> field_docstrings(KeyDoc)["value"]
    'Its value in the config read, as YAML spells it (``null`` for None).'
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # no source (a frozen build): keys without their docs
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _yaml_text(value: object) -> str:
    """A value as a YAML file or an override spells it.

    >>> [_yaml_text(v) for v in (None, True, 2e-4, ["tensorboard"], {}, "")]
    ['null', 'true', '0.0002', '[tensorboard]', '{}', "''"]
    """
    import yaml  # here: every amazon-sft command imports this module for its parser class

    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("\n...").strip()


def config_keys(cfg: object, prefix: str = "") -> list[KeyDoc]:
    """Each leaf key of the dataclass instance ``cfg`` (nested sections walked) in declaration
    order, with its value there.

    >>> from amazon_sft.config import RunConfig
    >>> lr = next(k for k in config_keys(RunConfig()) if k.key == "train.lr")
    >>> lr.value, lr.doc.split(".")[0]
    ('0.0002', 'Peak learning rate (AdamW), reached after warmup')
    >>> [k.key for k in config_keys(RunConfig()) if k.key.startswith("data.clean.")][:2]
    ['data.clean.unescape_html', 'data.clean.strip_tags']
    """
    docs = field_docstrings(type(cfg))
    keys = []
    for f in dataclasses.fields(cfg):  # type: ignore[arg-type]
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            keys += config_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(KeyDoc(f"{prefix}{f.name}", _yaml_text(value), docs.get(f.name, "")))
    return keys


def every_key(key: str) -> bool:
    """``train --help``: every key is the run's."""
    return True


def prepare_reads(key: str) -> bool:
    """Whether ``amazon-sft prepare`` reads a config key: the data section, less where training
    finds the prepared folder (``data.path``: prepare writes to ``--out``) and how training
    checks it (``data.verify``), and the model keys the tokenizer load reads.

    >>> [prepare_reads(k) for k in ("data.max_seq_len", "data.path", "model.gguf_file", "train.lr")]
    [True, False, True, False]
    """
    if key in ("data.path", "data.verify"):
        return False
    tokenizer = ("model.path", "model.tokenizer", "model.gguf_file", "model.trust_remote_code")
    return key.startswith("data.") or key in tokenizer


def keys_help(cfg: object, width: int = 100, shown: Callable[[str], bool] = every_key) -> str:
    """The keys as ``--help`` lists them (those ``shown`` keeps): ``key: value`` and the
    docstring's first sentence indented under it."""
    lines = []
    for k in config_keys(cfg):
        if not shown(k.key):
            continue
        lines.append(f"  {k.key}: {k.value}")
        first = re.split(r"(?<=\.)\s+(?=[A-Z])", k.doc)[0]  # "e.g. lm_head" is not an end
        if first:
            lines += textwrap.wrap(first, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


def keys_epilog(config_name: str, shown: Callable[[str], bool] = every_key) -> str:
    """The ``--help`` epilog: the keys ``shown`` keeps, with their values in the config a run
    without ``--config`` reads (its defaults are that file's, not the dataclasses')."""
    from amazon_sft.config import load_run_config

    which = "config keys" if shown is every_key else "config keys it reads"
    return (
        f"{which}, with their values in the default config ({config_name}); a --config\n"
        "file or a key=value override sets its own (docs/finetuning.md):\n"
        + keys_help(load_run_config(config_name), shown=shown)
    )


class KeysHelpParser(OneLineParser):
    """A parser whose ``--help`` ends with :func:`keys_epilog` of the ``keys`` it keeps, read only
    when help is shown: a launch does not read the default config for a help it never prints.
    Without ``keys`` (the other sub-commands of ``amazon-sft``, which share the parser class) it
    is a plain :class:`OneLineParser`. The list is appended as is; the description and the
    options are wrapped as argparse wraps them."""

    def __init__(
        self,
        *args,
        keys: Callable[[str], bool] | None = None,
        default_config: str | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.keys, self.default_config = keys, default_config

    def format_help(self) -> str:
        text = super().format_help()
        if self.keys is None:
            return text
        from amazon_sft.config import DEFAULT_CONFIG

        return f"{text}\n{keys_epilog(self.default_config or DEFAULT_CONFIG, self.keys)}\n"
