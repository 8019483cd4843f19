"""Hostile and careless inputs of issue 19, items 4-6: every length and count bounded by what
it applies to, one-line errors for the rest of the list (a full disk included), and text that
is safe to print on a terminal. The ownership, locking and resume classes are in
tests/test_hostile.py."""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amazon_sft.config import load_run_config
from amazon_sft.errors import UserError

from .conftest import train_overrides

pytestmark = pytest.mark.hostile
REPO = Path(__file__).resolve().parents[1]
MEMORY_CAP = """
import resource
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # a failing run must not eat the machine
"""


@pytest.fixture(autouse=True)
def _fresh_logging():
    """train's ``basicConfig(force=True)`` leaves a handler on this test's captured stderr;
    the next test would log into the closed stream (a 'Logging error' traceback)."""
    yield
    logging.root.handlers.clear()


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


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path):
    """YAML keeps the last of two equal keys silently: a config with ``lr`` under ``train``
    twice trained with the second, whichever the user meant. Merges (``<<``) still override."""
    cfg = tmp_path / "twice.yaml"
    cfg.write_text("train:\n  lr: 1.0e-3\n  max_steps: 5\n  lr: 3.0e-4\n")
    with pytest.raises(UserError, match=r"twice.yaml .*'lr' is given twice \(lines 2 and 4\)"):
        load_run_config(str(cfg))
    merged = tmp_path / "merged.yaml"
    merged.write_text("base: &b {lr: 0.1}\ntrain:\n  <<: *b\n  lr: 0.2\n")
    from amazon_sft.safe_input import load_yaml_file

    assert load_yaml_file(merged, "config", "fix")["train"] == {"lr": 0.2}


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


# --- numbers transformers, torch or numpy would reject with a traceback ------------------------


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.adam_betas=[2,0.9]", "train.adam_betas"),
        ("train.adam_betas=[0.9]", "train.adam_betas"),
        ("train.adam_betas=[0.9,1.0]", "train.adam_betas"),  # torch wants [0, 1)
        ("train.adam_betas=[a,b]", "train.adam_betas"),
        ("seed=-1", "seed"),
        ("seed=99999999999999999999", "seed"),
        ("data.seed=-5", "data.seed"),
        ("train.lr=1e300", "train.lr"),
        ("train.lr=1e35", "train.lr"),
        ("train.weight_decay=1e300", "train.weight_decay"),
        ("train.weight_decay=-1", "train.weight_decay"),
        ("out_dir=", "out_dir"),
    ],
)
def test_config_values_the_libraries_reject_are_refused_by_name(override, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        load_run_config("tiny", [override])


def test_a_model_types_own_head_size_is_not_refused(tiny_tok):
    """qwen3's head_dim defaults to 128 whatever the hidden size: 3 heads of a hidden size of
    64 build and train (a review: a first shape check refused them, and old runs with them)."""
    from amazon_sft.modeling import load_model

    arch = ["model.arch.model_type=qwen3", "model.arch.num_attention_heads=3"]
    cfg = load_run_config("tiny", [*arch, "model.arch.num_key_value_heads=1"])
    load_model(cfg, len(tiny_tok), 0, "no")


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("model.arch.model_type=nonsense", "model.arch.model_type='nonsense'"),
        ("model.arch.model_type=5", "model.arch.model_type=5"),
        ("model.arch.hidden_size=-5", "model.arch.hidden_size=-5 is not a count"),
        ("model.arch.num_hidden_layers=[1]", "model.arch is not a valid llama"),
        # a typo trained the default shape silently, the key kept as junk in config.json
        ("model.arch.hiden_size=32", "model.arch.hiden_size is not a llama setting"),
        # an ML engineer's trial: a traceback at the first step, a ZeroDivisionError, a run
        # that trained and then failed its save as "ZeRO-3 shards", and the wrong key named
        ("model.arch.num_key_value_heads=3", "model.arch.num_key_value_heads=3 does not divide"),
        ("model.arch.num_attention_heads=0", "model.arch.num_attention_heads=0 is not"),
        ("model.arch.intermediate_size=0", "model.arch.intermediate_size=0 is not"),
        ("model.arch.num_hidden_layers=0", "model.arch.num_hidden_layers=0 is not"),
        ("model.arch.hidden_act=foo", "model.arch.hidden_act='foo' is not an activation"),
        # per-layer shapes: an AmbiguousGlobalPerLayerAttributeError traceback (a review)
        ("model.arch.model_type=gemma4_text", "sets its shape per layer"),
        # an allocation traceback of 819 GB (an ML engineer's trial): the weights alone, told
        ("model.arch.hidden_size=100000000", "GiB this machine has free: shrink model"),
    ],
)
def test_a_wrong_model_arch_is_one_short_line(override, needle, tiny_tok):
    from amazon_sft.modeling import load_model

    cfg = load_run_config("tiny", [override])
    with pytest.raises(UserError, match=needle.replace(".", r"\.").replace("'", ".")) as caught:
        load_model(cfg, len(tiny_tok), 0, "no")
    assert len(str(caught.value)) < 400 and "\n" not in str(caught.value)


# --- lengths and counts bounded by what they apply to -----------------------------------------


def test_max_seq_len_is_capped_by_the_model_context(catalogue, tmp_path, capsys):
    out = tmp_path / "out"
    args = ("prepare", str(catalogue), "--out", str(out), "--config", "tiny", "--quiet")
    code, err = _run_cli(capsys, *args, "--max-seq-len", "4096")  # tiny's context: 1024
    _one_line(code, err, "prepare", "data.max_seq_len=4096", "1024 tokens", "<= 1024")
    assert not out.exists()


def test_training_refuses_rows_longer_than_the_context(prepared, tiny_model_dir, tiny_tok):
    from amazon_sft.modeling import load_model

    cfg = load_run_config("tiny", [f"model.path={tiny_model_dir}", "data.max_seq_len=2048"])
    with pytest.raises(UserError, match="over the context of model"):
        load_model(cfg, len(tiny_tok), 0, "no")


