# bench/lib.sh: what the benchmark scripts share. Sourced, not run, with ROOT set (the
# checkout).

# Where cargo builds (CARGO_TARGET_DIR, relative to the checkout if relative), and this run's
# output directory.
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
OUT=${BENCH_OUT:-$ROOT/bench/out}/$(date +%Y%m%d-%H%M%S)

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The last lines of a log, indented, to stderr: what a failed server or client said.
show_tail() {
    local file=$1 n=${2:-15}
    [[ -s $file ]] || { log "  ($file is empty)"; return 0; }
    log "  last lines of $file:"
    tail -n "$n" "$file" | sed 's/^/      | /' >&2
}

# A process's CPU, two ways:
# - cpu_ticks: "utime stime" of the whole process (all threads, live and exited), from
#   /proc/PID/stat, in clock ticks (1/CLK_TCK s). Their sum follows the scheduler's exact
#   runtime; the user/system split is sampled at scheduler ticks. Field 2 (comm) may hold
#   spaces, so fields are counted after its closing parenthesis.
# - cpu_ns: the sum of the threads' on-CPU time from /proc/PID/task/*/schedstat, in
#   nanoseconds (threads that exit between two readings are missed). The headline figure.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12, $13 }'; }
cpu_ns() { cat "/proc/$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f\n", s }'; }

# Stops a process we started: SIGTERM, SIGKILL 5 s later if it is still there, then reaped.
stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Drops a pid from the caller's PIDS (what its exit trap stops).
forget_pid() {
    local kept=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || kept+=("$p"); done
    PIDS=("${kept[@]}")
}

# Stops a process we started and want the exit status of (a server that must exit 0 on
# SIGTERM): SIGTERM, then up to $2 seconds for it to exit, then SIGKILL. Sets STOP_RC to its
# exit status (137 if it had to be killed) and STOP_KILLED to 1 if it had to be. Not in a
# subshell: only the shell that started the process can reap it.
stop_for_status() {
    local pid=$1 secs=$2 i
    STOP_RC=0
    STOP_KILLED=0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" || STOP_RC=$?
            return 0
        fi
        sleep 0.1
    done
    stop_pid "$pid"
    STOP_RC=137
    STOP_KILLED=1
}

# The load generators: one binary, bench/loadgen, a subcommand each (udp, udp-forwarder,
# idle-allocs, calls, hub). Built by its own cargo command: built with the daemon in one, its
# dependencies' features would be unified into the daemon's build.
LOADGEN=$TARGET_DIR/release/loadgen
build_loadgen() {
    log "building bench/loadgen (release)"
    (cd "$ROOT" && cargo build --release --locked -p switchboard-loadgen) >"$1" 2>&1 \
        || { show_tail "$1"; die "building bench/loadgen failed (see $1)"; }
}
