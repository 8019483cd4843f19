"""launch/: shellcheck, dry runs under a faked 2-node SLURM job, and a real 2-process CPU run."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import train_overrides

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*REPO.glob("launch/*.sh"), *REPO.glob("launch/*.sbatch"), REPO / ".ci" / "run"])


@pytest.mark.skipif(
    shutil.which("shellcheck") is None,
    reason="shellcheck not installed: apt-get install shellcheck (.ci/run does)",
)
def test_shellcheck_is_clean_on_every_script():
    proc = subprocess.run(
        ["shellcheck", "-x", *map(str, SCRIPTS)], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout


def _fake_slurm(tmp_path: Path, job_id: str) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(  # its other calls (requeue) are recorded
        '#!/usr/bin/env bash\n[ "$1 $2" = "show hostnames" ] && printf "gpu-node-17\\ngpu-node-18\\n"'
        f' && exit 0\necho "$*" >> {tmp_path / "scontrol-calls"}\n'
    )
    scontrol.chmod(0o755)
    return {
        **os.environ,
        # the job's shell has the install's commands, as after `source .venv/bin/activate`
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "SLURM_JOB_ID": job_id,
        "SLURM_NNODES": "2",
        "SLURM_JOB_NODELIST": "gpu-node-[17-18]",
        "DRY_RUN": "1",
        "LOG_DIR": str(tmp_path / "logs"),
        "PREPARED": str(tmp_path / "prepared"),
    }


def _nodes(stdout: str) -> list[dict]:
    """The launch flags of each ``node N`` line of a dry run."""
    keys = ("machine_rank", "main_process_ip", "main_process_port", "num_machines", "num_processes")
    return [
        {k: re.search(rf"--{k} (\S+)", line).group(1) for k in keys}
        for line in stdout.splitlines()
        if line.startswith("node ")
    ]


@pytest.mark.parametrize("script", ["train_slurm.sbatch", "eval_slurm.sbatch"])
def test_sbatch_dry_run_gives_each_node_its_rank_and_one_address(script, tmp_path):
    runs = {}
    for job in ("4242", "4243"):
        proc = subprocess.run(
            ["bash", f"launch/{script}"],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=_fake_slurm(tmp_path, job),
        )
        assert proc.returncode == 0, proc.stderr
        runs[job] = _nodes(proc.stdout)
        # every rank prints on this one machine: no hostname beside a node's command (a trial)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("node ")]
        assert all(re.match(r"node \d+: accelerate launch ", x) for x in lines), lines
    nodes = runs["4242"]
    assert [n["machine_rank"] for n in nodes] == ["0", "1"]
    assert {n["main_process_ip"] for n in nodes} == {"gpu-node-17"}
    assert {n["num_machines"] for n in nodes} == {"2"} and {n["num_processes"] for n in nodes} == {
        "16"
    }
    ports = {job: {n["main_process_port"] for n in r} for job, r in runs.items()}
    assert len(ports["4242"]) == 1 and ports["4242"] != ports["4243"]  # one port per job
    # off the cluster (no scontrol), a compressed list's first host (a review: "gpu[01-03").
    # Both scripts take it from slurm_common.sh: every form through the eval script, whose dry
    # run checks no config, and the hardest through the train script too (each of its dry runs
    # checks the config for the job's world, ~4 s)
    env = _fake_slurm(tmp_path, "4244")
    (tmp_path / "bin" / "scontrol").unlink()
    forms = (("gpu[01-03,07]", "gpu01"), ("a01,gpu[2-3]", "a01"), ("n[7]", "n7"),
             ("gpu[01-03,07]-ib", "gpu01-ib"), ("rack[1-2]-n[01-04]", "rack1-n01"))  # fmt: skip
    for listed, first in forms if script == "eval_slurm.sbatch" else forms[-1:]:
        env["SLURM_JOB_NODELIST"] = listed
        proc = subprocess.run(["bash", f"launch/{script}"], capture_output=True, text=True,
                              cwd=REPO, env=env)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert {n["main_process_ip"] for n in _nodes(proc.stdout)} == {first}, proc.stdout


def test_train_sbatch_prepares_once_and_resumes(tmp_path):
    proc = subprocess.run(
        ["bash", "launch/train_slurm.sbatch"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_fake_slurm(tmp_path, "77"),
    )
    assert proc.stdout.count("amazon-sft prepare") == 1
    assert all(
        "resume=auto" in line for line in proc.stdout.splitlines() if line.startswith("node ")
    )
    text = (REPO / "launch" / "train_slurm.sbatch").read_text()
    assert "#SBATCH --requeue" in text and "#SBATCH --signal=B:USR1@300" in text


def test_train_sbatch_checks_the_batch_for_the_jobs_world_before_preparing(tmp_path):
    """The shipped configs' global batch of 8 rows could not be split over the default job's 16
    GPUs: every rank refused it, but only after the job had prepared the catalogue. The config
    is checked for the job's world first, and the 7-8B configs' batch splits over it."""
    env = _fake_slurm(tmp_path, "79")
    for config in ("mistral-7b-lora", "llama3-8b-full"):
        ok = subprocess.run(
            ["bash", "launch/train_slurm.sbatch"],
            capture_output=True, text=True, cwd=REPO, env={**env, "CONFIG": config},
        )  # fmt: skip
        assert ok.returncode == 0 and "amazon-sft prepare" in ok.stdout, ok.stderr
    bad = subprocess.run(
        ["bash", "launch/train_slurm.sbatch"],
        capture_output=True, text=True, cwd=REPO,
        env={**env, "EXTRA": "train.global_batch_size=8"},
    )  # fmt: skip
    assert bad.returncode != 0 and "prepare" not in bad.stdout and "node " not in bad.stdout
    assert "global_batch_size=8" in bad.stderr and "world size 16" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr  # one line, no traceback


def _prepared_from(tmp_path: Path, **recorded) -> Path:
    """``tmp_path/old.json.gz`` (100 bytes) and a prepared folder whose report says it was made
    from it (``recorded``: more report fields); returns the catalogue."""
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "manifest.json").write_text("{}")
    old = tmp_path / "old.json.gz"
    old.write_bytes(b"x" * 100)
    report = {"input_resolved": str(old), "input_bytes": 100, **recorded}
    (prepared / "report.json").write_text(json.dumps(report))
    return old


def test_train_sbatch_refuses_a_prepared_folder_made_from_another_catalogue(tmp_path):
    """A file-safety audit: with data/prepared-CONFIG already there, a new DATA (even one that
    does not exist) was ignored and the job trained, and resumed, on the old catalogue. The
    catalogue is told by its resolved path and size (a review: the path as typed refused the
    same file given relative, and missed a new catalogue written over the old path)."""
    env = _fake_slurm(tmp_path, "78")
    prepared = tmp_path / "prepared"
    old = _prepared_from(tmp_path, input="old.json.gz")

    def launch(data: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "launch/train_slurm.sbatch"],
            capture_output=True, text=True, cwd=REPO, env={**env, "DATA": str(data)},
        )  # fmt: skip

    new = tmp_path / "new.json.gz"
    run = launch(new)
    assert run.returncode != 0 and "node " not in run.stdout
    assert str(old) in run.stderr and str(new) in run.stderr and "PREPARED" in run.stderr
    same = launch(old)  # the same file, whatever path prepare was given
    assert same.returncode == 0 and "amazon-sft prepare" not in same.stdout, same.stderr
    old.write_bytes(b"y" * 150)  # another catalogue written over the same path
    assert launch(old).returncode != 0
    (prepared / "report.json").write_text(json.dumps({"input": "x.json.gz"}))  # before the check
    assert launch(new).returncode == 0


def test_eval_sbatch_reads_the_folder_train_sbatch_prepared(tmp_path):
    """The README's pair ``CONFIG=X sbatch train_slurm.sbatch`` then eval: eval's defaults named
    another prepared folder (data/prepared-mistral), so it found no manifest there; and two jobs
    whose ids share a port can be given another (MAIN_PORT)."""
    env = {k: v for k, v in _fake_slurm(tmp_path, "20001").items() if k != "PREPARED"}
    env |= {"CONFIG": "mistral-7b-full", "MAIN_PORT": "29555"}
    flags = {}
    for script in ("train_slurm.sbatch", "eval_slurm.sbatch"):
        proc = subprocess.run(
            ["bash", f"launch/{script}"], capture_output=True, text=True, cwd=REPO, env=env
        )
        assert proc.returncode == 0, proc.stderr
        flags[script] = proc.stdout
        assert {n["main_process_port"] for n in _nodes(proc.stdout)} == {"29555"}
    assert "data.path=data/prepared-mistral-7b-full " in flags["train_slurm.sbatch"]
    assert "out_dir=runs/mistral-7b-full " in flags["train_slurm.sbatch"]
    evaluated = flags["eval_slurm.sbatch"]
    assert "--data data/prepared-mistral-7b-full " in evaluated
    assert "--compare config:mistral-7b-full runs/mistral-7b-full " in evaluated


def test_train_local_dry_run_and_a_real_two_process_cpu_run(prepared, tiny_model_dir, tmp_path):
    venv_bin = str(Path(sys.executable).parent)  # accelerate, as an activated venv would have it
    env = {
        **os.environ,
        "PATH": f"{venv_bin}:{os.environ['PATH']}",
        "NGPU": "2",
        "CPU": "1",
        "CONFIG": "tiny",
        "OUT": str(tmp_path / "run"),
    }
    dry = subprocess.run(
        ["bash", "launch/train_local.sh"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**env, "DRY_RUN": "1"},
    )
    assert dry.returncode == 0 and "--num_processes 2" in dry.stdout and "--multi_gpu" in dry.stdout
    overrides = [
        o
        for o in train_overrides(prepared, tiny_model_dir, tmp_path / "run")
        if not o.startswith("out_dir")
    ]
    proc = subprocess.run(
        [
            "bash",
            "launch/train_local.sh",
            *overrides,
            "train.max_steps=2",
            "train.global_batch_size=2",
            "train.micro_batch_size=1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world 2" in proc.stderr
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]


@pytest.mark.parametrize("how", ["TERM", "USR1 to every process", "TERM before the workers start"])
def test_slurm_node_turns_sigterm_into_sigusr1_for_the_training_processes(tmp_path, how):
    """A fake `accelerate` whose child (the "training process") records SIGUSR1 and exits 0.
    A stop that came while the launcher was starting (no worker yet) was lost: training ran on
    to the time limit and the job was not requeued (seen under a real SLURM)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "got-usr1"
    worker = (
        f"import signal, sys, time, pathlib\n"
        f"signal.signal(signal.SIGUSR1, lambda *a: (pathlib.Path({str(marker)!r}).write_text('ok'), sys.exit(0)))\n"
        f"pathlib.Path({str(tmp_path / 'ready')!r}).write_text('1')\n"
        f"time.sleep(60)\nsys.exit(5)\n"
    )
    (tmp_path / "worker.py").write_text(worker)
    fake = bin_dir / "accelerate"
    slow_start = "sleep 1.5\n" if how.endswith("start") else ""
    fake.write_text(
        f"#!/usr/bin/env bash\n{slow_start}{sys.executable} {tmp_path / 'worker.py'} &\nwait $!\n"
    )
    fake.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_PROCID": "0",
        "MAIN_ADDR": "h",
        "MAIN_PORT": "1",
        "NNODES": "1",
        "GPUS_PER_NODE": "1",
        "ACCEL_CONFIG": "x.yaml",
        "ENTRY": "train.py",
    }
    proc = subprocess.Popen(["bash", "launch/slurm_node.sh", "--"], cwd=REPO, env=env)
    if how.endswith("start"):
        time.sleep(0.5)  # the launcher is starting: no training process yet
        proc.terminate()
    deadline = time.time() + 30
    while not (tmp_path / "ready").exists() and time.time() < deadline:
        time.sleep(0.05)
    if how.endswith("start"):
        pass
    elif how == "TERM":
        proc.terminate()  # scancel under proctrack/pgid: the task's process group only
    else:  # srun passes the batch script's USR1 on; under proctrack/linuxproc or cgroup
        # slurmstepd signals every process of the step, the launcher too (which USR1 killed)
        step = [
            proc.pid,
            *map(int, subprocess.check_output(["pgrep", "-P", str(proc.pid)]).split()),
        ]
        for pid in step:
            os.kill(pid, signal.SIGUSR1)
    assert proc.wait(timeout=30) == 0
    assert marker.read_text() == "ok"