def _prepare_refused(capsys, catalogue, tmp_path, model, *needles: str) -> None:
    """prepare with tiny's 256-token rows for ``model`` is one line naming ``needles`` and
    "<= 128", and writes nothing."""
    out = tmp_path / "out"
    args = ("prepare", str(catalogue), "--out", str(out), "--config", "tiny", "--quiet")
    code, err = _run_cli(capsys, *args, f"model.path={model}")
    _one_line(code, err, "prepare", *needles, "<= 128")
    assert not out.exists()


def test_rows_longer_than_a_sliding_window_are_refused(
    catalogue, tiny_cfg, tiny_tok, tmp_path, capsys
):
    """The packed attention paths attend over a document's whole past: a model with a sliding
    window shorter than the rows (a helper's audit: Mistral with window 16 trained as if it had
    none, while eval's transformers attention applied it) is refused before prepare and
    training, and rows that fit in the window pass."""
    from transformers import AutoConfig

    from amazon_sft.modeling import load_model

    from .conftest import save_random_model

    saved = save_random_model(tmp_path / "mistral", tiny_cfg, tiny_tok, "mistral", tied=False)
    config = AutoConfig.from_pretrained(saved)
    config.sliding_window = 128
    config.save_pretrained(saved)
    _prepare_refused(capsys, catalogue, tmp_path, saved, "sliding attention window", "128 tokens")

    window = ["model.arch.model_type=mistral", "model.arch.sliding_window=16"]
    cfg = load_run_config("tiny", [*window, "data.max_seq_len=32"])
    with pytest.raises(UserError, match=r"data\.max_seq_len=32 is over the sliding attention"):
        load_model(cfg, len(tiny_tok), 0, "no")
    cfg = load_run_config("tiny", [*window, "data.max_seq_len=16"])
    assert load_model(cfg, len(tiny_tok), 0, "no").config.sliding_window == 16


