import gzip
from collections import Counter

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amazon_sft.data.reading import ReadStats, derived_uid, read_records
from amazon_sft.errors import UserError


def _write(path, lines: list[bytes], gz=False):
    data = b"\n".join(lines) + b"\n"
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


GOOD = orjson.dumps({"uid": "0001360000", "title": "A", "content": "B"})
BAD_LINES = {
    b'{"uid": "1", "title": "x", "content": "unterminated': "malformed_json",
    b"[1, 2]": "not_an_object",
    b'{"uid": "1", "title": 5, "content": "x"}': "title_not_string",
    b'{"uid": "1", "title": "x", "content": ["x"]}': "content_not_string",
    b'{"uid": "1", "content": "x"}': "missing_title",
    b'{"uid": "1", "title": "x"}': "missing_content",
    b'{"uid": "1", "title": "\xff\xfe", "content": "x"}': "invalid_utf8",
    b'{"uid": [1], "title": "x", "content": "y"}': "uid_bad_type",
    b'{"uid": "B00 MOG K", "title": "x", "content": "y"}': "uid_not_citable",
    # the last of two titles was read, silently (a hostile user's review)
    b'{"uid": "1", "title": "x", "content": "y", "title": "z"}': "key_repeated",
    # ... and again when the second spells the key with an escape (a hostile-input review)
    b'{"uid": "1", "title": "x", "content": "y", "t\\u0069tle": "z"}': "key_repeated",
}


@pytest.mark.parametrize("gz", [False, True])
def test_streams_plain_and_gzip_and_keeps_uid_a_string(tmp_path, gz):
    path = _write(tmp_path / ("trn.json.gz" if gz else "trn.json"), [GOOD, GOOD])
    stats = ReadStats()
    records = list(read_records(path, stats))
    assert [r.uid for r in records] == ["0001360000", "0001360000"]
    assert stats.lines == 2 and not stats.skipped


def test_missing_uid_is_derived_from_the_title_stably(tmp_path):
    path = _write(
        tmp_path / "t.json",
        [b'{"title": "Mog", "content": "c"}', b'{"uid": 42, "title": "x", "content": "c"}'],
    )
    stats = ReadStats()
    a, b = read_records(path, stats)
    assert a.uid == derived_uid("Mog") and a.uid.startswith("t-")
    assert b.uid == "42" and stats.uid_derived == 1 and stats.uid_coerced == 1


def test_bad_lines_are_skipped_and_counted_with_line_numbers(tmp_path):
    lines = [GOOD]
    for bad in BAD_LINES:
        lines += [bad, GOOD]
    lines.append(b'{"title": "' + b"x" * 3000 + b'", "content": "y"}')
    path = _write(tmp_path / "t.json", lines)
    stats = ReadStats()
    records = list(read_records(path, stats, max_line_bytes=2000))
    assert len(records) == len(BAD_LINES) + 1
    expected = Counter(BAD_LINES.values()) + Counter({"line_too_long": 1})
    assert stats.skipped == expected
    assert stats.first_lines["malformed_json"] == [2]


@pytest.mark.parametrize(("bad", "reason"), list(BAD_LINES.items()))
def test_strict_stops_at_the_first_bad_line_naming_it(tmp_path, bad, reason):
    path = _write(tmp_path / "t.json", [GOOD, bad, GOOD])
    with pytest.raises(UserError, match=f"line 2: {reason}"):
        list(read_records(path, ReadStats(), strict=True))


def test_missing_input_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        list(read_records(tmp_path / "nope.json", ReadStats()))


def test_truncated_gzip_is_a_user_error(tmp_path):
    path = _write(tmp_path / "t.json.gz", [GOOD] * 2000, gz=True)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(UserError, match="complete file"):
        list(read_records(path, ReadStats()))
    # a damaged gzip's compressed bytes are not judged as text (a review: a truncated one
    # without a newline byte and with carriage-return bytes was told "old Mac line ends")
    path.write_bytes(b"\x1f\x8b" + b"\r" * 10)
    with pytest.raises(UserError, match="complete file"):
        list(read_records(path, ReadStats()))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=12))
def test_fuzz_any_bytes_are_read_or_counted_never_raised(tmp_path_factory, blobs):
    lines = [b.replace(b"\n", b" ").replace(b"\r", b" ") for b in blobs]
    path = tmp_path_factory.mktemp("fuzz") / "t.json"
    path.write_bytes(b"\n".join([GOOD, *lines, GOOD]) + b"\n")
    stats = ReadStats()
    records = list(read_records(path, stats, max_line_bytes=60))
    assert len(records) + sum(stats.skipped.values()) == stats.lines
    assert all(isinstance(r.uid, str) and isinstance(r.title, str) for r in records)


