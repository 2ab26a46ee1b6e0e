# bench/lib.sh: what the benchmark scripts share. Sourced, not run, with ROOT set (the
# checkout).

# Where cargo builds (CARGO_TARGET_DIR, relative to the checkout if relative), and this run's
# output directory.
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
OUT=${BENCH_OUT:-$ROOT/bench/out}/$(date +%Y%m%d-%H%M%S)

# The knobs every script shares (environment, with these defaults), and the fixed secrets and
# address of the daemons they start (soak.sh names its own secrets).
STORE_DIR=${STORE_DIR:-/var/tmp}
LOG_LEVEL=${LOG_LEVEL:-info}
BENCH_SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
JWT_SECRET=bench-jwt-secret-0123456789abcdef
TURN_SECRET=bench-turn-secret-0123456789abcdef
IP=127.0.0.1

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

# Process bookkeeping: everything a script starts is recorded in PIDS (stop_pid and forget_pid)
# and stopped on exit; WORK, its scratch directory if it makes one, is removed then (kept with
# KEEP_STORE=1).
PIDS=()
WORK=
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    PIDS=()
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ ${KEEP_STORE:-0} == 1 ]]; then
            log "stores kept in $WORK"
        else
            rm -rf -- "$WORK"
        fi
    fi
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A field of a load generator's machine-readable line: the last line starting with "$1 "
# (a word, or a pattern like "phase .* name=max"), its key $2, from file $3.
kv() { grep "^$1 " "$3" | tail -1 | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2 }'; }

# The daemon's config for a benchmark, to file $1: TURN and HTTP on $IP port 0, the scripts'
# TURN_SECRET and JWT_SECRET, open conversations (the generators make a conversation per
# call), the store at $2, log level $3. Lines for [turn] and [http] beyond these: $4 and $5.
# Every client of a benchmark comes from $IP, so the per-source cap is lifted (http's global
# max_connections still holds), and so is the per-user request budget.
daemon_config() {
    {
        echo "[turn]"
        echo "listen = [\"$IP:0\"]"
        echo "relay_ip = \"$IP\""
        echo "secret = \"$TURN_SECRET\""
        [[ -z ${4:-} ]] || echo "$4"
        echo "[http]"
        echo "listen = \"$IP:0\""
        echo "max_connections_per_source = 1000000"
        # Each load client's two users make requests as fast as the daemon answers.
        echo "user_rate = 1000000"
        echo "user_burst = 1000000"
        [[ -z ${5:-} ]] || echo "$5"
        echo "[auth]"
        echo "jwt_secret = \"$JWT_SECRET\""
        echo "open_conversations = true"
        echo "[store]"
        echo "path = \"$2\""
        echo "[log]"
        echo "level = \"$3\""
        echo "format = \"text\""
    } >"$1"
}

# The address a server started as pid $2 logs in $1 (a line with "$3addr=IP:PORT"), waiting
# up to 20 s for it; nothing if the server died first or never said.
logged_addr() {
    local addr= i
    for ((i = 0; i < 200; i++)); do
        addr=$(sed -n "s/.*${3}addr=\([0-9.]*:[0-9]*\).*/\1/p" "$1" | head -1)
        [[ -n $addr ]] && break
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done
    echo "$addr"
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
    local out=$OUT/build-loadgen.log
    log "building bench/loadgen (release)"
    (cd "$ROOT" && cargo build --release --locked -p switchboard-loadgen) >"$out" 2>&1 \
        || { show_tail "$out" 30; die "building bench/loadgen failed (see $out)"; }
}

# The daemon (release) and the load generators.
build_all() {
    log "building switchboard (release)"
    (cd "$ROOT" && cargo build --release --locked --bin switchboard) >"$OUT/build.log" 2>&1 \
        || { show_tail "$OUT/build.log" 30; die "the build failed (see $OUT/build.log)"; }
    build_loadgen
}

# A benchmark's start: its output folder, then what it runs built (BENCH_SKIP_BUILD=1: as it
# is); each binary named must then be there.
start_bench() {
    mkdir -p "$OUT"
    log "output: $OUT"
    [[ $BENCH_SKIP_BUILD == 1 ]] || build_all
    local bin
    for bin in "$@"; do
        [[ -x $bin ]] || die "missing $bin"
    done
}

# A benchmark's end: the report on stdin goes to the terminal and to report.txt, after it the
# raw outputs' folder; the exit status is 1 when FAILED is set (a run failed).
end_bench() {
    {
        cat
        echo
        echo "raw outputs: $OUT"
    } | tee "$OUT/report.txt"
    if ((FAILED)); then
        log "FAILED: at least one run failed (see above)"
        exit 1
    fi
}

# The first lines of a run's env.txt: when, and on what machine ($1 appended to that line).
describe_host() {
    echo "date: $(date -Is)"
    echo "host: $(uname -srm), $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)${1:-}"
}
# Which daemon binary ($1) and which commit it was built from.
describe_switchboard() {
    echo "switchboard: $("$1" --version 2>/dev/null || echo '?'); git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- 2>/dev/null || echo ' (with local changes)')"
}