def test_rows_longer_than_longropes_short_span_are_refused(
    catalogue, tiny_cfg, tiny_tok, tmp_path, capsys
):
    """A review of the model families: longrope (Phi-3-128k, Phi-3.5-mini, Phi-4-mini) picks
    its short or long RoPE factors from a batch's longest position, and a packed row's tail
    and a padding row run to the row's end: rows longer than ``original_max_position_embeddings``
    trained short documents under the long factors (their logits moved by 0.008 beside a
    padding row), which answering them alone never uses. Refused before prepare; rows within
    the short span pass."""
    from transformers import AutoConfig

    from amazon_sft.bounds import check_prepare_bounds

    head = tiny_cfg.model.arch["hidden_size"] // tiny_cfg.model.arch["num_attention_heads"]
    rope = {"rope_type": "longrope", "short_factor": [1.0] * (head // 2),
            "long_factor": [4.0] * (head // 2)}  # fmt: skip
    config = AutoConfig.for_model(
        "phi3", vocab_size=len(tiny_tok), hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, pad_token_id=0,
        max_position_embeddings=4096, original_max_position_embeddings=128, rope_scaling=rope,
    )  # fmt: skip
    saved = tmp_path / "phi3"
    config.save_pretrained(saved)
    _prepare_refused(capsys, catalogue, tmp_path, saved, "longrope", "original_max_position")
    check_prepare_bounds(load_run_config("tiny", [f"model.path={saved}", "data.max_seq_len=128"]))


def test_shard_rows_are_bounded_by_memory(catalogue, tmp_path, capsys):
    from amazon_sft.bounds import memory_bytes

    out = tmp_path / "out"
    rows = memory_bytes() // 256  # x 256 tokens x 5 bytes: 5x the machine's memory
    args = ("prepare", str(catalogue), "--out", str(out), "--config", "tiny", "--quiet")
    code, err = _run_cli(capsys, *args, f"data.shard_rows={rows}")
    _one_line(
        code, err, "prepare", f"data.shard_rows={rows}", "GiB row buffer", "use data.shard_rows <="
    )
    assert not out.exists()


def test_a_step_over_many_epochs_is_refused_and_over_one_warned(
    prepared, tiny_model_dir, tmp_path, capsys
):
    import json

    rows = json.loads((prepared / "manifest.json").read_text())["rows"]
    base = ("train", "--config", "tiny")
    huge = train_overrides(prepared, tiny_model_dir, tmp_path / "a", "train.max_steps=1")
    code, err = _run_cli(capsys, *base, *huge, f"train.global_batch_size={rows * 100}")
    _one_line(code, err, "train", f"{rows} rows", "empty padding rows", "global_batch_size")
    assert not (tmp_path / "a" / "final").exists()
    from amazon_sft.bounds import check_epochs_per_step

    assert check_epochs_per_step(rows * 2, rows, "d") == 2  # logged by train's own handler
    assert f"is more than the {rows} rows" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--max-new-tokens", "100000000"), "--max-new-tokens must be in [1, "),
        (("--max-new-tokens", "1000"), "does not fit: the model's context is 1024"),
        (("--repetition-penalty", "nan"), "--repetition-penalty"),
        (("--repetition-penalty", "-1"), "--repetition-penalty"),
        (("--examples", "-2"), "--examples must be >= 0"),  # showed all but 2 (a review)
    ],
)
def test_eval_lengths_and_penalties_are_bounded(
    args, needle, tuned_run, prepared, tmp_path, capsys
):
    out = tmp_path / "eval"
    base = ("eval", "--data", str(prepared), "--model", str(tuned_run), "--out", str(out))
    code, err = _run_cli(capsys, *base, "--n", "2", "--splits", "heldout", *args)
    _one_line(code, err, "eval", needle)
    assert not out.exists()


# --- outputs that cannot be folders -----------------------------------------------------------


def test_eval_and_export_outputs_that_name_a_file_are_one_line(
    tuned_run, prepared, tmp_path, capsys
):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    base = ("eval", "--data", str(prepared), "--model", str(tuned_run), "--n", "2")
    code, err = _run_cli(capsys, *base, "--out", str(a_file))
    _one_line(code, err, "eval", "is a file")
    code, err = _run_cli(capsys, "export", str(tuned_run), "--out", str(a_file / "model"))
    _one_line(code, err, "export", "which is a file")
    assert a_file.read_text() == "mine"


def _entries(folder: Path) -> list[str]:
    """What a folder holds, less the writers' lock files (kept on purpose: ownership.py)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


@pytest.mark.parametrize("out", [".", "..", ""])
@pytest.mark.parametrize("command", ["prepare", "export", "eval"])
def test_out_at_the_current_folder_or_above_or_empty_is_refused(
    command, out, catalogue, prepared, tuned_run, tmp_path, capsys, monkeypatch
):
    """A hostile user's review: ``eval --out /`` wrote its report, answers and a lock named
    ``/..lock`` into the filesystem root, and ``--out ""`` into the current folder (eval writes
    file by file, so the check that refused these for prepare and export did not run)."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    if command == "prepare":
        args = ("prepare", str(catalogue), "--out", out, "--config", "tiny", "--quiet")
    elif command == "export":
        args = ("export", str(tuned_run), "--out", out)
    else:
        args = (
            "eval",
            "--data",
            str(prepared),
            "--model",
            str(tuned_run),
            "--n",
            "2",
            "--out",
            out,
        )
    code, err = _run_cli(capsys, *args)
    _one_line(code, err, command, "is empty" if out == "" else "the current folder")
    assert not list(tmp_path.rglob("*"))[1:], list(tmp_path.rglob("*"))


def test_export_builds_aside_and_renames_into_place(tuned_run, tmp_path, capsys, monkeypatch):
    from amazon_sft.answering import export

    out = tmp_path / "model"

    def killed(*a, **k):
        raise KeyboardInterrupt  # a kill while the export is checked, after it was written

    monkeypatch.setattr(export, "_max_logit_diff", killed)
    code, _ = _run_cli(capsys, "export", str(tuned_run), "--out", str(out))
    assert code == 130 and not out.exists() and not _entries(tmp_path)
    monkeypatch.undo()
    code, err = _run_cli(capsys, "export", str(tuned_run), "--out", str(out))
    assert code == 0, err[-2000:]
    assert (out / "model.safetensors").is_file() and _entries(tmp_path) == ["model"]


def test_a_file_put_in_the_empty_out_while_exporting_is_kept_and_so_is_the_export(
    tuned_run, tmp_path, capsys, monkeypatch
):
    """A file the user put into the empty ``--out`` while the export was written: ``rmdir``
    raised ENOTEMPTY, a traceback, and the finished export was deleted (an outside review).
    One line; the user's file stays and the export is kept beside it, named."""
    from amazon_sft.answering import export

    out = tmp_path / "model"
    out.mkdir()
    real = export._max_logit_diff

    def user_writes(*a, **k):
        (out / "notes.txt").write_text("mine\n")
        return real(*a, **k)

    monkeypatch.setattr(export, "_max_logit_diff", user_writes)
    code, err = _run_cli(capsys, "export", str(tuned_run), "--out", str(out))
    _one_line(code, err, "export", str(out), "notes.txt")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("model.export-")]
    assert len(kept) == 1 and (kept[0] / "model.safetensors").is_file() and str(kept[0]) in err


# --- a full disk: one line naming the folder and what was kept, on every writer ---------------


def _can_mount_tmpfs(where: Path) -> str | None:
    """None when a small tmpfs mounts here, else why not (not root, no mount(8), a container
    without CAP_SYS_ADMIN)."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"mount(8) did not run ({err})"
    if proc.returncode != 0:
        return f"mount -t tmpfs failed: {proc.stderr.strip()}"
    subprocess.run(["umount", str(where)], check=True, timeout=30)
    return None


@pytest.fixture()
def small_disk(tmp_path):
    """``mount(size)``: a fresh tmpfs of that size at ``tmp_path/disk``, unmounted after."""
    where = tmp_path / "disk"
    where.mkdir()
    why = _can_mount_tmpfs(where)
    if why:
        pytest.skip(f"no small disk to fill: {why}")
    mounted = []

    def mount(size: str) -> Path:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            check=True,
            timeout=30,
        )
        mounted.append(where)
        return where

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], timeout=30)


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("zip", "zip archive"),
        ("array", "JSON array"),
        ("gzipped array", "JSON array"),
        ("utf16", "UTF-16"),
        ("bz2", "bzip2"),
    ],
)
def test_an_input_of_another_format_is_named_for_what_it_is(kind, needle, tmp_path, capsys):
    """A review at the real file's shapes: the dataset ships as LF-Amazon-1.3M.raw.zip, and a
    zip, one JSON array or UTF-16 text were read as "all N lines were filtered out", with
    advice to relax data.clean."""
    import bz2
    import gzip
    import json
    import zipfile

    rows = [
        {"uid": str(i), "title": f"Product {i}", "content": "A fine thing. " * 5} for i in range(30)
    ]
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    path = tmp_path / "trn.json"
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("trn.json", lines)
    elif kind == "array":
        path.write_text(json.dumps(rows))
    elif kind == "gzipped array":
        path = tmp_path / "trn.json.gz"
        path.write_bytes(gzip.compress(json.dumps(rows).encode()))
    elif kind == "utf16":
        path.write_text(lines, encoding="utf-16")
    else:
        path.write_bytes(bz2.compress(lines.encode()))
    args = ("prepare", str(path), "--out", str(tmp_path / "out"), "--config", "tiny", "--quiet")
    code, err = _run_cli(capsys, *args)
    line = _one_line(code, err, "prepare", str(path), needle)
    assert "data.clean" not in line
    assert not (tmp_path / "out").exists()


def test_prepare_on_a_full_disk(small_disk, catalogue, capsys):
    disk = small_disk("128k")
    out = disk / "data"
    args = ("prepare", str(catalogue), "--out", str(out), "--config", "tiny", "--quiet")
    code, err = _run_cli(capsys, *args)
    _one_line(code, err, "prepare", "is full", str(disk), "nothing was written")
    assert not _entries(disk), "the partial output was left on the full disk"


def test_training_on_a_full_disk_keeps_the_last_checkpoint(
    small_disk, prepared, tiny_model_dir, capsys
):
    disk = small_disk("4m")  # one 2.5 MB checkpoint fits, a second does not
    out = disk / "run"
    extra = ("train.max_steps=3", "checkpoint.every_steps=1", "checkpoint.keep_last=2")
    args = train_overrides(prepared, tiny_model_dir, out, *extra)
    code, err = _run_cli(capsys, "train", "--config", "tiny", *args)
    line = _one_line(code, err, "train", "is full", str(out), "step-00000001", "resume=auto")
    assert "no checkpoint" not in line
    assert (out / "checkpoints" / "step-00000001" / "COMPLETE").is_file()


def _fill(disk: Path) -> None:
    """Take every free block of ``disk`` (a file written until the write fails)."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"x" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


@pytest.mark.parametrize("lock_note", ["none", "a_killed_run's"])
def test_training_claiming_a_folder_on_a_full_disk(
    lock_note, small_disk, prepared, tiny_model_dir, capsys
):
    """A review: the lock's note, then the run marker, written at train start on a full disk
    were an OSError traceback (on rank 0, with the other ranks left at the next collective),
    and the folder made for the run stayed, empty. A killed run's note in the lock file holds
    the block the new note takes back, so then the marker is what fails."""
    disk = small_disk("64k")
    out = disk / "run"
    if lock_note != "none":
        (disk / ".run.lock").write_text("pid 1 on elsewhere: amazon-sft train, since then")
    _fill(disk)
    args = train_overrides(prepared, tiny_model_dir, out, "train.max_steps=1")
    code, err = _run_cli(capsys, "train", "--config", "tiny", *args)
    _one_line(code, err, "train", "is full", str(out), "nothing was written")
    assert not out.exists()  # the folder this launch made went with the refusal


def test_overwrite_on_a_full_disk_puts_the_previous_run_back(
    small_disk, prepared, tiny_model_dir, capsys
):
    """A review of the claim's fix: ``overwrite=true`` moved the previous run aside (renames
    need no room), then failed writing the new marker and said "nothing was written" with the
    run in previous/. The move is undone, so the line is true."""
    disk = small_disk("64k")
    out = disk / "run"
    out.mkdir()
    mine = {
        ".amazon_sft_run.json": '{"written_by": "amazon_sft 0 train", "created": "then"}\n',
        "metrics.jsonl": '{"step": 1, "loss": 2.0}\n',
        "config.yaml": "seed: 1\n",
    }
    for name, text in mine.items():
        (out / name).write_text(text)
    (disk / ".run.lock").write_text("pid 1 on elsewhere: amazon-sft train, since then")
    _fill(disk)
    args = train_overrides(prepared, tiny_model_dir, out, "train.max_steps=1", "overwrite=true")
    code, err = _run_cli(capsys, "train", "--config", "tiny", *args)
    _one_line(code, err, "train", "is full", "nothing was written")
    assert {p.name: p.read_text() for p in out.iterdir()} == mine  # back in place, whole


def test_training_into_a_folder_it_cannot_write(
    prepared, tiny_model_dir, tmp_path, capsys, monkeypatch
):
    """The same review: any other write error at the claim (read-only, another owner's) was a
    traceback too; it is one line naming out_dir, and the lock is let go."""
    from amazon_sft import atomic

    def refused(path, text):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(atomic, "write_text_whole", refused)
    out = tmp_path / "run"
    args = train_overrides(prepared, tiny_model_dir, out, "train.max_steps=1")
    code, err = _run_cli(capsys, "train", "--config", "tiny", *args)
    _one_line(code, err, "train", "out_dir", str(out), "Permission denied", "writable")
    assert not out.exists()
    from amazon_sft.output_lock import OutputLock

    OutputLock(out, "next").acquire().release()  # not held by the refused launch


def test_export_on_a_full_disk_leaves_no_partial_folder(small_disk, tuned_run, capsys):
    disk = small_disk("256k")  # the tiny model's weights alone are ~0.9 MB
    out = disk / "model"
    code, err = _run_cli(capsys, "export", str(tuned_run), "--out", str(out))
    _one_line(code, err, "export", "is full", str(disk), "nothing was written")
    assert not _entries(disk)


def test_eval_report_on_a_full_disk(small_disk, tuned_run, prepared, capsys):
    disk = small_disk("8k")
    out = disk / "eval"
    base = ("eval", "--data", str(prepared), "--model", str(tuned_run), "--out", str(out))
    code, err = _run_cli(capsys, *base, "--n", "2", "--splits", "heldout", "--max-new-tokens", "2")
    _one_line(code, err, "eval", "is full", str(out), "previous report")
    # nothing but the lock (never deleted) and the marker that claims the folder as eval's
    assert {p.name for p in disk.rglob("*") if p.is_file()} <= {
        ".eval.lock",
        ".amazon_sft_eval.json",
    }


# --- text for terminals -----------------------------------------------------------------------

HOSTILE_TEXT = (
    "Red \x1b[31mALERT\x1b]0;owned\x07 bell\x07 \x9b2J back\rspace \x00nul\x7f"
    " Invoice \u202etxt.exe\u202c \u2067isolated\u2069"  # shown reversed: "exe.txt"
)
BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _no_controls(text: str) -> None:
    bad = sorted({c for c in text if (ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0})
    bad += sorted(BIDI_CONTROLS & set(text))  # they reorder what follows: a title can spoof
    assert not bad, f"control characters printed: {bad!r}"


class _HostileAnswerer:
    """Stands in for the model: an answer and a source that carry terminal escapes (and, as
    ``doubting``, the gate's reason quoting a hostile title)."""

    default_mode = "closed"

    def __init__(self, doubting: bool = False) -> None:
        self.doubting = doubting

    def __call__(self, question, *, k, mode, max_new_tokens, on_text=None, cancel=None):
        from amazon_sft.answering.answer_source import AnswerSource
        from amazon_sft.answering.ask import Answer
        from amazon_sft.answering.index import Source

        for piece in ("An answer ", "\x1b[2J", HOSTILE_TEXT):
            if on_text:
                on_text(piece)
        source = AnswerSource(Source("B\x1b[5m01", HOSTILE_TEXT, "x", 1.0))
        doubt = f'"{HOSTILE_TEXT}" numbers another year' if self.doubting else None
        text = "An answer " + HOSTILE_TEXT
        return Answer(question, text, [source], "", "closed", [], self.doubting, False, doubt)

    def plan(self, question, *, k, mode, max_new_tokens):  # ask plans every question first
        return question

    def answer(self, question, max_new_tokens, on_text=None):
        return self(question, k=None, mode=None, max_new_tokens=max_new_tokens, on_text=on_text)


@pytest.mark.parametrize("doubting", [False, True], ids=["answered", "abstained"])
@pytest.mark.parametrize("command", ["ask", "chat"])
def test_ask_and_chat_print_no_control_characters(command, doubting, capsys, monkeypatch):
    import io

    from amazon_sft.answering import commands
    from amazon_sft.cli import main

    monkeypatch.setattr(commands, "_session", lambda args: _HostileAnswerer(doubting))
    monkeypatch.setattr("sys.stdin", io.StringIO("Tell me about X\n"))
    args = ["ask", "Tell me about X"] if command == "ask" else ["chat"]
    code = main([*args, "--model", "unused"])
    out = capsys.readouterr().out
    assert code == 0 and "An answer [2JRed [31mALERT]0;owned bell" in out
    assert "B[5m01" in out  # the uid too
    _no_controls(out)


def test_sources_only_prints_catalogue_text_without_control_characters(prepared_copy, capsys):
    import json

    from amazon_sft.answering.index_build import build_index

    catalogue = prepared_copy / "catalogue.jsonl"
    rows = [json.loads(line) for line in catalogue.read_text().splitlines()]
    rows[0]["title"] = "Zyzzyva Lamp 2014 " + HOSTILE_TEXT
    catalogue.write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_index(prepared_copy)
    from amazon_sft.cli import main

    code = main(["ask", "Zyzzyva Lamp", "--index", str(prepared_copy), "--sources-only"])
    out = capsys.readouterr().out
    assert code == 0 and "Zyzzyva Lamp 2014 Red [31mALERT" in out
    _no_controls(out)
    # the gate's reason quotes the title too (another year asked: "numbers another year")
    args = ["ask", "Zyzzyva Lamp 2015", "--index", str(prepared_copy), "--sources-only"]
    code = main([*args, "--abstain-below", "1.4"])
    out = capsys.readouterr().out
    assert code == 0 and 'not sure (--abstain-below 1.4): "Zyzzyva Lamp 2014 Red' in out
    _no_controls(out)


@pytest.fixture()
def prepared_copy(prepared, tmp_path) -> Path:
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(prepared, copy)
    return copy


def test_every_special_token_of_the_tokenizer_is_scrubbed_from_questions(tiny_cfg):
    from tokenizers import AddedToken

    from amazon_sft.answering.question_text import clean_question
    from amazon_sft.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_cfg.model)
    # added as SmolLM2 ships them: special, but not among the "additional special tokens"
    tok.add_tokens(
        [AddedToken("<repo_name>", special=True), AddedToken("<file_sep>", special=True)]
    )
    specials = {t.content for t in tok.added_tokens_decoder.values() if t.special}
    assert {"<repo_name>", "<file_sep>"} <= specials - set(tok.all_special_tokens)
    cleaned = clean_question("Tell me about <repo_name>evil<file_sep> X", tok)
    assert "<repo_name>" not in cleaned and "<file_sep>" not in cleaned
    ids = tok(cleaned, add_special_tokens=False)["input_ids"]
    assert not {tok.convert_tokens_to_ids(t) for t in specials} & set(ids)


def test_eval_report_text_has_no_control_characters():
    from amazon_sft.evaluation.report import md_text

    _no_controls(md_text(HOSTILE_TEXT))


@settings(max_examples=100, deadline=None)
@given(
    name=st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,8}", fullmatch=True),
    sep=st.sampled_from([" ", "/", "\t", "\n"]),
    attrs=st.text(st.characters(blacklist_characters="<>"), min_size=190, max_size=3000),
)
def test_the_tag_cleaner_has_no_attribute_length_limit(name, sep, attrs):
    from collections import Counter

    from amazon_sft.config import CleanConfig
    from amazon_sft.data.cleaning import clean_text

    raw = f"Before <{name}{sep}{attrs}> after, and a long enough description."
    cleaned = clean_text(raw, CleanConfig(unescape_html=False), Counter(), "content")
    assert f"<{name}" not in cleaned and cleaned.endswith("after, and a long enough description.")


