"""A hostile user of ``eval --questions`` and ``ask`` (a helper's trial, 2026-12-06, forty-sixth
session): a question file that never ends a line filled memory; a mistyped key was ignored and
changed what was scored; ``--seed`` out of range was a traceback; a report went into a prepared
folder's ``index/`` (blocking ``amazon-sft index`` there); ``ask --json`` printed bytes that are
not UTF-8; a gzip-compressed question file was told to be "saved as UTF-8"."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from .test_hostile import _assert_one_line, _run_cli

pytestmark = pytest.mark.hostile


def _read(path):
    from amazon_sft.errors import UserError
    from amazon_sft.evaluation.question_file import read_questions

    with pytest.raises(UserError) as err:
        read_questions(path)
    return str(err.value)


def test_a_question_line_that_never_ends_is_refused_without_reading_it_whole(tmp_path):
    """``--questions`` a link to /dev/zero read one endless line (9 GB in 25 s, growing). Read
    in a process capped at 4 GB of address space, so that reading it whole fails here rather
    than the machine."""
    zero = tmp_path / "zero.jsonl"
    zero.symlink_to("/dev/zero")
    long = tmp_path / "long.jsonl"
    long.write_bytes(b'{"question": "' + b"a " * 600_000 + b'", "uid": "1", "kind": "title"}\n')
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
        "from pathlib import Path\n"
        "from amazon_sft.errors import UserError\n"
        "from amazon_sft.evaluation.question_file import read_questions\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        read_questions(Path(name))\n"
        "    except UserError as err:\n"
        "        print(err)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(zero), str(long)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = proc.stdout.splitlines()
    assert len(said) == 2, said
    assert all("line 1" in x and "one question a line" in x for x in said), said


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "needle"),
    [
        # the last of two keys was asked, silently (serve refuses the same body)
        ('{"question": "a", "question": "b", "uid": "1", "kind": "title"}', "'question' twice"),
        # valid JSON: "not valid JSON" sent the writer hunting for a syntax error
        ('{"question": "a", "uid": ' + "1" * 5000 + ', "kind": "title"}', "integer of 5000 digits"),
        ('{"question": "a", "uid": 123456789012345678901234, "kind": "title"}', "'uid' must be"),
        # a JSON array was "not a JSON object", with no way to make lines of it
        ('[{"question": "a", "uid": "1", "kind": "title"}]', "jq -c '.[]'"),
        ('[\n{"question": "a", "uid": "1", "kind": "title"}\n]', "jq -c '.[]'"),
        # a lone surrogate escape was read, then failed the report's write after every answer
        ('{"question": "tell me \\ud800 about it", "uid": "1", "kind": "t"}', "\\ud800"),
        # valid JSON too deep for Python's reader was "not valid JSON"
        ('{"question": "a", "uid": "1", "note": ' + "[" * 10**5 + "]" * 10**5 + "}", "nested"),
        ("42", '{"question": ..., "uid": ...}'),  # the hint is JSON, not a Python dict
    ],
)
def test_a_question_line_is_refused_saying_what_is_wrong_with_it(text, needle, tmp_path):
    """A hostile user's review (2026-12-07): three question lines told the wrong thing."""
    path = tmp_path / "q.jsonl"
    path.write_text(text + "\n")
    said = _read(path)
    assert "line 1" in said and needle in said, said


@pytest.mark.unit
def test_a_whole_number_uid_is_the_text_prepare_reads_it_as(tmp_path):
    """A hostile-input review: prepare reads ``"uid": 7`` as the product "7", but a question
    file written from the same trn.json was refused ("'uid' must be a product's uid")."""
    from amazon_sft.evaluation.question_file import read_questions

    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "a tutu", "uid": 7, "kind": "title"}\n')
    assert read_questions(path)[0].uid == "7"
    # ... but not a 0/1 flag in 'absent' (pandas writes booleans so): it would take product
    # "1" out of retrieval (a review of the change)
    path.write_text('{"question": "a cape", "uid": "absent", "absent": 1, "kind": "absent"}\n')
    said = _read(path)
    assert "'absent' must be true or the uid taken out" in said, said


@pytest.mark.unit
def test_a_key_the_format_lacks_is_named_not_ignored(tmp_path):
    """``"absnt": UID`` was ignored: the product meant to be taken out stayed in retrieval and
    its answer was scored wrong; eval's own answers.jsonl (``"removed"``) read back the same."""
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "a tutu", "uid": "absent", "absnt": "18063", "kind": "absent"}\n')
    said = _read(path)
    assert "line 1" in said and "'absnt'" in said and "'absent'" in said, said
    path.write_text('{"question": "a tutu", "uid": null, "removed": "18063", "kind": "absent"}\n')
    said = _read(path)
    assert "'removed'" in said and "'absent'" in said, said
    # what the shipped question files carry beside the format's keys is read as before
    from amazon_sft.evaluation.question_file import read_questions

    path.write_text(
        '{"question": "a tutu", "title": "Tutu", "line": 7, "split": "train", "kind": "title",'
        ' "source": "real", "note": "from the dev part"}\n'
    )
    assert [q.title for q in read_questions(path)] == ["Tutu"]


