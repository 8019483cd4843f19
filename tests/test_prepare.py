"""End-to-end prepare on the generated catalogue, through the function and the real CLI."""

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from amazon_sft.config import load_run_config
from amazon_sft.data.fingerprints import check_fingerprints
from amazon_sft.data.grounded import uid_share
from amazon_sft.data.manifest import FORMAT_VERSION, Manifest
from amazon_sft.data.shards import PackedShards, read_manifest, verify_checksums
from amazon_sft.data.split import normalise_title
from amazon_sft.errors import UserError
from amazon_sft.prepare import prepare
from amazon_sft.prompts import build_prompt_format
from amazon_sft.tokenizer import tokenizer_fingerprint
from tests.conftest import PREPARED_OVERRIDES

pytestmark = pytest.mark.e2e


def _jsonl(path):
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_manifest_report_and_files(prepared):
    m = read_manifest(prepared)
    assert m.format_version == FORMAT_VERSION and m.integrity and m.tokenizer
    assert m.data["heldout_fraction"] == m.config["data"]["heldout_fraction"]
    assert 0.9 < m.fill_ratio <= 1.0
    for reason in (
        "content_empty",
        "duplicate",
        "malformed_json",
        "invalid_utf8",
        "content_equals_title",
    ):
        assert m.skipped.get(reason, 0) > 0, reason
    verify_checksums(prepared)
    report = json.loads((prepared / "report.json").read_text())
    assert report["histograms"]["answer_tokens"]["n"] == m.train_docs
    assert "## Skipped" in (prepared / "report.md").read_text()
    # which prompt the data teaches (a review: a base model's plain format was said nowhere)
    assert report["prompt_format"].startswith("plain")
    assert "| prompt_format | plain" in (prepared / "report.md").read_text()
    assert sum(s.rows for s in m.shards) == m.rows == len(PackedShards(prepared))


def test_split_is_clean_and_probe_is_training_titles(prepared):
    heldout = {normalise_title(r["title"]) for r in _jsonl(prepared / "heldout.jsonl")}
    probe = {normalise_title(r["title"]) for r in _jsonl(prepared / "seen_probe.jsonl")}
    catalogue = _jsonl(prepared / "catalogue.jsonl")
    train = {normalise_title(r["title"]) for r in catalogue if r["split"] == "train"}
    assert heldout and probe
    assert not heldout & train
    assert probe <= train
    assert all(isinstance(r["uid"], str) for r in catalogue)


def test_rows_decode_to_prompt_answer_eos_with_loss_only_on_answers(prepared, tiny_cfg, tiny_tok):
    shards = PackedShards(prepared)
    fmt = build_prompt_format(tiny_tok, tiny_cfg.data)
    by_content = {r["content"]: r for r in _jsonl(prepared / "catalogue.jsonl")}
    checked = 0
    for index in range(min(len(shards), 20)):
        ids, mask, lens = shards.row(index)
        start = 0
        for n in lens:
            doc, doc_mask = ids[start : start + n], mask[start : start + n]
            start += n
            assert doc[-1] == tiny_tok.eos_token_id and doc_mask[-1] == 1
            assert doc_mask[0] == 0
            n_prompt = int(np.argmax(doc_mask))
            assert doc_mask[n_prompt:].all() and not doc_mask[:n_prompt].any()
            answer = tiny_tok.decode(doc[n_prompt:-1])
            record = by_content[answer]  # the description, whole (nothing was cut at this budget)
            prompt = tiny_tok.decode(doc[:n_prompt], skip_special_tokens=False)
            assert prompt == tiny_tok.bos_token + fmt.render(record["title"], 0)  # canonical
            checked += 1
        assert not mask[start:].any() and (ids[start:] == shards.pad_id).all()
    assert checked > 20


