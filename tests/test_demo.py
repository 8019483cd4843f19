"""The demo pipeline on the tiny model: the same code path as `make demo`, in seconds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amazon_sft.evaluation.end_to_end_types import read_end_to_end_report

from .processes import running

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_demo_runs_the_whole_story_on_the_tiny_model(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "amazon_sft.cli",
            "demo",
            "--config",
            "tiny",
            "--out",
            str(out),
            "--rows",
            "400",
            "--steps",
            "4",
            "--per-kind",
            "1",
            "--max-new-tokens",
            "8",
        ],  # no --max-seq-len: tiny's own 256 holds no grounded example, the demo's default does
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not list(out.glob(".*amazon_sft_synth.json"))  # its own record proves trn.json.gz
    for name in (
        "prepared/manifest.json",
        "run/final/adapter_model.safetensors",
        "eval/report.md",
        "heldout_questions.jsonl",
        "answers.json",
        "demo.log",
    ):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "prepared" / "manifest.json").read_text())
    assert manifest["grounded_docs"] > 0
    report_prep = json.loads((out / "prepared" / "report.json").read_text())
    assert len(report_prep["grounded_kinds"]) >= 5  # every kind of question is taught
    answers = json.loads((out / "answers.json").read_text())["questions"]
    assert len(answers) == 4 and all(a["sources"] for a in answers)
    assert all(set(a) >= {"before", "after", "cited", "before_how", "after_how"} for a in answers)
    report = json.loads((out / "eval" / "report.json").read_text())
    assert report["mode"] == "end to end" and set(report["models"]) == {"base", "tuned"}
    assert "held-out products" in report["groups"]["tuned"]
    assert "products not in the catalogue" in report["groups"]["tuned"]
    assert "== Summary" in proc.stdout and "Report:" in proc.stdout
    # every answer goes through retrieval's gate as a user runs it (answering/doubt.py, answering/sure.py)
    assert report["abstain_below"] == 1.4 and report["quote_when_sure"] is True
    assert report["meaning_weight"] == 0  # words only: the generated descriptions share a template
    assert set(report["own_right"]) == {"base", "tuned"}
    assert "right record cited by the model's own answer" in proc.stdout
    asks = [
        x for x in (out / "demo.log").read_text().splitlines() if x.startswith("$ amazon-sft ask")
    ]
    assert len(asks) == 2 and all("--gate words --abstain-below 1.4" in x for x in asks)
    # the GPU check's last row reads this very report (it read a key the report no longer has)
    sys.path.insert(0, str(REPO / "scripts"))
    import gpu_check

    cells = gpu_check.demo_cells(read_end_to_end_report(out / "eval" / "report.json"))
    assert "held-out products" in cells and "right record cited" in cells, cells


def test_the_committed_heldout_questions_are_the_demo_catalogues(tmp_path):
    """eval/questions/demo_heldout.jsonl is what the demo writes for its default catalogue:
    every question names one of its held-out products (or a product not in it)."""
    import importlib.util

    import orjson

    spec = importlib.util.spec_from_file_location("dq", REPO / "scripts" / "demo_questions.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = script.demo_default_questions(tmp_path)
    committed = [orjson.loads(x) for x in script.COMMITTED.read_bytes().splitlines()]
    assert committed == rows, "re-run scripts/demo_questions.py"
    split = {
        r["uid"]: r["split"]
        for r in map(
            orjson.loads, (tmp_path / "prepared" / "catalogue.jsonl").read_bytes().split(b"\n")[:-1]
        )
    }
    named = [r.get("absent") if r["kind"] == "absent" else r["uid"] for r in committed]
    assert all(split[u] == "heldout" for u in named if u not in (None, "absent"))
    kinds = {r["kind"] for r in committed}
    assert kinds == {
        "fragment",
        "reorder",
        "typo",
        "portuguese",
        "descriptive",
        "attribute",
        "absent",
    }


def test_demo_refuses_a_gate_that_never_doubts_before_it_generates_anything(tmp_path):
    """``--abstain-below`` under 1 would only be refused by ask, minutes in (after the catalogue
    is generated and prepared): the demo checks it first, with ask's one-line error."""
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "amazon_sft.cli", "demo", "--config", "tiny", "--out", str(out),
         "--abstain-below", "0.5"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "under 1" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "given, named",
    [
        (["--steps", "0"], "--steps"),  # it trained 100 steps (the config's)
        (["--per-kind", "-1"], "--per-kind"),  # it wrote 483 questions
        (["--per-kind", "0"], "--per-kind"),  # no question about a product, "successfully"
        (["--heldout-fraction", "0"], "--heldout-fraction"),
        (["--heldout-fraction", "1"], "--heldout-fraction"),  # nothing left to train on
        (["--oracle-eval", "--n", "0"], "--n"),  # refused after training
        (["--max-new-tokens", "0"], "--max-new-tokens"),  # refused at the first ask
        (["--grounded-fraction", "1.5"], "--grounded-fraction"),
        (["train.lr=nan"], "train.lr"),  # refused at the training step, minutes in
        (["out_dir=ELSEWHERE"], "out_dir"),  # trained there, reported the folder's old run
        (["train.max_steps=7"], "--steps"),
        (["data.heldout_fraction=0.3"], "data.heldout_fraction"),
    ],
)
def test_demo_checks_its_flags_and_overrides_before_any_step(tmp_path, capsys, given, named):
    """A hostile user's trial: most of the demo's numbers were checked only by the step that
    used them (minutes in, naming the inner key) or not at all, and ``out_dir=`` trained a
    model elsewhere while the report and the "after" answers read the folder's earlier run."""
    from .test_hostile import _assert_one_line, _run_cli

    out = tmp_path / "demo"
    given = [g.replace("ELSEWHERE", str(tmp_path / "elsewhere")) for g in given]
    code, err = _run_cli(capsys, "demo", "--config", "tiny", "--out", str(out), *given)
    _assert_one_line(code, err, "demo", named)
    assert not out.exists() and not (tmp_path / "elsewhere").exists()


