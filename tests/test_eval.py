"""Evaluation: metrics on hand-computed cases, the bootstrap, the whole entrypoint, 2 processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amazon_sft.data.shards import seal
from amazon_sft.evaluation import metrics as M

from .conftest import free_port

REPO = Path(__file__).resolve().parents[1]


def test_rouge_and_chrf_match_hand_computed_values():
    r = M.rouge_scores(["the cat is on the mat"], ["the cat sat on the mat"])
    # unigrams: 5 of 6 match each way -> F1 5/6; bigrams: "the cat", "on the", "the mat" of 5 -> 3/5
    assert r["rouge1"] == [pytest.approx(5 / 6)] and r["rouge2"] == [pytest.approx(3 / 5)]
    assert r["rougeL"] == [pytest.approx(5 / 6)]
    assert M.rouge_scores(["running dogs"], ["the dog runs"])["rouge1"][0] == pytest.approx(
        0.8
    )  # stemmed
    assert M.chrf_scores(["same text"], ["same text"]) == [pytest.approx(100.0)]
    assert M.corpus_bleu(["a b c d e"], ["a b c d e"]) == pytest.approx(100.0)


def test_loops_lengths_and_empties():
    assert M.is_loop("buy it " * 6) and not M.is_loop("a fine book about the sea and its ships")
    # a new user's tuned model answered 128 dots: one "word", so no word 4-gram repeated
    assert M.is_loop("." * 128) and M.is_loop("ab" * 20)
    assert not M.is_loop("Hardcover, 1990s. Volumes 1-10 ... ISBN 0-00-000000-0")
    assert M.length_ratio("one two", "one two three four") == 0.5


def test_bootstrap_interval_covers_a_known_difference():
    rng = np.random.default_rng(0)
    before = rng.normal(0.0, 1.0, 400)
    after = before + 0.5 + rng.normal(0.0, 0.1, 400)  # paired: the true shift is 0.5
    delta, lo, hi = M.paired_bootstrap(before, after, seed=1)
    assert (
        lo < delta < hi and lo < 0.5 < hi and hi - lo < 0.05
    )  # pairing removes the between-example spread
    # a 95% interval, not a narrower one (a mutation audit): about 2 x 1.96 standard errors
    normal_width = 2 * 1.96 * np.std(after - before, ddof=1) / np.sqrt(len(before))
    assert hi - lo == pytest.approx(normal_width, rel=0.08)
    d0, lo0, hi0 = M.paired_bootstrap(before, before.copy())
    assert (d0, lo0, hi0) == (0.0, 0.0, 0.0)


def _eval(*args, launch=None, env=None):
    cmd = [*(launch or [sys.executable]), str(REPO / "eval" / "evaluate.py"), *args]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def _base(tiny_model_dir):
    return ["config:tiny"], [f"model.path={tiny_model_dir}", "model.tokenizer=builtin:tiny"]


@pytest.mark.e2e
def test_compare_writes_every_report_file(prepared, tiny_model_dir, tuned_run, tmp_path):
    (base,), overrides = _base(tiny_model_dir)
    proc = _eval(
        "--data",
        str(prepared),
        "--compare",
        base,
        str(tuned_run),
        "--out",
        str(tmp_path / "r"),
        "--n",
        "12",
        "--max-new-tokens",
        "24",
        *overrides,
        "train.validation_rows=5",  # the base's config: an untrained model held nothing back
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "held back" not in (tmp_path / "r" / "report.md").read_text()  # a review
    for name in ("report.json", "report.md", "report.png", "answers.jsonl"):
        assert (tmp_path / "r" / name).stat().st_size > 0, name
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    for split in ("heldout", "seen"):
        base_m, tuned_m = (report["splits"][split][m]["metrics"] for m in ("base", "tuned"))
        assert (
            tuned_m["perplexity"] < base_m["perplexity"]
        )  # 25 steps teach the catalogue's language
        c = report["comparison"][split]["perplexity"]
        assert c["low"] <= c["delta"] <= c["high"] < 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "delta (95% CI)" in md and "### seen: examples" in md
    for split in ("heldout", "seen"):  # each model's own figure with its interval
        for m in ("base", "tuned"):
            shown = report["splits"][split][m]
            low, high = shown["intervals"]["rougeL"]
            assert low <= shown["metrics"]["rougeL"] <= high
            low, high = shown["intervals"]["perplexity"]
            assert low <= shown["metrics"]["perplexity"] <= high
    rouge_row = next(x for x in md.splitlines() if x.startswith("| ROUGE-L |"))
    assert rouge_row.count("[") == 3, rouge_row  # base, tuned, delta


@pytest.mark.e2e
def test_compare_asks_the_base_the_runs_own_prompts(prepared, tiny_model_dir, tuned_run, tmp_path):
    """``eval --compare config:NAME RUN``: the base model was read with its config's templates,
    so a run trained (and data prepared) with the user's own ``data.templates`` was refused for
    the base, and the advice's override then applied to both. Compared models are asked the
    same prompts: the base is given the run's own copy (an override given here still wins)."""
    from amazon_sft.prompts import BUILTIN_TEMPLATES

    other = tmp_path / "other_questions.yaml"  # what the base's own config names
    other.write_text(
        Path(BUILTIN_TEMPLATES).read_text().replace("Tell me about {title}.", "Say {title}.")
    )
    base = tmp_path / "base.yaml"
    text = (REPO / "amazon_sft" / "configs" / "tiny.yaml").read_text()
    base.write_text(text.replace("data:\n", f"data:\n  templates: {other}\n", 1))
    args = ("--data", str(prepared), "--compare", str(base), str(tuned_run), "--n", "2")
    args += ("--splits", "heldout", "--max-new-tokens", "2", f"model.path={tiny_model_dir}")
    proc = _eval(*args, "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    refused = _eval(*args, "--out", str(tmp_path / "r2"), f"data.templates={other}")
    assert refused.returncode == 2, refused.stderr[-1500:]
    line = next(x for x in refused.stderr.splitlines() if "error:" in x)
    assert "data.templates=builtin too" in line and "--overwrite" not in line, (
        line
    )  # the run's data
    assert f"--out {prepared}-own" in line


def test_a_single_models_report_gives_each_figure_its_interval():
    """A base-only (or tuned-only) oracle report printed bare means ("citation accuracy 0.963"
    with no interval: bench/grounded_intervals.py had to be run for one); each figure now has
    its 95% interval (Wilson's for a rate, the bootstrap's for a score)."""
    from amazon_sft.evaluation.oracle_scores import figure_intervals
    from amazon_sft.evaluation.oracle_types import OracleModel, OracleReport, SplitScores
    from amazon_sft.evaluation.report import render_markdown

    vec = {
        "rougeL": [0.5, 0.7] * 10,
        "citation_accuracy": [1.0] * 19 + [0.0],
        "perplexity": [[2.0, 4.0]] * 20,
        "eos_rate": [1.0] * 20,
    }
    intervals = figure_intervals(vec, seed=0)
    assert intervals["citation_accuracy"][0] < 0.95 < intervals["citation_accuracy"][1] < 1
    assert intervals["rougeL"][0] < 0.6 < intervals["rougeL"][1]
    assert (
        intervals["eos_rate"][1] == 1.0 and intervals["eos_rate"][0] < 1.0
    )  # 20 of 20: not [1, 1]
    metrics = {"rougeL": 0.6, "citation_accuracy": 0.95, "perplexity": 1.6487, "eos_rate": 1.0}
    result = OracleReport(
        "d",
        "grounded",
        {},
        models={"model": OracleModel("tuned")},
        splits={"heldout grounded": {"model": SplitScores(20, metrics, intervals)}},
    )
    md = render_markdown(result, 0)
    row = next(x for x in md.splitlines() if x.startswith("| citation accuracy |"))
    assert "0.9500 [" in row, row


@pytest.mark.multiproc
def test_two_processes_give_the_same_answers_as_one(prepared, tuned_run, tmp_path):
    args = [
        "--data",
        str(prepared),
        "--model",
        str(tuned_run),
        "--n",
        "10",
        "--max-new-tokens",
        "16",
        "--batch-size",
        "3",
    ]
    one = _eval(*args, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-3000:]
    port = str(free_port())
    launch = [
        str(Path(sys.executable).with_name("accelerate")),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--main_process_port",
        port,
    ]
    two = _eval(
        *args, "--out", str(tmp_path / "two"), launch=launch, env={"ACCELERATE_USE_CPU": "true"}
    )
    assert two.returncode == 0, two.stderr[-3000:]
    read = lambda d: (tmp_path / d / "answers.jsonl").read_text()  # noqa: E731
    assert read("one") == read("two")
    r1, r2 = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("one", "two"))
    for split in r1["splits"]:  # NLLs see other batch-mates' padding: equal up to float rounding
        m1, m2 = (r["splits"][split]["model"]["metrics"] for r in (r1, r2))
        assert m1 == pytest.approx(m2, rel=1e-5)