def test_eos_is_kept_when_descriptions_are_cut(catalogue, tiny_cfg, tiny_tok, tmp_path):
    cfg = load_run_config("tiny", ["data.max_answer_tokens=8"])
    m = prepare(catalogue, tmp_path / "out", cfg, progress=False)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["answer_truncated"] > 0.9 * m.train_docs
    shards = PackedShards(tmp_path / "out")
    ids, mask, lens = shards.row(0)
    ends = np.cumsum(lens) - 1
    assert (ids[ends] == tiny_tok.eos_token_id).all() and mask[ends].all()
    assert all(int(mask[e - 8 : e + 1].sum()) == 9 for e in ends)  # 8 answer tokens + EOS


def test_a_uid_repeated_by_another_product_is_kept_once_and_counted(catalogue, tmp_path):
    """Two products under one uid (or two rows without a uid and one title: the made-up uid
    hashes the title) were both kept: an answer quoting one marked both "cited" on the page,
    the API and ``ask``, and ``#src-<uid>`` could jump to the other (an outside review). The
    first row of a uid is kept; the others are skipped and counted."""
    src = tmp_path / "trn.json"
    extra = [
        {"uid": "B0DUP", "title": "Quokka Harmonica Deluxe", "content": "A brass harmonica in C with a pouch."},
        {"uid": "B0DUP", "title": "Quokka Harmonica Case", "content": "A hard shell case for seven harmonicas."},
        {"title": "Marmalade Cookbook", "content": "Seville orange recipes from a grandmother."},
        {"title": "Marmalade Cookbook", "content": "Stories of a ginger cat who cooks pancakes."},
    ]  # fmt: skip
    raw = catalogue.read_bytes()
    lines = (gzip.decompress(raw) if catalogue.suffix == ".gz" else raw).splitlines()
    src.write_bytes(b"\n".join([*lines, *(orjson.dumps(r) for r in extra)]) + b"\n")
    prepare(src, tmp_path / "out", load_run_config("tiny", []), progress=False)
    rows = _jsonl(tmp_path / "out" / "catalogue.jsonl")
    uids = [r["uid"] for r in rows]
    assert len(uids) == len(set(uids))
    assert [r["title"] for r in rows if r["uid"] == "B0DUP"] == ["Quokka Harmonica Deluxe"]
    assert sum(r["title"] == "Marmalade Cookbook" for r in rows) == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["skipped"]["uid_repeated"] == 2
    # which lines were skipped is said for cleaning's reasons too (an outside trial: the
    # "first lines" column was empty for uid_repeated, duplicate and the content reasons)
    assert report["first_bad_lines"]["uid_repeated"] == [len(lines) + 2, len(lines) + 4]
    assert (
        f"| uid_repeated | 2 | {len(lines) + 2}, {len(lines) + 4} |"
        in (tmp_path / "out" / "report.md").read_text()
    )


def test_a_numeric_uid_read_as_text_is_said(catalogue, tmp_path):
    """An outside trial: ``"uid": 12345`` was read as the text "12345", counted only in
    report.json; report.md and prepare's closing line said nothing."""
    src = tmp_path / "trn.json"
    raw = catalogue.read_bytes()
    lines = (gzip.decompress(raw) if catalogue.suffix == ".gz" else raw).splitlines()
    extra = {"uid": 12345, "title": "Quokka Harmonica", "content": "A brass harmonica in C."}
    src.write_bytes(b"\n".join([*lines, orjson.dumps(extra)]) + b"\n")
    prepare(src, tmp_path / "out", load_run_config("tiny", []), progress=False)
    assert "| uid_coerced | 1 |" in (tmp_path / "out" / "report.md").read_text()


def test_max_train_products_teaches_a_prefix_and_counts_the_rest(catalogue, prepared, tmp_path):
    full = read_manifest(prepared)
    cfg = load_run_config("tiny", ["data.max_train_products=7"])
    m = prepare(catalogue, tmp_path / "out", cfg, progress=False)
    assert m.train_docs == m.train_products == 7
    assert m.heldout_docs == full.heldout_docs  # the held-out split does not move
    assert m.over_max_train_products == full.train_products - 7
    catalogue_rows = _jsonl(tmp_path / "out" / "catalogue.jsonl")
    taught = [r["title"] for r in catalogue_rows if r["split"] == "train"]
    assert len(taught) == 7 and sum(r["split"] == "untaught" for r in catalogue_rows) > 0
    assert {r["title"] for r in _jsonl(tmp_path / "out" / "seen_probe.jsonl")} <= set(taught)
    with pytest.raises(UserError, match=r"data\.max_train_products"):
        load_run_config("tiny", ["data.max_train_products=0"])


