"""The index build never deletes or replaces a file it cannot prove it wrote, keeps what arrives
while it builds, and refuses a catalogue changed under it. (A new user's and a hostile user's
trials: each test names what it found.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from .conftest import PREPARED_OVERRIDES
from .test_hostile import _assert_one_line as _one_line
from .test_hostile import _run_cli

pytestmark = pytest.mark.hostile


def test_index_build_never_deletes_a_users_file_in_the_index_folder(prepared, tmp_path, capsys):
    """``amazon-sft index`` (and ``ask``'s build on first use) swaps a new index folder in and
    deletes the old one, whatever it held. Now a file the build did not write stops it."""
    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    (out / "index").mkdir(exist_ok=True)
    mine = out / "index" / "notes.txt"
    mine.write_text("mine\n")
    code, err = _run_cli(capsys, "index", str(out))
    _one_line(code, err, "index", "notes.txt", "did not write")
    assert mine.read_text() == "mine\n"
    mine.unlink()
    code, err = _run_cli(capsys, "index", str(out))
    assert code == 0, err[-2000:]
    code, err = _run_cli(capsys, "index", str(out))  # its own index: built again
    assert code == 0, err[-2000:]


def test_an_index_folder_without_its_list_keeps_a_users_npy(prepared, tmp_path, capsys):
    """With no stats.json in index/, any ``.npy`` or ``.json`` there passed for the build's own
    and was deleted by the build (``ask`` builds it on first use). Now only the build's file
    names pass, and they are the files a real build lists."""
    from amazon_sft.answering.index_build import build_index
    from amazon_sft.ownership import INDEX_FILES

    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    build_index(out)
    listed = set(json.loads((out / "index" / "stats.json").read_text())["files"])
    assert (listed - {"catalogue.jsonl"}) | {"stats.json"} == INDEX_FILES
    shutil.rmtree(out / "index")
    (out / "index" / "title").mkdir(parents=True)
    mine = [out / "index" / "my_vectors.npy", out / "index" / "title" / "notes.json"]
    for path in mine:
        path.write_text("mine\n")
    code, err = _run_cli(capsys, "ask", "anything", "--index", str(out), "--sources-only")
    _one_line(code, err, "ask", "my_vectors.npy", "did not write")
    assert all(path.read_text() == "mine\n" for path in mine)


@pytest.mark.parametrize("stats", ['{"accuracy": 0.93, "epochs": 12}', "x", None])
def test_files_named_like_the_builds_are_the_users_without_an_index_stats(
    prepared, tmp_path, capsys, stats
):
    """A hostile user's trial: a user's ``index/stats.json`` (their own figures) and
    ``index/train.npy`` passed for an old index's by their names, and ``ask --sources-only``
    replaced them. Names pass only beside the stats.json of an index build (its format)."""
    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    shutil.rmtree(out / "index", ignore_errors=True)
    (out / "index").mkdir()
    mine = {out / "index" / "train.npy": b"my array"}
    if stats is not None:
        mine[out / "index" / "stats.json"] = stats.encode()
    for path, data in mine.items():
        path.write_bytes(data)
    code, err = _run_cli(capsys, "ask", "anything", "--index", str(out), "--sources-only")
    _one_line(code, err, "ask", "train.npy", "did not write")
    assert all(path.read_bytes() == data for path, data in mine.items())
    (out / "index" / "stats.json").write_text('{"format": 3, "products": 2}')  # an old build's
    code, err = _run_cli(capsys, "ask", "anything", "--index", str(out), "--sources-only")
    assert code == 0, err[-2000:]


def test_a_symlinked_out_and_a_killed_builds_leftovers(prepared, catalogue, tmp_path, capsys):
    """``prepare --overwrite --out LINK`` swapped the link itself aside and crashed on rmtree of
    it; a killed index build's staging folder was never cleaned, and prepare then refused the
    folder for it."""
    from amazon_sft.atomic import remove_stale, staging_name

    from .test_user_files_prepare import dead_pid

    real = tmp_path / "real"
    shutil.copytree(prepared, real)
    link = tmp_path / "data"
    link.symlink_to(real)
    args = ("prepare", str(catalogue), "--out", str(link), "--config", "tiny", "--quiet")
    code, err = _run_cli(capsys, *args, "--overwrite")
    _one_line(code, err, "prepare", "symbolic link", str(real))
    assert link.is_symlink() and (real / "manifest.json").is_file()
    aside = staging_name(tmp_path / "x", pid=dead_pid())  # a dead process's staging, a link
    aside.symlink_to(real)
    assert remove_stale(tmp_path / "x") and not aside.is_symlink()
    assert (real / "manifest.json").is_file()  # the link went, never what it pointed to
    killed = staging_name(real / "index", pid=dead_pid())
    killed.mkdir()  # a killed index build's
    code, err = _run_cli(capsys, "index", str(real))
    assert code == 0, err[-2000:]
    assert not killed.exists()


def _build_with(monkeypatch, during):
    """``build_index``'s catalogue reading, with ``during()`` run once it has read."""
    from amazon_sft.answering import catalogue_tokens

    read = catalogue_tokens.read_catalogue

    def reading_then(*args, **kwargs):
        tokens = read(*args, **kwargs)
        during()
        return tokens

    monkeypatch.setattr(catalogue_tokens, "read_catalogue", reading_then)


def test_a_file_put_into_the_index_while_it_builds_is_kept(prepared, tmp_path, monkeypatch):
    """The index folder was checked for the user's files once, before minutes of reading; one
    put there during the build was deleted by the swap (an outside review)."""
    from amazon_sft.answering.index_build import build_index
    from amazon_sft.errors import UserError

    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    build_index(out)
    mine = out / "index" / "my-notes.txt"
    _build_with(monkeypatch, lambda: mine.write_text("mine\n"))
    with pytest.raises(UserError, match=r"my-notes\.txt"):
        build_index(out)
    assert mine.read_text() == "mine\n"


def test_a_catalogue_changed_while_it_is_indexed_is_refused(prepared, tmp_path, monkeypatch):
    """The catalogue's stamp and digest were taken after reading it: a product appended during
    the build was recorded as indexed, and never found (an outside review)."""
    from amazon_sft.answering.index_build import build_index
    from amazon_sft.errors import UserError

    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    catalogue = out / "catalogue.jsonl"
    row = b'{"uid": "NEW1", "title": "Zanzibar Quokka Lantern", "content": "A lantern.", "split": "train"}\n'
    _build_with(monkeypatch, lambda: catalogue.write_bytes(catalogue.read_bytes() + row))
    with pytest.raises(UserError, match="changed while"):
        build_index(out)


def test_index_takes_the_prepared_folders_lock(prepared, tmp_path):
    """Two index builds (or an index build and prepare --overwrite) into one folder both ran
    (an outside review; the README says a second writer is refused naming the first)."""
    from amazon_sft.answering.index_build import build_index
    from amazon_sft.errors import UserError
    from amazon_sft.output_lock import OutputLock

    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    with (
        OutputLock(out, "amazon-sft prepare"),
        pytest.raises(UserError, match="amazon-sft prepare"),
    ):
        build_index(out)


def test_a_killed_index_builds_staging_does_not_block_prepare_overwrite(
    prepared, catalogue, tmp_path, capsys
):
    """A build killed mid-way left ``.index.amazon-sft-tmp-MACHINE-PID`` in the prepared folder, and
    prepare --overwrite refused the folder for it (an outside review)."""

    from amazon_sft import atomic

    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    atomic.staging_name(out / "index", pid=int(dead.stdout)).mkdir()
    args = ("prepare", str(catalogue), "--out", str(out), "--config", "tiny", "--quiet")
    code, err = _run_cli(capsys, *args, *PREPARED_OVERRIDES, "--overwrite")
    assert code == 0, err


def test_a_loader_waits_for_the_index_another_process_is_building(prepared, tmp_path):
    """A review of the index lock: an 8-rank eval (or serve and eval started together) on a
    folder whose index was old had every loader but one refused ("being written by another
    process"). A loader waits for the lock, then uses the index the holder built."""
    import threading
    import time

    from amazon_sft.answering import index_build
    from amazon_sft.answering.index import CatalogueIndex
    from amazon_sft.output_lock import OutputLock

    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    shutil.rmtree(out / "index", ignore_errors=True)
    loaded, built = [], []
    real_build = index_build._build_index
    with OutputLock(out, "amazon-sft index"):  # another process, building
        loader = threading.Thread(target=lambda: loaded.append(CatalogueIndex(out)))
        loader.start()
        time.sleep(1.0)
        assert loader.is_alive() and not loaded  # waiting, not refused
        real_build(out, None)
    index_build._build_index = lambda *a: built.append(a) or real_build(*a)
    try:
        loader.join(timeout=60)
    finally:
        index_build._build_index = real_build
    assert loaded and len(loaded[0]) > 0 and not built  # the holder's index, not built again


def test_a_file_of_a_prepared_folder_given_for_the_folder_is_told_to_give_the_folder(
    prepared, capsys
):
    """A hostile user's trial: ``index PREP/catalogue.jsonl`` was told to prepare the catalogue
    into a new folder; the fix is to give ``PREP`` (chat said so already)."""
    code, err = _run_cli(capsys, "index", str(prepared / "catalogue.jsonl"))
    _one_line(code, err, "index", f"prepared folder {prepared}: give the folder")
    assert "amazon-sft prepare" not in err


def test_a_catalogue_line_prepare_never_writes_is_refused_before_it_is_indexed(
    prepared, tmp_path, capsys
):
    """A hostile user's trial: a hand-edited ``catalogue.jsonl`` with one 200 MB record was
    indexed ("indexed 186 products"); each question then took 6 GB and 34 s, or a MemoryError
    traceback. prepare reads lines of at most 1 MB, so a longer catalogue line is refused."""
    import json

    from amazon_sft.answering.catalogue_tokens import MAX_CATALOGUE_LINE_BYTES

    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    shutil.rmtree(out / "index", ignore_errors=True)
    catalogue = out / "catalogue.jsonl"
    lines = catalogue.read_bytes().splitlines(keepends=True)
    row = json.loads(lines[0])
    row["content"] = "word " * (MAX_CATALOGUE_LINE_BYTES // 5)
    lines.insert(1, (json.dumps(row | {"uid": "huge-1"}) + "\n").encode())
    catalogue.write_bytes(b"".join(lines))
    code, err = _run_cli(capsys, "index", str(out))
    _one_line(code, err, "index", f"{catalogue} line 2", "re-run amazon-sft prepare")
    assert not (out / "index").exists()


@pytest.mark.parametrize("readonly", ["folder", "its parent"])
def test_a_read_only_prepared_folder_without_an_index_says_how_to_get_one(
    readonly, prepared, tmp_path, capsys, monkeypatch
):
    """A hostile user's review: ``ask --sources-only`` on a read-only prepared folder without
    its index (a shared, read-only mount) said "cannot write to X: choose a writable folder"
    of a command that only reads. It now says the index is missing and how to get one.
    (``os.access`` stands in for the read-only mount: root writes through a chmod.)"""
    import os

    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    shutil.rmtree(out / "index", ignore_errors=True)
    blocked = out if readonly == "folder" else tmp_path
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if (
        mode & os.W_OK and os.path.realpath(p) == os.path.realpath(blocked)) else real(p, mode, **k))  # fmt: skip
    code, err = _run_cli(capsys, "ask", "a toy", "--index", str(out), "--sources-only")
    _one_line(code, err, "ask", "has no index", f"amazon-sft index {out}", "writable")
    assert not (out / "index").exists()
