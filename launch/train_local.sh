#!/usr/bin/env bash
# One node, N GPUs (or N CPU processes over gloo): launch/train_local.sh [key=value ...]
# Settings from the environment:
#   NGPU    processes (default: every GPU CUDA_VISIBLE_DEVICES leaves, else nvidia-smi's;
#           1 without GPUs)
#   CONFIG  run config name or YAML (default smollm2-135m)
#   OUT     run folder (default: a YAML config's own out_dir, else runs/$CONFIG);
#   DATA    prepared folder (default: the config's);
#           relative paths (and a CONFIG given as a YAML path) are read from where you stand,
#           as are the YAML's and the key=value arguments' data.path, model.path, resume, out_dir,
#           model.tokenizer, data.templates and deepspeed
#   ACCEL   launch/accelerate/<name>.yaml (default single_gpu for 1 process, multi_gpu for more;
#           zero2, zero3, zero3_offload for DeepSpeed)
#   CPU=1   CPU processes over gloo (tests, laptops);  PORT  rendezvous port (default: free one)
#   DRY_RUN=1 checks the config for this launch, prints the command and launches nothing.
# SIGTERM, SIGUSR1, SIGHUP and SIGINT to this script reach the training processes (a checkpoint,
# then exit 0), passed on by this script (a SIGKILL to it, by its watchdog): accelerate's
# one-process launcher would die alone and leave training running unwatched, and torch's
# multi-process agent dies of SIGUSR1 (its workers went on, orphaned) and turns SIGTERM into exit 1.
set -euo pipefail
# Caught from the first line (the setup reads YAML with python3: a stop then was fatal, 143).
# A hang-up (the terminal closed) stops it too: the launcher, in its own session, would not get it.
# Ctrl-Cs are counted apart: a TERM then a Ctrl-C is one stop, not the "second Ctrl-C".
# shellcheck disable=SC2034  # ctrl_c is read by the INT trap
stops=0 ctrl_c=0 stop_signal=TERM
trap '[ "$stops" -gt 0 ] || stops=1' TERM USR1 HUP
trap 'ctrl_c=$((ctrl_c + 1)) && stops=$((ctrl_c > stops ? ctrl_c : stops)) stop_signal=INT' INT
here="$PWD"
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$here/$1" ;; esac; }
cd "$(dirname "$0")/.."

if [ -z "${NGPU:-}" ]; then
  if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
    # the GPUs this job may use (nvidia-smi lists the whole box: 8 processes for 2 GPUs);
    # "-1" and "" hide them all. Every entry up to the first bad one counts, as CUDA reads it.
    NGPU=0
    IFS=, read -ra visible <<<"$CUDA_VISIBLE_DEVICES"
    for gpu in ${visible[@]+"${visible[@]}"}; do
      case "$gpu" in "" | -*) break ;; *) NGPU=$((NGPU + 1)) ;; esac
    done
  elif command -v nvidia-smi >/dev/null 2>&1; then NGPU="$(nvidia-smi -L | wc -l)"; else NGPU=1; fi
  [ "$NGPU" -ge 1 ] || NGPU=1
fi
CONFIG="${CONFIG:-smollm2-135m}"
case "$CONFIG" in *.yaml | *.yml) CONFIG="$(absolute "$CONFIG")" ;; esac
if [ -z "${OUT:-}" ] && [ -f "$CONFIG" ]; then
  # the YAML's own out_dir: two experiments' config.yaml shared runs/config, and resume=auto
  # went on from the other's checkpoint
  OUT="$(python3 -m amazon_sft.launch_yaml train_local.sh out_dir "$CONFIG")" || exit 2