def test_more_phrasings_per_doc_than_the_templates_have_is_refused(catalogue, tmp_path):
    """A docs review: data.phrasings_per_doc=20 taught 9 copies of each product (the builtin
    phrasings) and the manifest recorded 20, unsaid."""
    cfg = load_run_config("tiny", ["data.phrasings_per_doc=10"])
    with pytest.raises(UserError, match=r"data\.phrasings_per_doc=10 .* 9 phrasings .*<= 9"):
        prepare(catalogue, tmp_path / "out", cfg, progress=False)
    assert not (tmp_path / "out").exists()


def test_phrasings_per_doc_teaches_the_canonical_question_and_others(catalogue, tiny_tok, tmp_path):
    cfg = load_run_config("tiny", ["data.phrasings_per_doc=2", "data.max_train_products=30"])
    m = prepare(catalogue, tmp_path / "out", cfg, progress=False)
    assert m.train_docs == 2 * m.train_products == 60
    fmt = build_prompt_format(tiny_tok, cfg.data)
    shards = PackedShards(tmp_path / "out")
    questions: dict[str, list[str]] = {}
    for index in range(len(shards)):
        ids, mask, lens = shards.row(index)
        start = 0
        for n in lens:
            n_prompt = int(np.argmax(mask[start : start + n]))
            answer = tiny_tok.decode(ids[start + n_prompt : start + n - 1])
            questions.setdefault(answer, []).append(tiny_tok.decode(ids[start : start + n_prompt]))
            start += n
    assert len(questions) == 30 and all(len(q) == 2 and q[0] != q[1] for q in questions.values())
    canonical = fmt.phrasings[0].split("{title}")[0]
    assert all(sum(canonical in q for q in qs) == 1 for qs in questions.values())


def test_same_input_same_shards(catalogue, tiny_cfg, prepared, tmp_path):
    cfg = load_run_config("tiny", PREPARED_OVERRIDES)
    again = prepare(catalogue, tmp_path / "again", cfg, progress=False)
    assert [s.sha256 for s in again.shards] == [s.sha256 for s in read_manifest(prepared).shards]


def test_the_same_input_prepared_again_is_the_same_data_for_resume_and_eval(
    catalogue, prepared, tmp_path
):
    """An outside review: a re-prepare of unchanged data (a requeue onto a node whose local disk
    was wiped) had the same shards and split, but its manifest digest differed (the reports'
    timings), so resume refused it and eval called it "prepared again since". The data's
    digest leaves the reports out; a record of the folder's manifest integrity (what runs
    recorded before) is still accepted."""
    from amazon_sft.resume_config import changes_on_resume
    from amazon_sft.trained_on import TrainedOn, check_trained_on, write_trained_on

    # a review of the fix: settings that shape no example (EXTRA's train.lr, given to prepare
    # too by train_slurm.sbatch; a node-local model.path; prepare's speed) changed the digest
    speed = ["train.lr=0.0005", "data.grounded_workers=1", "data.verify=full"]
    cfg = load_run_config("tiny", [*PREPARED_OVERRIDES, *speed])
    again = prepare(catalogue, tmp_path / "again", cfg, progress=False)
    first = read_manifest(prepared)
    assert again.integrity != first.integrity  # the reports' timings differ ...
    assert again.identity.digest == first.identity.digest  # ... the data does not
    # what a run records now; before 2026-12-04 (the manifest's integrity: of this folder)
    for recorded in (first.identity.digest, again.integrity):
        model = tmp_path / f"model-{recorded[:8]}"
        model.mkdir()
        write_trained_on(model, TrainedOn(str((tmp_path / "again").resolve()), recorded))
        check_trained_on(model, tmp_path / "again")  # not "prepared again since"
        saved = {"config": first.config, "data_integrity": recorded}
        assert changes_on_resume(saved, first.config, again.identity) == []
    shaped = load_run_config("tiny", [*PREPARED_OVERRIDES, "data.phrasings_per_doc=3"])
    other = prepare(catalogue, tmp_path / "other", shaped, progress=False)
    with pytest.raises(ValueError, match="manifest digest"):
        saved = {"config": first.config, "data_integrity": first.identity.digest}
        changes_on_resume(saved, first.config, other.identity)