def _fake_srun_job(
    tmp_path: Path,
    script: str,
    prepared: bool = True,
    manifest: Path | None = None,
    before_start: str = "",
    **extra_env: str,
) -> tuple[int, str, str]:
    """Run an sbatch script with a stand-in srun that behaves as SLURM 22.05's does: SIGTERM
    kills its tasks at once (SIGKILL, nothing saved), any other signal is passed on to them.
    Sends the pre-emption warning (USR1) to the batch shell; returns its exit code, what srun
    was sent and scontrol's calls."""
    env = {k: v for k, v in _fake_slurm(tmp_path, "77").items() if k != "DRY_RUN"}
    env.update(extra_env)
    got, calls, started = tmp_path / "srun-got", tmp_path / "scontrol-calls", tmp_path / "started"
    srun = tmp_path / "bin" / "srun"
    srun.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" > {tmp_path / "srun-args"}\n'
        f'echo "${{SRUN_CPUS_PER_TASK:-unset}}" > {tmp_path / "srun-cpus"}\n'
        f"trap 'echo TERM > {got}; exit 137' TERM\n"
        f"trap 'echo USR1 > {got}; exit 0' USR1\n"
        f"{before_start}\n"  # the step's work, done before the warning comes
        f"touch {started}\n"
        "for _ in $(seq 600); do sleep 0.1; done\n"
    )
    srun.chmod(0o755)
    Path(env["PREPARED"]).mkdir()
    if prepared:  # a real one's copy, where the script reads its rows
        text = manifest.read_text() if manifest else "{}"
        (Path(env["PREPARED"]) / "manifest.json").write_text(text)
    proc = subprocess.Popen(["bash", f"launch/{script}"], cwd=REPO, env=env)
    deadline = time.time() + 30
    while not started.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # srun's traps are set
    proc.send_signal(signal.SIGUSR1)  # --signal=B:USR1@90
    code = proc.wait(timeout=30)
    assert "--open-mode=append" in (tmp_path / "srun-args").read_text()  # a requeue appends
    return code, got.read_text().strip(), calls.read_text() if calls.exists() else ""


def test_the_pre_emption_warning_reaches_training_and_requeues(tmp_path):
    """The batch shell passed SLURM's warning on to srun as SIGTERM, which srun answers by
    killing the step: no checkpoint was saved (seen under a real SLURM 22.05). USR1 goes on as
    it is; eval, which has nothing to save, is stopped at once. Both requeue."""
    code, got, calls = _fake_srun_job(tmp_path, "train_slurm.sbatch")
    assert (code, got) == (0, "USR1") and "requeue 77" in calls
    text = (REPO / "launch" / "train_slurm.sbatch").read_text()
    assert "#SBATCH --open-mode=append" in text  # the batch log survives a requeue too


def test_the_pre_emption_warning_during_prepare_stops_it_and_requeues(tmp_path):
    """prepare's srun ran in the foreground, so bash held the warning until prepare ended,
    past the time limit: the job timed out instead of being requeued."""
    code, got, calls = _fake_srun_job(tmp_path, "train_slurm.sbatch", prepared=False)
    assert (code, got) == (0, "TERM") and "requeue 77" in calls


