#!/usr/bin/env bash
# Sourced by launch/slurm_node.sh and launch/train_local.sh: a stop that reaches the script goes
# on to the training processes themselves (they save a checkpoint and exit 0), not to
# accelerate's launcher (torch's agent kills its workers some seconds after a stop, and
# accelerate's one-process launcher dies alone, leaving training unwatched).
#
# The caller traps its stop signals with `stop=1` before it starts the launcher: a stop that
# comes while the launcher is starting (no training process yet, or one not yet at its first
# line, where it installs its handler) is kept, and each training process gets it once it has
# its handler (its SigCgt in /proc). Once only: a second signal during Python's shutdown
# (handlers back to default) would kill a process that had saved, and turn a clean stop into a
# failed task.

# catches SIGNAL PID: PID has installed its own handler for SIGNAL (no /proc to read: yes).
catches() {
  local mask number
  number="$(kill -l "$1")"
  mask="$(awk '/^SigCgt:/ { print $2 }' "/proc/$2/status" 2>/dev/null)"
  if [ -z "$mask" ]; then return 0; fi
  (((16#$mask >> (number - 1)) & 1))
}

# forward_stop LAUNCHER SIGNAL: until LAUNCHER exits, once `stop` is 1, send SIGNAL to each of
# its children (the training processes) once it catches it.
forward_stop() {
  local launcher="$1" signal="$2" pid
  local -A told=()
  while kill -0 "$launcher" 2>/dev/null; do
    if [ "${stop:-0}" = 1 ]; then
      for pid in $(pgrep -P "$launcher" || true); do
        if [ -z "${told[$pid]:-}" ] && catches "$signal" "$pid"; then
          kill -"$signal" "$pid" 2>/dev/null || true
          told[$pid]=1
        fi
      done
    fi
    sleep 0.5 &
    wait $! || true # a trapped signal ends the wait at once: the stop goes on without delay
  done
}