def test_chat_template_prompts_use_the_exact_spliced_ids(chat_tok, catalogue, tiny_cfg, tmp_path):
    chat_tok.save_pretrained(tmp_path / "tok")
    prepare(catalogue, tmp_path / "out", tiny_cfg, tokenizer=str(tmp_path / "tok"), progress=False)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["prompt_encoding"] == "cached head + rest"
    shards = PackedShards(tmp_path / "out")
    ids, mask, lens = shards.row(0)
    doc = ids[: lens[0]]
    n_prompt = int(np.argmax(mask[: lens[0]]))
    text = chat_tok.decode(doc[:n_prompt], skip_special_tokens=False)
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
    assert chat_tok(text, add_special_tokens=False).input_ids == doc[:n_prompt].tolist()


def test_fingerprint_mismatch_is_refused(prepared, chat_tok, tiny_tok, tiny_cfg):
    m = read_manifest(prepared)
    fmt = build_prompt_format(tiny_tok, tiny_cfg.data)
    check_fingerprints(m, tokenizer_fingerprint(tiny_tok), fmt.fingerprint(), "x")
    with pytest.raises(UserError, match="another tokenizer"):
        check_fingerprints(m, tokenizer_fingerprint(chat_tok), fmt.fingerprint(), "x")
    with pytest.raises(UserError, match="another prompt template"):
        check_fingerprints(m, tokenizer_fingerprint(tiny_tok), "0" * 16, "x")
    # a new user: prepared with data.templates=my.yaml, train without it was told to prepare
    # again, which rebuilt the folder with the builtin templates (theirs silently gone)
    made = {**m.to_dict(), "config": {**m.config, "data": {**m.data, "templates": "my.yaml"}}}
    theirs = Manifest.from_dict(made)
    with pytest.raises(UserError, match=r"prepared with data\.templates=my\.yaml.*give data\.templates=my\.yaml"):  # fmt: skip
        check_fingerprints(theirs, tokenizer_fingerprint(tiny_tok), "0" * 16, "x", templates="builtin")  # fmt: skip
    # a review: eval --compare config:tiny RUN after the builtin file was edited in place was
    # told to prepare --data again with --overwrite, which wrecked the run's own data
    with pytest.raises(UserError) as err:
        check_fingerprints(m, tokenizer_fingerprint(tiny_tok), "0" * 16, "x", None, "--data", "builtin", owned_by_a_run=True)  # fmt: skip
    assert "--overwrite" not in str(err.value) and "final/question_templates.yaml" in str(err.value)


def test_everything_filtered_out_is_a_clear_error(tmp_path, tiny_cfg):
    src = tmp_path / "trn.json"
    src.write_bytes(b'{"uid": "1", "title": "Tutu", "content": ""}\n' * 5)
    with pytest.raises(UserError, match="all 5 lines"):
        prepare(src, tmp_path / "out", tiny_cfg, progress=False)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*tmp-*"))  # no staging left (lock files stay)


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "amazon_sft.cli", *args], capture_output=True, text=True, cwd=cwd
    )