fi
OUT="$(absolute "${OUT:-runs/$(basename "${CONFIG%.y*ml}")}")"
[ -n "${DATA:-}" ] && DATA="$(absolute "$DATA")"
# This script works in the repo (its accelerate configs name ds_configs/ from there), so the
# folders a YAML or an argument names relative to where you stand go on whole: as they were,
# training read the repo's data/prepared, not yours (an outside review). A model.path that is no
# folder here is a name (pkg:..., a hub id) and stays as it is, as do resume=auto and none.
whole() {
  local key="${1%%=*}" value="${1#*=}"
  case "$key=$value" in
    data.path=[!/~]* | out_dir=[!/~]*) ;;
    # resume=step-N names out_dir's checkpoint unless a folder of that name is here, as in train
    resume=[!/~]*) [ -d "$here/$value" ] || { printf "%s\n" "$1"; return; } ;;
    # a name (a hub id, builtin, builtin:tiny) where nothing of that name is here
    model.path=[!/~]* | model.tokenizer=[!/~]* | data.templates=[!/~]* | deepspeed=[!/~]*)
      [ -e "$here/$value" ] || { printf "%s\n" "$1"; return; } ;;
    *) printf "%s\n" "$1" && return ;;
  esac
  case "$value" in auto | none | "") printf "%s\n" "$1" ;; *) printf "%s\n" "$key=$here/$value" ;; esac
}
yaml_paths=()
# a named config's relative data.path is read from where you stand too, as train reads it
config_file="$CONFIG"
[ -f "$config_file" ] || config_file="amazon_sft/configs/$CONFIG.yaml"
if [ -f "$config_file" ]; then
  listed="$(python3 -m amazon_sft.launch_yaml train_local.sh paths "$config_file")" || exit 2
  while IFS= read -r line; do
    key="${line%%=*}"
    # one DATA or an argument gives again is given once (the last won, but the dry run showed
    # both)
    if [ "$key" = data.path ] && [ -n "${DATA:-}" ]; then continue; fi
    for arg in "$@"; do [ "${arg%%=*}" != "$key" ] || continue 2; done
    [ -z "$line" ] || [ "$(whole "$line")" = "$line" ] || yaml_paths+=("$(whole "$line")")
  done <<<"$listed"
fi
given=()
for arg in "$@"; do given+=("$(whole "$arg")"); done
set -- ${given[@]+"${given[@]}"}
NGPU="${NGPU//[[:space:]]/}"  # BSD wc pads its count
# checked before anything runs: NGPU=0 trained with 1 process, ACCEL=nope was a traceback
case "$NGPU" in "" | *[!0-9]* | 0* | ?????*)  # more than 4 digits: past bash's integers too
  echo "train_local.sh: NGPU=$NGPU: give the number of processes, 1 to 9999" >&2 && exit 2 ;;
esac
if [ -z "${ACCEL:-}" ]; then
  if [ "$NGPU" -gt 1 ]; then ACCEL=multi_gpu; else ACCEL=single_gpu; fi