@pytest.mark.unit
def test_a_compressed_question_file_is_read_as_its_text_even_from_a_pipe(tmp_path):
    """prepare reads ``trn.json.gz``; a ``questions.jsonl.gz`` was refused. Read by content,
    without seeking, so ``--questions <(cat q.jsonl.gz)`` works too; its lines keep the 1 MB cap."""
    from amazon_sft.evaluation.question_file import MAX_LINE_BYTES, read_questions

    lines = '{"question": "a tutu", "uid": "1", "kind": "title"}\n{"question": "x", "absent": "2", "kind": "need"}\n'
    plain, packed = tmp_path / "q.jsonl", tmp_path / "q.jsonl.gz"
    plain.write_text(lines)
    with gzip.open(packed, "wt") as fh:
        fh.write(lines)
    want = read_questions(plain)
    assert read_questions(packed) == want
    reader = subprocess.Popen(["cat", str(packed)], stdout=subprocess.PIPE)
    try:
        assert read_questions(Path(f"/dev/fd/{reader.stdout.fileno()}")) == want
    finally:
        reader.stdout.close()
        reader.wait()
    with gzip.open(packed, "wb") as fh:
        fh.write(b'{"question": "' + b"a" * MAX_LINE_BYTES + b'"}\n')
    assert "over 1,048,576 bytes" in _read(packed)
    packed.write_bytes(gzip.compress(lines.encode())[:-12])  # cut short, as a copy that stopped
    assert "unreadable or corrupt" in _read(packed)


def test_eval_seed_out_of_range_is_one_line(prepared, tmp_path, capsys):
    base = ["eval", "--data", str(prepared), "--model", "config:tiny", "--out", str(tmp_path / "e")]
    for seed in ("-1", "99999999999"):
        code, err = _run_cli(capsys, *base, "--seed", seed)
        _assert_one_line(code, err, "eval", "--seed", "4294967295")


def test_eval_never_writes_into_another_commands_folders(prepared, tuned_run, tmp_path, capsys):
    """``--out DATA/index`` was taken: ``amazon-sft index`` and ``prepare --overwrite`` then
    refused that folder until the report was moved out by hand; a run's final/ and checkpoints/
    the same for its next save."""
    base = ["eval", "--data", str(prepared), "--model", "config:tiny", "--n", "1"]
    for out in (
        prepared,
        prepared / "index",
        prepared / "shard-00000" / "eval",
        tuned_run / "final",
        tuned_run / "checkpoints" / "eval",
    ):
        before = sorted(p.name for p in out.parent.iterdir())
        code, err = _run_cli(capsys, *base, "--out", str(out))
        _assert_one_line(code, err, "eval", str(out), "choose another --out")
        assert sorted(p.name for p in out.parent.iterdir()) == before
    beside = tuned_run / "eval-heldout"  # a report kept in the run's folder is the user's choice
    from amazon_sft.evaluation.arguments import parse_args

    assert parse_args([*base[1:], "--out", str(beside)]).out == str(beside)


def test_ask_json_is_utf8_whatever_bytes_the_question_holds(prepared):
    """A question's bytes that are not UTF-8 (argv keeps them as lone surrogates) were printed
    raw into ``--json``'s line: a reader's decode failed."""
    proc = subprocess.run(
        [sys.executable, "-m", "amazon_sft.cli", "ask", b"golden whisk\xff", "--index",
         str(prepared), "--sources-only", "--json"],
        capture_output=True, cwd=prepared.parent, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(proc.stdout.decode("utf-8"))
    assert row["question"].startswith("golden whisk") and row["sources"]


def _chat(prepared, stdin, stdout=subprocess.PIPE, close_stdin=False):
    """``amazon-sft chat --sources-only`` in a process capped at 4 GB of address space."""

    def limits():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        if close_stdin:
            import os

            os.close(0)

    command = [sys.executable, "-m", "amazon_sft.cli", "chat", "--index", str(prepared)]
    return subprocess.run(
        [*command, "--sources-only"], stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
        text=True, timeout=120, preexec_fn=limits, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip


def test_chat_never_reads_an_endless_line_whole_nor_tracebacks_on_a_closed_stdin_or_full_disk(
    prepared,
):
    """A hostile user's trial: ``chat < /dev/zero`` read one endless line (a MemoryError
    traceback under 3 GB, else memory filled), as ``--questions`` did; ``chat <&-`` was
    ``RuntimeError: input(): lost sys.stdin`` and ``chat > /dev/full`` an ``OSError``
    traceback. Each is one line now."""
    with open("/dev/zero") as zero:
        proc = _chat(prepared, zero)
    assert proc.returncode == 2 and "characters" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    proc = _chat(prepared, None, close_stdin=True)
    assert proc.returncode == 2 and "stdin" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    with open("/dev/full", "w") as full:
        proc = _chat(prepared, subprocess.DEVNULL, stdout=full)
    assert proc.returncode != 0 and "No space left" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_chat_takes_a_line_of_exactly_its_cap(monkeypatch):
    """A review: a line of exactly ``MAX_LINE_CHARS`` and its newline was refused as over."""
    import io

    from amazon_sft.answering.chat_input import MAX_LINE_CHARS, read_question
    from amazon_sft.errors import UserError

    monkeypatch.setattr(
        "sys.stdin", io.StringIO("a" * MAX_LINE_CHARS + "\n" + "b" * (MAX_LINE_CHARS + 1))
    )
    assert read_question("") == "a" * MAX_LINE_CHARS + "\n"
    with pytest.raises(UserError, match="over 128,000 characters"):
        read_question("")


@pytest.mark.unit
def test_absent_true_beside_a_uid_takes_that_product_out_as_the_format_says(tmp_path):
    """A hostile user's trial read ``{"uid": X, "absent": true}`` as silently reread: it is the
    documented form of ``"absent": X`` (as beside a title), never a question about nothing."""
    from amazon_sft.evaluation.question_file import read_questions

    path = tmp_path / "q.jsonl"
    path.write_text(
        '{"question": "a red kayak", "uid": "18063", "absent": true, "kind": "absent"}\n'
        '{"question": "a blue kayak", "absent": true, "kind": "absent"}\n'
    )
    taken, invented = read_questions(path)
    assert (taken.uid, taken.removed) == (None, "18063")
    assert (invented.uid, invented.removed) == (None, None)
