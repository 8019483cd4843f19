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
# its handler (`ready`). Once only: a second signal during Python's shutdown
# (handlers back to default) would kill a process that had saved, and turn a clean stop into a
# failed task.

# ready PID: PID has installed the training's stop handler. SIGUSR1 is the sign: only
# amazon_sft.stop_signal catches it (Python catches SIGINT itself from its first line, and torch's
# agent its own signals, so their SigCgt says nothing of the handler; a Ctrl-C sent on it killed
# a training process still importing, with no checkpoint). /proc is read with builtins only: a
# signal that interrupts a forked reader left an empty mask read as "ready". No /proc at all
# (macOS): ready at once.
ready() {
  [ -d /proc/self ] || return 0
  local key value mask=""
  while read -r key value; do
    if [ "$key" = "SigCgt:" ]; then mask="$value" && break; fi
  done 2>/dev/null <"/proc/$1/status" || true
  [ -n "$mask" ] && (((16#$mask >> 9) & 1)) # SIGUSR1 is signal 10: bit 9
}

# forward_stop LAUNCHER: until LAUNCHER exits, each of its children (the training processes)
# gets `$stop_signal` once for each stop the caller's traps counted in `stops`, as soon as it is
# `ready`. slurm_node.sh counts one stop at most; train_local.sh counts Ctrl-Cs, so a
# second one goes on as a second SIGINT (training stops at once, as in its own terminal).
# With `told_file` set, each stop sent is written there (a pid a line) and the ones already
# written count as sent: train_local.sh's watchdog goes on where the killed script stopped, and
# does not send a stop twice.
forward_stop() {
  local launcher="$1" pid
  local -a told=() # sent, by pid (an indexed array: bash 3, macOS's, has no associative ones)
  if [ -n "${told_file:-}" ] && [ -f "$told_file" ]; then
    while read -r pid; do told[pid]=$((${told[$pid]:-0} + 1)); done <"$told_file"
  fi
  while kill -0 "$launcher" 2>/dev/null; do
    if [ "${stops:-0}" -gt 0 ]; then
      for pid in $(pgrep -P "$launcher" || true); do
        if [ "${told[$pid]:-0}" -lt "$stops" ] && ready "$pid"; then
          kill -"${stop_signal:?}" "$pid" 2>/dev/null || true
          told[pid]=$((${told[$pid]:-0} + 1))
          if [ -n "${told_file:-}" ]; then echo "$pid" >>"$told_file"; fi
        fi
      done
    fi
    sleep 0.5 &
    wait $! || true # a trapped signal ends the wait at once: the stop goes on without delay
  done
}