def test_cli_prepare_and_its_one_line_errors(catalogue, tmp_path):
    out = tmp_path / "data"
    ok = _cli(
        "prepare",
        str(catalogue),
        "--out",
        str(out),
        "--config",
        "tiny",
        "--max-seq-len",
        "128",
        "--quiet",
        "data.heldout_fraction=0.2",  # a dotted override after the options
    )
    assert ok.returncode == 0, ok.stderr
    assert read_manifest(out).max_seq_len == 128
    assert read_manifest(out).config["data"]["heldout_fraction"] == 0.2
    wrong = _cli("prepare", str(catalogue), "--out", str(out), "--bogus")
    assert wrong.returncode == 2 and "--bogus" in wrong.stderr

    exists = _cli("prepare", str(catalogue), "--out", str(out), "--config", "tiny", "--quiet")
    missing = _cli(
        "prepare", str(tmp_path / "nope.json.gz"), "--out", str(tmp_path / "o"), "--config", "tiny"
    )
    (tmp_path / "afile").write_text("x")
    unwritable = _cli(
        "prepare", str(catalogue), "--out", str(tmp_path / "afile" / "sub"), "--config", "tiny"
    )
    strict = _cli(
        "prepare",
        str(catalogue),
        "--out",
        str(tmp_path / "s"),
        "--config",
        "tiny",
        "--strict",
        "--quiet",
    )
    for proc, needle in (
        (exists, "--overwrite"),
        (missing, "does not exist"),
        (unwritable, "writable"),
        (strict, "(--strict)"),
    ):
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and needle in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1

    again = _cli(
        "prepare", str(catalogue), "--out", str(out), "--config", "tiny", "--overwrite", "--quiet"
    )
    assert again.returncode == 0 and read_manifest(out).max_seq_len == 256


