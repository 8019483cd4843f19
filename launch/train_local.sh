#!/usr/bin/env bash
# One node, N GPUs (or N CPU processes over gloo): launch/train_local.sh [key=value ...]
# Settings from the environment:
#   NGPU    processes (default: every visible GPU; 1 without GPUs)
#   CONFIG  run config name or YAML (default smollm2-135m)
#   OUT     run folder (default runs/$CONFIG);  DATA  prepared folder (default: the config's)
#   ACCEL   launch/accelerate/<name>.yaml (default single_gpu for 1 process, multi_gpu for more;
#           zero2, zero3, zero3_offload for DeepSpeed)
#   CPU=1   CPU processes over gloo (tests, laptops);  PORT  rendezvous port (default: free one)
#   DRY_RUN=1 prints the command and launches nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${NGPU:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1; then NGPU="$(nvidia-smi -L | wc -l)"; else NGPU=1; fi
  [ "$NGPU" -ge 1 ] || NGPU=1
fi
CONFIG="${CONFIG:-smollm2-135m}"
OUT="${OUT:-runs/$CONFIG}"
if [ -z "${ACCEL:-}" ]; then
  if [ "$NGPU" -gt 1 ]; then ACCEL=multi_gpu; else ACCEL=single_gpu; fi
fi
PORT="${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"

launch=(accelerate launch --config_file "launch/accelerate/$ACCEL.yaml" --num_processes "$NGPU"
  --main_process_port "$PORT")
if [ "${CPU:-0}" = 1 ]; then
  export ACCELERATE_USE_CPU=true  # with --multi_gpu: N real CPU processes (--cpu would start one)
  if [ "$ACCEL" = multi_gpu ] || [ "$ACCEL" = single_gpu ]; then
    launch=(accelerate launch --multi_gpu --num_processes "$NGPU" --main_process_port "$PORT")
  else
    unset ACCELERATE_USE_CPU  # DeepSpeed on CPU: gloo is chosen by amazon_sft.distributed
  fi
fi
args=(amazon_sft/train.py --config "$CONFIG" "out_dir=$OUT")
[ -n "${DATA:-}" ] && args+=("data.path=$DATA")

if [ "${DRY_RUN:-0}" = 1 ]; then
  echo "${launch[*]} ${args[*]} $*"
else
  exec "${launch[@]}" "${args[@]}" "$@"
fi
