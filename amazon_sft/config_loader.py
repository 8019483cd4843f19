"""Load nested config dataclasses from YAML plus dotted command-line overrides.

Hand-written because it is ~100 lines: OmegaConf/Hydra would add a dependency and a second config
language for what is here a dict merge and a typed walk over dataclass fields.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from amazon_sft.errors import UserError
from amazon_sft.safe_input import load_yaml, load_yaml_file, require_regular_file

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
T = TypeVar("T")
_EXPONENT_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def builtin_config_names() -> list[str]:
    """Names accepted by ``--config NAME``: the YAML files shipped in ``amazon_sft/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str) -> Path:
    """A shipped config name (``tiny``) or a path to a YAML file."""
    path = Path(name_or_path)
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if path.suffix not in (".yaml", ".yml") and os.path.lexists(path) and shipped.is_file():
        raise UserError(  # the local file was used silently (a hostile user's trial)
            f"config {name_or_path!r} names both a shipped config and {path} here: give "
            f"./{name_or_path} for that file, or run from another folder for the shipped one"
        )
    if path.suffix in (".yaml", ".yml") or os.path.exists(path):  # False, not raised, on EACCES
        return require_regular_file(path, "config", "give a .yaml file of config sections")
    builtin = CONFIG_DIR / f"{name_or_path}.yaml"
    if not builtin.is_file():
        names = ", ".join(builtin_config_names())
        raise UserError(f"unknown config {name_or_path!r}: use one of {names} or a path to a .yaml")
    return builtin


COMMAND_LINE_ONLY = (("model", "trust_remote_code"),)
"""Keys that widen what a folder may do (run its own Python): honoured only when the person
running the command passes them on its command line, never read from a file, since a
downloaded run folder carries its own config."""


def _drop_file_permissions(raw: dict, path: Path) -> None:
    for section, key in COMMAND_LINE_ONLY:
        node = raw.get(section)
        if isinstance(node, dict) and node.pop(key, None):
            log.warning(
                "%s sets %s.%s: ignored (files cannot grant it); if you trust this folder's "
                "code, pass %s.%s=true to train or eval, --trust-remote-code to ask, chat, serve "
                "or export",
                path,
                section,
                key,
                section,
                key,
            )


def apply_overrides(raw: dict, overrides: list[str], cls: type | None = None) -> dict:
    """Apply ``a.b.c=value`` strings to a nested dict; values are parsed as YAML scalars, but a
    text setting of ``cls`` takes the text as typed (YAML reads ``0x10`` as 16, ``1:30`` as 90).

    >>> apply_overrides({"train": {"lr": 1.0}}, ["train.lr=3e-4", "out_dir=runs/x"])
    {'train': {'lr': 0.0003}, 'out_dir': 'runs/x'}
    >>> apply_overrides({}, ["data.system_prompt=Say a=b"])  # the key ends at the first "="
    {'data': {'system_prompt': 'Say a=b'}}
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r} is not of the form dotted.key=value")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"override {item!r}: {part!r} is not a section")
        if dataclasses.is_dataclass(_hint_of(cls, key)):  # "data={}" emptied the section
            raise UserError(
                f"override {item!r} would replace the whole {key} section (the config file's "
                f"values with it): set its keys one by one, {key}.KEY=VALUE"
            )
        if _is_text(_hint_of(cls, key)) and not _quoted(value):
            # the text as typed, not the number or date YAML read, nor cut at a " #" comment,
            # nor refused where YAML reads a mapping ("Rule: answer briefly"); null is None
            text = value.strip()
            node[leaf] = None if text in _NULLS else text
        else:
            node[leaf] = _parse_scalar(value, item)
    return raw


def _hint_of(cls: type | None, dotted: str) -> Any:
    """The type of a dotted setting of dataclass ``cls``; None where there is none."""
    hint: Any = cls
    for part in dotted.split("."):
        hint = _optional_inner(hint)
        if not dataclasses.is_dataclass(hint):
            return None
        hint = typing.get_type_hints(hint).get(part)
    return hint


def _optional_inner(hint: Any) -> Any:
    """``X | None`` -> X; anything else as it is."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [o for o in typing.get_args(hint) if o is not type(None)]
        return options[0] if len(options) == 1 else hint
    return hint


def _is_text(hint: Any) -> bool:
    return _optional_inner(hint) is str


_NULLS = frozenset({"null", "Null", "NULL", "~"})
"""YAML's words for no value: a text setting given one is unset (``data.system_prompt=~``)."""


def _quoted(value: str) -> bool:
    """A value the user quoted for YAML (``out_dir="runs/a b"``, ``out_dir='x' #try 2``):
    YAML's reading is meant."""
    return value.lstrip()[:1] in ("'", '"')


