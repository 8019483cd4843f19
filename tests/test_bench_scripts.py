"""The benchmark scripts run (tiny sizes, CPU): the GPU one is ready before a GPU is."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .processes import running

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.e2e, pytest.mark.bench]


def _run(*args, env=None):
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_gpu_train_benchmark_survives_a_failed_variant_at_tiny_size_on_cpu():
    """Each variant in its own process: one that crashes is recorded with its reason and the
    next still runs; the model keeps the size's vocabulary (not the tokenizer's 2,048 ids)."""
    out = _run(
        "bench/gpu_train.py",
        *("--size", "tiny", "--steps", "1", "--warmup", "1", "--seq-len", "256"),
        *("--rows", "600", "--micro", "2", "--variants", "varlen,docsdpa,sdpa-mask"),
        env={"GPU_TRAIN_BENCH_CRASH": "docsdpa"},
    )
    rows = {r["variant"]: r for r in map(json.loads, (x for x in out.splitlines() if x[:1] == "{"))}
    assert rows["docsdpa"]["status"] == "failed"
    assert "crash injected" in rows["docsdpa"]["reason"]
    ok = rows["sdpa-mask"]
    assert ok["status"] == "ok" and ok["vocab"] == 4096 and ok["tokens_per_sec"] > 0, ok
    assert ok["logits_max_diff"] < 1e-4
    assert "| variant | status |" in out and "| sdpa-mask | ok |" in out
    assert "not measured: varlen, docsdpa" in out or torch.cuda.is_available()
    if not torch.cuda.is_available():  # what could not run is said, not silently dropped
        assert rows["varlen"]["status"] == "skipped" and "needs CUDA" in rows["varlen"]["reason"]


def test_gpu_train_knobs_change_one_thing_and_profile(tmp_path):
    """The knobs that found what holds MFU back (docs/benchmarks.md): fused AdamW, rows per
    step, loss chunk and a profile; a misspelt knob is refused before anything runs."""
    out = _run(
        "bench/gpu_train.py",
        *("--size", "tiny", "--steps", "1", "--warmup", "1", "--seq-len", "256"),
        *("--rows", "600", "--micro", "2", "--variants", "sdpa-mask+fused+m3+chunk128+prof"),
        env={"GPU_TRAIN_PROFILE_DIR": str(tmp_path)},
    )
    row = next(json.loads(x) for x in out.splitlines() if x[:1] == "{")
    assert row["status"] == "ok" and row["tokens_per_sec"] > 0 and row["rows_per_step"] == 3, row
    assert row["profiled_wall_s"] > 0 and "logits_max_diff" not in row  # checked on the plain one
    table = (tmp_path / "sdpa-mask_fused_m3_chunk128_prof.txt").read_text()
    assert "aten::" in table and "2 steps" in table
    proc = subprocess.run(
        [sys.executable, "bench/gpu_train.py", "--variants", "varlen+fussed"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "unknown knob(s) ['fussed']" in proc.stderr
    proc = subprocess.run(  # a misspelt variant too (it ran the others, then failed: KeyError)
        [sys.executable, "bench/gpu_train.py", "--variants", "sdpamask,sdpa-mask+m8"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,  # without the refusal it prepares 20,000 lines and trains a 1B model
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "unknown variant 'sdpamask'" in proc.stderr and "sdpa-mask" in proc.stderr


def test_gpu_train_runs_more_steps_than_the_prepared_rows_hold():
    """The H200 run of ``varlen-nockpt+compile+fused+m16`` failed with a bare StopIteration:
    16 rows a step for 7 steps is more than --quick's 3,000 lines pack into. A benchmark
    times steps, not epochs: it goes round the rows again."""
    out = _run(
        "bench/gpu_train.py",
        *("--size", "tiny", "--steps", "5", "--warmup", "1", "--seq-len", "256"),
        *("--rows", "40", "--micro", "2", "--variants", "sdpa-mask+m6,sdpa-mask+m8+lora"),
    )
    rows = [json.loads(x) for x in out.splitlines() if x[:1] == "{"]
    row, lora = rows
    assert row["status"] == "ok" and row["rows_per_step"] == 6, row
    assert row["packed_rows"] < 6 * 6 and row["epochs"] > 1, row  # it did go round
    # an epoch's last step is filled with empty rows (32 rows, 6 a step): timed, it counted
    # their time and not their tokens (a review: 9 of the H200 m16 run's 80 rows)
    assert row["packed_rows"] % 6 and row["padding_rows_timed"] == 0, row
    # the lora knob (what the demo trains): the adapters alone are trained
    assert lora["status"] == "ok" and 0 < lora["trained_params"] < row["trained_params"] / 4, lora


def test_gpu_train_compares_with_trl_like_for_like():
    """TRL runs with gradient checkpointing: the first H200 run (docs/benchmarks.md) set our
    variant without it (45,832 tok/s) against TRL with it and printed 4.91x; the fair figure
    was our checkpointed varlen's 37,350 / 9,343 = 4.00x, TRL's attention path named."""
    sys.path.insert(0, str(REPO / "bench"))
    from gpu_train import ratios

    rows = [
        {"variant": "varlen", "status": "ok", "tokens_per_sec": 37350, "peak_mem_gib": 20.63},
        {
            "variant": "varlen-nockpt",
            "status": "ok",
            "tokens_per_sec": 45832,
            "peak_mem_gib": 31.43,
        },
        {"variant": "trl", "status": "ok", "tokens_per_sec": 9343, "attention": "sdpa"},
    ]
    lines = ratios(rows, "cuda")
    trl = [line for line in lines if "TRL" in line]
    assert trl == [
        "ours (varlen) / TRL SFTTrainer (sdpa) tokens/s, both with gradient checkpointing: 4.00x"
    ], lines


def test_loss_memory_benchmark_prints_its_ratio():
    out = _run(
        "bench/loss_memory.py",
        "--tokens",
        "1024",
        "--hidden",
        "64",
        "--vocab",
        "32000",
        "--chunk",
        "256",
    )
    assert "chunked/full peak memory" in out


def test_retrieval_quality_benchmark_prints_recall_per_kind():
    out = _run("bench/retrieval_quality.py", "--rows", "600", "--per-kind", "4")
    for kind in ("title", "typo", "portuguese", "descriptive", "all"):
        assert f"| {kind} |" in out


def test_grounded_kinds_benchmark_prints_a_miss_rate_per_kind():
    out = _run("bench/grounded_kinds.py", "--generated", "--rows", "400", "--config", "tiny")
    assert "miss rate (not in top 3)" in out
    for kind in ("fragment", "reorder", "typo", "portuguese", "descriptive", "attribute"):
        assert f"| {kind} |" in out


@pytest.mark.parametrize(
    "script, args",
    [
        ("bench/full_catalogue.py", ["--lines", "50", "--stages", "generate", "--work"]),
        ("bench/prepare_stages.py", ["--lines", "50", "--work"]),
        ("bench/retrieval_full.py", ["--lines", "50", "--only-catalogue", "--work"]),
        ("bench/verifier_gate.py", ["--data", "x", "--questions", "q", "--base", "b", "--out"]),
    ],
)
def test_benchmarks_never_write_into_a_users_folder(script, args, tmp_path):
    """An outside review: ``full_catalogue.py --work DIR`` replaced the user's trn.json.gz and
    results.json there with generated ones, and ``verifier_gate.py --out DIR`` saved a model over
    the one in DIR. A folder no benchmark made, holding anything, is refused in one line."""
    mine = {"trn.json.gz": b"my real rows", "results.json": b"{}", "model.safetensors": b"w"}
    for name, data in mine.items():
        (tmp_path / name).write_bytes(data)
    proc = subprocess.run(
        [sys.executable, script, *args, str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert str(tmp_path) in proc.stderr, proc.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == mine


def test_grounded_intervals_script_reads_an_eval_folder(tmp_path):
    """It takes each answer's outcomes as eval scored them (a row's ``scores``), never by a rule
    of its own: it once counted an answer that quotes another record, cited as the asked one,
    a right citation, which eval scores wrong (a readability review)."""
    import json

    def row(uid: str, answer: str, right: float) -> dict:
        scores = {"rougeL": right, "citation_accuracy": right, "wrong_record_cited": 1 - right}
        return {"split": "heldout grounded", "uid": uid, "reference": "a bear",
                "answers": {"model": answer}, "scores": {"model": scores}}  # fmt: skip

    # the second quotes another shown record under the asked uid: eval scored it wrong
    rows = [row("A", "a bear\n[source: A]", 1.0), row("C", "a fox\n[source: C]", 0.0)]
    (tmp_path / "answers.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = _run("bench/grounded_intervals.py", str(tmp_path))
    assert "'citation_accuracy': '0.500 [" in out
    base = tmp_path / "base"
    base.mkdir()
    for r in rows:
        r["answers"] = {"base": "a fox"}
        r["scores"] = {"base": {"rougeL": 0.0, "citation_accuracy": 0.0, "wrong_record_cited": 0.0}}
    (base / "answers.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = _run("bench/grounded_intervals.py", str(tmp_path), "--base", str(base))
    assert "tuned - base (paired) {'rougeL'" in out and "'citation_accuracy': '0.500 [" in out
    # a base eval from before rows carried the EOS and cites-nothing outcomes (a review: a
    # KeyError): the deltas of the outcomes both hold, the others named
    tuned = [row("A", "a bear\n[source: A]", 1.0), row("C", "a fox\n[source: C]", 0.0)]
    for r in tuned:
        r["scores"]["model"]["cites_nothing"] = 0.0
    (tmp_path / "answers.jsonl").write_text("\n".join(json.dumps(r) for r in tuned) + "\n")
    out = _run("bench/grounded_intervals.py", str(tmp_path), "--base", str(base))
    assert "no paired delta for cites_nothing" in out, out
    for r in rows:  # an eval from before rows carried their scores: said, not scored again
        del r["scores"]
    (tmp_path / "answers.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    proc = subprocess.run(
        [sys.executable, "bench/grounded_intervals.py", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode != 0 and "run amazon-sft eval again" in proc.stderr, proc.stderr


def test_grounded_prepare_benchmark_compares_worker_counts():
    out = _run(
        "bench/grounded_prepare.py",
        *("--products", "3000", "--grounded-fraction", "0.3", "--workers", "2"),
    )
    assert "one query at a time" in out and "speed-up" in out
    assert "shards identical in all three runs: True" in out


def test_full_catalogue_benchmark_runs_every_stage_at_small_size(tmp_path):
    """bench/full_catalogue.py at ~2,000 lines: every stage runs and reports time and memory."""
    out = _run(
        "bench/full_catalogue.py",
        *("--lines", "2000", "--queries", "20", "--eval-questions", "2"),
        *("--work", str(tmp_path)),
    )
    for stage in ("generate", "prepare", "index", "query", "eval"):
        assert f"| {stage} | " in out
    results = {r["stage"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    assert results["generate"]["lines"] == 2000 and 0.3 < results["generate"]["empty"] / 2000 < 0.5
    assert results["prepare"]["grounded_docs"] > 0 and results["query"]["queries"] == 20
    # the grounded examples are in the shards, not built and dropped as too long
    assert results["prepare"]["grounded_too_long"] < results["prepare"]["grounded_docs"] / 10
    assert all(r["peak_rss_mb"] > 0 for r in results.values())
    out = _run(
        "bench/grounded_shortlist.py",
        *("--prepared", str(tmp_path / "prepared"), "--questions", "20"),
    )
    assert "| 10000 | " in out and "| 2000 | " in out


def test_retrieval_full_benchmark_measures_and_compares_two_checkouts(tmp_path):
    """bench/retrieval_full.py at ~3,000 shaped lines, this checkout against itself as
    ``--before``: every measure is taken twice and the ratio table printed."""
    out = _run(
        "bench/retrieval_full.py",
        *("--work", str(tmp_path), "--lines", "3000", "--queries", "12", "--agree", "4"),
        *("--before", str(REPO)),
    )
    for key in ("build_s", "p50_ms", "p99_ms", "top_many_per_s", "agree_top1", "load_avg_1m"):
        assert f"| {key} | " in out
    assert "| agree_top1 | 4/4 | 4/4 | |" in out  # no common word at this size: exact
    assert (tmp_path / "after" / "index" / "title" / "common_rows.npy").is_file()
    again = _run(
        "bench/retrieval_full.py", "--work", str(tmp_path), "--queries", "12", "--no-build"
    )
    assert " queries: {" in again and " build: {" not in again


def test_near_duplicates_benchmark_counts_the_groups_it_merges(tmp_path):
    import json
    import random

    from .test_split import TWIN_A, TWIN_B

    rng = random.Random(0)
    words = [f"w{i}" for i in range(500)]
    rows = [
        {"title": f"Product {i}", "content": " ".join(rng.choice(words) for _ in range(40))}
        for i in range(60)
    ]
    rows += [{"title": "The Iron Lantern", "content": TWIN_A}]
    rows += [{"title": "The Silver Lantern", "content": TWIN_B}]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = _run("bench/near_duplicates.py", "--rows", str(path), "--heldout-fraction", "0.5")
    assert "groups merged by split version 2: 1 (62 -> 61)" in out, out


def test_near_duplicates_scale_benchmark_prints_its_cost(tmp_path):
    """The split's near-duplicate keys at a given size (1.3M in docs/benchmarks.md): here 2,000
    descriptions made from a small file of rows, each printed figure present."""
    rows = [
        {"title": f"Product {i}", "content": " ".join(f"w{(i * 7 + j) % 300}" for j in range(40))}
        for i in range(30)
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = _run("bench/near_duplicates_scale.py", "--rows", "2000", "--real", str(path))
    assert "2,000 descriptions made from 30 real ones" in out, out
    assert "us a description" in out and "grouping (labels" in out


def test_question_recall_benchmark_prints_recall_per_kind_against_a_base():
    """On the demo catalogue's dev questions, this checkout as its own base: a zero difference."""
    out = _run(
        "bench/question_recall.py", "eval/questions/generated_dev.jsonl", "--base", str(REPO)
    )
    for kind in ("all", "typo", "portuguese", "descriptive"):
        assert f"| {kind} | " in out
    # the "all" row: no change, and Newcombe's interval around it, not the point [0, 0]
    assert re.search(r"\| \+0\.000 \[-0\.\d{3}, \+0\.\d{3}\] \|$", out.splitlines()[3]), out


