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
else
  exec "${cmd[@]}"
fi