def test_tag_cleaning_stays_linear_on_unclosed_tags_and_comments():
    """No closing '>' anywhere: each '<' scans only to the next '<', never to the end."""
    import time
    from collections import Counter

    from amazon_sft.config import CleanConfig
    from amazon_sft.data.cleaning import clean_text

    cfg = CleanConfig(unescape_html=False)
    for unit in ("<a x", "<!--x", "<b/"):
        text = unit * 20_000
        started = time.perf_counter()
        clean_text(text, cfg, Counter(), "content")
        assert time.perf_counter() - started < 5, unit  # quadratic would be minutes


def test_a_deleted_checksums_file_is_refused_with_the_fix(tuned_run, tmp_path):
    import shutil

    from amazon_sft.evaluation.loading import load_for_eval

    run = tmp_path / "run"
    shutil.copytree(tuned_run / "final", run / "final")
    (run / "final" / "checksums.json").unlink()
    with pytest.raises(UserError, match=r"checksums\.json.*missing") as caught:
        load_for_eval(str(run), [], "cpu")
    assert "copy" in str(caught.value)


def test_a_slowly_sent_body_is_timed_out():
    import socket
    import time
    from types import SimpleNamespace

    from amazon_sft.answering.serve import create_app
    from amazon_sft.answering.serve_socket import BackgroundServer

    from .conftest import free_port

    answerer = SimpleNamespace(default_mode="closed")
    app = create_app(answerer, body_timeout_s=1.0)
    port = free_port()
    head = (
        b"POST /api/ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    with BackgroundServer(app, port), socket.create_connection(("127.0.0.1", port), 10) as sock:
        started = time.perf_counter()
        sock.sendall(head + b'{"question"')
        for _ in range(3):  # a byte now and then: each arrives before any per-read timeout
            time.sleep(0.4)
            sock.sendall(b" ")
        reply = b""
        while piece := sock.recv(65536):
            reply += piece
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert time.perf_counter() - started < 8


def test_an_oversized_body_that_stalls_is_answered_and_closed_in_time():
    """An outside review: a body over the limit that stops arriving was read for ever (the
    rest is read and dropped so the 413 is not lost to a reset, with no deadline), so 256 such
    connections locked every client out of ``serve``. Its rest is read within the body's
    deadline too."""
    import socket
    import time
    from types import SimpleNamespace

    from amazon_sft.answering.serve import MAX_BODY_BYTES, create_app
    from amazon_sft.answering.serve_socket import BackgroundServer

    from .conftest import free_port

    app = create_app(SimpleNamespace(default_mode="closed"), body_timeout_s=1.0)
    port = free_port()
    head = (
        b"POST /api/ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (MAX_BODY_BYTES * 10)
    )
    with BackgroundServer(app, port), socket.create_connection(("127.0.0.1", port), 10) as sock:
        started = time.perf_counter()
        sock.sendall(head + b" " * (MAX_BODY_BYTES + 4096))  # over the limit, then nothing
        reply = b""
        sock.settimeout(15)
        try:
            while piece := sock.recv(65536):
                reply += piece
        except TimeoutError:
            pass
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert time.perf_counter() - started < 8  # answered and closed, not held open


# --- a file inside a folder this user cannot read ---------------------------------------------

DROP_READ_RIGHTS = (
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search",
    "--inh-caps=-dac_override,-dac_read_search",
    "--",
)
"""Tests run as root, whom ``chmod 000`` does not stop: the command runs without the two
capabilities that let root read any folder, so permissions apply to it as to a user."""


@pytest.fixture()
def locked_folder(prepared, tmp_path):
    import shutil

    if os.geteuid() == 0 and not shutil.which("setpriv"):
        pytest.skip("needs setpriv(1) to drop root's read-any-folder capabilities")
    locked = tmp_path / "locked"
    shutil.copytree(prepared, locked)
    (locked / "c.yaml").write_text("train:\n  max_steps: 3\n")
    locked.chmod(0)
    yield locked
    locked.chmod(0o755)


@pytest.mark.parametrize(
    "args",
    [
        ("train", "--config", "{locked}/c.yaml"),
        ("prepare", "{locked}/catalogue.jsonl", "--out", "{tmp}/out", "--config", "tiny"),
        ("eval", "--data", "{locked}", "--model", "config:tiny", "--out", "{tmp}/eval"),
        ("ask", "Tell me about X", "--index", "{locked}", "--sources-only"),
    ],
    ids=["config", "prepare input", "eval data", "ask index"],
)
def test_a_file_in_an_unreadable_folder_is_one_line(args, locked_folder, tmp_path):
    filled = [a.format(locked=locked_folder, tmp=tmp_path) for a in args]
    prefix = DROP_READ_RIGHTS if os.geteuid() == 0 else ()
    code = "import sys; from amazon_sft.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [*prefix, sys.executable, "-c", code, *filled],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    _one_line(proc.returncode, proc.stderr, args[0], str(locked_folder), "ermission denied")


def _gguf_header(path: Path, context: int | None, tokens_first: bool = True) -> Path:
    """A GGUF file of metadata only, as llama.cpp's converter writes it (a string array before
    the context length exercises skipping one)."""
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), "llama")
    if tokens_first:
        writer.add_token_list(["<s>", "a", "b" * 300])
        writer.add_token_scores([0.0, -1.0, -2.5])
    writer.add_name("header only")
    if context is not None:
        writer.add_context_length(context)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return path