def test_question_recall_skips_questions_about_a_product_the_catalogue_lacks(tmp_path):
    """An outside review: such a question was scored a miss (0.750 of 4 where eval reports
    1.000 of 3), and the ranking was words only where ask's default reads meaning too."""
    lines = (REPO / "eval/questions/generated_dev.jsonl").read_text().splitlines()
    lines = [x for x in lines if json.loads(x).get("uid", "absent") != "absent"][:3]
    other = {**json.loads(lines[0]), "uid": "B0NOTHERE0"}
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join([*lines, json.dumps(other)]) + "\n")
    out = _run("bench/question_recall.py", str(path))
    assert "3 questions with a product, k=3, meaning weight 4; 1 skipped" in out, out


@pytest.mark.skipif(
    not (REPO.parent / "shared" / "data" / "amazontitles_real_head_sample.jsonl").is_file(),
    reason="reads the real rows of ../shared/data",
)
def test_short_title_typos_benchmark_runs_on_a_few_titles():
    out = _run("bench/short_title_typos.py", "--limit", "5")
    assert "5 short titles, 20 typo questions" in out
    for kind in ("drop", "swap", "double", "neighbour"):
        assert f"| {kind} | 5 |" in out


def test_query_cost_benchmark_prints_the_ratio_to_a_base():
    """Each checkout builds its own index (the base's format may differ) and its build time is
    printed beside this one's, with the ratio (an issue audit: build cost had no ratio)."""
    out = _run("bench/query_cost.py", "--products", "2000", "--queries", "3", "--base", str(REPO))
    for kind in ("exact", "typo", "portuguese", "long"):
        assert f"| {kind} | " in out
    assert out.count("x |") == 8
    assert re.search(r"index built in [\d.]+ s \(the base's: [\d.]+ s, ratio [\d.]+x\)", out), out