def test_demo_steps_run_the_installed_package_whatever_the_current_folder_holds(
    tmp_path, monkeypatch
):
    """Run from a folder holding an ``amazon_sft`` folder (the parent of a clone), every step
    imported that one (``python -m`` puts the current folder first): 'cannot import name
    __version__'. The steps run the package the demo itself runs."""
    import io

    from amazon_sft import demo
    from amazon_sft.errors import UserError

    (tmp_path / "amazon_sft").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as caught:  # index's import reads amazon_sft.__version__
        demo.run("index", ["index", str(tmp_path / "nowhere")], io.StringIO())
    assert "__version__" not in str(caught.value) and "nowhere" in str(caught.value)


def test_a_second_demo_into_the_same_folder_is_refused_naming_the_first(tmp_path):
    """A file-safety audit: a second demo into a running one's folder truncated its demo.log
    (the log its errors point to) and prepared again under it. Now one writer, as elsewhere."""
    from amazon_sft.output_lock import OutputLock

    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.log").write_text("$ amazon-sft synth ... (the first demo, still running)\n")
    with OutputLock(out, "amazon-sft demo"):
        proc = subprocess.run(
            [sys.executable, "-m", "amazon_sft.cli", "demo", "--config", "tiny", "--out", str(out)],
            capture_output=True, text=True, cwd=REPO, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert (
        "amazon-sft demo" in proc.stderr
        and "(the first demo, still running)" in (out / "demo.log").read_text()
    )


def _demo_cli(out, *extra):
    return subprocess.run(
        [sys.executable, "-m", "amazon_sft.cli", "demo", "--config", "tiny", "--out", str(out), *extra],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip


def test_a_demo_file_edited_since_is_refused_before_any_step(tmp_path):
    """A new user's walkthrough: a second demo regenerated ``heldout_questions.jsonl`` over the
    user's edit without a word, and refused an edited ``eval/report.md`` only at the eval step,
    after generating, preparing and training again (and moving the run aside). Every file the
    demo wrote is checked before the first step; an edited one is refused, nothing is run."""
    from amazon_sft.demo_files import record_demo_file

    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.log").write_text("$ amazon-sft synth ... (an earlier demo)\n")
    questions = out / "heldout_questions.jsonl"
    questions.write_text('{"question": "q", "uid": "1", "kind": "typo"}\n')
    record_demo_file(out, "heldout_questions.jsonl")
    record_demo_file(out, "demo.log")
    questions.write_text(
        questions.read_text() + '{"question": "mine", "uid": "2", "kind": "typo"}\n'
    )
    proc = _demo_cli(out)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "heldout_questions.jsonl" in proc.stderr and "changed since" in proc.stderr
    assert "mine" in questions.read_text() and not (out / "trn.json.gz").exists()
    questions.unlink()
    (out / "eval").mkdir()
    (out / "eval" / "report.md").write_text("my notes\n")  # eval never wrote it
    proc = _demo_cli(out)
    assert proc.returncode == 2 and "report.md" in proc.stderr, proc.stderr[-2000:]
    assert not (out / "trn.json.gz").exists()


def test_a_demo_given_a_missing_catalogue_creates_nothing(tmp_path):
    """``demo --data missing.json.gz`` failed at its prepare step, after making --out with its
    marker and log (a new user's walkthrough): the file is checked first."""
    out = tmp_path / "demo"
    proc = _demo_cli(out, "--data", str(tmp_path / "missing.json.gz"))
    assert proc.returncode == 2 and "missing.json.gz" in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()


def _kill_at_the_rename_of(monkeypatch, name: str) -> None:
    """The demo killed (SIGKILL) as it renames its file ``name`` into place; the record's own
    renames go on."""
    from amazon_sft import demo_files

    replace = os.replace

    def killed_at_the_rename(src, dst):
        if Path(dst).name == name:
            raise SystemExit(137)
        replace(src, dst)

    monkeypatch.setattr(demo_files.os, "replace", killed_at_the_rename)


def test_a_demo_killed_while_writing_its_log_can_run_again_and_a_later_file_is_not_its_own(
    tmp_path, monkeypatch
):
    """A review: a demo killed (SIGKILL, a closed terminal) after opening demo.log never
    recorded it again, so the next demo refused its own log as "changed since". The fix marked
    it "writing", then "open:DEVICE:INODE": a file a user put there after the kill (``cp`` over
    it, or a new file given the freed inode) was still the demo's, and emptied (a review of the
    fix). The log is written whole at each step and renamed in, each version recorded."""
    from amazon_sft.demo_files import check_demo_files, demo_log
    from amazon_sft.errors import UserError

    out = tmp_path / "demo"
    out.mkdir()
    log = demo_log(out, "# an earlier demo\n")
    log.write("$ amazon-sft synth ... (done)\n")
    _kill_at_the_rename_of(monkeypatch, "demo.log")
    with pytest.raises(SystemExit):
        demo_log(out, "# the next demo, killed at its first write\n")
    monkeypatch.undo()
    check_demo_files(out, out / "prepared", [out / "eval"])  # its own: not refused
    (out / "demo.log").unlink()
    (out / "demo.log").write_text("my notes on the demo\n")  # the user's, after the kill
    with pytest.raises(UserError, match=r"demo\.log changed since"):
        check_demo_files(out, out / "prepared", [out / "eval"])
    with (out / "demo.log").open("w") as same_inode:  # cp over it: the same inode
        same_inode.write("my other notes\n")
    with pytest.raises(UserError, match=r"demo\.log changed since"):
        check_demo_files(out, out / "prepared", [out / "eval"])


def test_a_file_the_demo_replaces_is_its_own_at_any_instant_of_a_kill(tmp_path, monkeypatch):
    """A demo file is written beside its name, then renamed into place; the record holds the
    old digest and the new one while it is: a kill before, during or after the rename leaves a
    file the record names, and a user's file put there later is not the demo's."""
    from amazon_sft import demo_files
    from amazon_sft.demo_files import check_demo_files, record_demo_file, staged_demo_file
    from amazon_sft.errors import UserError

    out = tmp_path / "demo"
    out.mkdir()
    (out / "trn.json.gz").write_bytes(b"the demo's first catalogue")
    record_demo_file(out, "trn.json.gz")
    with pytest.raises(KeyboardInterrupt), staged_demo_file(out, "trn.json.gz") as staging:
        assert staging.name.endswith(".gz") and staging.name.startswith(".")  # synth gzips
        staging.write_bytes(b"half a catalogue")
        raise KeyboardInterrupt  # killed while synth wrote
    assert (out / "trn.json.gz").read_bytes() == b"the demo's first catalogue"
    assert not staging.exists()

    _kill_at_the_rename_of(monkeypatch, "trn.json.gz")
    with pytest.raises(SystemExit), staged_demo_file(out, "trn.json.gz") as staging:
        staging.write_bytes(b"the demo's second catalogue")
    monkeypatch.undo()
    check_demo_files(out, out / "prepared", [out / "eval"], writes=["trn.json.gz"])  # old: its own
    (out / "trn.json.gz").write_bytes(b"the demo's second catalogue")  # as if renamed
    check_demo_files(out, out / "prepared", [out / "eval"], writes=["trn.json.gz"])  # new: too
    (out / "trn.json.gz").write_bytes(b"my real products")
    with pytest.raises(UserError, match=r"trn\.json\.gz changed since"):
        check_demo_files(out, out / "prepared", [out / "eval"], writes=["trn.json.gz"])
    (out / "trn.json.gz").write_bytes(b"the demo's second catalogue")
    with staged_demo_file(out, "trn.json.gz") as staging:
        staging.write_bytes(b"the demo's third catalogue")
    assert (out / "trn.json.gz").read_bytes() == b"the demo's third catalogue"
    record = json.loads((out / demo_files.RECORD).read_text())
    assert isinstance(record["trn.json.gz"], str)  # one digest once in place


def test_a_catalogue_the_demo_never_wrote_is_refused_not_replaced(tmp_path):
    """A hostile review: a demo run with ``--data`` records no ``trn.json.gz``; the user's own
    catalogue put there afterwards was taken as the demo's (no record claimed it) and the next
    demo without ``--data`` generated a catalogue over it. A file the record does not name is
    the demo's only in a folder from before the record."""
    from amazon_sft.demo_files import check_demo_files, record_demo_file, staged_demo_file
    from amazon_sft.errors import UserError

    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.log").write_text("$ amazon-sft prepare mine.json.gz ... (a --data demo)\n")
    record_demo_file(out, "demo.log")
    (out / "trn.json.gz").write_bytes(b"my real products")
    with pytest.raises(UserError, match=r"trn\.json\.gz.*not written by the demo"):
        check_demo_files(out, out / "prepared", [out / "eval"], writes=["trn.json.gz"])
    check_demo_files(out, out / "prepared", [out / "eval"], writes=[])  # --data: not written
    # a record an earlier version wrote dropped a name while its file was rewritten: a demo
    # killed then (SIGKILL) left its own log unnamed, which is still the demo's (a review)
    (out / ".amazon_sft_demo_files.json").write_text('{"answers.json": "0"}')
    check_demo_files(out, out / "prepared", [out / "eval"], writes=["demo.log"])
    # a mark of a file being written (earlier versions' "writing", "open:DEVICE:INODE") names
    # no content: a file found under it may be a user's put there after the kill, so it is
    # refused, not replaced (the marks' compatibility was dropped, 2026-12-05)
    inode = (out / "demo.log").stat()
    for mark in ("writing", f"open:{inode.st_dev}:{inode.st_ino}"):
        (out / ".amazon_sft_demo_files.json").write_text(json.dumps({"demo.log": mark}))
        with pytest.raises(UserError, match=r"demo\.log changed since"):
            check_demo_files(out, out / "prepared", [out / "eval"], writes=["demo.log"])
    (out / ".amazon_sft_demo_files.json").write_text('{"answers.json": "0"}')
    # ... and stays the demo's once a new demo rewrites the record (recorded as it is)
    with staged_demo_file(out, "answers.json") as staging:
        staging.write_text("{}")
    check_demo_files(out, out / "prepared", [out / "eval"], writes=["demo.log", "answers.json"])
    (out / "demo.log").write_text("edited since")
    with pytest.raises(UserError, match=r"demo\.log changed since"):
        check_demo_files(out, out / "prepared", [out / "eval"], writes=["demo.log"])


def test_a_long_demo_step_says_it_is_alive(monkeypatch, capsys, tmp_path):
    """A new user's walkthrough: the demo printed each step's command, then nothing until
    "done in 1137 s" (training: no step, loss or time shown), which looks like a hang. A step
    that runs longer than ``HEARTBEAT_S`` prints its time and its latest output line."""
    from amazon_sft import demo_steps as demo

    monkeypatch.setattr(demo, "HEARTBEAT_S", 0.3)
    slow = (
        "import sys, time\n"
        "for i in range(6):\n"
        "    print(f'step {i}/6 loss 1.5', file=sys.stderr, flush=True); time.sleep(0.25)\n"
        "print('answer')"
    )
    monkeypatch.setattr(demo, "CLI", slow)
    with open(tmp_path / "log.txt", "w") as log:
        out = demo.run("a slow step", ["train"], log)
    shown = capsys.readouterr().out
    assert out.strip() == "answer"
    beats = [line for line in shown.splitlines() if line.startswith("   ...")]
    assert beats and "step" in beats[-1] and " s:" in beats[-1], shown
    assert "step 5/6" in (tmp_path / "log.txt").read_text()  # the log keeps every line


def test_a_killed_demo_leaves_no_step_running(tmp_path):
    """A demo stopped by SIGTERM or SIGKILL (a scheduler, ``kill``) left its running step, a
    training or an eval, working on in its folder, holding the folder's lock. A step now dies
    with the demo (found while fixing the same in the GPU check's benchmark)."""
    import os
    import signal
    import time

    tag = f"step-{time.time_ns()}"
    outer = (
        "import io, amazon_sft.demo_steps as d\n"
        f"d.CLI = 'import time; time.sleep(120)  # {tag}'\n"
        "d.run('a long step', ['x'], io.StringIO())\n"
    )
    demo = subprocess.Popen([sys.executable, "-c", outer], cwd=REPO, stdout=subprocess.DEVNULL)

    def steps() -> list[int]:
        return [p for p in running(tag) if p != demo.pid]

    try:
        end = time.monotonic() + 60
        while not steps() and time.monotonic() < end:
            time.sleep(0.2)
        assert steps(), "the step never started"
        demo.send_signal(signal.SIGKILL)
        demo.wait()
        time.sleep(2)
        assert steps() == []
    finally:
        for pid in steps():
            os.kill(pid, signal.SIGKILL)


def test_a_demo_run_again_says_its_model_is_set_aside_and_ask_names_where(
    tmp_path, monkeypatch, capsys
):
    """A new user's trial: a second ``make demo`` into the same folder set the first tuned model
    aside in run/previous/ without a word, and once stopped while training, ``ask --model
    demo_out/run`` said only that the run had no saved model. Both now say where it is."""
    from amazon_sft import demo
    from amazon_sft.errors import UserError
    from amazon_sft.evaluation.loading import _run_folder
    from amazon_sft.ownership import RUN_MARKER, claim_demo_dir

    out = tmp_path / "demo"
    claim_demo_dir(out)
    (out / "run" / "final").mkdir(parents=True)

    def stop(*_):
        raise KeyboardInterrupt  # stopped before the first step

    monkeypatch.setattr(demo, "_steps", stop)
    with pytest.raises(KeyboardInterrupt):
        demo._demo(demo.parse_args(["--out", str(out)]), out)
    said = capsys.readouterr().out
    assert "holds an earlier demo" in said and str(out / "run" / "previous") in said
    assert "holds an earlier demo" in (out / "demo.log").read_text()
    run = out / "run"  # what a stop while training left: the marker, the old model aside
    (run / "final").rename(tmp_path / "old-final")
    (run / RUN_MARKER).write_text("{}\n")
    (run / "previous" / "20261206T005325Z").mkdir(parents=True)
    (tmp_path / "old-final").rename(run / "previous" / "20261206T005325Z" / "final")
    with pytest.raises(UserError, match=r"earlier model is in .*previous/20261206T005325Z"):
        _run_folder(str(run))
