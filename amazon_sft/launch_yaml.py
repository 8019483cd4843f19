"""What the launch scripts read from a run YAML before they launch: its ``out_dir``, and the
paths it names (which they make absolute from where the user stands). Run as
``python3 -m amazon_sft.launch_yaml SCRIPT out_dir|paths FILE``: the values on stdout, or one
line on stderr (exit 2) for a file that is not UTF-8 YAML or whose ``out_dir`` is not a path;
the scripts' own inline readers printed a traceback, then "activate the venv" with PyYAML
installed (an outside review).

It reads the YAML as written, not the resolved config (``config.load_run_config``): a named
config's relative paths are the user's to place, and nothing here may fail on a key train
itself would refuse with a better line."""

from __future__ import annotations

import os
import sys

PATH_KEYS = ("data.path", "model.path", "resume", "model.tokenizer", "data.templates", "deepspeed")
"""The keys whose value may be a path relative to where the user stands."""


class BadYaml(Exception):
    """One line for the script to print."""


def read_mapping(path: str) -> dict:
    """The YAML at ``path`` as a mapping ({} for an empty file or a list: train says why)."""
    try:
        import yaml
    except ImportError:
        raise BadYaml("python3 has no PyYAML: activate the venv (make install)") from None
    try:
        with open(path, encoding="utf-8") as fh:
            loaded = yaml.safe_load(fh)
    except UnicodeDecodeError as err:
        raise BadYaml(f"cannot read {path}: it is not UTF-8 (byte {err.start})") from None
    except (OSError, yaml.YAMLError) as err:
        reason = " ".join(str(err).split())[:200]
        raise BadYaml(f"cannot read {path}: {reason}") from None
    return loaded if isinstance(loaded, dict) else {}


def out_dir(config: dict, path: str) -> str:
    """The YAML's ``out_dir``, ``~`` expanded ("" where it names none).

    >>> out_dir({"out_dir": "~/runs/a"}, "x.yaml") == os.path.expanduser("~/runs/a")
    True
    >>> out_dir({"out_dir": 408}, "x.yaml")
    Traceback (most recent call last):
    amazon_sft.launch_yaml.BadYaml: out_dir in x.yaml is 408, not a path: quote it (out_dir: "...")
    """
    value = config.get("out_dir")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadYaml(f'out_dir in {path} is {value!r}, not a path: quote it (out_dir: "...")')
    return os.path.expanduser(value)


def paths(config: dict) -> list[str]:
    """``key=value`` for each of ``PATH_KEYS`` the YAML sets to a non-empty string.

    >>> paths({"data": {"path": "data/p"}, "resume": "auto", "model": "x"})
    ['data.path=data/p', 'resume=auto']
    >>> paths({"model": {"tokenizer": "tok", "path": "m"}})
    ['model.path=m', 'model.tokenizer=tok']
    """
    found = []
    for key in PATH_KEYS:
        part, _, leaf = key.rpartition(".")
        value = config.get(part) if part else config
        value = value.get(leaf) if isinstance(value, dict) else None
        if isinstance(value, str) and value:
            found.append(f"{key}={value}")
    return found


def main(argv: list[str]) -> int:
    script, what, path = argv
    try:
        config = read_mapping(path)
        print(out_dir(config, path) if what == "out_dir" else "\n".join(paths(config)))
    except BadYaml as err:
        print(f"{script}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
