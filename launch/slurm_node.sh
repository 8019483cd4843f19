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

cmd=(accelerate launch
  --config_file "$ACCEL_CONFIG"
  --num_machines "$NNODES"
  --num_processes "$((NNODES * GPUS_PER_NODE))"
  --machine_rank "$rank"
  --main_process_ip "$MAIN_ADDR"
  --main_process_port "$MAIN_PORT"
  --rdzv_backend static
  "$ENTRY" "$@")

if [ "${DRY_RUN:-0}" = 1 ]; then
  echo "node $rank ($(hostname)): ${cmd[*]}"
  exit 0
fi

# A stop (scancel's SIGTERM, or the batch script passing on SLURM's pre-emption warning as
# USR1) goes to the training processes themselves as SIGUSR1: they save a checkpoint and exit 0.
# Signalling accelerate's launcher instead would make torchrun SIGKILL its workers 30 s later, too
# soon for a large ZeRO-3 checkpoint. What slurmstepd signals depends on the cluster's
# ProctrackType: pgid signals this script's process group, which setsid keeps the launcher out
# of; linuxproc and cgroup signal every process of the step, the launcher too, so it starts with
# USR1 ignored (the training processes install their own handler on their first line). Under
# those two a scancel's SIGTERM also reaches the launcher, which then stops its workers itself
# after they saved (the task exits 1; the checkpoint is whole).
# The trap is set before the launch: a signal between the two would otherwise kill this script
# (exit 143) and leave the training running, unsignalled, until SLURM's SIGKILL. Once a stop
# came, each training process gets it once it has set its handler (its SigCgt in /proc): one
# that came while the launcher was starting (no training process yet, or one not yet at its
# first line, ignoring USR1 as the launcher does) was lost, and training ran on into the time
# limit. Once only: a second USR1 during Python's shutdown (handlers back to default) would kill
# a process that had saved, and turn a clean stop into a failed task.
catches_usr1() {
  local mask
  mask="$(awk '/^SigCgt:/ { print $2 }' "/proc/$1/status" 2>/dev/null)"
  if [ -z "$mask" ]; then return 0; fi # no /proc to read: send it at once
  (((16#$mask >> 9) & 1))              # SIGUSR1 is signal 10: bit 9
}
stop=0
declare -A told=()
trap 'stop=1' TERM USR1
(
  trap '' USR1
  exec setsid "${cmd[@]}"
) &
launcher=$!
while kill -0 "$launcher" 2>/dev/null; do
  if [ "$stop" = 1 ]; then
    for pid in $(pgrep -P "$launcher" || true); do
      if [ -z "${told[$pid]:-}" ] && catches_usr1 "$pid"; then
        kill -USR1 "$pid" 2>/dev/null || true
        told[$pid]=1
      fi
    done
  fi
  sleep 0.5 &
  wait $! || true # a trapped signal ends the wait at once: the stop goes on without delay
done
if wait "$launcher"; then status=0; else status=$?; fi
exit "$status"