def test_requeues_stop_at_max_requeues(tmp_path):
    """Every warning requeued, with no limit (SLURM sets none for a requeue it is asked for):
    an eval or a prepare longer than the time limit started over for ever (a cluster user's
    review). At ``MAX_REQUEUES`` the job ends failed, saying why."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    code, _, calls = _fake_srun_job(tmp_path / "a", "eval_slurm.sbatch", SLURM_RESTART_COUNT="20")
    assert code == 1 and "requeue" not in calls
    code, _, calls = _fake_srun_job(
        tmp_path / "b", "eval_slurm.sbatch", SLURM_RESTART_COUNT="20", MAX_REQUEUES="21"
    )
    assert code == 0 and "requeue 77" in calls
    # training resumes from its checkpoint at each requeue: no limit unless one is given
    (tmp_path / "c").mkdir()
    code, got, calls = _fake_srun_job(
        tmp_path / "c", "train_slurm.sbatch", SLURM_RESTART_COUNT="50"
    )
    assert (code, got) == (0, "USR1") and "requeue 77" in calls


def test_training_requeues_stop_when_they_save_nothing_new(tmp_path):
    """Training has no requeue limit (it resumes), but a run whose start-up and first step
    outlast the time limit saves nothing and was requeued for ever (a review's finding): after
    MAX_STALLED_REQUEUES (3) requeues in a row with no new checkpoint, it is not."""
    for name, before, requeued in (("a", "0", True), ("b", "3", False)):
        (tmp_path / name / "logs").mkdir(parents=True)
        (tmp_path / name / "logs" / ".stalled-requeues-77").write_text(before)
        code, _, calls = _fake_srun_job(tmp_path / name, "train_slurm.sbatch", OUT=str(tmp_path / name / "run"))  # fmt: skip
        assert (code == 0 and "requeue 77" in calls) is requeued, (name, code, calls)
    assert (tmp_path / "a" / "logs" / ".stalled-requeues-77").read_text().strip() == "1"


def test_a_run_that_finished_during_the_warning_is_not_requeued(tmp_path):
    """A review: a warning that came while training saved its last step still requeued the
    job, which queued again and loaded the model on every node to log "already finished".
    A run whose final/ holds the last step of the config this job runs (CONFIG and EXTRA) ends
    the job; one stopped short of it, a final/ of fewer steps, or a finished run this job
    extends (its config.yaml, rewritten only after the model loads, still says the old last
    step: a review of the fix) is requeued."""
    for name, steps, last, requeued in (
        ("done", 60, 60, False),
        ("short", 40, 60, True),  # a final/ of an earlier, shorter run: max_steps raised
        ("none", None, 60, True),
        ("extended", 60, 120, True),
    ):
        run = tmp_path / name / "run"
        (run / "final").mkdir(parents=True)
        (run / "config.yaml").write_text("# comments first\ntrain:\n  max_steps: 60\n")
        if steps is not None:
            summary = {"steps": steps, "final_loss": 1.5, "tokens_seen": 9, "stopped_by": None}
            (run / "final" / "run_summary.json").write_text(json.dumps(summary))
        code, _, calls = _fake_srun_job(
            tmp_path / name,
            "train_slurm.sbatch",
            OUT=str(run),
            EXTRA=f"train.epochs=0 train.max_steps={last}",
        )
        assert code == 0 and ("requeue 77" in calls) is requeued, (name, calls)


def test_a_run_of_epochs_with_validation_rows_that_finished_is_not_requeued(prepared, tmp_path):
    """A hostile cluster user: a run of ``train.epochs`` with ``train.validation_rows`` (every
    shipped 7-8B config) that finished was requeued at the warning: the script counted the
    epochs' steps over all the prepared rows, training over the rows left after the held-back
    ones. The last step is now train's own (``bounds.last_step``)."""
    from amazon_sft.bounds import last_step
    from amazon_sft.config import load_run_config
    from amazon_sft.data.manifest import read_manifest

    rows = read_manifest(prepared).rows
    extra = "train.epochs=2 train.max_steps=0 train.global_batch_size=16 train.validation_rows=16"
    cfg = load_run_config("tiny", extra.split())
    steps = last_step(cfg, rows)
    assert steps < last_step(load_run_config("tiny", [*extra.split()[:-1]]), rows)
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    summary = {"steps": steps, "final_loss": 1.5, "tokens_seen": 9, "stopped_by": None}
    (run / "final" / "run_summary.json").write_text(json.dumps(summary))
    code, _, calls = _fake_srun_job(
        tmp_path, "train_slurm.sbatch", manifest=prepared / "manifest.json", OUT=str(run),
        CONFIG="tiny", EXTRA=extra,
    )  # fmt: skip
    assert code == 0 and "requeue" not in calls, calls


def test_the_nodes_take_their_gpu_count_and_cpus_from_the_job(tmp_path):
    """``GPUS_PER_NODE`` was 8 whatever ``--gres`` gave, and srun (SLURM 22.05 on) does not
    inherit ``--cpus-per-task``: each node's training ran on one core."""
    env = {**_fake_slurm(tmp_path, "4242"), "SLURM_GPUS_ON_NODE": "4", "SLURM_CPUS_PER_TASK": "32"}
    out = subprocess.run(["bash", "launch/train_slurm.sbatch"], capture_output=True, text=True,
                         cwd=REPO, env=env).stdout  # fmt: skip
    assert {n["num_processes"] for n in _nodes(out)} == {"8"}  # 2 nodes x 4
    assert {int(n["main_process_port"]) for n in _nodes(out)} < set(range(10000, 30000)), out
    _fake_srun_job(tmp_path, "train_slurm.sbatch", SLURM_CPUS_PER_TASK="32")
    assert (tmp_path / "srun-cpus").read_text().strip() == "32"  # what srun saw


def test_the_pre_emption_warning_stops_eval_and_requeues(tmp_path):
    code, got, calls = _fake_srun_job(tmp_path, "eval_slurm.sbatch")
    assert (code, got) == (0, "TERM") and "requeue 77" in calls


def test_the_log_folder_sbatch_writes_into_exists_in_a_clone():
    """``#SBATCH --output=logs/...`` is opened by SLURM before the script runs: without the
    folder the job failed at launch with no output at all."""
    tracked = subprocess.run(
        ["git", "ls-files", "logs"], capture_output=True, text=True, cwd=REPO
    ).stdout
    assert "logs/.gitkeep" in tracked


def _wait_for_two_steps(run: Path, proc, err: Path, timeout_s: float = 180) -> None:
    """Until the run logged two steps; a failure showing ``err`` (the launcher's stderr) if
    its launcher ended first or ``timeout_s`` passed."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        metrics = run / "metrics.jsonl"
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            return
        time.sleep(0.2)
    pytest.fail(f"no two steps logged (exit {proc.poll()}):\n{err.read_text()[-3000:]}")


def _stopped(proc, err: Path, timeout_s: float = 120) -> int:
    """The launcher's exit code once it ends; past ``timeout_s``, a failure showing its stderr
    and the processes still running (a one-off hang in a full run left nothing to read: the
    stderr was a pipe read only after the wait)."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        ps = ["ps", "-eo", "pid,ppid,pgid,stat,etimes,wchan:20,args"]
        tree = subprocess.run(ps, capture_output=True, text=True).stdout
        pytest.fail(
            f"still running {timeout_s} s after the stop:\n{err.read_text()[-3000:]}\n{tree}"
        )


def test_train_local_one_cpu_process_from_anywhere_and_a_sigterm_reaches_training(
    prepared, tiny_model_dir, tmp_path
):
    """``CPU=1`` with one process died (``--multi_gpu`` wants two); relative OUT and DATA were
    read from the repository, not where the user stands; and a scheduler's SIGTERM killed only
    accelerate's one-process launcher, leaving training to run on unwatched. Now the signal
    reaches training, which checkpoints and exits 0."""
    import signal

    (tmp_path / "data").symlink_to(prepared)
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "NGPU": "1", "CPU": "1"}
    env.update(CONFIG="tiny", OUT="run", DATA="data")
    overrides = [
        o
        for o in train_overrides(prepared, tiny_model_dir, tmp_path / "unused")
        if not o.startswith(("out_dir", "data.path"))
    ]
    script = str(REPO / "launch" / "train_local.sh")
    dry = subprocess.run(
        ["bash", script], capture_output=True, text=True, cwd=tmp_path, env={**env, "DRY_RUN": "1"}
    )
    assert (
        f"out_dir={tmp_path / 'run'}" in dry.stdout
        and f"data.path={tmp_path / 'data'}" in dry.stdout
    )
    run = tmp_path / "run"
    cmd = ["bash", script, *overrides, "train.max_steps=100000", "checkpoint.every_steps=100000"]
    err = tmp_path / "stderr.log"
    with err.open("w") as err_file:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=err_file, text=True)
    try:
        _wait_for_two_steps(run, proc, err)
        proc.send_signal(signal.SIGTERM)  # as a scheduler's preemption does, to the script
        rc = _stopped(proc, err)
        assert rc == 0, err.read_text()[-3000:]
        assert list((run / "checkpoints").glob("step-*")), err.read_text()[-3000:]
    finally:
        proc.kill()
        left = subprocess.run(["pgrep", "-f", f"out_dir={run}"], capture_output=True, text=True)
        subprocess.run(["pkill", "-9", "-f", f"out_dir={run}"])
    assert not left.stdout.strip(), "training went on after the script was stopped"


@pytest.mark.parametrize(("processes", "how"), [("1", "ctrl-c"), ("2", "SIGUSR1"), ("2", "ctrl-c")])
def test_train_local_stops_with_a_checkpoint(prepared, tmp_path, processes, how):
    """One process, Ctrl-C (the whole foreground group): training got the terminal's SIGINT and
    the script's forwarded one, read as a second Ctrl-C (stop at once), so nothing was saved.
    Two processes, Ctrl-C: torch's agent caught the terminal's SIGINT itself and exited 130 (a
    review's finding); the launcher runs in a session of its own now.
    Two processes, SIGUSR1 to the script (a scheduler's warning): the script had exec'd torch's
    agent, which died of it and left its workers training, orphaned."""
    import signal

    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "NGPU": processes, "CPU": "1"}
    env.update(CONFIG="tiny", OUT=str(tmp_path / "run"), DATA=str(prepared))
    run = tmp_path / "run"
    cmd = ["bash", str(REPO / "launch" / "train_local.sh"), "train.trackers=[]",
           "train.max_steps=100000", "checkpoint.every_steps=100000",
           f"train.global_batch_size={processes}", "train.micro_batch_size=1"]  # fmt: skip
    err = tmp_path / "stderr.log"
    with err.open("w") as err_file:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stderr=err_file, text=True, start_new_session=True
        )
    try:
        _wait_for_two_steps(run, proc, err)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        else:
            proc.send_signal(signal.SIGUSR1)
        rc = _stopped(proc, err)
        saved = list((run / "checkpoints").glob("step-*/COMPLETE"))
        assert rc == 0 and saved, err.read_text()[-3000:]
    finally:
        left = subprocess.run(["pgrep", "-f", f"out_dir={run}"], capture_output=True, text=True)
        subprocess.run(["pkill", "-9", "-f", f"out_dir={run}"])
    assert not left.stdout.strip(), "training went on after the script stopped"


def _train_local_with_fake_accelerate(bin_dir: Path, body: str) -> dict:
    """The environment for train_local.sh with an ``accelerate`` in ``bin_dir`` that runs the
    bash ``body`` (it starts the stand-in training process)."""
    fake = bin_dir / "accelerate"
    fake.write_text(f"#!/usr/bin/env bash\n{body}\n")
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "NGPU": "1", "PORT": "1"}