fi
if [ ! -f "launch/accelerate/$ACCEL.yaml" ]; then
  names=(launch/accelerate/*.yaml) && names=("${names[@]#launch/accelerate/}")
  echo "train_local.sh: ACCEL=$ACCEL: no launch/accelerate/$ACCEL.yaml; give one of: ${names[*]%.yaml}" >&2
  exit 2
fi
PORT="${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
case "$PORT" in "" | *[!0-9]* | 0* | ??????*)
  echo "train_local.sh: PORT=$PORT: give a port number, 1 to 65535 (or leave it unset)" >&2 && exit 2 ;;
esac
if [ "$PORT" -gt 65535 ]; then
  echo "train_local.sh: PORT=$PORT: give a port number, 1 to 65535 (or leave it unset)" >&2 && exit 2
fi

launch=(accelerate launch --quiet --config_file "launch/accelerate/$ACCEL.yaml" --num_processes "$NGPU"
  --main_process_port "$PORT")
if [ "${CPU:-0}" = 1 ]; then
  export ACCELERATE_USE_CPU=true  # with --multi_gpu: N real CPU processes (--cpu would start one)
  if [ "$NGPU" = 1 ] && { [ "$ACCEL" = multi_gpu ] || [ "$ACCEL" = single_gpu ]; }; then
    launch=(accelerate launch --quiet --cpu --num_processes 1)  # --multi_gpu needs two at least
  elif [ "$ACCEL" = multi_gpu ] || [ "$ACCEL" = single_gpu ]; then
    launch=(accelerate launch --quiet --multi_gpu --num_processes "$NGPU" --main_process_port "$PORT")
  else
    unset ACCELERATE_USE_CPU  # DeepSpeed on CPU: gloo is chosen by amazon_sft.distributed
  fi
fi
args=(amazon_sft/train.py --config "$CONFIG" "out_dir=$OUT" ${yaml_paths[@]+"${yaml_paths[@]}"})
# DATA unless an argument gives data.path (that one wins, and the command shows it once)
for arg in "$@"; do [ "${arg%%=*}" != data.path ] || DATA=""; done
[ -n "${DATA:-}" ] && args+=("data.path=$DATA")

if [ "${DRY_RUN:-0}" = 1 ]; then
  # the config checked for this launch (its keys, the batch split for NGPU processes, the
  # DeepSpeed JSON), as the SLURM scripts' dry runs check it: a wrong value was printed as a
  # good command (an outside trial). Its line goes to stderr: stdout is the command.
  # With the Python the launch runs (accelerate's, beside it in a venv).
  launcher_bin="$(command -v accelerate)" || {
    echo "train_local.sh: no accelerate on PATH: activate the venv (make install)" >&2 && exit 2
  }
  python="$(dirname "$launcher_bin")/python" && [ -x "$python" ] || python=python3
  accel_check=()
  [ "${launch[3]}" != --config_file ] || accel_check=(--accelerate-config "${launch[4]}")
  "$python" -m amazon_sft.train --check-world "$NGPU" ${accel_check[@]+"${accel_check[@]}"} \
    "${args[@]:1}" "$@" >&2 || exit 2
  # pasted back anywhere, it runs as this script would: in the repo, with its environment
  printf 'cd %q && ' "$PWD"
  if [ "${ACCELERATE_USE_CPU:-}" = true ]; then printf 'ACCELERATE_USE_CPU=true '; fi
  printf '%q ' "${launch[@]}" "${args[@]}" "$@" | sed 's/ $//' && echo
  exit 0
fi
# A stop to this script goes on to training (launch/forward_stop.sh), also one that comes
# before the training processes exist (it was lost, and training ran on): SIGTERM and SIGUSR1 as
# SIGTERM, each Ctrl-C as SIGINT (a second one stops training at once, as in its own terminal).
# The launcher runs in a session of its own, so the terminal's Ctrl-C reaches this script only:
# torch's agent, which installs its own SIGINT handler, stopped its workers itself (exit 130)
# and a second Ctrl-C never reached them. If the agent is stopped all the same (a signal to
# its pid), it waits this long for its workers' checkpoint before it kills them (torch's
# default 30 s; read by recent torch, the install's pinned 2.13 among them: older ones ignore it).
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT="${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-900}"
# shellcheck source=launch/forward_stop.sh
source launch/forward_stop.sh
# train appends a refusal here (amazon_sft/train.py's REFUSAL_FILE_ENV), so the script can end
# on it: torch's failure report (or accelerate's warnings) came after the rank's one line
refusal_file="$(mktemp "${TMPDIR:-/tmp}/train_local-refused.XXXXXX")"
export AMAZON_SFT_REFUSAL_FILE="$refusal_file"
(exec setsid "${launch[@]}" "${args[@]}" "$@") &
launcher=$!
# Killed outright (SIGKILL, the OOM killer), this script passes nothing on and the launcher, in
# its own session, would train on unwatched, holding the GPUs and the run folder's lock: a
# watchdog, in a session of its own too, gives training the stop once the script is gone.
# The stops this script sent are kept in told_file, so the watchdog sends none twice (a second
# SIGTERM during Python's shutdown would kill a process that had saved).
# The refusal file is the script's to read: the watchdog removes it only once the script is gone.
told_file="$(mktemp "${TMPDIR:-/tmp}/train_local-told.XXXXXX")"
# shellcheck disable=SC2016  # expanded by the watchdog's shell
setsid bash -c 'source "$3"; while kill -0 "$1" && kill -0 "$2"; do sleep 1; done 2>/dev/null
  stops=1 stop_signal=TERM told_file="$4" && forward_stop "$2"; rm -f "$4"
  kill -0 "$1" 2>/dev/null || rm -f "$5"' watchdog "$$" \
  "$launcher" "$PWD/launch/forward_stop.sh" "$told_file" "$refusal_file" </dev/null >/dev/null 2>&1 &
forward_stop "$launcher"
if wait "$launcher"; then rc=0; else rc=$?; fi
rm -f "$told_file"
refused="$(head -n 1 "$refusal_file" 2>/dev/null || true)"
rm -f "$refusal_file"
# accelerate runs --quiet, which also drops its word on a process killed by a signal, one that
# prints nothing itself
if [ "$rc" -ne 0 ] && [ -n "$refused" ]; then
  echo "train_local.sh: $refused" >&2 && rc=2  # exit 2, as amazon-sft train refuses
elif [ "$rc" -ne 0 ]; then
  echo "train_local.sh: training ended with exit $rc; its error is above (a process killed by a" \
    "signal, as the OOM killer's SIGKILL, prints none: see dmesg)" >&2
fi
exit "$rc"