def test_bad_inputs_are_one_line_errors(prepared, tiny_model_dir, tuned_run, tmp_path):
    (base,), overrides = _base(tiny_model_dir)
    empty_model = tmp_path / "empty"
    empty_model.mkdir()
    (empty_model / "amazon_sft_config.yaml").write_text(
        (tuned_run / "final" / "amazon_sft_config.yaml").read_text()
    )
    bad_rows = tmp_path / "bad"
    bad_rows.mkdir()
    for name in ("manifest.json", "seen_probe.jsonl"):
        (bad_rows / name).write_bytes((prepared / name).read_bytes())
    (bad_rows / "heldout.jsonl").write_text(
        '{"uid": "1", "title": "ok", "content": "fine"}\n{"uid": 2}\n'
    )
    chat_data = tmp_path / "chat"
    manifest = json.loads((prepared / "manifest.json").read_text())
    chat_data.mkdir()
    (chat_data / "manifest.json").write_text(  # as prepare would write it for another tokenizer
        json.dumps(seal({**manifest, "tokenizer_fingerprint": "0" * 16}))
    )
    for name in ("heldout.jsonl", "seen_probe.jsonl"):
        (chat_data / name).write_bytes((prepared / name).read_bytes())
    cases = [
        (["--data", str(prepared), "--model", str(empty_model)], "holds no weights"),
        (["--data", str(bad_rows), "--model", base, *overrides], "line 2"),
        (
            ["--data", str(prepared), "--model", base, "--max-new-tokens", "0", *overrides],
            "--max-new-tokens",
        ),
        (["--data", str(chat_data), "--model", base, *overrides], "another tokenizer"),
        (["--data", str(tmp_path / "nowhere"), "--model", base, *overrides], "amazon-sft prepare"),
    ]
    for args, needle in cases:
        proc = _eval(*args, "--out", str(tmp_path / "o"))
        assert proc.returncode == 2 and needle in proc.stderr, (args, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr


@pytest.mark.e2e
def test_vllm_backend_matches_the_hf_backend(prepared, tuned_run, tmp_path):
    """Drives --backend vllm against tests/stand_ins/vllm (vLLM's documented offline API; real
    vLLM needs CUDA): the exported folder loads, token prompts go in, EOS/length map back."""
    args = ["--data", str(prepared), "--model", str(tuned_run), "--n", "6"]
    args += ["--max-new-tokens", "20", "--batch-size", "1"]
    hf = _eval(*args, "--out", str(tmp_path / "hf"))
    assert hf.returncode == 0, hf.stderr[-3000:]
    log = tmp_path / "vllm_calls.jsonl"
    env = {"PYTHONPATH": str(REPO / "tests" / "stand_ins"), "FAKE_VLLM_LOG": str(log)}
    vl = _eval(*args, "--backend", "vllm", "--out", str(tmp_path / "vllm"), env=env)
    assert vl.returncode == 0, vl.stderr[-3000:]
    read = lambda d: (tmp_path / d / "answers.jsonl").read_text()  # noqa: E731
    assert read("hf") == read("vllm")
    r_hf, r_vl = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("hf", "vllm"))
    assert r_vl["decoding"]["backend"] == "vllm"
    for split in r_hf["splits"]:
        assert r_hf["splits"][split]["model"]["metrics"] == pytest.approx(
            r_vl["splits"][split]["model"]["metrics"], rel=1e-6
        )
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(calls) == 1 and calls[0]["tensor_parallel_size"] == 1  # one engine for both splits


