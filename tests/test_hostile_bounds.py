"""Hostile and careless inputs of issue 19, items 4-6: every length and count bounded by what
it applies to, one-line errors for the rest of the list (a full disk included), and text that
is safe to print on a terminal. The ownership, locking and resume classes are in
tests/test_hostile.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from amazon_sft.config import load_run_config
from amazon_sft.errors import UserError

pytestmark = pytest.mark.hostile
REPO = Path(__file__).resolve().parents[1]
MEMORY_CAP = """
import resource
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # a failing run must not eat the machine
"""


def _run_cli(capsys, *args) -> tuple[int, str]:
    from amazon_sft.cli import main

    code = main(list(args))
    return code, capsys.readouterr().err


def _one_line(code: int, err: str, command: str, *needles: str) -> str:
    """Exit 2 with exactly one ``amazon-sft X: error:`` line and no traceback; the line."""
    assert code == 2 and "Traceback" not in err, err[-2000:]
    lines = [x for x in err.splitlines() if x.startswith(f"amazon-sft {command}: error:")]
    assert len(lines) == 1, err[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _cli_process(*args, timeout: float = 60, stdin=None) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter under a 3 GiB address-space cap, killed at ``timeout``."""
    code = MEMORY_CAP + "import sys; from amazon_sft.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        stdin=stdin,
    )


# --- YAML: a size limit and an alias limit ----------------------------------------------------

BILLION_LAUGHS = """model:
  path: random
  tokenizer: builtin:tiny
  arch:
    model_type: llama
    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    i: [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BILLION_LAUGHS)
    proc = _cli_process("train", "--config", str(bomb), timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "aliases expand to over" in proc.stderr and str(bomb) in proc.stderr


@pytest.mark.parametrize(
    "text", ["a: &a [*a]\n", "model: &m {arch: *m}\n"], ids=["list", "mapping"]
)
def test_a_recursive_alias_is_refused(text, tmp_path):
    cfg = tmp_path / "loop.yaml"
    cfg.write_text(text)
    with pytest.raises(UserError, match="recursive alias"):
        load_run_config(str(cfg))


def test_an_oversized_config_is_refused_unread(tmp_path):
    from amazon_sft.safe_input import MAX_YAML_BYTES

    cfg = tmp_path / "big.yaml"
    cfg.write_text("# padding\n" * (MAX_YAML_BYTES // 10 + 1))
    with pytest.raises(UserError, match=f"over {MAX_YAML_BYTES} bytes"):
        load_run_config(str(cfg))


@pytest.mark.parametrize("value", ["[1", ": :", "{a: [}", "*nothing"])
def test_a_bad_override_value_is_one_line(value, capsys):
    code, err = _run_cli(capsys, "train", "--config", "tiny", f"train.lr={value}")
    _one_line(code, err, "train", "override", "train.lr", "not valid YAML")


# --- inputs that are not regular files --------------------------------------------------------


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo.json"
    os.mkfifo(path)  # nobody writes to it: open() would block forever
    return path


@pytest.mark.parametrize("source", ["fifo", "/dev/zero", "stdin pipe"])
def test_prepare_input_that_is_not_a_file_is_refused(source, tmp_path):
    if source == "fifo":
        args, stdin, named = (str(_fifo(tmp_path)),), None, "fifo.json"
    elif source == "stdin pipe":
        args, stdin, named = ("/dev/stdin",), subprocess.PIPE, "/dev/stdin"
    else:
        args, stdin, named = (source,), None, source
    out = tmp_path / "out"
    proc = _cli_process(
        "prepare", *args, "--out", str(out), "--config", "tiny", "--quiet", stdin=stdin
    )
    _one_line(proc.returncode, proc.stderr, "prepare", named, "not a regular file")
    assert not out.exists()


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_config_and_templates_that_are_not_files_are_refused(kind, tmp_path):
    path = str(_fifo(tmp_path)) if kind == "fifo" else "/dev/zero"
    proc = _cli_process("train", "--config", path, timeout=60)
    _one_line(proc.returncode, proc.stderr, "train", "config", "not a regular file")
    from amazon_sft.prompts import load_templates

    with pytest.raises(UserError, match=r"data.templates .* not a regular file"):
        load_templates(path)


# --- a hostile data.templates file: one line each ---------------------------------------------

HOSTILE_TEMPLATES = {
    "a list": "- a\n- b\n",
    "invalid YAML": "questions: [\n",
    "not UTF-8": b"\xff\xfe questions",
    "questions a number": "questions:\n  en: 5\n",
    "plain a string": "questions:\n  en: ['Tell me about {title}']\nplain: oops\n",
    "plain prefix a number": "questions:\n  en: ['{title}?']\nplain: {prefix: 5, suffix: x}\n",
    "alias bomb": BILLION_LAUGHS.replace("model:", "questions:"),
}


@pytest.mark.parametrize("name", list(HOSTILE_TEMPLATES))
def test_a_hostile_templates_file_is_one_line(name, catalogue, tmp_path, capsys):
    from amazon_sft.prompts import load_templates

    path = tmp_path / "q.yaml"
    body = HOSTILE_TEMPLATES[name]
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    with pytest.raises(UserError, match=r"data\.templates"):
        load_templates(str(path))
    out = tmp_path / "out"
    code, err = _run_cli(
        capsys,
        "prepare",
        str(catalogue),
        "--out",
        str(out),
        "--config",
        "tiny",
        "--quiet",
        f"data.templates={path}",
    )
    assert "Traceback" not in err and code == 2, err[-2000:]
    assert not out.exists()