def test_query_cost_benchmark_compares_meaning_with_words_only():
    """``--meaning-weight``: the same checkout with the flag against words only, per kind."""
    out = _run(
        "bench/query_cost.py", "--products", "2000", "--queries", "3", "--meaning-weight", "4"
    )
    assert "| kind | --meaning-weight 4 | words only | ratio to words only |" in out
    for kind in ("exact", "typo", "portuguese", "long"):
        assert f"| {kind} | " in out
    assert out.count("x |") == 8


def test_prepare_stages_benchmark_compares_two_checkouts(tmp_path):
    """Both checkouts (here the same one) prepare the same generated file; the table has each
    stage's wall and CPU seconds and ratios, and the outputs are checked byte for byte."""
    out = _run(
        "bench/prepare_stages.py",
        *(
            "--lines",
            "1500",
            "--base",
            str(REPO),
            "--work",
            str(tmp_path),
            "--set",
            "data.shard_rows=32",
        ),
    )
    assert "| read_clean |" in out and "| split_tokenize |" in out and "CPU ratio" in out
    assert "prepared folders byte-identical (report excepted): yes" in out
    runs = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert [r["checkout"] for r in runs] == ["current", "base"]
    assert all(r["cpu_s"]["split_tokenize"] > 0 for r in runs)


def test_prepare_stages_benchmark_names_differing_files(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    from prepare_stages import differing_files

    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "report.json").write_text(str(d))  # timings: ignored
        (d / "manifest.json").write_text(json.dumps({"rows": 1, "integrity": str(d)}))
    (a / "catalogue.jsonl").write_text("x")
    assert differing_files(a, b) == ["catalogue.jsonl (only in one)"]
    (b / "catalogue.jsonl").write_text("y")
    assert differing_files(a, b) == ["catalogue.jsonl"]
    (b / "catalogue.jsonl").write_text("x")
    assert differing_files(a, b) == []