def test_max_seq_len_is_capped_by_a_gguf_models_context(tmp_path):
    from amazon_sft.bounds import check_prepare_bounds

    _gguf_header(tmp_path / "m.gguf", 256)
    cfg = load_run_config(
        "tiny", [f"model.path={tmp_path}", "model.gguf_file=m.gguf", "data.max_seq_len=1024"]
    )
    with pytest.raises(UserError, match=r"max_seq_len=1024 is over the context .* \(256 tokens\)"):
        check_prepare_bounds(cfg)


@pytest.mark.parametrize("damage", ["no context", "truncated", "not gguf", "huge length"])
def test_a_gguf_header_that_does_not_say_leaves_the_check_to_the_load(damage, tmp_path):
    from amazon_sft.gguf_header import context_length

    path = _gguf_header(tmp_path / "m.gguf", None if damage == "no context" else 256)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "not gguf":
        path.write_bytes(b"PK\x03\x04" + data[4:])
    elif damage == "huge length":  # the first key's length field claims 2**62 bytes
        path.write_bytes(data[:24] + (1 << 62).to_bytes(8, "little") + data[32:])
    assert context_length(path) is None


def test_a_gguf_header_of_version_2_is_read_and_a_context_of_0_is_none(tmp_path):
    """A mutation audit: gguf's writer writes version 3 only, so version 2 (which the reader
    takes too) and a context of 0 (unknown, not a limit of 0 tokens) were never read."""
    from amazon_sft.gguf_header import context_length

    path = _gguf_header(tmp_path / "m.gguf", 256)
    data = bytearray(path.read_bytes())
    data[4:8] = (2).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert context_length(path) == 256
    assert context_length(_gguf_header(tmp_path / "zero.gguf", 0)) is None