def test_vllm_backend_refusals_are_one_line_errors(prepared, tuned_run, tmp_path):
    args = ["--data", str(prepared), "--model", str(tuned_run), "--backend", "vllm"]
    missing = _eval(*args, "--out", str(tmp_path / "o"))
    assert missing.returncode == 2 and "vLLM is not installed" in missing.stderr
    env = {"PYTHONPATH": str(REPO / "tests" / "stand_ins")}
    ngram = _eval(*args, "--no-repeat-ngram-size", "3", "--out", str(tmp_path / "o"), env=env)
    assert ngram.returncode == 2 and "--no-repeat-ngram-size" in ngram.stderr
    assert "Traceback" not in missing.stderr + ngram.stderr


def test_report_chart_draws_intervals_on_the_deltas_not_on_the_bars(tmp_path, monkeypatch):
    """A loop rate of 0.02 with a delta interval of [-0.30, +0.10] once got a whisker down to
    -0.28 on its bar; intervals now sit on their own delta panels."""
    import matplotlib.axes

    from amazon_sft.evaluation.end_to_end_types import Change
    from amazon_sft.evaluation.oracle_types import OracleModel, OracleReport, SplitScores
    from amazon_sft.evaluation.report import SHOWN, plot

    calls = []
    real_bar = matplotlib.axes.Axes.bar

    def spy(self, x, height, *args, yerr=None, **kwargs):
        calls.append((self.get_title(), list(height), yerr))
        return real_bar(self, x, height, *args, yerr=yerr, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "bar", spy)
    metrics = {key: 0.02 for key in SHOWN}
    split = {"base": SplitScores(8, metrics), "tuned": SplitScores(8, metrics)}
    cmp = {key: Change(-0.1, -0.3, 0.1) for key in SHOWN}
    result = OracleReport(
        "d",
        "closed",
        {},
        models={m: OracleModel(m) for m in ("base", "tuned")},
        splits={"heldout": split, "seen": split},
        comparison={"heldout": cmp, "seen": cmp},
    )
    plot(result, tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 0
    value_bars = [c for c in calls if c[2] is None]
    delta_bars = [c for c in calls if c[2] is not None]
    assert len(value_bars) == 2 * len(SHOWN) and len(delta_bars) == len(SHOWN)
    for _, heights, (below, above) in delta_bars:  # each whisker spans the delta's own interval
        assert heights == [-0.1, -0.1]
        assert below == pytest.approx([0.2, 0.2]) and above == pytest.approx([0.2, 0.2])


def test_eval_refuses_data_the_run_was_not_trained_on(tuned_run, tmp_path):
    """eval --data X --model RUN scored RUN's "held-out" titles from X's split: from another
    prepared folder (another held-out fraction, another catalogue), products it was trained on.
    It is refused before a model loads, naming the folder the run was trained on."""
    from amazon_sft.config import load_run_config
    from amazon_sft.data.synthetic import write_catalogue
    from amazon_sft.prepare import prepare

    write_catalogue(tmp_path / "trn.json.gz", 200, seed=5)
    other = tmp_path / "other"
    cfg = load_run_config("tiny", ["data.heldout_fraction=0.05"])
    prepare(tmp_path / "trn.json.gz", other, cfg, progress=False)
    proc = _eval("--data", str(other), "--model", str(tuned_run), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    recorded = json.loads((tuned_run / "final" / "trained_on.json").read_text())["folder"]
    assert "--data" in line and "trained on" in line and recorded in line, line
    assert not (tmp_path / "o" / "report.md").exists()


def test_a_bootstrap_of_a_few_titles_gives_no_interval():
    """An outside review: ``eval --compare ... --n 1`` printed "+0.0000 [+0.0000, +0.0000]"
    for every rate (resamples of one title collapse to a point): the false certainty the
    Wilson interval replaced for end-to-end rates. Under 10 examples there is no interval."""
    import numpy as np

    from amazon_sft.evaluation.metrics import bootstrap_interval, interval_text, paired_bootstrap

    delta, low, high = paired_bootstrap(np.zeros(3), np.zeros(3))
    assert delta == 0.0 and "no interval" in interval_text(low, high, signed=True)
    assert "no interval" in interval_text(*bootstrap_interval(np.ones(5))[1:])
    assert not np.isnan(paired_bootstrap(np.zeros(20), np.ones(20))[1])


def test_end_to_end_eval_answers_as_long_as_ask_does_unless_told():
    """eval --questions said it answers "exactly as ask", yet wrote 128 new tokens to ask's
    160: a citation after token 128 was lost in the figures and kept by ask (an outside
    review). End to end takes ask's default; the oracle mode keeps its own."""
    from amazon_sft.cli import build_parser
    from amazon_sft.evaluation.arguments import parse_args

    asked = build_parser().parse_args(["ask", "x"]).max_new_tokens
    end_to_end = parse_args(["--data", "d", "--model", "m", "--questions", "q.jsonl"])
    assert end_to_end.max_new_tokens == asked == 160
    oracle = parse_args(["--data", "d", "--model", "m"])
    assert oracle.max_new_tokens == 128
    given = parse_args(["--data", "d", "--model", "m", "--questions", "q", "--max-new-tokens", "9"])
    assert given.max_new_tokens == 9


def test_the_plot_names_its_protocol_and_each_splits_count(tmp_path, monkeypatch):
    """report.png gave no n and no protocol: a grounded bar read as answers to shoppers, not as
    oracle context (a new user). Each split's label carries its n; the title says oracle
    context when a grounded split is drawn."""
    import matplotlib.figure

    from amazon_sft.evaluation.oracle_types import OracleModel, OracleReport, SplitScores
    from amazon_sft.evaluation.report import plot

    seen = []
    monkeypatch.setattr(
        matplotlib.figure.Figure, "savefig", lambda fig, path, **kw: seen.append(fig)
    )
    metrics = {"rougeL": 0.4, "citation_accuracy": 0.5}
    result = OracleReport(
        "d",
        "both",
        {},
        models={"model": OracleModel("m")},
        splits={
            "heldout": {"model": SplitScores(16, {"rougeL": 0.4})},
            "heldout grounded": {"model": SplitScores(12, metrics)},
        },
    )
    plot(result, tmp_path / "report.png")
    fig = seen[0]
    title = fig._suptitle.get_text()
    # every split's protocol, the closed-book one too (an outside trial: only the oracle's)
    assert "oracle context" in title and "heldout / seen: closed-book" in title, title
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["heldout\nn=16", "heldout\ngrounded\nn=12"], labels


def test_a_delta_panel_without_an_interval_does_not_say_95_ci(tmp_path, monkeypatch):
    """An outside trial: every delta panel said "95% CI", also where report.json's interval
    is null (a perplexity over few titles)."""
    import matplotlib.figure

    from amazon_sft.evaluation.oracle_types import Change, OracleModel, OracleReport, SplitScores
    from amazon_sft.evaluation.report import plot

    seen = []
    monkeypatch.setattr(
        matplotlib.figure.Figure, "savefig", lambda fig, path, **kw: seen.append(fig)
    )
    nan = float("nan")
    result = OracleReport(
        "d",
        "closed",
        {},
        models={"base": OracleModel("b"), "tuned": OracleModel("t")},
        splits={"heldout": {m: SplitScores(4, {"rougeL": 0.4}) for m in ("base", "tuned")}},
        comparison={"heldout": {"rougeL": Change(0.1, nan, nan)}},
    )
    plot(result, tmp_path / "report.png")
    titles = [ax.get_title() for ax in seen[0].axes]
    assert "ROUGE-L: tuned - base (no interval)" in titles, titles


def test_the_plot_writes_each_bars_value_so_a_zero_is_not_an_empty_panel(tmp_path, monkeypatch):
    """A panel whose bars are all 0 (no loops, no empty answers, no false abstention) drew
    nothing and read as a metric that was not measured; each bar now carries its value."""
    import matplotlib.figure

    from amazon_sft.evaluation.oracle_types import OracleModel, OracleReport, SplitScores
    from amazon_sft.evaluation.report import plot

    seen = []
    monkeypatch.setattr(
        matplotlib.figure.Figure, "savefig", lambda fig, path, **kw: seen.append(fig)
    )
    metrics = {"rougeL": 0.4, "loop_rate": 0.0}
    result = OracleReport(
        "d",
        "closed",
        {},
        models={m: OracleModel(m) for m in ("base", "tuned")},
        splits={"heldout": {m: SplitScores(16, metrics) for m in ("base", "tuned")}},
    )
    plot(result, tmp_path / "report.png")
    loop = next(ax for ax in seen[0].axes if ax.get_title() == "loop rate")
    assert [t.get_text() for t in loop.texts] == ["0.00", "0.00"]


def test_a_paired_rate_change_gets_an_interval_that_covers_it():
    """A new user's trial: a rate of 0 of 20 for both models showed Wilson's [0, 0.161] for
    each, and the delta "+0.0000 [+0.0000, +0.0000]" from the paired bootstrap (a 20-of-20
    change: [-1, -1]). Rate deltas now take Newcombe's paired score interval: it is not a
    point, and over simulated paired outcomes it covers the true change about 95% of the time
    (a percentile bootstrap at these sizes does not)."""
    import numpy as np

    from amazon_sft.evaluation.metrics import paired_bootstrap, paired_rate_interval

    rng = np.random.default_rng(0)
    n, trials, hits, boot_hits = 30, 1500, 0, 0
    p_before, p_new = 0.05, 0.074
    change = (1 - p_before) * p_new  # the true after - before
    for _ in range(trials):
        shared = rng.random(n)  # correlated outcomes: the same questions are easy for both
        before = (shared < p_before).astype(float)
        after = ((shared < p_before) | (rng.random(n) < p_new)).astype(float)
        _, low, high = paired_rate_interval(before, after)
        hits += low <= change <= high
        _, low, high = paired_bootstrap(before, after, n_resamples=200)
        boot_hits += low <= change <= high
    assert hits / trials >= 0.93, hits / trials
    assert boot_hits / trials < 0.93, boot_hits / trials  # why not the bootstrap


def test_a_bootstrap_over_few_counted_answers_gives_no_interval():
    """An outside review: ROUGE-L over the 5 right answers of 60 questions printed "1.000 [1.000,
    1.000] (of 5)", and a paired abstention precision over 3 vs 4 abstentions "[+0.000,
    +0.000]": the guard counted every question, not the answers the figure is over."""
    import math

    from amazon_sft.evaluation import end_to_end as E

    right = E.Outcome(False, True, False, False, 1.0, True, True)
    missed = E.Outcome(False, False, False, True, math.nan, False, False)
    figure = E.summarise([right] * 5 + [missed] * 55, {"all": list(range(60))})["all"]
    rouge = figure.figures["rougeL_when_right"]
    assert rouge.of == 5 and math.isnan(rouge.low) and math.isnan(rouge.high), rouge
    many = E.summarise([right] * 12 + [missed] * 48, {"all": list(range(60))})["all"]
    assert not math.isnan(many.figures["rougeL_when_right"].low)  # 12 answers: an interval

    def absent(abstains: bool) -> E.Outcome:
        return E.Outcome(True, False, False, abstains, math.nan, False, False)

    present = E.Outcome(False, False, False, False, math.nan, False, False)
    base = [absent(True)] * 3 + [absent(False)] * 7 + [present] * 90
    tuned = [absent(True)] * 4 + [absent(False)] * 6 + [present] * 90
    change = E.compare(base, tuned, {"all": list(range(100))})["all"]["abstention_precision"]
    assert math.isnan(change.low) and math.isnan(change.high), change


def test_rouge_reads_every_script_so_a_quote_of_another_record_is_caught():
    """An outside review: rouge-score's default tokenizer keeps only [a-z0-9], so Cyrillic text
    had no words (every overlap 0: an answer quoting record 9's text under uid 7 scored right)
    and "ação" against "coração" scored 0.5 on the shared "o"."""
    from amazon_sft.answering.answer_source import AnswerSource
    from amazon_sft.answering.ask import Answer
    from amazon_sft.answering.index import Source
    from amazon_sft.evaluation.end_to_end import score_answer
    from amazon_sft.evaluation.question_file import ShopperQuestion
    from amazon_sft.evaluation.question_products import Product

    bear = "Плюшевый медведь для детей, мягкий и красный."
    book = "Книга о кошке и её котятах, для чтения перед сном."
    assert M.rouge_scores([book], [book])["rougeL"] == [pytest.approx(1.0)]
    assert M.rouge_scores(["ação"], ["coração"])["rougeL"] == [0.0]
    assert M.rouge_scores(["O livro não é ação"], ["O livro não é ação"])["rougeL"] == [1.0]
    english = M.rouge_scores(["Running dogs don't bark"], ["the dog runs, it doesn't bark"])
    assert english["rougeL"] == [pytest.approx(0.5)]  # as rouge-score scored it: "dog t bark"

    quoted = book + " [source: 7]"
    sources = [
        AnswerSource(Source(u, "", t, 1.0), M.rouge_scores([book], [t])["rougeL"][0])
        for u, t in (("7", bear), ("9", book))
    ]
    question = ShopperQuestion("медведь", "7", None, "partial", "real", 1)
    answer = Answer(question.text, quoted, sources, "", "grounded", ["7"])
    scored = score_answer(question, answer, {"7": Product("7", bear, "heldout")})
    assert scored.wrong and not scored.right, scored