def test_answer_choice_never_writes_its_scores_over_a_file(prepared, tmp_path):
    """A hostile review: ``--scores`` replaced any file without a word, the question file given
    as ``--questions`` too (and ``--greedy``'s before it was read). An existing file is refused
    before anything is scored."""
    qfile = tmp_path / "q.jsonl"
    qfile.write_text('{"question": "q", "uid": "absent", "kind": "absent"}\n')
    for target in (qfile, tmp_path / "earlier_scores.jsonl"):
        if target != qfile:
            target.write_text("mine\n")
        before = target.read_bytes()
        proc = subprocess.run(
            [sys.executable, "bench/answer_choice.py", "--data", str(prepared), "--model",
             str(tmp_path / "no-model"), "--questions", str(qfile), "--scores", str(target)],
            capture_output=True, text=True, cwd=REPO, timeout=300,
        )  # fmt: skip
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert f"--scores {target}" in proc.stderr and "exists" in proc.stderr, proc.stderr
        assert target.read_bytes() == before


@pytest.mark.probe
def test_answer_choice_benchmark_scores_every_candidate(prepared, tuned_run, tmp_path):
    """Each question's records and both abstentions are scored on the real path; the table,
    the AUC line and the scores file come out, for present and absent products."""
    rows = [json.loads(x) for x in (prepared / "catalogue.jsonl").read_text().splitlines()[:3]]
    first = rows[0]
    questions = [{"question": f"tell me about {first['title']}", "uid": first["uid"], "kind": "t"}]
    questions += [{"question": rows[1]["title"], "absent": rows[1]["uid"], "kind": "absent"}]
    questions += [{"question": "a red kayak paddle", "uid": "absent", "kind": "absent"}]
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps(q) + "\n" for q in questions))
    scores = tmp_path / "scores.jsonl"
    out = _run(
        "bench/answer_choice.py",
        *("--data", str(prepared), "--model", str(tuned_run), "--questions", str(qfile)),
        *("--scores", str(scores)),
    )
    assert "questions: 1 about a product in the catalogue, 2 absent" in out
    assert "| choice, margin +0 |" in out and "ROC AUC of the abstain log-odds" in out
    scored = [json.loads(x) for x in scores.read_text().splitlines()]
    assert [len(s["logp"]) for s in scored] == [len(s["shown"]) + 2 for s in scored]
    assert rows[1]["uid"] not in scored[1]["shown"]  # the absent product was taken out
    assert all(lp <= 0 for s in scored for cand in s["logp"] for lp in cand)
    again = _run("bench/answer_choice.py", "--from-scores", str(scores))
    assert again.splitlines()[-9:] == out.splitlines()[-9:]
    gated = _run("bench/answer_choice.py", "--from-scores", str(scores), "--data", str(prepared),
                 "--questions", str(qfile), "--sure-at", "1e-9")  # fmt: skip
    assert gated.splitlines()[:-1] == again.splitlines()  # one line more: behind the gate
    assert gated.splitlines()[-1].startswith("behind the gate at 1e-09: 1 present, ")


@pytest.mark.probe
def test_answer_choice_scores_equal_a_full_forward_of_each_candidate(tiny_model_dir):
    """Candidates of different lengths continue one cached prompt, right-padded: each one's
    log-probs must be those of its own full sequence (positions and padding right)."""
    import importlib.util

    from transformers import AutoModelForCausalLM

    spec = importlib.util.spec_from_file_location("answer_choice", REPO / "bench/answer_choice.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompt, candidates = [5, 17, 42, 9, 100, 7], [[3, 4, 5, 6, 8], [11], [12, 13]]
    got = bench.candidate_logprobs(model, prompt, candidates)
    for cand, lps in zip(candidates, got):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + cand])).logits[0]
        steps = torch.log_softmax(logits.float(), -1)[len(prompt) - 1 : -1]
        want = steps[torch.arange(len(cand)), torch.tensor(cand)]
        assert torch.allclose(torch.tensor(lps), want, atol=1e-4), (cand, lps, want.tolist())


def test_abstain_gate_benchmark_tables_the_gate_alone_and_with_answers(prepared, tmp_path):
    """bench/abstain_gate.py: at ratio 1.0 no question with records is gated (scores come best
    first), so the gate-and-model column is the answers file's own shares (the absent question
    abstained); a higher ratio only abstains more."""
    import orjson

    rows = [orjson.loads(x) for x in (prepared / "catalogue.jsonl").read_bytes().splitlines()]
    lines = [{"question": r["title"], "uid": r["uid"], "kind": "partial"} for r in rows[:6]]
    lines.append({"question": "a carbon bicycle frame", "uid": "absent", "kind": "absent"})
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps(x) + "\n" for x in lines))
    outcome = lambda right, absent: {"right": right, "wrong": False, "abstained": not right,  # noqa: E731
                                     "absent": absent}  # fmt: skip
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        "".join(
            json.dumps(
                {"line": n + 1, "outcomes": {"model": outcome(n % 2 == 0 and n < 6, n == 6)}}
            )
            + "\n"
            for n in range(7)
        )
    )
    out = _run("bench/abstain_gate.py", "--data", str(prepared), "--questions", str(questions),
               "--answers", str(answers))  # fmt: skip
    assert "6 questions about a product, 1 absent" in out and "ROC AUC" in out
    assert "word share in the first record" in out and "best ratio + word-share rule" in out
    table = [x for x in out.splitlines() if x.startswith("| ") and x[2].isdigit()]
    assert len(table) == 9
    first = [c.strip() for c in table[0].split("|")[1:-1]]
    assert first[1] == "0.000" and first[4] == "0.500 / 0.000 / 0.500 / 1.000"
    absent = [float(x.split("|")[3]) for x in table]
    assert absent == sorted(absent)
    assert "largest ratio whose gate alone abstains on <= 0.05 of present:" in out
    from amazon_sft.answering.doubt import RULES

    block = out.split("which rule abstains at", 1)[1].splitlines()[3:]
    rules = {
        x.split("|")[1].strip(): [int(c) for c in x.split("|")[2:5]]
        for x in block
        if x.startswith("| ")
    }
    assert list(rules) == [*RULES, "sure"]
    assert sum(map(sum, rules.values())) == 7  # every question credited once
    assert sum(counts[0] for counts in rules.values()) == 1  # the one absent product
    assert re.search(r"gate \d+\.\d+ ms per question, search \d+\.\d+ ms", out)