def _parse_scalar(value: str, item: str) -> Any:
    parsed = load_yaml(value, f"the value of override {item!r}") if value else ""
    if isinstance(parsed, str) and _EXPONENT_FLOAT.match(parsed):
        return float(parsed)  # YAML 1.1 reads "3e-4" as a string; users mean a number
    return parsed


def load_config(cls: type[T], name_or_path: str | None, overrides: list[str] | None = None) -> T:
    """Build ``cls`` from a shipped config name or YAML path, then dotted overrides."""
    raw: dict = {}
    if name_or_path:
        path = resolve_config_path(name_or_path)
        raw = load_yaml_file(path, "config", "give a YAML file of config sections") or {}
        if not isinstance(raw, dict):
            raise UserError(
                f"config {path} must be a mapping of sections, got {type(raw).__name__}"
            )
        _drop_file_permissions(raw, path)
    raw = apply_overrides(raw, overrides or [], cls)
    return from_dict(cls, raw)


def from_dict(cls: type[T], raw: dict, prefix: str = "") -> T:
    """Build a dataclass from a dict, naming any unknown or mistyped key by its dotted path."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    not_text = [k for k in raw if not isinstance(k, str)]
    if not_text:  # "on:" is a boolean to YAML 1.1, "2:" a number
        raise UserError(
            f"config key {prefix}{not_text[0]!r} is not a name (YAML read it as "
            f"{type(not_text[0]).__name__}): quote it, or use one of " + ", ".join(sorted(names))
        )
    unknown = sorted(set(raw) - names)
    if unknown:
        where = prefix.rstrip(".") or "the top level"
        raise UserError(
            f"unknown config key {prefix + unknown[0]!r}; keys allowed in {where}: "
            + ", ".join(sorted(names))
        )
    kwargs = {k: _coerce(hints[k], v, prefix + k) for k, v in raw.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(o for o in options if o is not type(None))
        origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise UserError(f"config key {key!r} must be a section (mapping), got {value!r}")
        return from_dict(hint, value, key + ".")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if type(value) is int and value in (0, 1):
            return bool(value)  # "lora.enabled=1", as in shell scripts and env files
        raise UserError(f"config key {key!r} must be true or false (or 1 / 0), got {value!r}")
    if hint in (int, float) and isinstance(value, str):
        value = _number_text(value)  # "1e-3": YAML 1.1 needs a dot to read a float
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
            return int(value)  # "1e3" steps: YAML and the override parser read a float
        raise UserError(f"config key {key!r} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _finite(float(value), key)
        raise UserError(f"config key {key!r} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # only a file gets here (the command line keeps its text): YAML read "0630" as the
            # octal 408 and "1.10" as 1.1, and the text it was cannot be read back
            raise UserError(
                f"config key {key!r} must be text, and YAML read a number ({value!r}): quote "
                f"it in the file ({key.rsplit('.', 1)[-1]}: '...' as you wrote it)"
            )
        raise UserError(f"config key {key!r} must be a string, got {value!r}")
    if origin is list or hint is list:
        if not isinstance(value, list):
            one = f": a list of one is [{value}]" if isinstance(value, str) else ""
            raise UserError(f"config key {key!r} must be a list, got {value!r}{one}")
        for item in value:
            if isinstance(item, float):
                _finite(item, key)
        return list(value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise UserError(f"config key {key!r} must be a mapping, got {value!r}")
        return dict(value)
    return value


FLOAT32_MAX = 3.4028234663852886e38
"""Config numbers end up in float32 tensors (learning rate, decay, clipping): larger ones
overflow there, deep inside torch, with an error that names no key."""


def _number_text(text: str) -> Any:
    """The number a YAML text value spells as the command line reads it, else the text.

    >>> _number_text("1e-3"), _number_text("1e3"), _number_text("12"), _number_text("fast")
    (0.001, 1000.0, 12, 'fast')
    """
    for kind in (int, float):
        try:
            return kind(text.strip())
        except ValueError:
            pass
    return text


def _finite(value: float, key: str) -> float:
    """NaN passes every ``<`` / ``>`` check (all comparisons are False) and inf passes most."""
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise UserError(
            f"config key {key!r} must be a finite number within float32 range "
            f"(|x| <= {FLOAT32_MAX:.3g}), got {value!r}"
        )
    return value


def to_dict(cfg: Any) -> dict:
    """The resolved config as plain data, ready for YAML or JSON."""
    return dataclasses.asdict(cfg)


def write_resolved(cfg: Any, path: Path, header: str = "") -> None:
    """Write the fully resolved config, so a run's output says exactly what produced it
    (``header``: YAML comment lines put first, e.g. the changes made on resume). Written
    beside and renamed: each resume writes it again, and a run's ``config.yaml`` linked to the
    user's own config (or shared with a ``cp -al`` snapshot) was written through."""
    from amazon_sft.atomic import write_text_whole

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_whole(path, header + yaml.safe_dump(to_dict(cfg), sort_keys=False))