def test_rows_too_short_for_any_prompt_say_to_raise_the_row_length(catalogue, tmp_path, capsys):
    """Every prompt over 16 tokens: the error said to relax data.clean / data.heldout_fraction."""
    out = tmp_path / "out"
    args = ("prepare", str(catalogue), "--out", str(out), "--config", "tiny", "--quiet")
    code, err = _run_cli(capsys, *args, "--max-seq-len", "16")
    _one_line(code, err, "prepare", "prompt_too_long", "raise data.max_seq_len")
    assert not out.exists()


@pytest.mark.parametrize(
    "body, said",
    [
        (bytes(5 << 20), "mostly NUL bytes"),
        (b'{"uid": "1", "title": "a", "content": "b"}\r' * 30000, "carriage return alone"),
    ],
)
def test_a_file_read_as_one_endless_line_says_what_it_is(body, said, tmp_path, capsys):
    """A hostile-input review: 5 MB of NULs, or old-Mac line ends, were "all 1 lines filtered
    out (line_too_long); raise data.clean.max_line_bytes": advice that read the whole file into
    memory, then failed as malformed JSON."""
    source = tmp_path / "trn.json"
    source.write_bytes(body)
    out = tmp_path / "out"
    code, err = _run_cli(capsys, "prepare", str(source), "--out", str(out), "--config", "tiny", "--quiet")  # fmt: skip
    _one_line(code, err, "prepare", said)
    assert "max_line_bytes" not in err and not out.exists()