def _titles_and_an_absent_product(prepared: Path, tmp_path: Path, first: int = 0) -> Path:
    """A question file: five products asked by their exact titles (from catalogue row
    ``first`` on), and one absent product."""
    import orjson

    rows = [orjson.loads(x) for x in (prepared / "catalogue.jsonl").read_bytes().splitlines()]
    lines = [{"question": r["title"], "uid": r["uid"], "kind": "partial"} for r in rows[first : first + 5]]  # fmt: skip
    absent = "a carbon bicycle frame" if first == 0 else f"a carbon bicycle frame, size {first}"
    lines.append({"question": absent, "uid": "absent", "kind": "absent"})
    questions = tmp_path / f"q{first}.jsonl"
    questions.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return questions


@pytest.mark.probe
def test_static_embedding_fusion_takes_a_transformers_encoder_in_wordllamas_place(
    prepared, tuned_run, tmp_path
):
    """``--encoder DIR``: the cosines come from a mean-pooled transformers model (here the tiny
    tuned one, as a folder users have), named in the output; gamma 0 is still word retrieval."""
    questions = _titles_and_an_absent_product(prepared, tmp_path)
    final = tuned_run / "final"
    out = _run("bench/static_embedding_fusion.py", "--data", str(prepared), "--questions",
               str(questions), "--gammas", "0", "4", "--ratios", "2", "--encoder", str(final),
               "--encoder-tokens", "32")  # fmt: skip
    assert f"records embedded by {final} in" in out
    recall = {
        c[0]: c[1]
        for c in ([x.strip() for x in line.split("|")[1:-1]] for line in out.splitlines())
        if len(c) == 3 and c[0] != "ranking"
    }
    assert recall["word retrieval (ask)"] == recall["fused, gamma=0, N=50, floor=0.2"] == "1.000"


def _gate_rows(out: str, starts: tuple[str, ...]) -> list[list[str]]:
    """The gate-table rows of a probe's output that start so; each row's first three outcomes
    (right, wrong, false abstention: shares of the questions about a product) sum to 1."""
    rows = [
        [c.strip() for c in line.split("|")[1:-1]]
        for line in out.splitlines()
        if line.startswith(starts)
    ]
    for row in rows:
        assert sum(float(c.split()[0]) for c in row[1:4]) == pytest.approx(1.0, abs=0.002)
    return rows


@pytest.mark.probe
def test_learned_gate_probe_fits_on_dev_and_tables_both_gates(prepared, tmp_path):
    """bench/learned_gate.py: a weight per feature and the bias, then per collection (dev and
    each test) the ratio gate's and the learned gate's outcomes and their paired change; the
    first three outcomes of the questions about a product sum to 1."""
    questions = _titles_and_an_absent_product(prepared, tmp_path)
    dev = _titles_and_an_absent_product(prepared, tmp_path, first=5)
    dev.write_text(dev.read_text() + questions.read_text().splitlines()[0] + "\n" * 2)
    out = _run("bench/learned_gate.py", "--data", str(prepared), "--dev", str(dev),
               "--test", str(questions))  # fmt: skip
    assert "fitted on 7 dev questions" in out
    # the test files' questions the dev files hold are left out, and counted (an outside
    # review: 12 of a "never fitted on" set of 120 were in the dev files)
    assert "6 lines: 0 repeats another, 1 is in the --read files; 5 asked" in out
    weights = [line for line in out.splitlines() if line.startswith("  ")]
    assert len(weights) == 9 and weights[-1].startswith("  bias:")  # eight features, the bias
    assert "a rule of doubt.py fires:" in out
    assert "(dev: fitted on)" in out and "(test)" in out
    assert len(_gate_rows(out, ("| ratio", "| learned"))) == 4


