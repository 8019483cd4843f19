#!/usr/bin/env bash
# One node's part of a SLURM job: runs `accelerate launch` with this node's machine rank.
# srun starts it once per node, so SLURM_PROCID / SLURM_NODEID expand here, on each node, never
# in the batch shell (where every node would read rank 0).
#
# Needs: MAIN_ADDR, MAIN_PORT, NNODES, GPUS_PER_NODE, ACCEL_CONFIG, ENTRY and the entrypoint's
# arguments after "--". DRY_RUN=1 prints the command instead of running it.
set -euo pipefail

rank="${SLURM_PROCID:?SLURM_PROCID is not set: run this through srun}"
: "${MAIN_ADDR:?}" "${MAIN_PORT:?}" "${NNODES:?}" "${GPUS_PER_NODE:?}" "${ACCEL_CONFIG:?}" "${ENTRY:?}"
[ "${1:-}" = "--" ] && shift

# Data preparation happens once, before this step; every node waits for a complete manifest.
if [ -n "${WAIT_FOR_MANIFEST:-}" ] && [ "${DRY_RUN:-0}" != 1 ]; then
  waited=0
  until [ -f "$WAIT_FOR_MANIFEST" ]; do
    if [ "$waited" -ge "${MANIFEST_TIMEOUT_S:-1800}" ]; then
      echo "node $rank: no $WAIT_FOR_MANIFEST after ${waited}s; is data preparation running?" >&2
      exit 3
    fi
    sleep 10
    waited=$((waited + 10))
  done
fi

export TORCH_ELASTIC_SHUTDOWN_TIMEOUT="${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-900}"
cmd=(accelerate launch
  --quiet # no accelerate traceback under the run's one-line error (torch's banner remains)
  --config_file "$ACCEL_CONFIG"
  --num_machines "$NNODES"
  --num_processes "$((NNODES * GPUS_PER_NODE))"
  --machine_rank "$rank"
  --main_process_ip "$MAIN_ADDR"
  --main_process_port "$MAIN_PORT"
  --rdzv_backend static
  "$ENTRY" "$@")

if [ "${DRY_RUN:-0}" = 1 ]; then
  # all ranks print here, on this one machine: its name is no node's (rank 0 is MAIN_ADDR)
  echo "node $rank: ${cmd[*]}"
  exit 0
fi

# A stop (scancel's SIGTERM, or the batch script passing on SLURM's pre-emption warning as
# USR1) goes to the training processes themselves as SIGUSR1: they save a checkpoint and exit 0.
# Signalling accelerate's launcher instead would make torchrun SIGKILL its workers 30 s later, too
# soon for a large ZeRO-3 checkpoint. What slurmstepd signals depends on the cluster's
# ProctrackType: pgid signals this script's process group, which setsid keeps the launcher out
# of; linuxproc and cgroup signal every process of the step, the launcher too, so it starts with
# USR1 ignored (the training processes install their own handler on their first line). Under
# those two a scancel's SIGTERM (and a pre-emption's, which comes as SIGTERM) also reaches the
# launcher, whose agent stops its workers: it kills them TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds
# later (torch's default 30: a large checkpoint was cut; 900 here, SLURM's KillWait is the limit
# that remains) and exits 143 once they saved.
# The trap is set before the launch: a signal between the two would otherwise kill this script
# (exit 143) and leave the training running, unsignalled, until SLURM's SIGKILL. What is done
# with a stop: launch/forward_stop.sh.
# shellcheck source=launch/forward_stop.sh
source "$(dirname "${BASH_SOURCE[0]}")/forward_stop.sh"
stops=0 stop_signal=USR1
trap 'stops=1' TERM USR1 # once: a second USR1 during Python's shutdown would kill a saved process
(
  trap '' USR1
  exec setsid "${cmd[@]}"
) &
launcher=$!
forward_stop "$launcher"
if wait "$launcher"; then status=0; else status=$?; fi
# with several processes torch's failure banner follows the run's one-line error: say where it is
# (not after a stop: the launcher exits 143 once its workers saved, under cgroup or linuxproc)
if [ "$status" -ne 0 ] && [ "$stops" = 0 ]; then
  echo "node $rank: $ENTRY ended with exit $status; its error is above, once per process" \
    "(a process killed by a signal, as the OOM killer's SIGKILL, prints none: see dmesg)" >&2
fi
exit "$status"