def test_a_catalogue_of_held_out_products_only_says_so(prepared, tmp_path, capsys):
    """A hostile-input review: a catalogue whose every product went to the held-out split was
    told "all 29 lines ... were filtered out (skipped: {})": none was filtered."""
    rows = (prepared / "catalogue.jsonl").read_text().splitlines()
    held = [line for line in rows if '"split":"heldout"' in line.replace(" ", "")]
    source = tmp_path / "held.json"
    source.write_text("\n".join(held) + "\n")
    out = tmp_path / "out"
    code, err = _run_cli(capsys, "prepare", str(source), "--out", str(out), "--config", "tiny", "--quiet")  # fmt: skip
    _one_line(code, err, "prepare", "went to the held-out split", "lower data.heldout_fraction")
    assert not out.exists()


def test_the_prepare_a_refusal_suggests_is_for_the_config_in_use(
    catalogue, prepared, chat_tok, tmp_path, capsys
):
    """A new user: ``train --config tiny data.path=data/nope`` said "run `amazon-sft prepare
    trn.json.gz --out data/nope` first"; that prepare used the default model's tokenizer, and
    the same train then refused the folder ("re-run amazon-sft prepare with this model's
    config"), naming neither the config nor ``--overwrite`` (and ``data.path`` to eval, whose
    option is ``--data``). Each suggests the prepare command for the config in use."""
    nope = tmp_path / "nope"
    code, err = _run_cli(capsys, "train", "--config", "tiny", f"data.path={nope}",
                         f"out_dir={tmp_path / 'run'}")  # fmt: skip
    _one_line(code, err, "train", f"--out {nope} --config tiny`")
    code, err = _run_cli(capsys, "eval", "--model", "config:tiny", "--data", str(nope),
                         "--out", str(tmp_path / "report"))  # fmt: skip
    _one_line(code, err, "eval", f"--out {nope} --config tiny`")

    chat_tok.save_pretrained(tmp_path / "tok")  # prepared for another tokenizer
    other = tmp_path / "other"
    args = ("prepare", str(catalogue), "--out", str(other), "--config", "tiny", "--quiet")
    assert _run_cli(capsys, *args, f"model.tokenizer={tmp_path / 'tok'}")[0] == 0
    code, err = _run_cli(capsys, "train", "--config", "tiny", f"data.path={other}",
                         f"out_dir={tmp_path / 'run2'}")  # fmt: skip
    # never re-prepared in place either: the folder may be what another run trained on, and
    # following the hint left that run refusing its own data (an outside trial)
    line = _one_line(code, err, "train", "another tokenizer", "data.path",
                     f"amazon-sft prepare {catalogue.resolve()} --out {other}-tiny --config tiny`")  # fmt: skip
    assert "--overwrite" not in line, line
    code, err = _run_cli(capsys, "eval", "--model", "config:tiny", "--data", str(other),
                         "--out", str(tmp_path / "report2"), "--n", "1")  # fmt: skip
    # eval's --data may be what a run trained on: never re-prepared in place (--overwrite),
    # a folder of its own instead (a review: the run then refused its own data)
    line = _one_line(code, err, "eval", "another tokenizer", f"--out {other}-own --config tiny`")
    assert "data.path" not in line and "--overwrite" not in line, line

    # a review of the fix: the hint left out the overrides given (model.tokenizer here), so
    # following it failed the same way; and eval of a saved run named no config at all
    tokenizer = f"model.tokenizer={tmp_path / 'tok'}"
    good = tmp_path / "good"
    assert _run_cli(capsys, "prepare", str(catalogue), "--out", str(good), "--config", "tiny",
                    "--quiet")[0] == 0  # fmt: skip
    code, err = _run_cli(capsys, "train", "--config", "tiny", f"data.path={good}", tokenizer,
                         "train.lr=1e-4", f"out_dir={tmp_path / 'run3'}")  # fmt: skip
    line = _one_line(code, err, "train", "another tokenizer")
    hint = shlex.split(re.search(r"\(`([^`]+)`", line).group(1))
    assert hint[-2:] == ["tiny", tokenizer] and hint[4].startswith(f"{good}-tiny-"), hint
    assert _run_cli(capsys, *hint[1:], "--quiet")[0] == 0  # followed as written
    code, err = _run_cli(capsys, "train", "--config", "tiny", f"data.path={hint[4]}", tokenizer,
                         "train.max_steps=1", f"out_dir={tmp_path / 'run3'}")  # fmt: skip
    assert code == 0, err[-2000:]
    code, err = _run_cli(capsys, "eval", "--model", str(tmp_path / "run3"), "--data", str(nope),
                         "--out", str(tmp_path / "report3"))  # fmt: skip
    saved = tmp_path / "run3" / "final" / "amazon_sft_config.yaml"
    own = f"data.templates={saved.parent / 'question_templates.yaml'}"  # the run's own copy
    line = _one_line(code, err, "eval", f"--out {nope} --config {saved} {own}`")
    hint = shlex.split(re.search(r"run `([^`]+)`", line).group(1))  # followed as written,
    assert hint[2] == "trn.json.gz"  # the user's catalogue in place of its name
    code, err = _run_cli(capsys, hint[1], str(catalogue), *hint[3:], "--quiet")
    assert code == 0, err[-2000:]


def test_export_of_a_missing_run_does_not_suggest_a_base_model(tmp_path, capsys):
    """A new user: ``export runs/notyet`` said "give config:NAME or a training out_dir", and
    ``export config:tiny`` then said a base model needs no export."""
    code, err = _run_cli(capsys, "export", str(tmp_path / "notyet"), "--out", str(tmp_path / "x"))
    line = _one_line(code, err, "export", "notyet", "a training out_dir")
    assert "config:NAME" not in line, line