def test_cli_synth_writes_the_real_format(tmp_path):
    proc = _cli("synth", "--out", str(tmp_path / "trn.json"), "--rows", "300", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    rows = [
        orjson.loads(line)
        for line in (tmp_path / "trn.json").read_bytes().splitlines()[:50]
        if line.startswith(b'{"uid"')
    ]
    assert rows and {"uid", "title", "content", "target_ind", "target_rel"} <= set(rows[0])


def test_synth_same_seed_same_gz_file(tmp_path):
    """``synth --help`` promises the same file for the same seed; a ``.gz`` carried the time it
    was written and the name of its staging file (with the pid) in its header."""
    import time

    from amazon_sft.data.synthetic import write_catalogue

    write_catalogue(tmp_path / "a" / "trn.json.gz", 50, seed=3)
    time.sleep(1.1)  # gzip's header keeps whole seconds
    write_catalogue(tmp_path / "b" / "trn.json.gz", 50, seed=3)
    assert (tmp_path / "a" / "trn.json.gz").read_bytes() == (
        tmp_path / "b" / "trn.json.gz"
    ).read_bytes()


def test_generator_version_2_describes_the_titled_product_and_version_1_is_unchanged(tmp_path):
    """The demo's catalogue (version 2): a description names its title's words, so products can
    be told apart by it; version 1 (the default, which eval/questions/ was written against)
    keeps its bytes."""
    import re

    from amazon_sft.data.synthetic import generate_rows

    assert _cli("synth", "--out", str(tmp_path / "a.json"), "--rows", "160").returncode == 0
    assert (tmp_path / "a.json").read_bytes() == b"\n".join(generate_rows(160, 0)[0]) + b"\n"
    generic = {"with", "edition", "beginners", "field", "guide", "novel", "album", "live", "set"}

    def described(version: int) -> float:
        rows = []
        for line in generate_rows(400, 0, version)[0]:
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # the malformed lines the reader must survive
            if not isinstance(row, dict) or not isinstance(row.get("title"), str):
                continue
            if len(row.get("content", "")) > 40:
                rows.append(row)
        named = [
            {w.lower() for w in re.findall(r"[A-Za-z]{4,}", r["title"])} - generic
            & {w.lower() for w in re.findall(r"[A-Za-z]{4,}", r["content"])}
            for r in rows
        ]
        return sum(map(bool, named)) / len(rows)

    assert described(2) > 0.9 > 0.5 > described(1)
    assert _cli("synth", "--out", str(tmp_path / "b.json"), "--version", "3").returncode != 0


def test_generator_version_2_gives_distinct_products_distinct_titles_at_4000_rows():
    """The GPU check's demo (4,000 rows) held three products titled "Quiet Whisk Set of 6":
    a question naming that title has no one right answer, and the gate's abstention was
    scored false. The 1,000 real rows share no title; version 2's described products now
    share none either (an exact repeat of a row, uid and all, stays: the real file has those;
    rows prepare drops may share one). The demo's 240 rows had no such pair: its bytes stay."""
    import hashlib
    import re

    from amazon_sft.data.synthetic import generate_rows

    titles: dict[str, str] = {}
    for line in generate_rows(4000, 0, 2)[0]:
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not (isinstance(row, dict) and isinstance(row.get("title"), str) and "uid" in row):
            continue
        text = re.sub(r"<[^>]+>", "", row["content"])
        if len(text) > 8 and text != row["title"]:  # a described product: prepare keeps it
            owner = titles.setdefault(row["title"].lower(), row["uid"])
            assert owner == row["uid"], f"{row['title']!r}: {owner} and {row['uid']}"
    demo = b"\n".join(generate_rows(240, 0, 2)[0])
    assert hashlib.sha256(demo).hexdigest()[:16] == DEMO_CATALOGUE_SHA256_16


DEMO_CATALOGUE_SHA256_16 = "ff42220e291801a9"  # generate_rows(240, 0, 2) before the change


def test_the_typed_manifest_round_trips_and_names_a_bad_field(prepared):
    from amazon_sft.data.manifest import Manifest

    m = read_manifest(prepared)
    raw = json.loads((prepared / "manifest.json").read_text())
    assert Manifest.from_dict(raw) == m and m.to_dict() == raw
    with pytest.raises(UserError, match="unknown field 'extra'"):
        Manifest.from_dict({**raw, "extra": 1})
    with pytest.raises(UserError, match="lacks 'rows'"):
        Manifest.from_dict({k: v for k, v in raw.items() if k != "rows"})


GIANT_TITLE = "Gigantic " * 400


def _prepare_with_a_giant_title(catalogue, tmp_path, uid: str, overrides: list[str]) -> dict:
    """The catalogue plus one product whose 400-word title no row holds, prepared into
    ``tmp_path/out`` with ``overrides``; returns its report."""
    src = tmp_path / "trn.json"
    giant = {"uid": uid, "title": GIANT_TITLE, "content": "A very long titled thing."}
    raw = gzip.decompress(catalogue.read_bytes()).splitlines()
    src.write_bytes(b"\n".join([*raw, orjson.dumps(giant)]) + b"\n")
    prepare(src, tmp_path / "out", load_run_config("tiny", overrides), progress=False)
    return json.loads((tmp_path / "out" / "report.json").read_text())


def test_seen_probe_holds_only_products_taught_and_says_how(catalogue, tmp_path):
    """The seen probe was drawn from every training product, taught or not: with
    ``data.closed_book_fraction=0.3`` (the grounded recipe teaches 0.15 closed-book), seven in ten
    "seen" titles scored closed-book had never been taught closed-book, and a product whose every
    prompt was too long for the rows (dropped as ``prompt_too_long``) counted as seen too. Now
    each probe row says how it was taught (``taught``) and untaught products stay out."""
    giant = {"uid": "B0GIANT1", "title": GIANT_TITLE}
    overrides = [
        "data.closed_book_fraction=0.3",
        "data.probe_size=100000",
        "data.heldout_fraction=0.01",
    ]
    report = _prepare_with_a_giant_title(catalogue, tmp_path, giant["uid"], overrides)
    probe = _jsonl(tmp_path / "out" / "seen_probe.jsonl")
    assert probe and all(r["taught"] == ["closed_book"] for r in probe)
    assert all(uid_share(r["uid"], "closed:") < 0.3 for r in probe)
    catalogue_rows = {r["uid"]: r for r in _jsonl(tmp_path / "out" / "catalogue.jsonl")}
    closed = {
        normalise_title(r["title"])
        for r in catalogue_rows.values()
        if r["split"] == "train" and uid_share(r["uid"], "closed:") < 0.3
    }
    assert {normalise_title(r["title"]) for r in probe} == closed - {
        normalise_title(giant["title"])
    }
    assert "B0GIANT1" not in {r["uid"] for r in probe}
    assert report["probe_docs"] == len(probe)
    # rows skipped and training documents dropped are counted apart: a prompt too long for the
    # row drops documents (one per phrasing), not catalogue rows
    assert "prompt_too_long" not in report["skipped"]
    assert report["documents_dropped"]["prompt_too_long"] >= 1
    assert read_manifest(tmp_path / "out").documents_dropped == report["documents_dropped"]
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Training documents dropped" in markdown
    assert catalogue_rows["B0GIANT1"]["split"] == "train"  # the case this test is about


def test_a_catalogue_file_given_as_the_prepared_folder_says_to_prepare_it_into_a_folder(
    catalogue,
):
    """``data.path=trn.json.gz`` said "run amazon-sft prepare trn.json.gz --out trn.json.gz",
    which then refused: the output is a file (a new user's walkthrough)."""
    with pytest.raises(UserError, match=r"is a file, not a prepared folder.*--out \S*trn-prepared"):
        read_manifest(catalogue)
    # a new user's walkthrough: the folder was suggested beside the input (a shared, perhaps
    # read-only data folder), and `amazon-sft index FILE` said FILE/catalogue.jsonl not found
    with pytest.raises(UserError) as err:
        read_manifest(catalogue)
    assert f"--out {Path('data') / 'trn-prepared'}`" in str(err.value)
    from amazon_sft.answering.index_build import build_index

    with pytest.raises(UserError, match="is a file, not a prepared folder"):
        build_index(catalogue)
    assert not list(catalogue.parent.glob(".*.lock"))  # refused before any lock file


def test_seen_probe_leaves_out_a_product_whose_grounded_examples_were_all_dropped(
    catalogue, tmp_path
):
    """A product taught grounded only, whose every grounded example was too long for a row
    (dropped as ``grounded_too_long``), stayed in the seen probe as taught grounded; so did one
    whose only grounded example was an abstention (its own record never the answer)."""
    from tests.conftest import GROUNDED

    overrides = [
        *GROUNDED,
        "data.grounded_fraction=1.0",
        "data.closed_book_fraction=0",
        "data.probe_size=100000",
        "data.heldout_fraction=0.01",
    ]
    report = _prepare_with_a_giant_title(catalogue, tmp_path, "B0GIANT2", overrides)
    probe = _jsonl(tmp_path / "out" / "seen_probe.jsonl")
    assert report["documents_dropped"]["grounded_too_long"] >= 1
    assert probe and all(r["taught"] == ["grounded"] for r in probe)
    assert "B0GIANT2" not in {r["uid"] for r in probe}
    train = [r for r in _jsonl(tmp_path / "out" / "catalogue.jsonl") if r["split"] == "train"]
    assert len(probe) < len(train) - 1  # abstention-only products are out too (absent 0.3)


def test_an_empty_input_and_a_strict_stop_name_the_file(tmp_path):
    """An outside review: a 0-byte file said "all 0 lines ... were filtered out (skipped: {});
    relax data.clean", and --strict stopped at "line 51: title_not_string" without the file."""
    from amazon_sft.config import load_run_config
    from amazon_sft.prepare import prepare

    cfg = load_run_config("tiny", [])
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match=r"empty\.json is empty"):
        prepare(empty, tmp_path / "o1", cfg, progress=False)
    empty.write_bytes(b"\n\n")  # blank lines only (a review of the change)
    with pytest.raises(UserError, match=r"empty\.json is empty"):
        prepare(empty, tmp_path / "o1", cfg, progress=False)
    bad = tmp_path / "bad.json"
    bad.write_text('{"title": ["x"], "content": "A long enough description here."}\n')
    with pytest.raises(UserError, match=r"bad\.json line 1: title_not_string"):
        prepare(bad, tmp_path / "o2", cfg, strict=True, progress=False)