@pytest.mark.parametrize(
    ("uid", "kept"),
    [("B00 MOG K", False), ("B01]x", False), ("[B01", False), ("a\tb", False), ("x" * 101, False),
     ("0001360000", True), ("t-fdbd78b7d8a18821", True), ("B00-X_Y.1:2", True), ("x" * 100, True)],
)  # fmt: skip
def test_a_uid_an_answer_could_not_cite_is_skipped_and_counted(tmp_path, uid, kept):
    """Answers cite ``[source: UID]``, parsed up to the first space or bracket: a uid "B00 MOG K"
    was kept, and its right citation read as none ("B01]x" as a uid that does not exist)."""
    from amazon_sft.prompts import cited_uids

    path = _write(tmp_path / "trn.json", [orjson.dumps({"uid": uid, "title": "A", "content": "B"})])
    stats = ReadStats()
    records = list(read_records(path, stats))
    assert [r.uid for r in records] == ([uid] if kept else [])
    assert stats.skipped == ({} if kept else {"uid_not_citable": 1})
    if kept:
        assert cited_uids(f"B [source: {uid}]") == [uid]


def test_two_files_joined_keep_the_second_ones_first_row(tmp_path):
    """An outside review: ``cat a.json b.json`` where b starts with a byte-order mark put the
    mark at the start of a later line, which was skipped as ``invalid_utf8`` (it is valid
    UTF-8: the mark a file began with). It is read like the first line's."""
    row = orjson.dumps({"uid": "b", "title": "Mog", "content": "A cat who forgets things."})
    path = tmp_path / "joined.json"
    path.write_bytes(
        b"\xef\xbb\xbf" + row.replace(b'"b"', b'"a"') + b"\n\xef\xbb\xbf" + row + b"\n"
    )
    stats = ReadStats()
    assert [r.uid for r in read_records(path, stats)] == ["a", "b"]
    assert not stats.skipped


def test_strict_skips_and_counts_blank_lines_and_says_how_to_go_on(tmp_path):
    """An outside review: a Windows file's trailing empty line ("\\r\\n\\r\\n") stopped --strict
    ("line 2: blank_line"), which the README's list of bad lines does not name, and the stop
    said nothing of what to do. A blank line holds no row to lose: counted, never a stop."""
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD + b"\r\n\r\n   \n" + GOOD.replace(b"0001", b"0002"))
    stats = ReadStats()
    assert len(list(read_records(path, stats, strict=True))) == 2
    assert stats.skipped["blank_line"] == 2
    _write(path, [GOOD, b"[1, 2]"])
    with pytest.raises(UserError, match=r"line 2: not_an_object.*drop --strict"):
        list(read_records(path, ReadStats(), strict=True))


def test_a_key_name_inside_a_value_is_no_repeated_key(tmp_path):
    """The cheap test for a repeated key (a key's quoted name twice on the line) is confirmed by
    reading the line: these rows are kept."""
    lines = [
        b'{"uid": "1", "title": "title", "content": "the \\"title\\" and \\"content\\""}',
        b'{"uid": "2", "title": "x", "content": "y", "meta": {"title": "a", "uid": 3}}',
    ]
    stats = ReadStats()
    assert [r.title for r in read_records(_write(tmp_path / "t.json", lines), stats)] == [
        "title",
        "x",
    ]
    assert not stats.skipped


def touched_after(source):
    """prepare's split (the stage after the read), with ``source`` touched first."""
    import os

    from amazon_sft import prepare

    split = prepare.heldout_mask

    def touched(*args):
        os.utime(source, ns=(1, 1))
        return split(*args)

    return touched


def test_an_input_written_or_replaced_while_prepare_reads_it_is_refused(tmp_path, monkeypatch):
    """A hostile-input review: a file still being written (a download, ``zcat > trn.json``)
    and one replaced during the read were recorded by their final size and digest, which
    launch/train_slurm.sbatch trusts to tell which catalogue PREPARED holds ("lines_read
    40000" beside the 60-line file put in its place). Refused; nothing is written."""
    import os

    from amazon_sft.config import load_run_config
    from amazon_sft.data import reading
    from amazon_sft.data.synthetic import write_catalogue
    from amazon_sft.prepare import prepare

    source = tmp_path / "trn.json"
    write_catalogue(source, 60, seed=1)
    whole = source.read_bytes()
    read = reading.read_records

    def meanwhile(change):
        def records(*args, **kwargs):  # the file changes after its first row is read
            rows = read(*args, **kwargs)
            first = next(rows)
            change()
            yield first
            yield from rows

        monkeypatch.setattr(reading, "read_records", records)
        monkeypatch.setattr("amazon_sft.prepare.read_records", records)

    def grown():
        with open(source, "ab") as fh:
            fh.write(whole.splitlines(keepends=True)[0])

    def replaced():
        (tmp_path / "other.json").write_bytes(whole[: len(whole) // 2])
        os.replace(tmp_path / "other.json", source)

    for n, change in enumerate((grown, replaced)):
        source.write_bytes(whole)
        meanwhile(change)
        out = tmp_path / f"data{n}"
        with pytest.raises(UserError, match="changed while prepare read it"):
            prepare(source, out, load_run_config("tiny"), progress=False)
        assert not out.exists()
    # a file touched after its read is the file read (a review: the check ran after the
    # later stages, hours at 1.3M rows, and a touch or a remount threw the prepare away)
    source.write_bytes(whole)
    meanwhile(lambda: None)
    monkeypatch.setattr("amazon_sft.prepare.heldout_mask", touched_after(source))
    prepare(source, tmp_path / "data", load_run_config("tiny"), progress=False)
