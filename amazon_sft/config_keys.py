"""Every key of a config, with its default and the docstring written under its field, for
``amazon-sft train --help``: the keys lived only in config.py and the docs' table.

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
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class KeyDoc:
    key: str
    """The dotted key, as an override names it (``train.lr``)."""
    default: str
    """The default, as YAML would spell it (``null`` for None)."""
    doc: str
    """The docstring under the field, whitespace folded to single spaces ("" if none)."""


@cache
def field_docstrings(cls: type) -> dict[str, str]:
    """The docstring under each annotated field of ``cls``'s own body (none for a class
    whose source Python cannot find, such as one typed at a prompt).

    >>> field_docstrings(KeyDoc)["default"]
    'The default, as YAML would spell it (``null`` for None).'
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


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def config_keys(cls: type, prefix: str = "") -> list[KeyDoc]:
    """Each leaf key of the dataclass ``cls`` (nested sections walked), in declaration order.

    >>> from amazon_sft.config import RunConfig
    >>> lr = next(k for k in config_keys(RunConfig) if k.key == "train.lr")
    >>> lr.default, lr.doc.split(".")[0]
    ('0.0002', 'Peak learning rate (AdamW), reached after warmup')
    >>> [k.key for k in config_keys(RunConfig) if k.key.startswith("data.clean.")][:2]
    ['data.clean.unescape_html', 'data.clean.strip_tags']
    """
    docs = field_docstrings(cls)
    keys = []
    for f in dataclasses.fields(cls):
        default_factory = f.default_factory
        if default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(default_factory):
            keys += config_keys(default_factory, f"{prefix}{f.name}.")
            continue
        keys.append(KeyDoc(f"{prefix}{f.name}", _default_text(f), docs.get(f.name, "")))
    return keys


def keys_help(cls: type, width: int = 100) -> str:
    """The keys as ``--help`` lists them: ``key (default: D)`` and the docstring's first
    sentence indented under it."""
    lines = []
    for k in config_keys(cls):
        lines.append(f"  {k.key} (default: {k.default})")
        first = re.split(r"(?<=\.)\s+(?=[A-Z])", k.doc)[0]  # "e.g. lm_head" is not an end
        if first:
            lines += textwrap.wrap(first, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)