def test_train_local_keeps_a_stop_that_comes_before_the_training_processes(tmp_path):
    """train_local.sh passed a stop on with ``pkill -P launcher`` at the moment it came: one that
    came while accelerate was starting (no training process yet) found nobody, and training ran
    on unwatched (a cluster user's review; slurm_node.sh had been fixed for it). The stop is kept
    and given to the training process once it catches it (launch/forward_stop.sh)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "got-term"
    (tmp_path / "worker.py").write_text(
        "import signal, sys, time, pathlib\n"
        f"stop = lambda *a: (pathlib.Path({str(marker)!r}).write_text('ok'), sys.exit(0))\n"
        "for s in (signal.SIGTERM, signal.SIGUSR1): signal.signal(s, stop)  # as stop_signal\n"
        "time.sleep(60)\nsys.exit(5)\n"
    )
    worker = f"{sys.executable} {tmp_path / 'worker.py'}"
    env = _train_local_with_fake_accelerate(bin_dir, f"sleep 1.5\n{worker} &\nwait $!")
    proc = subprocess.Popen(
        ["bash", str(REPO / "launch" / "train_local.sh")], cwd=tmp_path, env=env
    )
    time.sleep(0.5)  # accelerate is starting: no training process yet
    proc.terminate()
    assert proc.wait(timeout=30) == 0
    assert marker.read_text() == "ok"


@pytest.mark.parametrize("how", ["ctrl-c while importing", "hang-up"])
def test_train_local_waits_for_the_training_handler_and_stops_on_a_hang_up(tmp_path, how):
    """A Ctrl-C was forwarded as soon as the training process caught SIGINT, which Python does
    from its first line: one pressed while it was still importing raised KeyboardInterrupt,
    no checkpoint (a review's finding). The stop now waits for the training's own handler (the
    only one that catches SIGUSR1). And a hang-up (the terminal closed) left training running:
    the launcher, in its own session, never got it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "got"
    (tmp_path / "worker.py").write_text(
        "import signal, sys, time, pathlib\n"
        f"pathlib.Path({str(tmp_path / 'started')!r}).write_text('1')\n"
        "time.sleep(1.5)  # the imports, before amazon_sft.stop_signal.install()\n"
        f"def stop(signum, frame): pathlib.Path({str(marker)!r}).write_text(signal.Signals(signum).name); sys.exit(0)\n"
        "for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT): signal.signal(s, stop)\n"
        "time.sleep(60)\nsys.exit(5)\n"
    )
    # in the foreground, as accelerate's Popen: the worker inherits SIGINT at its default, so
    # Python catches it from its first line
    env = _train_local_with_fake_accelerate(bin_dir, f"{sys.executable} {tmp_path / 'worker.py'}")
    proc = subprocess.Popen(
        ["bash", str(REPO / "launch" / "train_local.sh")],
        cwd=tmp_path,
        env=env,
        start_new_session=True,
        # a hang-up as a terminal's: under `nohup` (a CI started so) SIGHUP is inherited
        # ignored, and a shell cannot trap a signal ignored at its start (the stop was lost)
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while not (tmp_path / "started").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # the worker is importing: Python's own SIGINT handler only
    if how == "hang-up":
        proc.send_signal(signal.SIGHUP)
    else:
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    # a stop never forwarded ends as the worker's own exit 5 after 60 s, not as this timeout
    assert proc.wait(timeout=120) == 0
    assert marker.read_text() == ("SIGTERM" if how == "hang-up" else "SIGINT")


def _wait_for(path: Path, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while not path.exists() and time.time() < deadline:
        time.sleep(0.05)


def _train_local_running(tmp_path: Path, on_stop: str, after: str) -> subprocess.Popen:
    """train_local.sh with a stand-in training process that runs ``on_stop`` (Python, ``name``
    the signal's) on a stop signal and then ``after``, started and past its handlers."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "worker.py").write_text(
        "import signal, sys, time, pathlib\n"
        f"def stop(signum, frame):\n    name = signal.Signals(signum).name\n    {on_stop}\n"
        "for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT): signal.signal(s, stop)\n"
        f"pathlib.Path({str(tmp_path / 'started')!r}).write_text('1')\n{after}\n"
    )
    env = _train_local_with_fake_accelerate(bin_dir, f"{sys.executable} {tmp_path / 'worker.py'}")
    proc = subprocess.Popen(
        ["bash", str(REPO / "launch" / "train_local.sh")], cwd=tmp_path, env=env
    )
    _wait_for(tmp_path / "started", 30)
    return proc


def test_train_local_killed_outright_still_stops_its_training(tmp_path):
    """The launcher runs in a session of its own (so Ctrl-C reaches the script only): when the
    script itself was killed outright (SIGKILL, the OOM killer), nothing was left to pass a stop
    on, and training ran on unwatched, holding its GPUs and its run folder's lock. A watchdog,
    in a session of its own too, gives the training processes the stop once the script is gone."""
    marker = tmp_path / "got"
    on_stop = f"pathlib.Path({str(marker)!r}).write_text(name); sys.exit(0)"
    proc = _train_local_running(tmp_path, on_stop, "time.sleep(60)\nsys.exit(5)")
    try:
        proc.kill()
        proc.wait(timeout=10)
        _wait_for(marker, 20)
        assert marker.exists() and marker.read_text() == "SIGTERM", "training ran on unwatched"
    finally:
        subprocess.run(["pkill", "-9", "-f", str(tmp_path / "worker.py")])


def test_train_local_killed_while_stopping_sends_no_second_stop(tmp_path):
    """A SIGTERM to the script, then a SIGKILL while training saves (`timeout -k`, systemd and
    docker escalate so): its watchdog sent the stop again (a review), which during Python's
    shutdown kills a process that had saved. The stops the script sent count as sent."""
    got = tmp_path / "got"
    on_stop = f"open({str(got)!r}, 'a').write(name + '\\n')"
    after = (
        f"log = pathlib.Path({str(got)!r})\nend = time.time() + 60\n"
        "while time.time() < end and not log.exists(): time.sleep(0.05)\n"
        "time.sleep(4)  # the save"
    )
    proc = _train_local_running(tmp_path, on_stop, after)
    try:
        proc.terminate()
        _wait_for(got, 20)
        proc.kill()
        proc.wait(timeout=10)
        time.sleep(3)  # the watchdog polls once a second
        assert got.read_text().split() == ["SIGTERM"]
    finally:
        subprocess.run(["pkill", "-9", "-f", str(tmp_path / "worker.py")])


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_run_train_local_refuses_ends_on_its_one_line_error(tmp_path, processes):
    """A new user's walkthrough: a refused run (here an unprepared folder) printed its one-line
    error, then accelerate's ~15-line traceback ending in CalledProcessError, the last thing the
    user read. The launcher runs quiet: the error is the last line."""
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "NGPU": processes, "CPU": "1",
        "CONFIG": "tiny", "OUT": str(tmp_path / "run"), "DATA": str(tmp_path / "nothing"),
    }  # fmt: skip
    proc = subprocess.run(
        ["bash", "launch/train_local.sh"], capture_output=True, text=True, cwd=REPO, env=env,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "CalledProcessError" not in proc.stderr, proc.stderr
    assert "manifest.json" in proc.stderr and "amazon-sft prepare" in proc.stderr


def test_train_local_runs_a_yaml_config_in_its_own_out_dir(tmp_path):
    """``CONFIG=exp_a/config.yaml`` ran in ``runs/config`` whatever the YAML's ``out_dir``: two
    experiments' ``config.yaml`` shared one folder, and ``resume=auto`` went on from the other's
    checkpoint (an outside review). The YAML's ``out_dir`` is used, read from where you stand."""
    venv_bin = str(Path(sys.executable).parent)
    outs = []
    for name in ("exp_a", "exp_b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(f"out_dir: runs/{name}-lr\n")
        env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "DRY_RUN": "1"}
        env.update(CONFIG=f"{name}/config.yaml", CPU="1", NGPU="1")
        env.pop("OUT", None)
        dry = subprocess.run(
            ["bash", str(REPO / "launch" / "train_local.sh")],
            capture_output=True, text=True, cwd=tmp_path, env=env,
        )  # fmt: skip
        assert dry.returncode == 0, dry.stderr
        outs.append(re.search(r"out_dir=(\S+)", dry.stdout).group(1))
    assert outs == [str(tmp_path / "runs" / "exp_a-lr"), str(tmp_path / "runs" / "exp_b-lr")]
    (tmp_path / "exp 1.yaml").write_text("out_dir: ~/runs/exp1\n")  # a review: a folder named ~
    env.update(CONFIG="exp 1.yaml", HOME=str(tmp_path / "home"))
    dry = subprocess.run(
        ["bash", str(REPO / "launch" / "train_local.sh")],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert f"out_dir={tmp_path / 'home' / 'runs' / 'exp1'}" in dry.stdout, dry.stdout + dry.stderr


def test_train_sbatch_hands_its_overrides_to_prepare_too(tmp_path):
    """``EXTRA="model.path=/models/m data.grounded_fraction=0.5"`` reached training only: prepare
    read the hub tokenizer and its own grounded fraction, and training took the data's value
    (an outside review). Prepare gets the same overrides."""
    env = {
        **_fake_slurm(tmp_path, "78"),
        "EXTRA": "model.path=/models/m data.grounded_fraction=0.5",
    }
    proc = subprocess.run(
        ["bash", "launch/train_slurm.sbatch"], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert proc.returncode == 0, proc.stderr
    prepare = next(line for line in proc.stdout.splitlines() if "amazon-sft prepare" in line)
    assert "model.path=/models/m data.grounded_fraction=0.5" in prepare, prepare


def _train_sbatch(env: dict, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "launch/train_slurm.sbatch"],
        capture_output=True, text=True, cwd=REPO, env={**env, **extra},
    )  # fmt: skip


@pytest.mark.parametrize(
    "word", ["resume=step-5", "overwrite=true", "out_dir=/elsewhere", "data.path=/elsewhere"]
)
def test_train_sbatch_refuses_extra_settings_a_requeue_would_get_wrong(tmp_path, word):
    """An outside review: ``EXTRA=resume=step-N`` sent the run back to step N at every requeue
    (newer checkpoints and final/ set aside each time); ``out_dir=`` in EXTRA trained elsewhere
    while the stall check watched OUT and stopped requeuing a run that saved every time;
    ``overwrite=true`` passed the world check, then every rank refused it with resume=auto."""
    proc = _train_sbatch(_fake_slurm(tmp_path, "91"), EXTRA=f"train.lr=1e-4 {word}")
    assert proc.returncode != 0 and "node " not in proc.stdout and "prepare" not in proc.stdout
    assert word.split("=")[0] in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_train_sbatch_refuses_a_one_process_accelerate_config_for_a_multi_gpu_job(tmp_path):
    """``ACCEL=single_gpu`` (distributed_type NO) on a 2-node job: accelerate started one
    lone process per node, each training alone into the same out_dir; the world check said
    16 processes could run it."""
    proc = _train_sbatch(_fake_slurm(tmp_path, "92"), ACCEL="single_gpu")
    assert proc.returncode != 0 and "node " not in proc.stdout, proc.stdout
    assert "single_gpu" in proc.stderr and "16" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_train_sbatch_names_a_yaml_config_by_its_file_and_reads_its_out_dir_and_lora(tmp_path):
    """``CONFIG=/path/exp.yaml`` gave ``out_dir=runs//path/exp.yaml``, ignored the YAML's own
    out_dir, and chose ZeRO-3 for a LoRA config because its path lacked "lora"."""
    config = tmp_path / "exp.yaml"
    config.write_text(
        f"lora:\n  enabled: true\ntrain:\n  global_batch_size: 16\nout_dir: {tmp_path / 'myrun'}\n"
    )
    env = {k: v for k, v in _fake_slurm(tmp_path, "93").items() if k != "PREPARED"}
    proc = _train_sbatch(env, CONFIG=str(config))
    assert proc.returncode == 0, proc.stderr
    nodes = [line for line in proc.stdout.splitlines() if line.startswith("node ")]
    assert nodes and all(f"out_dir={tmp_path / 'myrun'}" in line for line in nodes), nodes
    assert all("zero2.yaml" in line for line in nodes), nodes
    assert "--out data/prepared-exp " in proc.stdout, proc.stdout


def test_train_sbatch_trains_a_copied_prepared_folder_when_its_catalogue_is_not_here(tmp_path):
    """Prepared before reserving GPUs and copied over (the documented advice): with the
    catalogue not on the cluster, the job refused the folder and suggested preparing again.
    DATA left at its default is not asked for; a DATA given that is not there is still refused
    (test_train_sbatch_refuses_a_prepared_folder_made_from_another_catalogue)."""
    env = _fake_slurm(tmp_path, "94")
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "manifest.json").write_text("{}")
    report = {"input_resolved": "/laptop/trn.json.gz", "input_bytes": 100}
    (prepared / "report.json").write_text(json.dumps(report))
    assert not (REPO / "data" / "trn.json.gz").exists()  # the default DATA, not on this cluster
    proc = _train_sbatch({k: v for k, v in env.items() if k != "DATA"})
    assert proc.returncode == 0, proc.stderr
    assert "node " in proc.stdout and "/laptop/trn.json.gz" in proc.stderr


def test_eval_sbatch_evaluates_the_folder_train_sbatch_trained_a_yaml_config_into(tmp_path):
    """A review: for a YAML config with its own out_dir, train_slurm.sbatch trained there while
    eval_slurm.sbatch evaluated runs/NAME (an older run there, silently, or no weights)."""
    config = tmp_path / "exp.yaml"
    config.write_text(
        f"lora:\n  enabled: true\ntrain:\n  global_batch_size: 16\nout_dir: {tmp_path / 'myrun'}\n"
    )
    env = {k: v for k, v in _fake_slurm(tmp_path, "95").items() if k != "PREPARED"}
    proc = subprocess.run(
        ["bash", "launch/eval_slurm.sbatch"],
        capture_output=True, text=True, cwd=REPO, env={**env, "CONFIG": str(config)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    nodes = [line for line in proc.stdout.splitlines() if line.startswith("node ")]
    assert nodes and all(f" {tmp_path / 'myrun'} " in line for line in nodes), nodes


def test_train_sbatch_takes_a_byte_identical_copy_of_the_catalogue_as_the_same(tmp_path):
    """An outside review: the check that PREPARED was made from DATA compared the resolved path
    and size, so a byte-identical copy at another path (a cluster's copy) was refused. With the
    input's quick digest recorded, content decides: the copy trains, another same-size file not."""
    from amazon_sft.data.shards import quick_digest

    env = _fake_slurm(tmp_path, "96")
    old = _prepared_from(tmp_path)
    report = json.loads((tmp_path / "prepared" / "report.json").read_text())
    report["input_digest"] = quick_digest(old)
    (tmp_path / "prepared" / "report.json").write_text(json.dumps(report))
    copy = tmp_path / "cluster copy" / "trn.json.gz"
    copy.parent.mkdir()
    copy.write_bytes(old.read_bytes())
    ok = _train_sbatch(env, DATA=str(copy))
    assert ok.returncode == 0 and "node " in ok.stdout, ok.stderr
    other = tmp_path / "other.json.gz"
    other.write_bytes(b"y" * 100)
    refused = _train_sbatch(env, DATA=str(other))
    assert refused.returncode != 0 and "node " not in refused.stdout
    assert str(old) in refused.stderr


def test_prepare_records_its_inputs_quick_digest(prepared, catalogue):
    from amazon_sft.data.shards import quick_digest

    report = json.loads((prepared / "report.json").read_text())
    assert report["input_digest"] == quick_digest(catalogue)


def test_train_local_reads_relative_paths_from_where_you_stand_as_train_does(tmp_path):
    """train_local.sh works in the repo (its accelerate configs name ds_configs/ from there),
    and passed ``data.path=prep-x`` and a YAML's ``data.path: prep-x`` on as they were: training
    read the repo's ``prep-x``, not the one where the user stood (an outside review; a folder of
    that name in both places trained on the wrong data, silently). They reach training whole."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen = tmp_path / "args.txt"
    env = _train_local_with_fake_accelerate(bin_dir, f"printf '%s\\n' \"$@\" > {seen}")
    env["CONFIG"] = "exp.yaml"
    (tmp_path / "prep-x").mkdir()
    (tmp_path / "model-x").mkdir()
    (tmp_path / "exp.yaml").write_text(
        "out_dir: runs/x\ndata:\n  path: prep-x\nmodel:\n  path: model-x\nresume: ck/step-9\n"
    )
    (tmp_path / "ck" / "step-9").mkdir(parents=True)  # a checkpoint folder here: read from here
    run = ["bash", str(REPO / "launch" / "train_local.sh")]
    proc = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    args = seen.read_text().splitlines()
    assert (
        f"data.path={tmp_path / 'prep-x'}" in args and f"model.path={tmp_path / 'model-x'}" in args
    )
    assert f"resume={tmp_path / 'ck' / 'step-9'}" in args, args
    given = ["data.path=prep-x", "out_dir=o", "resume=auto", "model.path=org/hub-name"]
    proc = subprocess.run([*run, *given], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    args = seen.read_text().splitlines()
    assert args[-4:] == [
        f"data.path={tmp_path / 'prep-x'}",
        f"out_dir={tmp_path / 'o'}",
        "resume=auto",
        "model.path=org/hub-name",  # not a folder here: a name, left as it is
    ]
    # resume=step-N names out_dir's checkpoint, as train reads it (a review of the change:
    # made whole, it named a folder that does not exist); a named config's data.path is whole
    env["CONFIG"] = "tiny"
    given = ["resume=step-3", "resume=checkpoints/step-00000003"]
    proc = subprocess.run([*run, *given], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    args = seen.read_text().splitlines()
    assert args[-2:] == given, args
    assert f"data.path={tmp_path / 'runs' / 'tiny-data'}" in args, args
    # a docs review: data.templates, model.tokenizer and a DeepSpeed JSON named here were read
    # from the repo ("does not exist", or the repo's file of that name); names stay names
    (tmp_path / "my_t.yaml").write_text("questions: {en: ['{title}?']}\n")
    (tmp_path / "tok").mkdir()
    (tmp_path / "ds.json").write_text("{}")
    (tmp_path / "exp.yaml").write_text("data:\n  templates: my_t.yaml\ndeepspeed: ds.json\n")
    env["CONFIG"] = "exp.yaml"
    given = ["model.tokenizer=tok", "model.tokenizer=builtin:tiny"]
    proc = subprocess.run([*run, *given], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    args = seen.read_text().splitlines()
    assert f"data.templates={tmp_path / 'my_t.yaml'}" in args, args
    assert f"deepspeed={tmp_path / 'ds.json'}" in args, args
    assert args[-2:] == [f"model.tokenizer={tmp_path / 'tok'}", *given[1:]], args
    # a YAML's path given again as an argument is passed once: the argument's
    proc = subprocess.run(
        [*run, "data.templates=builtin"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    args = seen.read_text().splitlines()
    assert [a for a in args if a.startswith("data.templates=")] == ["data.templates=builtin"]


def test_train_sbatch_reads_its_settings_past_the_config_loaders_warnings(tmp_path):
    """The loader's warning (a YAML's ``model.trust_remote_code: true`` is ignored) came first in
    what the script read its ZeRO stage and out_dir from: it looked for
    ``launch/accelerate//path/exp.yaml.yaml`` (an outside review). The warning is shown, the
    settings read whole."""
    config = tmp_path / "exp.yaml"
    config.write_text(
        "model:\n  trust_remote_code: true\nlora:\n  enabled: true\ntrain:\n"
        f"  global_batch_size: 16\nout_dir: {tmp_path / 'myrun'}\n"
    )
    env = {k: v for k, v in _fake_slurm(tmp_path, "94").items() if k != "PREPARED"}
    proc = _train_sbatch(env, CONFIG=str(config))
    assert proc.returncode == 0, proc.stderr
    nodes = [line for line in proc.stdout.splitlines() if line.startswith("node ")]
    assert nodes and all(f"out_dir={tmp_path / 'myrun'} " in line for line in nodes), nodes
    assert all("launch/accelerate/zero2.yaml" in line for line in nodes), nodes
    assert "trust_remote_code" in proc.stderr


def test_eval_sbatch_stops_at_once_when_the_prepared_folder_has_no_manifest(tmp_path):
    """Nothing in the eval job prepares data, yet every node waited MANIFEST_TIMEOUT_S (30 min
    by default) for a mistyped PREPARED's manifest, then blamed data preparation (an outside
    review). The batch shell stops at once and says what to run."""
    env = {k: v for k, v in _fake_slurm(tmp_path, "78").items() if k != "DRY_RUN"}
    env |= {"CONFIG": "tiny", "PREPARED": str(tmp_path / "typo-prep"), "GPUS_PER_NODE": "1"}
    srun = tmp_path / "bin" / "srun"
    srun.write_text(f"#!/usr/bin/env bash\ntouch {tmp_path / 'srun-ran'}\nsleep 30\n")
    srun.chmod(0o755)
    proc = subprocess.run(
        ["bash", "launch/eval_slurm.sbatch"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0 and not (tmp_path / "srun-ran").exists()
    assert "typo-prep" in proc.stderr and "amazon-sft prepare" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("visible, processes", [("0,1", "2"), ("GPU-a1b2", "1"), ("", "1")])
def test_train_local_counts_the_gpus_cuda_visible_devices_leaves(tmp_path, visible, processes):
    """NGPU came from ``nvidia-smi -L``, which lists every GPU of the box: with
    CUDA_VISIBLE_DEVICES=0,1 on an 8-GPU box (a shared machine, srun without device cgroups)
    it started 8 processes for 2 GPUs (an outside review)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text('#!/usr/bin/env bash\nfor i in 0 1 2 3 4 5 6 7; do echo "GPU $i: H100"; done\n')
    smi.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env |= {"CUDA_VISIBLE_DEVICES": visible, "CONFIG": "tiny", "DRY_RUN": "1", "PORT": "1"}
    env.pop("NGPU", None)
    proc = subprocess.run(
        ["bash", str(REPO / "launch" / "train_local.sh")],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"--num_processes {processes} " in proc.stdout, proc.stdout


@pytest.mark.parametrize("script", ["train_slurm.sbatch", "eval_slurm.sbatch"])
def test_a_slurm_script_submitted_outside_the_repo_says_where_to_submit_from(script, tmp_path):
    """Submitted from another folder, the job failed on a raw bash error about
    launch/slurm_common.sh, or a ModuleNotFoundError (a new user): one line saying where to
    submit from."""
    env = {**os.environ, "DRY_RUN": "1", "SLURM_SUBMIT_DIR": str(tmp_path), "PREPARED": "p"}
    proc = subprocess.run(
        ["bash", str(REPO / "launch" / script)], capture_output=True, text=True, cwd=tmp_path,
        env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "repository" in proc.stderr and str(tmp_path) in proc.stderr, proc.stderr


def test_a_passing_test_run_leaves_no_temporary_folders():
    """Each run kept its ~1.3 GB of test folders under /tmp/pytest-of-<user> (pytest keeps the
    last three runs): with scratch work beside it, the disk a CI run installs on filled up and
    the install failed (ENOSPC). Folders are kept only for tests that fail."""
    import tomllib

    pytest_settings = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]
    assert pytest_settings["ini_options"].get("tmp_path_retention_policy") == "failed"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (b"out_dir: runs/caf\xe9\n", "utf-8"),
        (b"out_dir: 0630\n", "out_dir"),  # YAML 1.1 reads it as the number 408
        (b"out_dir: [a, b]\n", "out_dir"),
        (b"out_dir: a\n\tdata: b\n", "cannot read"),
    ],
)
@pytest.mark.parametrize("script", ["train_local.sh", "eval_slurm.sbatch"])
def test_a_launch_script_reads_a_bad_config_yaml_in_one_line(script, text, needle, tmp_path):
    """A config YAML that is not UTF-8, or whose out_dir is a number, was a Python traceback,
    then "activate the venv" with PyYAML installed (an outside review)."""
    config = tmp_path / "exp.yaml"
    config.write_bytes(text)
    env = {**_fake_slurm(tmp_path, "79"), "CONFIG": str(config), "CPU": "1", "NGPU": "1"}
    env.pop("OUT", None)
    env.pop("TUNED", None)
    proc = subprocess.run(
        ["bash", f"launch/{script}"], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert needle in proc.stderr.lower() and str(config) in proc.stderr, proc.stderr
    assert "activate the venv" not in proc.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [("NGPU", "0"), ("NGPU", "-2"), ("NGPU", "abc"), ("ACCEL", "nope"), ("PORT", "http")],
)
def test_train_local_refuses_a_bad_launch_variable_in_one_line(variable, value, tmp_path):
    """``NGPU=0 CPU=1`` ended in accelerate's "at least 2 processes for --multi_gpu",
    ``NGPU=0`` alone trained with 1 process, ``ACCEL=nope`` was a FileNotFoundError traceback,
    each then blamed "a process killed by a signal"; the dry run printed them as valid."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env |= {"CONFIG": "tiny", "CPU": "1", "NGPU": "2", "OUT": str(tmp_path / "run")}
    env |= {variable: value}
    for dry in ("1", "0"):
        proc = subprocess.run(
            ["bash", "launch/train_local.sh", "train.max_steps=1"],
            capture_output=True, text=True, cwd=REPO, env={**env, "DRY_RUN": dry}, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
        assert f"{variable}={value}" in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "processes, given, said",
    [
        ("1", "train.lr=-1", "train.lr must be > 0"),
        ("2", "train.lr=-1", "train.lr must be > 0"),
        ("1", "--bogus-flag", "--bogus-flag"),  # the parser's refusal too (a review)
    ],
)
def test_train_local_ends_a_refused_config_on_its_one_line_and_exit_2(
    processes, given, said, tmp_path
):
    """An outside trial: ``train.lr=-1`` through train_local.sh ended with exit 1, train's
    one line buried under accelerate's defaults warning (one process) or torch's failure
    report (two), then "its error is above". The refusal is the last line, exit 2, as
    ``amazon-sft train`` says it."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env |= {"CONFIG": "tiny", "CPU": "1", "NGPU": processes, "OUT": str(tmp_path / "run")}
    proc = subprocess.run(
        ["bash", "launch/train_local.sh", given],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert said in last and "train_local.sh: amazon-sft train" in last, proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_train_local_dry_run_prints_a_command_that_can_be_pasted_back(tmp_path):
    """A path with a space was printed bare: pasted back, it was two arguments."""
    import shlex

    out = tmp_path / "my runs" / "exp 1"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env |= {"CONFIG": "tiny", "CPU": "1", "NGPU": "2", "OUT": str(out), "DRY_RUN": "1"}
    proc = subprocess.run(
        ["bash", "launch/train_local.sh", "train.lr=1e-4"],
        capture_output=True, text=True, cwd=REPO, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    words = shlex.split(proc.stdout)
    assert f"out_dir={out}" in words and words[-1] == "train.lr=1e-4", proc.stdout
    # pasted anywhere, it runs where the script runs, with the environment it sets (a review:
    # CPU=1's ACCELERATE_USE_CPU was left out, and the repo's paths were relative)
    assert words[:3] == ["cd", str(REPO), "&&"] and "ACCELERATE_USE_CPU=true" in words, words


def test_train_local_dry_run_checks_the_config_and_gives_each_path_once(tmp_path):
    """An outside trial: ``DRY_RUN=1`` printed ``train.lr=-1`` (and a batch no world of NGPU
    processes splits) as a good command, exit 0; the real run refused it. And a YAML's
    ``data.path`` was printed beside ``DATA``'s (the last won). The dry run checks the config
    for this launch, as the SLURM scripts' dry runs do, and gives each path once."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env |= {"CONFIG": "tiny", "CPU": "1", "NGPU": "2", "DRY_RUN": "1", "PORT": "1"}
    refused = subprocess.run(
        ["bash", "launch/train_local.sh", "train.lr=-1"],
        capture_output=True, text=True, cwd=REPO, env=env,
    )  # fmt: skip
    assert refused.returncode == 2 and not refused.stdout, refused.stdout + refused.stderr
    assert "train.lr must be > 0" in refused.stderr.strip().splitlines()[-1], refused.stderr
    (tmp_path / "mine.yaml").write_text("data:\n  path: from_yaml\nmodel:\n  path: builtin\n")
    env |= {"CONFIG": "mine.yaml", "DATA": "from_data"}
    dry = subprocess.run(
        ["bash", str(REPO / "launch" / "train_local.sh"), "model.path=builtin"],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("data.path=") == 1 and "from_data" in dry.stdout, dry.stdout
    assert dry.stdout.count("model.path=") == 1, dry.stdout
    given = subprocess.run(  # DATA and an argument: the argument, once (a review)
        ["bash", str(REPO / "launch" / "train_local.sh"), "data.path=from_arg"],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert given.stdout.count("data.path=") == 1 and "from_arg" in given.stdout, given.stdout


@pytest.mark.parametrize("variable", ["NGPU", "PORT"])
def test_train_local_refuses_a_number_too_long_for_the_shell(variable, tmp_path):
    """``PORT=99999999999999999999`` passed ``[ "$PORT" -gt 65535 ]`` (bash says "integer
    expression expected", false) and reached accelerate's OverflowError traceback."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env |= {"CONFIG": "tiny", "CPU": "1", "NGPU": "2", "DRY_RUN": "1", variable: "9" * 20}
    proc = subprocess.run(
        ["bash", "launch/train_local.sh"], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert proc.returncode == 2 and f"{variable}=" in proc.stderr, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def _sbatch_with_srun(
    tmp_path: Path,
    job_id: str,
    srun_body: str,
    manifest: bool = True,
    script: str = "train_slurm.sbatch",
    **extra_env: str,
) -> subprocess.CompletedProcess:
    """``script`` (not a dry run) with a stand-in srun running ``srun_body`` (bash; its SLURM
    ``--output`` file, with %x %j %n filled in, is ``$out``), PREPARED with a manifest or
    without one."""
    env = {k: v for k, v in _fake_slurm(tmp_path, job_id).items() if k != "DRY_RUN"}
    env.update(extra_env)
    srun = tmp_path / "bin" / "srun"
    srun.write_text(
        "#!/usr/bin/env bash\n"
        'for a in "$@"; do case "$a" in --output=*) out="${a#--output=}" ;; esac; done\n'
        'out="${out:-/dev/null}"; out="${out//%x/${SLURM_JOB_NAME:-amazon-sft-train}}"\n'
        'out="${out//%j/$SLURM_JOB_ID}"; out="${out//%n/0}"\n' + srun_body
    )
    srun.chmod(0o755)
    Path(env["PREPARED"]).mkdir()
    if manifest:
        (Path(env["PREPARED"]) / "manifest.json").write_text("{}")
    return subprocess.run(
        ["bash", f"launch/{script}"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def test_a_training_job_that_ends_says_in_the_batch_log_where_its_model_is(tmp_path):
    """The batch log, where SLURM points, said nothing when training ended well: not where the
    model is, how far the run went, nor where this job began (a requeue resumes). It says all
    three when the run finished (``job_finished``, as on_preempt asks). A stop that reached the
    nodes alone ends them well too, with no final model: said so, with the newest checkpoint,
    and an earlier run's final/ (a run extended) is not read as this run's end (a review)."""
    out = tmp_path / "run"
    (out / "checkpoints" / "step-40").mkdir(parents=True)
    (out / "checkpoints" / "step-40" / "COMPLETE").touch()
    summary = '{"steps": 148, "final_loss": 1.25, "tokens_seen": 9, "stopped_by": null}'
    body = f"mkdir -p {out}/final && echo '{summary}' > {out}/final/run_summary.json\n"
    steps = "train.epochs=0 train.max_steps=148"  # the run's last step, as job_finished reads it
    proc = _sbatch_with_srun(tmp_path, "81", body, OUT=str(out), EXTRA=steps)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert f"{out}/final" in last and "step 148" in last and "loss 1.25" in last, last
    assert "resumed from checkpoints/step-40" in last, last
    # the same final/ when the run is extended to 200 steps and stopped at 120 on the nodes
    shutil.rmtree(out / "checkpoints")  # this job starts the run
    body = f"mkdir -p {out}/checkpoints/step-120 && touch {out}/checkpoints/step-120/COMPLETE\n"
    (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    proc = _sbatch_with_srun(
        tmp_path / "b", "82", body, OUT=str(out), EXTRA="train.epochs=0 train.max_steps=200"
    )
    last = proc.stdout.strip().splitlines()[-1]
    assert proc.returncode == 0 and "stopped before its last step" in last, last
    assert f"{out}/checkpoints/step-120" in last and "began at step 0" in last, last
    assert "done" not in last, last
    # nothing saved, no final model
    shutil.rmtree(out)
    proc = _sbatch_with_srun(tmp_path / "c", "83", "true\n", OUT=str(out), EXTRA=steps)
    last = proc.stdout.strip().splitlines()[-1]
    assert proc.returncode == 0 and "no final model" in last and "checkpoint: none" in last, last


def test_an_eval_job_that_ends_names_its_report_in_the_batch_log(tmp_path):
    """The same silence after an evaluation: the batch log now names the report, or says the
    nodes ended well without one."""
    report = tmp_path / "report"
    body = f"mkdir -p {report} && echo '# report' > {report}/report.md\n"
    proc = _sbatch_with_srun(tmp_path, "84", body, script="eval_slurm.sbatch", REPORT=str(report))
    last = proc.stdout.strip().splitlines()[-1]
    assert proc.returncode == 0 and f"the report is {report}/report.md" in last, proc.stderr
    (tmp_path / "b").mkdir()
    proc = _sbatch_with_srun(tmp_path / "b", "85", "true\n", script="eval_slurm.sbatch",
                             REPORT=str(tmp_path / "none"))  # fmt: skip
    last = proc.stdout.strip().splitlines()[-1]
    assert f"no {tmp_path / 'none'}/report.md" in last, last


def test_a_failed_training_step_is_named_in_the_batch_log_and_each_node_log(tmp_path):
    """A SLURM review: a requeued job refused (its config changed while it waited) exited 1, and
    the batch log, the file SLURM points operators to, said nothing; the node log's one-line
    refusal was followed by 25 lines of torch's failure banner, not last as the comment said."""
    proc = _sbatch_with_srun(tmp_path, "78", "echo 'node refused' >&2\nexit 1\n")
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "ended with exit 1" in last and f"{tmp_path / 'logs'}/" in last and "node" in last, last
    # each node's own log ends with the same pointer, after whatever the launcher printed
    accelerate = tmp_path / "bin" / "accelerate"
    accelerate.write_text(
        "#!/usr/bin/env bash\necho 'train: ERROR one line' >&2\n"
        "for _ in $(seq 25); do echo 'torch banner' >&2; done\nexit 1\n"
    )
    accelerate.chmod(0o755)
    env = {k: v for k, v in _fake_slurm(tmp_path, "78").items() if k != "DRY_RUN"}
    node_env = {**env, "SLURM_PROCID": "1", "MAIN_ADDR": "a", "MAIN_PORT": "29500"}
    node_env |= {"NNODES": "2", "GPUS_PER_NODE": "1", "ACCEL_CONFIG": "x.yaml", "ENTRY": "e.py"}
    node = subprocess.run(
        ["bash", "launch/slurm_node.sh", "--"], cwd=REPO, env=node_env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert node.returncode == 1
    last = node.stderr.strip().splitlines()[-1]
    assert last.startswith("node 1: e.py ended with exit 1") and "above" in last, last


WHOLE_REPORT = """python - <<'PY'
from pathlib import Path
from amazon_sft.data.shards import sha256_file
from amazon_sft.eval_ownership import claim_eval_dir, record_eval_files
out = Path("{out}")
claim_eval_dir(out)
for name in ("report.md", "report.json"):
    (out / name).write_text("# a report" if name == "report.md" else "{{}}")
record_eval_files(out, {{n: [sha256_file(out / n)] for n in ("report.md", "report.json")}})
PY"""


def test_an_eval_that_wrote_its_report_during_the_warning_is_not_requeued(tmp_path):
    """A hostile cluster user: an eval that ended during the warning was requeued, and the
    requeued job failed on the report it found ("already holds an eval report", exit 1). A
    whole report moved in since the job started ends the job; an earlier one does not."""
    for name, written_now, requeued in (("now", True, False), ("before", False, True)):
        report = tmp_path / name / "report"
        (tmp_path / name).mkdir()
        hook = WHOLE_REPORT.format(out=report)
        if not written_now:  # a report of an earlier job: --overwrite given to replace it
            subprocess.run(["bash", "-c", hook], cwd=REPO, check=True)
            os.utime(report / "report.md", (time.time() - 60,) * 2)
        code, _, calls = _fake_srun_job(
            tmp_path / name, "eval_slurm.sbatch", REPORT=str(report),
            before_start=hook if written_now else "", EXTRA="" if written_now else "--overwrite",
        )  # fmt: skip
        assert code == 0 and ("requeue 77" in calls) is requeued, (name, calls)


def _sbatch_with_failing_prepare(tmp_path: Path, message: str) -> subprocess.CompletedProcess:
    """train_slurm.sbatch with a stand-in srun whose prepare writes ``message`` to its log (as
    SLURM's --output) and exits 2, and whose node step succeeds."""
    body = f'if [[ "$*" == *" prepare "* ]]; then echo "{message}" >> "$out"; exit 2; fi\n'
    return _sbatch_with_srun(
        tmp_path, "78", body + f'echo "$*" >> {tmp_path / "nodes"}\n', manifest=False
    )


def test_a_failed_prepare_says_why_in_the_batch_log_and_a_shared_one_is_waited_for(tmp_path):
    """A hostile cluster user: a prepare that failed ended the job with exit 2 and an empty
    batch log (the reason only in the prepare log, which nothing named); two jobs of one
    CONFIG (a sweep) share PREPARED, and the second's prepare, refused while the first writes
    it, ended the job. The reason is said with the log's path; the second job's nodes wait for
    the first's manifest."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    failed = _sbatch_with_failing_prepare(tmp_path / "a", "error: no space left on device")
    assert failed.returncode == 1, failed.stderr
    line = failed.stderr.strip().splitlines()[-1]
    assert "prepare ended with exit 2: error: no space left on device" in line
    assert "amazon-sft-train-78-prepare.out" in line
    assert not (tmp_path / "a" / "nodes").exists()
    locked = "error: /x/p is being written by another process (pid 9 on n1): wait for it to end"
    shared = _sbatch_with_failing_prepare(tmp_path / "b", locked)
    assert shared.returncode == 0 and "another job is preparing" in shared.stderr, shared.stderr
    assert "slurm_node.sh" in (tmp_path / "b" / "nodes").read_text()  # the nodes wait for it


def _early_warning(tmp_path: Path, **extra_env: str) -> tuple[int, str]:
    """train_slurm.sbatch sent SLURM's warning while it reads its config; (exit, scontrol's calls)."""
    env = {k: v for k, v in _fake_slurm(tmp_path, "77").items() if k != "DRY_RUN"} | extra_env
    slow = tmp_path / "bin" / "python3"  # the config's read takes a second, as on a busy node
    slow.write_text(f'#!/usr/bin/env bash\nsleep 1\nexec {sys.executable} "$@"\n')
    slow.chmod(0o755)
    proc = subprocess.Popen(["bash", "launch/train_slurm.sbatch"], cwd=REPO, env=env)
    time.sleep(0.5)  # bash is reading the config
    proc.send_signal(signal.SIGUSR1)
    code = proc.wait(timeout=120)
    calls = tmp_path / "scontrol-calls"
    return code, calls.read_text() if calls.exists() else ""


def test_a_warning_before_the_trap_is_set_still_requeues(tmp_path):
    """A hostile cluster user: SLURM's warning while the batch shell read its config (before
    slurm_common.sh set its trap) killed the shell (exit 138): not requeued, nothing said. Kept
    and acted on, with the same limits as any warning (a review: the first form of the fix
    requeued past MAX_REQUEUES)."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    code, calls = _early_warning(tmp_path / "a")
    assert code == 0 and "requeue 77" in calls
    code, calls = _early_warning(tmp_path / "b", SLURM_RESTART_COUNT="50", MAX_REQUEUES="3")
    assert code == 1 and "requeue" not in calls


BAD_SETTINGS = [
    ("MAIN_PORT", "99999", "MAIN_PORT=99999 is not a port"),
    ("MAIN_PORT", "http", "MAIN_PORT=http is not a port"),
    ("MAIN_PORT", "80", "MAIN_PORT=80 is not a port"),  # the message says 1024 to 65535
    ("GPUS_PER_NODE", "abc", "GPUS_PER_NODE=abc is not a count"),
    ("GPUS_PER_NODE", "2x", "GPUS_PER_NODE=2x is not a count"),
    ("CONFIG", "-x.yaml", "-x.yaml"),
    # an outside trial: "abc: unbound variable", and 0 named --check-world, a flag never typed
    ("SLURM_NNODES", "abc", "SLURM_NNODES=abc is not a node count"),
    ("SLURM_NNODES", "0", "SLURM_NNODES=0 is not a node count"),
    ("CONFIG", "no-such-config", "no-such-config"),  # eval's dry run printed it as good
]


def test_eval_slurm_takes_any_config_file_train_takes(tmp_path):
    """A review of eval_slurm's new CONFIG check: a config file named without ``.yaml`` (or
    ``.YAML``), which train reads, was refused as an unknown config name."""
    config = tmp_path / "exp.YAML"
    config.write_text("out_dir: runs/exp\n")
    env = {**_fake_slurm(tmp_path, "80"), "CONFIG": str(config), "N": "10000000"}
    proc = subprocess.run(
        ["bash", "launch/eval_slurm.sbatch"], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert proc.returncode == 0 and "node 0: " in proc.stdout, proc.stderr


@pytest.mark.parametrize(
    ("script", "variable", "value", "needle"),
    [
        (script, *bad)
        for script in ("train_slurm.sbatch", "eval_slurm.sbatch")
        for bad in BAD_SETTINGS
    ]
    + [("eval_slurm.sbatch", "N", n, f"N={n} is not a number of titles") for n in ("abc", "0")],
)
def test_a_slurm_script_refuses_a_bad_setting_in_one_line(
    script, variable, value, needle, tmp_path
):
    """A hostile cluster user: MAIN_PORT=99999 was an OverflowError traceback in every node's
    log after the set-up, GPUS_PER_NODE=abc "unbound variable", CONFIG=-x.yaml basename's
    "invalid option", and a config error named its exception class."""
    env = {**_fake_slurm(tmp_path, "79"), variable: value}
    proc = subprocess.run(
        ["bash", f"launch/{script}"], capture_output=True, text=True, cwd=REPO, env=env
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and "Error:" not in proc.stderr, proc.stderr


def test_a_failed_step_gives_its_error_in_the_batch_log(tmp_path):
    """An ML engineer's trial: a refused training job's batch log said only "ended with exit 1;
    each node's error is in ..."; the one-line error was in the node log alone (a failed
    prepare's batch log gives its reason). The node logs' last error line is said there too."""
    proc = _sbatch_with_srun(
        tmp_path,
        "81",
        "echo 'amazon-sft train: error: train.validation_rows=99 holds back all 54 rows' >> \"$out\"\n"
        "echo '=== torch banner ===' >> \"$out\"\nexit 1\n",
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "error: train.validation_rows=99 holds back" in last, last
    assert "ended with exit 1" in last and "node*.out" in last


def test_eval_sbatch_refuses_an_earlier_report_before_launching(tmp_path):
    """An ML engineer's trial: a REPORT holding an eval report was refused only on the nodes,
    after the models loaded, under torch's banner, with advice (--overwrite) that is EXTRA's in
    a job. The batch shell says it first, in one line; EXTRA=--overwrite goes on."""
    report = tmp_path / "report"
    subprocess.run(["bash", "-c", WHOLE_REPORT.format(out=report)], cwd=REPO, check=True)
    env = {**_fake_slurm(tmp_path, "82"), "REPORT": str(report)}
    (Path(env["PREPARED"])).mkdir()
    (Path(env["PREPARED"]) / "manifest.json").write_text("{}")
    refused = subprocess.run(
        ["bash", "launch/eval_slurm.sbatch"], cwd=REPO, env=env, capture_output=True, text=True
    )
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1, refused.stderr
    assert "already holds an eval report" in lines[0] and "EXTRA=--overwrite" in lines[0]
    again = subprocess.run(
        ["bash", "launch/eval_slurm.sbatch"], cwd=REPO, env={**env, "EXTRA": "--overwrite"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert again.returncode == 0 and "--overwrite" in again.stdout, again.stderr