@pytest.mark.probe
def test_verifier_gate_probe_trains_on_generated_pairs_and_tables_the_gates(
    prepared, tuned_run, tmp_path
):
    """bench/verifier_gate.py: training pairs from the catalogue's own generated questions (some
    right, some not), a saved verifier, both AUCs, and one row for the shipped gate and one per
    ``--rule``, whose first three outcomes of questions about a product sum to 1."""
    questions = _titles_and_an_absent_product(prepared, tmp_path)
    # shoppers' questions may be added to training (never those it is scored on)
    dev = _titles_and_an_absent_product(prepared, tmp_path, first=5)
    both = ("bench/verifier_gate.py", "--data", str(prepared), "--base", str(tuned_run / "final"),
            "--rows", "4", "--batch", "4", "--tokens", "48", "--meaning-weight", "0")  # fmt: skip
    out = _run(*both, "--out", str(tmp_path / "verifier"), "--questions", str(questions),
               "--dev", str(dev), "--rule", "1.4", "0.5", "0.9")  # fmt: skip
    made = int(out.split(" training pairs (")[0].split()[-1])
    right = int(out.split(" training pairs (")[1].split()[0])
    assert 0 < right < made and "6 --dev questions" in out
    assert (tmp_path / "verifier" / "config.json").is_file()
    assert "ROC AUC, first record right vs absent: verifier" in out
    # ... never those it is scored on
    same = subprocess.run([sys.executable, *both, "--dev", str(questions), "--questions",
                           str(questions)], capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert same.returncode == 2 and "share a file" in same.stderr
    # a saved verifier scores without training; neither --base nor --verifier is refused
    scored = _run("bench/verifier_gate.py", "--data", str(prepared), "--verifier",
                  str(tmp_path / "verifier"), "--questions", str(questions), "--tokens", "48",
                  "--meaning-weight", "0")  # fmt: skip
    assert "training pairs" not in scored and "ROC AUC" in scored
    neither = subprocess.run([sys.executable, "bench/verifier_gate.py", "--data", str(prepared),
                              "--questions", str(questions)], capture_output=True, text=True,
                             cwd=REPO)  # fmt: skip
    assert neither.returncode == 2 and "--verifier DIR" in neither.stderr
    assert len(_gate_rows(out, ("| shipped", "| p <"))) == 2


@pytest.mark.probe
def test_embedding_rerank_probe_tables_word_retrieval_embeddings_and_reranks(
    prepared, tuned_run, tmp_path
):
    """bench/embedding_rerank.py on the tiny tuned model (a folder with its tokenizer, as users
    have): word retrieval finds every title asked, and
    one row per pooling alone and per (candidates, weight) rerank; a rerank with weight 0 keeps
    word retrieval's order, so its recall is word retrieval's."""
    questions = _titles_and_an_absent_product(prepared, tmp_path)
    out = _run("bench/embedding_rerank.py", "--data", str(prepared), "--questions",
               str(questions), "--model", str(tuned_run / "final"), "--candidates", "3",
               "--weights", "0", "0.5")  # fmt: skip
    assert "5 questions about a product" in out
    table = {c[0]: c[1] for c in (
        [x.strip() for x in line.split("|")[1:-1]] for line in out.splitlines()
        if line.startswith("| ") and not line.startswith("| ranking")
    )}  # fmt: skip
    assert table["word retrieval (ask)"] == "1.000"
    assert {"embeddings alone, eol", "embeddings alone, mean"} <= set(table)
    assert table["rerank eol, N=3, w=0.0"] == table["rerank mean, N=3, w=0.0"] == "1.000"
    assert "rerank mean, N=3, w=0.5" in table


def test_static_embedding_fusion_probe_keeps_ask_at_gamma_zero_and_tables_the_gate(
    prepared, tmp_path
):
    """bench/static_embedding_fusion.py with WordLlama's own weights (no hub): gamma 0 is
    ``ask``'s order, so its recall is word retrieval's; every (gamma, ratio) asked has its gate
    row (shares with intervals: the first three of the questions about a product sum to 1),
    and the paired change of a setting against itself is zero (``--before-chars`` embeds the
    first setting's records with another cut: these descriptions are shorter than both)."""
    questions = _titles_and_an_absent_product(prepared, tmp_path)
    out = _run("bench/static_embedding_fusion.py", "--data", str(prepared), "--questions",
               str(questions), "--gammas", "0", "4", "--ratios", "1.4", "2",
               "--compare", "4", "2", "0.2", "50", "--compare", "4", "2", "0.2", "50",
               "--question-as", "indexed", "--before-chars", "500")  # fmt: skip
    assert "5 questions about a product, 1 absent" in out
    assert re.search(r"search, CPU ms a question: words [\d.]+, with --meaning-weight [\d.]+", out)
    cells = [
        [c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines() if line[:2] == "| "
    ]
    recall = {c[0]: c[1] for c in cells if len(c) == 3 and c[0] != "ranking"}
    assert recall["word retrieval (ask)"] == recall["fused, gamma=0, N=50, floor=0.2"] == "1.000"
    assert "embeddings alone (whole catalogue)" in recall
    assert "fused, gamma=4, N=50, floor=0.2" in recall
    recall3 = {c[0]: c[1] for c in cells if len(c) == 2 and c[0] != "ranking"}
    assert recall3["gamma=0"] == "1.000" and "gamma=4" in recall3
    gate = {(c[0], c[1]): c[2:] for c in cells if len(c) == 6 and c[0] in ("0", "4")}
    assert set(gate) == {("0", "1.4"), ("0", "2"), ("4", "1.4"), ("4", "2")}
    for right, wrong, false, absent in gate.values():
        shares = [float(x.split()[0]) for x in (right, wrong, false)]
        assert sum(shares) == pytest.approx(1.0, abs=0.002)
        # one absent product: 0 or 1 of 1, Wilson's interval [0, 0.793] or [0.207, 1]
        assert absent in ("0.000 [0.000, 0.793]", "1.000 [0.207, 1.000]"), absent
    after, before = "(floor 0.2, N 50, 1000 chars)", "(floor 0.2, N 50, 500 chars)"
    change = next(c for c in cells if c[0] == f"gamma 4 at 2 {after} - gamma 4 at 2 {before}")
    assert len(change) == 6  # right, wrong, false abstention, absent abstention, recall@1
    assert all(x.startswith("+0.000") for x in change[1:])


def test_gate_change_benchmark_pairs_two_checkouts_question_by_question(prepared, tmp_path):
    """bench/gate_change.py: each checkout's gate outcomes come from its own code (the base in a
    subprocess); a checkout against itself changes nothing, and each measure is a share with
    its interval (the titles asked exactly are right first; the absent product is abstained
    on at 2.0 or not, the same in both)."""
    questions = _titles_and_an_absent_product(prepared, tmp_path)
    out = _run("bench/gate_change.py", "--data", str(prepared), "--questions", str(questions),
               "--base", str(REPO))  # fmt: skip
    assert "5 questions about a product, 1 absent" in out
    rows = {
        c[0]: c[1:]
        for c in ([x.strip() for x in line.split("|")[1:-1]] for line in out.splitlines())
        if len(c) == 4 and c[0] not in ("measure", "---")
    }
    assert list(rows) == ["right first", "wrong first", "false abstention", "absent abstention",
                          "recall@1", "recall@3"]  # fmt: skip
    for base, now, change in rows.values():  # no change, and an interval around it (Newcombe's
        low, high = (float(x) for x in change.split("[")[1].rstrip("]").split(","))  # even for
        assert base == now and change.startswith("+0.000 [") and low < 0 < high  # a handful)
    assert rows["recall@1"][0] == "1.000 [0.566, 1.000]"  # Wilson's: 5 of 5 is no proof of 1.0
    elsewhere = tmp_path / "elsewhere.jsonl"  # products of another catalogue: one line, not NaN
    elsewhere.write_text(json.dumps({"question": "q", "uid": "NOT-HERE", "kind": "typo"}) + "\n")
    proc = subprocess.run(
        [sys.executable, "bench/gate_change.py", "--data", str(prepared), "--questions",
         str(elsewhere), "--base", str(REPO)], capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 1 and "none of its products is in" in proc.stderr


def test_gguf_cache_benchmark_says_a_config_without_gguf_is_not_one_it_measures():
    """Its full run reads SmolLM2's GGUF three ways (~80 s: docs/benchmarks.md has the table);
    tests/test_pretrained.py checks the cache gives what the GGUF file gives."""
    proc = subprocess.run(
        [sys.executable, "bench/gguf_cache.py", "--config", "tiny"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 1 and "model.gguf_file is not set" in proc.stderr


def test_lora_merged_benchmark_refuses_a_run_without_adapters(tuned_run, prepared):
    """bench/lora_merged.py times a LoRA run's adapters merged against apart (docs/benchmarks.md,
    on the demo's run); a full fine-tune has nothing to merge and is told so."""
    proc = subprocess.run(
        [sys.executable, "bench/lora_merged.py", "--run", str(tuned_run), "--data", str(prepared)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 1 and "not a LoRA run" in proc.stderr


def test_end_to_end_batched_benchmark_prints_the_ratio_and_the_agreement(
    prepared, tuned_run, tmp_path
):
    """bench/end_to_end_batched.py: eval --questions in batches against one at a time."""
    rows = [json.loads(x) for x in (prepared / "catalogue.jsonl").read_text().splitlines()][:3]
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        "".join(
            json.dumps({"question": r["title"], "uid": r["uid"], "kind": "t"}) + "\n" for r in rows
        )
    )
    out = _run("bench/end_to_end_batched.py", "--model", str(tuned_run), "--data", str(prepared),
               "--questions", str(questions), "--max-new-tokens", "8", "--batch-size", "2")  # fmt: skip
    assert "3 questions (3 generated)" in out and "the same answer for 3 of 3" in out


def test_checkpoint_size_benchmark_prints_the_ratio_of_two_checkouts(prepared, tiny_model_dir):
    """bench/checkpoint_size.py at tiny size, this checkout against itself: one LoRA step's
    checkpoint measured per checkout, the ratio printed (1.0x: the same code)."""
    out = _run(
        "bench/checkpoint_size.py", "--data", str(prepared), "--config", "tiny", "--base",
        str(REPO), f"model.path={tiny_model_dir}", "model.tokenizer=builtin:tiny",
    )  # fmt: skip
    row = next(line for line in out.splitlines() if line.startswith("| single |"))
    assert re.search(r"\| single \| [\d.]+ MB \(\d+ s\) \| [\d.]+ MB \(\d+ s\) \| 1\.0x \|", row), (
        out
    )


@pytest.mark.skipif(
    not (REPO.parent / "shared" / "data" / "amazontitles_real_head_sample.jsonl").is_file(),
    reason="reads the real rows of ../shared/data",
)
def test_cleaning_cost_benchmark_measures_two_checkouts():
    out = _run("bench/cleaning_cost.py", "--repeat", "1", "--rows", "2000", "--base", str(REPO))
    assert "us a row" in out and re.search(
        r"ratio now / base: cleaning [\d.]+x, grouping [\d.]+x", out
    )


def _wait_for(needle: str, seconds: float) -> list[int]:
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pids = running(needle)
        if pids:
            return pids
        time.sleep(0.2)
    return []


def test_a_killed_benchmark_leaves_no_variant_running(tmp_path):
    """A test's timeout killed ``gpu_train.py`` and its variant's process trained on for an
    hour, orphaned (an outside review found two, slowing CI). A variant's process now dies
    with the benchmark, however the benchmark dies."""
    import signal
    import time

    tag = f"{time.time_ns() % 10**6 + 10**6}.5"  # this run's own --peak-tflops: the variant gets it
    cmd = [sys.executable, "bench/gpu_train.py", "--size", "tiny", "--steps", "100000"]
    cmd += ["--warmup", "1", "--seq-len", "256", "--rows", "100", "--micro", "2"]
    cmd += ["--variants", "sdpa-mask", "--peak-tflops", tag]
    parent = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        workers = _wait_for(f"{tag} --worker", 120)
        assert workers, "the variant's process never started"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        time.sleep(2)
        assert running(f"{tag} --worker") == []
    finally:
        for pid in running(tag):
            os.kill(pid, signal.SIGKILL)


def test_phrasing_gate_benchmark_counts_each_phrasing(grounded_prepared):
    out = _run(
        "bench/phrasing_gate.py",
        "--data",
        str(grounded_prepared),
        "--products",
        "20",
        "Quero comprar {t}",
        "Tell me about {t}",
    )
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| ") and "{t}" in line]
    assert [r[1].strip() for r in rows] == ["Quero comprar {t}", "Tell me about {t}"]
    assert all(0 < int(r[2]) <= 20 and int(r[3]) <= int(r[2]) for r in rows), out


def test_gate_change_asks_each_question_once_and_none_of_the_read_ones(prepared, tmp_path):
    """Pooled question files held the same question up to 7 times ("times killer su doku book
    6", absent: outside writers reach for the same famous books), and questions word for word
    from the read files the gate was set on; both were counted, and a question naming its
    product by title was skipped without a word (eval asks it). An outside audit: the 737's
    absent abstention was 0.913 with them, 0.885 without."""
    import orjson

    questions = _titles_and_an_absent_product(prepared, tmp_path)
    rows = [orjson.loads(x) for x in (prepared / "catalogue.jsonl").read_bytes().splitlines()]
    again = tmp_path / "again.jsonl"  # another writer's file: one repeat, one new, one by title
    again.write_text(
        json.dumps({"question": "A carbon  bicycle frame", "uid": "absent", "kind": "absent"})
        + "\n" + json.dumps({"question": rows[6]["title"], "uid": rows[6]["uid"], "kind": "typo"})
        + "\n" + json.dumps({"question": rows[7]["title"], "title": rows[7]["title"], "kind": "partial"})
        + "\n"
    )  # fmt: skip
    read = tmp_path / "read.jsonl"  # read while the gate was set: left out of the blind figures
    read.write_text(
        json.dumps({"question": rows[0]["title"], "uid": rows[0]["uid"], "kind": "x"}) + "\n"
    )
    out = _run("bench/gate_change.py", "--data", str(prepared), "--questions", str(questions),
               str(again), "--read", str(read), "--base", str(REPO))  # fmt: skip
    assert "6 questions about a product, 1 absent" in out, out
    assert "9 lines: 1 repeats another, 1 is in the --read files; 7 asked" in out, out


def test_gate_change_writes_each_question_whole_and_by_its_resolved_uid(prepared, tmp_path):
    """A question holding U+2028 was cut in two (``splitlines``), and a question named by title
    reached a base checkout that resolves titles otherwise (a review of the dedupe)."""
    import orjson

    sys.path.insert(0, str(REPO / "bench"))
    from gate_change import distinct_questions

    rows = [orjson.loads(x) for x in (prepared / "catalogue.jsonl").read_bytes().splitlines()]
    lines = [
        {"question": "a fox\u2028and a bear", "uid": rows[0]["uid"], "kind": "typo"},
        {"question": "by its title", "title": rows[1]["title"], "uid": None, "kind": "partial"},
        {"question": "a carbon bicycle frame", "uid": "absent", "kind": "absent"},
    ]
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    into = tmp_path / "asked.jsonl"
    said = distinct_questions(prepared, [str(questions)], [], into)
    assert said == "3 lines: 0 repeats another, 0 is in the --read files; 3 asked"
    asked = [json.loads(x) for x in into.read_text(encoding="utf-8").split("\n") if x]
    assert asked[0]["question"] == "a fox\u2028and a bear"
    from amazon_sft.evaluation.question_file import derived_uid

    assert asked[1]["uid"] in (rows[1]["uid"], derived_uid(rows[1]["title"]))
    assert asked[2]["uid"] == "absent"


def test_the_headline_pool_names_every_real_question_file_once():
    """bench/never_tuned.py is the README's "never tuned on" table in one command: every real
    question file of eval/questions is read (rules were chosen on it) or pooled (never read),
    never both, never neither, so a new set cannot be left out or counted twice; a dev part
    read for a change (the eleventh's, the thirteenth's) is in READ."""
    sys.path.insert(0, str(REPO / "bench"))
    import never_tuned

    real = {f"eval/questions/{p.name}" for p in (REPO / "eval" / "questions").glob("real_*.jsonl")}
    read, pool = set(never_tuned.READ), set(never_tuned.POOL)
    assert not read & pool and read | pool == real, (read & pool, real ^ (read | pool))
    out = _run("bench/never_tuned.py", "--files")
    assert out.splitlines()[0] == "READ" and f"  {never_tuned.POOL[-1]}" in out


def test_paired_changes_of_yes_no_outcomes_are_not_anchored_at_zero():
    """An outside review: the bench scripts' percentile bootstrap gave 3 questions gained and
    none lost an interval from exactly +0.000, no change at all [+0.000, +0.000], and 1 title
    in 134 changed [0.000, 0.022]: one-sided certainty the data do not give. Newcombe's
    interval for paired yes/no outcomes straddles 0 in each."""
    import numpy as np

    from bench.grounded_intervals import paired
    from bench.static_embedding_fusion import change

    def low_high(text: str) -> tuple[float, float]:
        low, high = text.split("[")[1].rstrip("]").split(",")
        return float(low), float(high)

    before = np.zeros(438)
    after = before.copy()
    after[:3] = 1
    for shown in (change(before, after), change(before, before), paired([0.0] * 134, [0.0] * 133 + [1.0])):  # fmt: skip
        low, high = low_high(shown)
        assert low < 0 < high, shown


def test_the_gate_benchmarks_say_the_questions_they_skip(prepared, tmp_path, capsys):
    """An outside review: bench/abstain_gate.py's ``retrieve`` (every gate benchmark's, and
    bench/never_tuned.py's through gate_change) dropped a question whose product is not in the
    catalogue without a word, after gate_change had printed "N asked"."""
    import orjson

    from bench.abstain_gate import retrieve

    rows = [orjson.loads(x) for x in (prepared / "catalogue.jsonl").read_bytes().splitlines()]
    lines = [{"question": r["title"], "uid": r["uid"], "kind": "title"} for r in rows[:2]]
    lines.append({"question": "a carbon bicycle frame", "uid": "B0NOTHERE0", "kind": "title"})
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert len(retrieve(prepared, questions, 3)) == 2
    assert "1 questions skipped, their product not in" in capsys.readouterr().err


def test_question_recall_refuses_a_base_that_asked_other_questions(tmp_path):
    """An outside review: ``--base`` paired its rows with this checkout's by position, so a
    base that skipped or resolved a question otherwise compared different questions."""
    import shutil

    base = tmp_path / "base"
    shutil.copytree(REPO / "amazon_sft", base / "amazon_sft", ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    reader = base / "amazon_sft" / "evaluation" / "question_file.py"
    reader.write_text(
        reader.read_text() + "\n\n_all = read_questions\n\n\n"
        "def read_questions(*args, **kwargs):  # a base that skips a question with a product\n"
        "    asked = _all(*args, **kwargs)\n"
        "    first = next(i for i, q in enumerate(asked) if not q.absent)\n"
        "    return asked[:first] + asked[first + 1 :]\n"
    )
    proc = subprocess.run(
        [sys.executable, "bench/question_recall.py", "eval/questions/generated_dev.jsonl",
         "--base", str(base)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode != 0 and "asked other questions than this checkout" in proc.stderr