def test_run_files_edited_by_hand_read_as_absent_everywhere(tmp_path):
    """``final/run_summary.json`` and ``metrics.jsonl`` were read in five places, each with its
    own tolerance (a review): a summary that is JSON but not an object made a requeued run's
    ``finished_before`` raise AttributeError (``checkpointing`` read it as absent), and a metrics
    row that is not an object, or whose step is not a number, made the resume's
    ``drop_metrics_after`` raise. Each file has one reader now."""
    from amazon_sft.run_files import RunSummary, drop_metrics_after, read_run_summary
    from amazon_sft.saving import finished_before, logged_loss

    final = tmp_path / "final"
    final.mkdir()
    summary = RunSummary(steps=3, final_loss=None, tokens_seen=10)
    cases = ("[1]", '{"steps": "3"}', '{"steps": 3, "final_loss": "low"}', "{")
    for text in (*cases, '{"steps": 3, "tokens_seen": 9}'):  # final_loss gone (a review)
        (final / "run_summary.json").write_text(text)
        assert read_run_summary(final) is None, text
        assert finished_before(tmp_path, summary) is False, text

    metrics = tmp_path / "metrics.jsonl"
    rows = ['{"step": 1, "loss": 2.0}', "[1, 2]", '{"step": "x"}', '{"step": 2, "loss": 1.5}']
    metrics.write_text("\n".join([*rows, '{"step": 3, "lo']) + "\n")
    drop_metrics_after(metrics, 2)
    kept = metrics.read_text().splitlines()
    assert kept == [rows[0], rows[3]]
    assert logged_loss(metrics, 2) == 1.5 and logged_loss(metrics, 3) is None


def test_heldout_questions_name_a_cut_catalogue_line(prepared, tmp_path):
    """``heldout_questions`` (the demo's questions, and the docs' command for your own folder)
    read ``catalogue.jsonl`` with a bare ``orjson.loads``: a cut line was a JSONDecodeError
    traceback, where eval's reader of the same file names the file and line."""
    import shutil

    from amazon_sft.evaluation.heldout_questions import heldout_questions

    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    lines = (copy / "catalogue.jsonl").read_bytes().splitlines()
    (copy / "catalogue.jsonl").write_bytes(b"\n".join([*lines[:3], lines[3][:20], *lines[4:]]))
    with pytest.raises(UserError, match=r"catalogue.jsonl line 4 is cut or corrupt"):
        heldout_questions(copy, 2)


def test_eval_launched_by_accelerate_says_interrupted_on_ctrl_c(monkeypatch, capsys):
    """``eval/evaluate.py`` (the accelerate and SLURM path) ends through
    ``evaluation.main.cli``, which had no KeyboardInterrupt branch: Ctrl-C was a traceback and
    rc -2, where ``amazon-sft eval`` prints one line and returns 130."""
    import amazon_sft.evaluation.main as eval_main

    codes = []

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_main, "main", interrupted)
    monkeypatch.setattr(eval_main, "exit_skipping_teardown", codes.append)
    eval_main.cli()
    assert codes == [130] and capsys.readouterr().err == "amazon-sft eval: interrupted\n"


def _python(script: str, *args) -> subprocess.CompletedProcess:
    """``script`` run by this Python from the repository, with ``args``."""
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )


def test_a_save_past_the_file_size_limit_is_one_line(tmp_path):
    """An outside review: under a file-size limit (``ulimit -f``, which SLURM propagates to its
    jobs by default, or a filesystem's own largest file) torch's checkpoint writer fails with
    "unexpected pos ...", no OS error kept: train ended in two tracebacks. It is one line now,
    naming the limit; a safetensors write keeps the OS's EFBIG, which reads the same."""
    script = (
        "import resource, sys, torch\n"
        "from pathlib import Path\n"
        "from amazon_sft.errors import UserError\n"
        "from amazon_sft.outputs import disk_full\n"
        "out = Path(sys.argv[1])\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, resource.RLIM_INFINITY))\n"
        "for write in (lambda: torch.save(torch.zeros(100000), out / 'x.pt'),\n"
        "              lambda: open(out / 'y.bin', 'wb').write(bytes(1 << 17))):\n"
        "    try:\n"
        "        with disk_full(out, 'train could not save', 'the checkpoint before is kept'):\n"
        "            write()\n"
        "    except UserError as err:\n"
        "        print(err)\n"
    )
    proc = _python(script, tmp_path)
    said = proc.stdout.splitlines()
    assert len(said) == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for line in said:
        assert line.startswith("train could not save: a file in ") and "ulimit -f" in line
        assert "the checkpoint before is kept" in line
    # a full disk under a generous limit is a full disk, not the limit (the first form of this
    # fix blamed any torch write failure on any finite ulimit -f: a review)
    full = script.replace("1 << 16", "100 << 30").replace(
        "from amazon_sft.outputs import disk_full\n",
        "from amazon_sft import outputs\nfrom amazon_sft.outputs import disk_full\n"
        "outputs.free_bytes = lambda folder: 12345\n",
    )
    full = full.replace("out / 'x.pt'", "'/dev/full'")
    proc = _python(full, tmp_path)
    first = proc.stdout.splitlines()[0]
    assert "the disk holding" in first and "is full" in first, proc.stdout + proc.stderr[-2000:]


def test_a_second_ctrl_c_while_interrupted_is_said_is_not_a_traceback(tmp_path, monkeypatch):
    """A second Ctrl-C landing while ``amazon-sft ask: interrupted`` was printed raised out of
    ``cli.main``: a KeyboardInterrupt traceback, exit 1 (a review of the Ctrl-C fix)."""
    import io
    import os
    import signal

    import amazon_sft.data.synthetic as synthetic
    from amazon_sft.cli import main

    def first_ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    class SecondCtrlC(io.StringIO):
        def write(self, text: str) -> int:
            os.kill(os.getpid(), signal.SIGINT)  # delivered at once, mid-print
            return super().write(text)

    monkeypatch.setattr(synthetic, "write_catalogue", first_ctrl_c)
    said = SecondCtrlC()
    monkeypatch.setattr("sys.stderr", said)
    assert main(["synth", "--rows", "5", "--out", str(tmp_path / "t.json.gz")]) == 130
    assert "interrupted" in said.getvalue()
