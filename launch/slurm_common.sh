#!/usr/bin/env bash
# Shared by train_slurm.sbatch and eval_slurm.sbatch: the rendezvous address and a port per job,
# per-node logs, forwarding of SLURM's pre-emption warning, and the dry run.
# shellcheck disable=SC2034  # the variables are read by the scripts that source this file

: "${SLURM_JOB_ID:?not inside a SLURM job (for a dry run: DRY_RUN=1 with SLURM_JOB_ID, SLURM_NNODES, SLURM_JOB_NODELIST set)}"
NNODES="${SLURM_NNODES:-1}"
if ! [[ "$NNODES" =~ ^[1-9][0-9]{0,4}$ ]]; then  # set by SLURM; by hand in a dry run
  echo "${0##*/}: SLURM_NNODES=$NNODES is not a node count: give the job's number of nodes, e.g. 2" >&2
  exit 1
fi
GPUS_PER_NODE="${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}"  # what --gres gave this node
# srun does not inherit --cpus-per-task from sbatch (SLURM 22.05 on): without this each node's
# training step, 8 ranks and their data loaders, ran on one core
if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"; fi
if command -v scontrol >/dev/null 2>&1; then
  MAIN_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | awk 'NR == 1')"  # awk reads it all: no SIGPIPE
else  # off-cluster dry runs: the list's first host, as scontrol names it ("gpu[01-03,07]-ib":
  # gpu01-ib; "rack[1-2]-n[01-04]": rack1-n01)
  first_host='import re, sys
listed, depth, first = sys.argv[1], 0, ""
for c in listed:
    depth += (c == "[") - (c == "]")
    if c == "," and depth == 0:
        break
    first += c
print(re.sub(r"\[([^]]*)\]", lambda m: re.split("[-,]", m.group(1))[0], first))'
  MAIN_ADDR="$(python3 -c "$first_host" "$SLURM_JOB_NODELIST")"
fi
# A port per job: only jobs whose ids differ by a multiple of 20,000 share one, and they collide
# only when both run at once with the same first host (then give one another MAIN_PORT). Below
# Linux's ephemeral range (32768 up), where an outgoing connection may already hold the port.
MAIN_PORT="${MAIN_PORT:-$((10000 + SLURM_JOB_ID % 20000))}"
# checked here, in one line, not after every node's set-up (an OverflowError traceback there)
if ! [[ "$MAIN_PORT" =~ ^[1-9][0-9]{3,4}$ ]] || [ "$MAIN_PORT" -lt 1024 ] || [ "$MAIN_PORT" -gt 65535 ]; then
  echo "${0##*/}: MAIN_PORT=$MAIN_PORT is not a port: give a number from 1024 to 65535" >&2
  exit 1
fi
if ! [[ "$GPUS_PER_NODE" =~ ^[1-9][0-9]{0,3}$ ]]; then
  echo "${0##*/}: GPUS_PER_NODE=$GPUS_PER_NODE is not a count of GPUs: give what --gres gave each node, e.g. 8" >&2
  exit 1
fi
LOG_DIR="${LOG_DIR:-logs}"
mkdir -p "$LOG_DIR"
export MAIN_ADDR MAIN_PORT NNODES GPUS_PER_NODE

# run_nodes ENTRY ARGS...: one task per node running launch/slurm_node.sh (or, in a dry run,
# each node's resolved command printed by the same script).
run_nodes() {
  local entry="$1"
  shift
  if [ "${DRY_RUN:-0}" = 1 ]; then
    local r
    for ((r = 0; r < NNODES; r++)); do
      SLURM_PROCID="$r" ENTRY="$entry" DRY_RUN=1 bash launch/slurm_node.sh -- "$@"
    done
    return 0
  fi
  ENTRY="$entry" srun --nodes="$NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 \
    --open-mode=append --output="$LOG_DIR/%x-%j-node%n.out" bash launch/slurm_node.sh -- "$@" &
  SRUN_PID=$!
  local rc=0
  wait "$SRUN_PID" || rc=$?
  if [ "$rc" -ne 0 ]; then # the batch log is where SLURM points: say the error and where it is
    local said
    said="$(grep -h -s ': error: ' "$LOG_DIR/${SLURM_JOB_NAME:-}"*"-${SLURM_JOB_ID:-}-node"*.out | tail -n 1 || true)"
    echo "job ${SLURM_JOB_ID:-}: $entry ended with exit $rc${said:+: $said}; each node's error is" \
      "in $LOG_DIR/${SLURM_JOB_NAME:-*}-${SLURM_JOB_ID:-*}-node*.out" >&2
  fi
  return "$rc"
}

# SLURM sends USR1 to this shell before the time limit (--signal=B:USR1@SECONDS): pass it on to
# every task (the training loop saves a checkpoint and exits 0), then requeue the job; the new
# run starts with resume=auto (not when training reached its last step meanwhile). USR1, not TERM: srun passes USR1 on as it is, but answers TERM by
# killing its tasks at once (seen under SLURM 22.05: nothing saved). PREEMPT_SIGNAL=TERM (eval,
# which has nothing to save) stops the step at once instead. Eval and prepare start over at each
# requeue, so one longer than the time limit would be requeued for ever (SLURM counts requeues
# in SLURM_RESTART_COUNT and sets no limit of its own): while they run REQUEUE_LIMIT is
# MAX_REQUEUES (default 20) and a job requeued that often ends failed. Training resumes from its
# checkpoint at each requeue: no limit unless MAX_REQUEUES is given.
on_preempt() {
  echo "pre-emption warning: SIG${PREEMPT_SIGNAL:-USR1} to the tasks, then requeueing job $SLURM_JOB_ID"
  if [ -n "${SRUN_PID:-}" ]; then
    kill -"${PREEMPT_SIGNAL:-USR1}" "$SRUN_PID" 2>/dev/null || true
    wait "$SRUN_PID" || true
  fi
  if declare -F job_finished >/dev/null && job_finished; then # each script's own test
    echo "job $SLURM_JOB_ID: its work was done during the warning: not requeued"
    exit 0
  fi
  if [ -n "${REQUEUE_LIMIT:-}" ] && [ "${SLURM_RESTART_COUNT:-0}" -ge "$REQUEUE_LIMIT" ]; then
    echo "job $SLURM_JOB_ID was requeued ${SLURM_RESTART_COUNT} times (MAX_REQUEUES=$REQUEUE_LIMIT)" \
      "and starts over each time: not again; give it a longer --time, or MAX_REQUEUES=N" >&2
    exit 1
  fi
  if declare -F stalled_too_often >/dev/null && stalled_too_often; then # train_slurm.sbatch's
    echo "job $SLURM_JOB_ID: ${MAX_STALLED_REQUEUES:-3} requeues in a row saved no new checkpoint:" \
      "not requeued again; its start-up and first step need a longer --time" >&2
    exit 1
  fi
  local try
  for try in 1 2 3; do # a busy controller times out: try again before giving the job up
    if scontrol requeue "$SLURM_JOB_ID"; then exit 0; fi
    sleep $((try * 5))
  done
  echo "scontrol requeue $SLURM_JOB_ID failed 3 times: resubmit the job (resume=auto)" >&2
  exit 1
}
trap on_preempt USR1
# a warning that came before this trap was set (the scripts catch it from their first line)
if [ -n "${EARLY_WARNING:-}" ]; then on_preempt; fi
