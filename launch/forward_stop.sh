#!/usr/bin/env bash
# Sourced by launch/slurm_node.sh and launch/train_local.sh: a stop that reaches the script goes
# on to the training processes themselves (they save a checkpoint and exit 0), not to
# accelerate's launcher: torch's agent kills its workers TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds
# after a stop, and accelerate's one-process launcher terminates its child and SIGKILLs it 5 s
# later, both too soon for a large checkpoint.
#
# The caller counts its stop signals in `stops` (trap) before it starts the launcher: a stop that
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

# forward_stop LAUNCHER: until LAUNCHER exits, each of its children (the training processes)
# gets `$stop_signal` once for each stop the caller's traps counted in `stops`, as soon as it
# catches that signal. slurm_node.sh counts one stop at most; train_local.sh counts Ctrl-Cs, so a
# second one goes on as a second SIGINT (training stops at once, as in its own terminal).
forward_stop() {
  local launcher="$1" pid
  local -a told=() # sent, by pid (an indexed array: bash 3, macOS's, has no associative ones)
  while kill -0 "$launcher" 2>/dev/null; do
    if [ "${stops:-0}" -gt 0 ]; then
      for pid in $(pgrep -P "$launcher" || true); do
        if [ "${told[$pid]:-0}" -lt "$stops" ] && catches "${stop_signal:?}" "$pid"; then
          kill -"$stop_signal" "$pid" 2>/dev/null || true
          told[pid]=$((${told[$pid]:-0} + 1))
        fi
      done
    fi
    sleep 0.5 &
    wait $! || true # a trapped signal ends the wait at once: the stop goes on without delay
  done
}