def test_an_error_during_reading_starts_its_own_line_after_the_progress_bar(catalogue, tmp_path):
    """The progress bar was left open when reading stopped, so the one-line error was printed
    on the bar's line ("prepare:  40%|####  | 12.0k/30.0k [00:00<...]amazon-sft prepare: error")."""
    bad = tmp_path / "bad.json"
    good = gzip.decompress(catalogue.read_bytes())
    bad.write_bytes(good + b'{"title": ["x"], "content": "A long enough description."}\n')
    proc = _cli("prepare", str(bad), "--out", str(tmp_path / "o"), "--config", "tiny", "--strict")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.replace("\r", "\n").splitlines()
    assert any(line.startswith("amazon-sft prepare: error: ") for line in lines), proc.stderr


def test_an_abstention_and_its_twin_are_dropped_together_and_the_counts_are_as_written(tmp_path):
    """An outside audit: at rows too short for some grounded examples, each was dropped alone,
    always the cited twin (it carries the record and the answer), so abstentions were taught
    without their twin (``data.paired_absent``: only the record's presence may predict one),
    and report.json still gave the counts as built (889 docs, 308 pairs; 501 written)."""
    import json

    from amazon_sft.config import load_run_config
    from amazon_sft.data.synthetic import write_catalogue
    from amazon_sft.prepare import prepare
    from tests.conftest import GROUNDED

    catalogue = tmp_path / "trn.json.gz"
    write_catalogue(catalogue, 400, seed=3)
    overrides = [
        *GROUNDED,
        "data.max_seq_len=350",  # most fit; the longest cited answers do not
        "data.grounded_fraction=1.0",
        "data.closed_book_fraction=0",
        "data.paired_absent=true",
        "data.absent_fraction=0.5",
        "data.max_answer_tokens=64",
    ]
    prepare(catalogue, tmp_path / "out", load_run_config("tiny", overrides), progress=False)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    dropped = report["documents_dropped"]
    assert dropped["grounded_too_long"] > 0 and dropped["grounded_twin_dropped"] > 0, dropped
    assert report["grounded_docs"] == report["train_docs"]  # as written (no closed-book docs)
    assert sum(report["grounded_kinds"].values()) == report["grounded_docs"]
    # every abstention written is paired, and every pair written has its cited twin
    assert report["grounded_absent_docs"] == report["grounded_paired"] > 0
    assert report["grounded_docs"] - report["grounded_absent_docs"] >= report["grounded_paired"]
    said = (tmp_path / "out" / "report.md").read_text()
    assert "grounded examples did not fit a row" in said


def test_quiet_prepare_says_the_training_documents_it_dropped(catalogue, tmp_path):
    """A hostile-input review: ``prepare --quiet`` said "kept 66 of 66 lines" of a run whose
    every prompt of two products was too long for the rows: they were taught nothing, and
    only report.md said so."""
    src = tmp_path / "trn.json"
    giant = {"uid": "B0GIANT2", "title": GIANT_TITLE, "content": "A very long titled thing."}
    raw = gzip.decompress(catalogue.read_bytes()).splitlines()
    src.write_bytes(b"\n".join([*raw, orjson.dumps(giant)]) + b"\n")
    args = ["prepare", str(src), "--out", str(tmp_path / "out"), "--config", "tiny", "--quiet"]
    ok = _cli(*args, "data.closed_book_fraction=1", "data.heldout_fraction=0.01")
    assert ok.returncode == 0, ok.stderr
    assert re.search(r"; \d+ training documents dropped \(prompt_too_long \d+", ok.stdout), (
        ok.stdout
    )
