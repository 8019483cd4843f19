"""Inputs read with bounds: only regular files, a byte limit on what is read whole, and YAML
with a size and an alias limit.

A pipe, a device or a socket named as an input never ends (``/dev/zero``) or blocks at ``open``
(a FIFO without a writer), and one YAML alias can stand for a list of aliases, so a few hundred
bytes expand to gigabytes when the result is walked (the "billion laughs"). Each reader here
stops before that, with one line naming the file and the fix.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from amazon_sft.errors import UserError, first_line

MAX_YAML_BYTES = 1 << 20
"""Config and phrasing files are a few KiB; 1 MiB leaves room and bounds the parse."""
MAX_YAML_NODES = 100_000
"""Values a YAML document may stand for once its aliases are expanded: a config has ~100."""

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a file mode names, in words.

    >>> file_kind(stat.S_IFIFO), file_kind(stat.S_IFREG)
    ('a pipe', 'a regular file')
    """
    return next((name for test, name in _KINDS if test(mode)), "a regular file")


def require_regular_file(path: str | Path, what: str, fix: str) -> Path:
    """``path`` if it is a regular file (symlinks followed); else one line saying what it is.
    Never opens it: opening a FIFO blocks until a writer comes."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist: {fix}") from None
    except OSError as err:  # EACCES on a folder on the way, ELOOP, ENAMETOOLONG
        raise UserError(
            f"{what} {path} cannot be reached ({err.strerror}): check the permissions of the "
            "folders on its path"
        ) from None
    if not stat.S_ISREG(mode):
        raise UserError(f"{what} {path} is {file_kind(mode)}, not a regular file: {fix}")
    return path


def read_limited(path: str | Path, what: str, max_bytes: int, fix: str) -> bytes:
    """The whole file, refused when it is not a regular file or holds more than ``max_bytes``.

    >>> import tempfile; f = Path(tempfile.mkdtemp()) / "f"; _ = f.write_bytes(b"x" * 10)
    >>> read_limited(f, "f", 10, "fix")  # exactly the limit is read
    b'xxxxxxxxxx'
    """
    path = require_regular_file(path, what, fix)
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as err:
        raise UserError(f"{what} {path} cannot be read ({err.strerror}): {fix}") from None
    if len(data) > max_bytes:
        raise UserError(f"{what} {path} is over {max_bytes} bytes: {fix}")
    return data


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that weighs each node as it is composed, before anything is built:
    a node weighs 1 plus what its children weigh, an alias what the node it names weighs, so
    the root's weight is the size of the expanded document. A recursive alias is refused."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._weights: dict[int, int] = {}

    def compose_node(self, parent, index):
        alias = self.check_event(yaml.AliasEvent)
        mark = self.peek_event().start_mark
        node = super().compose_node(parent, index)
        weight = self._weights.get(id(node))
        if weight is None and alias:
            raise yaml.YAMLError(f"a recursive alias (line {mark.line + 1})")
        if weight is None:
            if isinstance(node, yaml.SequenceNode):
                children = node.value
            elif isinstance(node, yaml.MappingNode):
                children = [part for pair in node.value for part in pair]
            else:
                children = []
            weight = 1 + sum(self._weights[id(child)] for child in children)
            self._weights[id(node)] = weight
        if weight > MAX_YAML_NODES:
            raise yaml.YAMLError(
                f"its aliases expand to over {MAX_YAML_NODES} values (line {mark.line + 1}): "
                "an alias bomb, or a file that is not a config"
            )
        return node

    def construct_mapping(self, node, deep=False):
        """Refuse a key given twice in one mapping (YAML keeps the last silently); a merge
        (``<<``) may still be overridden, as YAML means it to be."""
        lines: dict = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key, line = self.construct_object(key_node), key_node.start_mark.line + 1
            if key in lines:
                raise yaml.YAMLError(
                    f"{key!r} is given twice (lines {lines[key]} and {line}): keep one"
                )
            lines[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str | bytes, what: str) -> Any:
    """Parse one YAML document with the alias limit; a YAML error is one line naming ``what``.

    >>> load_yaml("a: [1, 2]", "config x.yaml")
    {'a': [1, 2]}
    >>> load_yaml("a: [1", "override 'a=[1'")
    Traceback (most recent call last):
    amazon_sft.errors.UserError: override 'a=[1' is not valid YAML: line 1 column 6: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence)
    """
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        raise UserError(f"{what} is not valid YAML: {_yaml_problem(err)}") from None
    except RecursionError:  # "[[[[...": PyYAML composes nested nodes recursively
        raise UserError(f"{what} is nested too deeply to be a config: give a flat value") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """Where and what (PyYAML's first line was its context alone, "while scanning for the next
    token", with no line: a tab in a 100-line config could not be found)."""
    problem, mark = getattr(err, "problem", None), getattr(err, "problem_mark", None)
    if not problem or mark is None:
        return first_line(err)
    context = getattr(err, "context", None)
    return f"line {mark.line + 1} column {mark.column + 1}: {problem}" + (
        f" ({context})" if context else ""
    )


def load_yaml_file(path: str | Path, what: str, fix: str) -> Any:
    """A YAML file read whole with ``MAX_YAML_BYTES`` and parsed with the alias limit."""
    data = read_limited(path, what, MAX_YAML_BYTES, fix)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{what} {path} is not UTF-8 text ({err.reason}): {fix}") from None
    return load_yaml(text, f"{what} {path}")
