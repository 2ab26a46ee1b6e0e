#!/usr/bin/env bash
# bench/relay.sh — relay benchmark: switchboard against coturn and against a bare UDP forwarder.
#
# What it measures, all on 127.0.0.1:
#   1. Relay cost. The same paced turnutils_uclient load (UDP, ChannelData, REST credentials)
#      against coturn and switchboard, and the same load shape (examples/udp_load.rs) through
#      a minimal forwarder (examples/udp_forwarder.rs) as the floor, all echoed by one
#      turnutils_peer. Servers run one at a time, restarted for every run, in alternating order
#      over $ROUNDS rounds. The figure of merit is server CPU per round trip received back by
#      the client: the process's on-CPU time, all threads (schedstat; utime+stime from
#      /proc/PID/stat alongside). Wake-ups per round trip are reported too: they show whether
#      two loads reached the servers in the same bursts.
#   2. Idle allocation memory. examples/idle_allocs.rs makes $IDLE_ALLOCS allocations through
#      the server's UDP port; VmRSS/VmHWM before and after give bytes per allocation.
#
# The load: turnutils_uclient -c -m 20 -n 2000 -l 120 -z 5, i.e. 20 sessions (allocations with
# a channel to the peer), each sending 2000 ChannelData messages of 120 bytes every 5 ms:
# 4000 packets/s in and out, ~16 s per run, no loss on either server. -c turns off uclient's
# RTCP sessions, whose RTP allocation asks for a reserved port pair (EVEN-PORT with R), which
# switchboard declines with 508 by design. uclient also leaves a "probe" allocation per session.
#
# Usage: bench/relay.sh            (from anywhere; builds what it needs)
# Knobs (environment): ROUNDS=3 CLIENTS=20 MESSAGES=2000 SIZE=120 INTERVAL_MS=5
#   IDLE_ALLOCS=10000 SERVERS="coturn switchboard forwarder" (also: forwarder-threads,
#   forwarder-unconnected: relay sockets that sendto/recvfrom as a TURN relay's must)
#   COTURN_RELAY_THREADS=1 (or "default")
#   FORWARDER_MODE=epoll|threads SKIP_IDLE=0 BENCH_SKIP_BUILD=0 CARGO_TARGET_DIR BENCH_OUT
# Raw outputs go to bench/out/<timestamp>/ (git-ignored).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
OUT=${BENCH_OUT:-$ROOT/bench/out}/$(date +%Y%m%d-%H%M%S)

ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-20}           # uclient -m: sessions (= relayed allocations, = flows)
MESSAGES=${MESSAGES:-2000}       # uclient -n: messages per session
SIZE=${SIZE:-120}                # uclient -l: payload bytes
INTERVAL_MS=${INTERVAL_MS:-5}    # uclient -z: per-session interval
IDLE_ALLOCS=${IDLE_ALLOCS:-10000}
SERVERS=${SERVERS:-"coturn switchboard forwarder"}
COTURN_RELAY_THREADS=${COTURN_RELAY_THREADS:-1}   # "default" = coturn's own choice (one per CPU)
FORWARDER_MODE=${FORWARDER_MODE:-epoll}
SKIP_IDLE=${SKIP_IDLE:-0}
BENCH_SKIP_BUILD=${BENCH_SKIP_BUILD:-0}

SECRET=bench-secret-0123456789abcdef
REALM=bench.example
IP=127.0.0.1
# Fixed ports below Linux's ephemeral range (32768-60999), so no client socket takes them.
PEER_PORT=13480
COTURN_PORT=13478
SB_PORT=13578
SB_HTTP_PORT=13580
FWD_PORT=13678
IDLE_CLIENT_PORTS=14000-31999
LOAD_RELAY_PORTS=50000-59999
IDLE_RELAY_PORTS=40000-59999

EXAMPLES=$TARGET_DIR/release/examples
SB_BIN=$TARGET_DIR/release/switchboard
CLK_TCK=$(getconf CLK_TCK)
RUN_TIMEOUT=$((MESSAGES * INTERVAL_MS / 1000 + 60))   # seconds, per load run

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Process bookkeeping: everything we start is recorded and stopped on exit, by pid.
PIDS=()
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
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# True once something listens on UDP port $1 (IPv4), from /proc/net/udp.
udp_bound() {
    local hex
    hex=$(printf ':%04X' "$1")
    awk -v p="$hex" 'NR > 1 && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
        /proc/net/udp
}
# Waits up to $2 seconds for a UDP listener on port $1, giving up early if pid $3 died.
wait_udp() {
    local port=$1 secs=$2 pid=$3 i
    for ((i = 0; i < secs * 10; i++)); do
        udp_bound "$port" && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
port_free() { ! udp_bound "$1"; }

# Server CPU, two ways:
# - cpu_ticks: "utime stime" of the whole process (all threads, live and exited), from
#   /proc/PID/stat, in clock ticks (1/CLK_TCK s). Their sum follows the scheduler's exact
#   runtime; the user/system split is sampled at scheduler ticks (tick-based accounting), and
#   with ~100 us of work per wake-up it swings from all-user to all-system between runs.
#   Field 2 (comm) may hold spaces, so fields are counted after its closing parenthesis.
# - cpu_ns: the sum of the threads' on-CPU time from /proc/PID/task/*/schedstat, in
#   nanoseconds, but it misses threads that exit between two readings (none of the servers
#   here retire threads while running). The headline figure.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12, $13 }'; }
cpu_ns() { cat "/proc/$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f\n", s }'; }
# Voluntary context switches of all threads: how often the server went to sleep waiting for
# packets. Per round trip, it shows how many packets a wake-up found, which the load's
# burstiness decides and which moves CPU per packet more than anything else at these rates.
wakeups() { cat "/proc/$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ { s += $2 } END { print s + 0 }'; }
threads_of() { ls "/proc/$1/task" | wc -l; }
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
loadavg() { cut -d' ' -f1 /proc/loadavg; }

# ---------------------------------------------------------------------------------------------
# 1. Build and tools.
mkdir -p "$OUT"
log "output: $OUT"
ulimit -n "$(ulimit -Hn)"
log "open files limit: $(ulimit -n)"
if (($(ulimit -n) < IDLE_ALLOCS + 1000)); then
    log "warning: open files limit $(ulimit -n) is tight for $IDLE_ALLOCS allocations"
fi

if ! command -v turnserver >/dev/null || ! command -v turnutils_uclient >/dev/null \
    || ! command -v turnutils_peer >/dev/null; then
    log "installing coturn"
    DEBIAN_FRONTEND=noninteractive apt-get install -y coturn >"$OUT/apt.log" 2>&1 \
        || die "apt-get install coturn failed (see $OUT/apt.log)"
    # The package may start its system service; this benchmark runs its own foreground server.
    if command -v systemctl >/dev/null && systemctl is-active --quiet coturn 2>/dev/null; then
        systemctl disable --now coturn >/dev/null 2>&1 || true
    fi
    service coturn stop >/dev/null 2>&1 || true
fi

SB_OK=1
if [[ $BENCH_SKIP_BUILD != 1 ]]; then
    log "building examples (release)"
    (cd "$ROOT" && cargo build --release --example udp_forwarder --example udp_load \
        --example idle_allocs) >"$OUT/build-examples.log" 2>&1 \
        || die "building examples failed (see $OUT/build-examples.log)"
    if [[ " $SERVERS " == *" switchboard "* ]]; then
        log "building switchboard (release)"
        if ! (cd "$ROOT" && cargo build --release --bin switchboard) >"$OUT/build-switchboard.log" 2>&1; then
            log "warning: switchboard did not build (see $OUT/build-switchboard.log); skipping it"
            SB_OK=0
        fi
    fi
fi
for ex in udp_forwarder udp_load idle_allocs; do
    [[ -x $EXAMPLES/$ex ]] || die "missing $EXAMPLES/$ex"
done
if [[ " $SERVERS " == *" switchboard "* && ! -x $SB_BIN ]]; then
    log "warning: no $SB_BIN; skipping switchboard"
    SB_OK=0
fi
for name in $SERVERS; do
    case $name in coturn | switchboard | forwarder | forwarder-threads | forwarder-unconnected) ;; *) die "unknown server $name" ;; esac
done

for port in $PEER_PORT $COTURN_PORT $SB_PORT $FWD_PORT; do
    port_free "$port" || die "UDP port $port is already in use"
done

NPROC=$(nproc)
COTURN_VERSION=$(turnserver --version 2>/dev/null | head -1 || true)
{
    echo "date: $(date -Is)"
    echo "host: $(uname -srm), $NPROC CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "coturn: $COTURN_VERSION; relay threads: $COTURN_RELAY_THREADS (coturn's default: one per CPU = $NPROC)"
    echo "load: turnutils_uclient -c -m $CLIENTS -n $MESSAGES -l $SIZE -z $INTERVAL_MS (UDP, ChannelData, no RTCP)"
    echo "forwarder mode: $FORWARDER_MODE; rounds: $ROUNDS; servers: $SERVERS"
} | tee "$OUT/env.txt" >&2

# ---------------------------------------------------------------------------------------------
# 2. The echo peer, shared by every run.
turnutils_peer -L "$IP" -p "$PEER_PORT" >"$OUT/peer.log" 2>&1 &
PEER_PID=$!
PIDS+=("$PEER_PID")
wait_udp "$PEER_PORT" 10 "$PEER_PID" || die "turnutils_peer did not start (see $OUT/peer.log)"

# ---------------------------------------------------------------------------------------------
# Servers. start_server NAME PHASE LOGFILE sets SERVER_PID and SERVER_PORT; PHASE is
# "load" or "idle" (the idle phase needs quotas and port ranges for $IDLE_ALLOCS allocations).
SERVER_PID=
SERVER_PORT=
start_server() {
    local name=$1 phase=$2 logfile=$3 ports lo hi
    ports=$LOAD_RELAY_PORTS
    [[ $phase == idle ]] && ports=$IDLE_RELAY_PORTS
    lo=${ports%-*}
    hi=${ports#*-}
    case $name in
    coturn)
        SERVER_PORT=$COTURN_PORT
        local threads=()
        [[ $COTURN_RELAY_THREADS != default ]] && threads=(--relay-threads="$COTURN_RELAY_THREADS")
        local quota=()
        [[ $phase == idle ]] && quota=(--total-quota=$((IDLE_ALLOCS + 2000)) --user-quota=$((IDLE_ALLOCS + 2000)))
        # -n: no config file. Everything else explicit; userdb in $OUT so nothing system-wide
        # is touched; logs to stdout (redirected).
        turnserver -n --use-auth-secret --static-auth-secret="$SECRET" --realm="$REALM" \
            --listening-ip="$IP" --relay-ip="$IP" --listening-port="$COTURN_PORT" \
            --min-port="$lo" --max-port="$hi" --allow-loopback-peers \
            --no-tls --no-dtls --no-tcp --no-cli --no-rfc5780 \
            --log-file=stdout --simple-log --pidfile="$OUT/turnserver.pid" \
            --userdb="$OUT/turndb" "${threads[@]}" "${quota[@]}" \
            >"$logfile" 2>&1 &
        ;;
    switchboard)
        SERVER_PORT=$SB_PORT
        local conf=$OUT/switchboard-$phase.toml
        {
            echo "[http]"
            echo "listen = \"$IP:$SB_HTTP_PORT\""
            echo "[store]"
            echo "path = \"$OUT/switchboard.db\""
            echo "[turn]"
            echo "listen = [\"$IP:$SB_PORT\"]"
            echo "relay_ip = \"$IP\""
            echo "relay_ports = \"$ports\""
            echo "realm = \"$REALM\""
            echo "secret = \"$SECRET\""
            echo "allow_peers = [\"$IP/32\"]"
            # uclient runs every session as one user, and each session leaves an extra
            # "probe" allocation behind (uclient's load-balancing probe).
            echo "user_quota = $((2 * CLIENTS + 10))"
            [[ $phase == idle ]] && echo "total_quota = $((IDLE_ALLOCS + 2000))"
            echo "[log]"
            echo "level = \"warn\""
        } >"$conf"
        (cd "$OUT" && exec "$SB_BIN" serve --config "$conf") >"$logfile" 2>&1 &
        ;;
    forwarder | forwarder-threads | forwarder-unconnected)
        SERVER_PORT=$FWD_PORT
        local mode=$FORWARDER_MODE extra=()
        [[ $name == forwarder-threads ]] && mode=threads
        [[ $name == forwarder-unconnected ]] && extra=(--unconnected)
        "$EXAMPLES/udp_forwarder" --listen "$IP:$FWD_PORT" --peer "$IP:$PEER_PORT" \
            --mode "$mode" "${extra[@]}" >"$logfile" 2>&1 &
        ;;
    *) die "unknown server $name" ;;
    esac
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    if ! wait_udp "$SERVER_PORT" 15 "$SERVER_PID"; then
        log "warning: $name did not bind $IP:$SERVER_PORT (see $logfile)"
        stop_server
        return 1
    fi
    sleep 0.5 # let it finish starting (coturn initialises relay ports after binding)
}
stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    stop_pid "$SERVER_PID"
    local kept=() pid
    for pid in "${PIDS[@]}"; do [[ $pid == "$SERVER_PID" ]] || kept+=("$pid"); done
    PIDS=("${kept[@]}")
    SERVER_PID=
}

# ---------------------------------------------------------------------------------------------
# 3./4. Load runs. Each appends one line to $RESULTS (CPU figures are per round trip received).
RESULTS=$OUT/results.tsv
COLUMNS_TSV="server round sent recv lost transmit_s rt_per_s cpu_ns cpu_us_per_rt ticks ticks_us_per_rt"
COLUMNS_TSV+=" user_us_per_rt sys_us_per_rt rtt_avg_ms rtt_max_ms threads load1 wakeups_per_rt"
tr ' ' '\t' <<<"$COLUMNS_TSV" >"$RESULTS"

run_load() {
    local name=$1 round=$2 tag=$name-r$2
    local slog=$OUT/server-$tag.log clog=$OUT/load-$tag.log
    if [[ $name == switchboard && $SB_OK == 0 ]]; then
        log "skipping $tag: no switchboard binary"
        return 0
    fi
    kill -0 "$PEER_PID" 2>/dev/null || die "the echo peer died"
    start_server "$name" load "$slog" || { log "skipping $tag"; return 0; }
    local load1 user0 sys0 user1 sys1 ns0 ns1 wake0 wake1 threads rc=0
    load1=$(loadavg)
    read -r user0 sys0 < <(cpu_ticks "$SERVER_PID")
    ns0=$(cpu_ns "$SERVER_PID")
    wake0=$(wakeups "$SERVER_PID")
    if [[ $name == forwarder* ]]; then
        # udp_load's timer defaults to the interval: that reproduces uclient's bursts (one
        # datagram per session per interval, see examples/udp_load.rs).
        timeout -k 5 "$RUN_TIMEOUT" "$EXAMPLES/udp_load" --target "$IP:$FWD_PORT" \
            --flows "$CLIENTS" --messages "$MESSAGES" --size "$SIZE" \
            --interval-ms "$INTERVAL_MS" >"$clog" 2>&1 || rc=$?
    else
        # -c: no RTCP sessions. With RTCP, uclient's RTP allocation asks for a reserved port
        # pair (EVEN-PORT with R), which switchboard refuses (508) by design.
        timeout -k 5 "$RUN_TIMEOUT" turnutils_uclient -c -W "$SECRET" -u bench \
            -e "$IP" -r "$PEER_PORT" -m "$CLIENTS" -n "$MESSAGES" -l "$SIZE" \
            -z "$INTERVAL_MS" -p "$SERVER_PORT" "$IP" >"$clog" 2>&1 || rc=$?
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        log "warning: $name exited during $tag (see $slog)"
        stop_server
        return 0
    fi
    ns1=$(cpu_ns "$SERVER_PID")
    wake1=$(wakeups "$SERVER_PID")
    read -r user1 sys1 < <(cpu_ticks "$SERVER_PID")
    threads=$(threads_of "$SERVER_PID")
    stop_server
    ((rc == 0)) || log "warning: load client exited with $rc in $tag (see $clog)"

    local sent recv transmit rtt_avg rtt_max
    if [[ $name == forwarder* ]]; then
        # udp_load's last line: summary flows=.. sent=.. received=.. ... transmit_s=.. rtt_avg_ms=..
        local summary
        summary=$(grep '^summary ' "$clog" | tail -1 || true)
        [[ -n $summary ]] || { log "warning: no summary in $clog"; return 0; }
        field() { tr ' ' '\n' <<<"$summary" | awk -F= -v k="$1" '$1 == k { print $2 }'; }
        sent=$(field sent)
        recv=$(field received)
        transmit=$(field transmit_s)
        rtt_avg=$(field rtt_avg_ms)
        rtt_max=$(field rtt_max_ms)
    else
        # uclient's summary (its clock has whole seconds and whole milliseconds):
        #   start_mclient: tot_send_msgs=40000, tot_recv_msgs=40000
        #   Total transmit time is 16
        #   Average round trip delay 0.018950 ms; min = 0 ms, max = 7 ms
        sent=$(sed -n 's/.*start_mclient: tot_send_msgs=\([0-9]*\), tot_recv_msgs=.*/\1/p' "$clog" | tail -1)
        recv=$(sed -n 's/.*start_mclient: tot_send_msgs=[0-9]*, tot_recv_msgs=\([0-9]*\).*/\1/p' "$clog" | tail -1)
        transmit=$(sed -n 's/.*Total transmit time is \([0-9]*\).*/\1/p' "$clog" | tail -1)
        rtt_avg=$(sed -n 's/.*Average round trip delay \([0-9.]*\) ms.*/\1/p' "$clog" | tail -1)
        rtt_max=$(sed -n 's/.*Average round trip delay .*max = \([0-9]*\) ms.*/\1/p' "$clog" | tail -1)
        [[ -n $sent && -n $recv ]] || { log "warning: no uclient summary in $clog"; return 0; }
    fi
    awk -v s="$name" -v r="$round" -v sent="$sent" -v recv="$recv" -v t="${transmit:-0}" \
        -v ns=$((ns1 - ns0)) -v ut=$((user1 - user0)) -v st=$((sys1 - sys0)) -v hz="$CLK_TCK" \
        -v ra="${rtt_avg:-0}" -v rm="${rtt_max:-0}" -v th="$threads" -v l1="$load1" \
        -v wk=$((wake1 - wake0)) 'BEGIN {
            rate = t > 0 ? recv / t : 0
            tick_us = recv > 0 ? 1e6 / hz / recv : 0
            ns_us = recv > 0 ? 1e-3 / recv : 0
            wk_rt = recv > 0 ? wk / recv : 0
            printf "%s\t%d\t%d\t%d\t%d\t%.3f\t%.1f\t%d\t%.2f\t%d\t%.2f\t%.2f\t%.2f\t%.4f\t%s\t%d\t%s\t%.3f\n",
                s, r, sent, recv, sent - recv, t, rate, ns, ns * ns_us, ut + st, (ut + st) * tick_us,
                ut * tick_us, st * tick_us, ra, rm, th, l1, wk_rt
        }' >>"$RESULTS"
    log "$(tail -1 "$RESULTS" | awk -F'\t' '{
        printf "%s round %s: %d/%d round trips, lost %d, %.0f rt/s, CPU %.2f us/rt (ticks: %.2f), %.3f wake-ups/rt, %d threads, load %s",
            $1, $2, $4, $3, $5, $7, $9, $11, $18, $16, $17 }')"
}

read -r -a ORDER <<<"$SERVERS"
for ((round = 1; round <= ROUNDS; round++)); do
    # Alternate the order (A B C, C B A, ...) so drift in the machine's state spreads evenly.
    if ((round % 2 == 1)); then
        list=("${ORDER[@]}")
    else
        list=()
        for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do list+=("${ORDER[i]}"); done
    fi
    for name in "${list[@]}"; do
        log "round $round/$ROUNDS: $name"
        run_load "$name" "$round"
    done
done

# ---------------------------------------------------------------------------------------------
# 5. Idle allocation memory.
IDLE=$OUT/idle.tsv
printf 'server\trequested\tallocated\tfailed\trss_before_kb\trss_after_kb\thwm_after_kb\tbytes_per_alloc\tfds_after\n' >"$IDLE"
run_idle() {
    local name=$1 slog=$OUT/server-$1-idle.log clog=$OUT/idle-$1.log
    [[ $name == switchboard && $SB_OK == 0 ]] && return 0
    start_server "$name" idle "$slog" || { log "skipping idle $name"; return 0; }
    sleep 1
    local rss0 rss1 hwm1 fds1 rc=0
    rss0=$(status_kb "$SERVER_PID" VmRSS)
    timeout -k 5 300 "$EXAMPLES/idle_allocs" --server "$IP:$SERVER_PORT" --realm "$REALM" \
        --secret "$SECRET" --count "$IDLE_ALLOCS" --client-ports "$IDLE_CLIENT_PORTS" \
        >"$clog" 2>&1 || rc=$?
    sleep 2 # let deferred work settle
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        log "warning: $name exited during the idle test (see $slog)"
        stop_server
        return 0
    fi
    rss1=$(status_kb "$SERVER_PID" VmRSS)
    hwm1=$(status_kb "$SERVER_PID" VmHWM)
    fds1=$(find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
    stop_server
    ((rc == 0)) || log "warning: idle_allocs exited with $rc (see $clog)"
    local summary allocated failed
    summary=$(grep '^summary ' "$clog" | tail -1 || true)
    allocated=$(tr ' ' '\n' <<<"$summary" | awk -F= '$1 == "allocated" { print $2 }')
    failed=$(tr ' ' '\n' <<<"$summary" | awk -F= '$1 == "failed" { print $2 }')
    grep '^idle_allocs: failure' "$clog" >&2 || true
    awk -v s="$name" -v n="$IDLE_ALLOCS" -v a="${allocated:-0}" -v f="${failed:-0}" \
        -v r0="$rss0" -v r1="$rss1" -v h="$hwm1" -v fd="$fds1" 'BEGIN {
            per = a > 0 ? (r1 - r0) * 1024 / a : 0
            printf "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.0f\t%d\n", s, n, a, f, r0, r1, h, per, fd
        }' >>"$IDLE"
    log "$(tail -1 "$IDLE" | awk -F'\t' '{ printf "idle %s: %d/%d allocations, RSS %.1f -> %.1f MiB (HWM %.1f), %d bytes/allocation", $1, $3, $2, $5/1024, $6/1024, $7/1024, $8 }')"
}
if [[ $SKIP_IDLE != 1 ]]; then
    for name in "${ORDER[@]}"; do
        [[ $name == forwarder* ]] && continue
        log "idle allocations: $name ($IDLE_ALLOCS)"
        run_idle "$name"
    done
fi

# ---------------------------------------------------------------------------------------------
# 6. Report.
{
    echo
    echo "== relay cost: $CLIENTS sessions x $MESSAGES messages x $SIZE B every $INTERVAL_MS ms, $ROUNDS round(s) =="
    awk -F'\t' -v order="$SERVERS" '
        NR == 1 { next }
        {
            s = $1; n[s]++
            sent[s] += $3; lost[s] += $5; rate[s] += $7; cpu[s] += $9; tick[s] += $11
            rtt[s] += $14; th[s] = $16; wk[s] += $18
            if ($15 + 0 > rmax[s] + 0) rmax[s] = $15
            rounds[s] = rounds[s] (rounds[s] == "" ? "" : " ") sprintf("%.1f", $9)
        }
        END {
            printf "%-17s %6s %6s %9s %-20s %6s %7s %8s %8s %4s\n", "server", "rt/s", "loss%",
                "CPU us/rt", "(per round)", "ticks", "wake/rt", "rtt avg", "rtt max", "thr"
            k = split(order, names, " ")
            for (i = 1; i <= k; i++) {
                s = names[i]
                if (!(s in n)) { printf "%-17s (no results: see the log above)\n", s; continue }
                mean[s] = cpu[s] / n[s]
                loss = sent[s] ? 100 * lost[s] / sent[s] : 0
                printf "%-17s %6.0f %6.3f %9.2f %-20s %6.2f %7.3f %8.3f %8.3f %4d\n", s,
                    rate[s] / n[s], loss, mean[s], "(" rounds[s] ")", tick[s] / n[s],
                    wk[s] / n[s], rtt[s] / n[s], rmax[s], th[s]
            }
            print ""
            if (("switchboard" in n) && ("coturn" in n))
                printf "CPU per round trip, switchboard / coturn:    %.2f\n", mean["switchboard"] / mean["coturn"]
            if (("switchboard" in n) && ("forwarder" in n))
                printf "CPU per round trip, switchboard / forwarder: %.2f\n", mean["switchboard"] / mean["forwarder"]
            if (("coturn" in n) && ("forwarder" in n))
                printf "CPU per round trip, coturn / forwarder:      %.2f\n", mean["coturn"] / mean["forwarder"]
        }' "$RESULTS"
    echo
    echo "CPU us/rt: server on-CPU time (sum of its threads' schedstat) per round trip received"
    echo "  back, mean of rounds. ticks: the same from /proc/PID/stat utime+stime (10 ms steps)."
    echo "  (results.tsv also has utime/stime apart; the kernel samples that split per scheduler"
    echo "  tick, so at this load it is noise.)"
    echo "wake/rt: the server's voluntary context switches per round trip (lower: more packets"
    echo "  per wake-up; set by the load's burstiness, so compare CPU only where these are close)."
    echo "rt/s: round trips received / the client's transmit time, which includes the 1-6 s random"
    echo "  start. rtt in ms; uclient's clock counts whole milliseconds."
    if [[ $SKIP_IDLE != 1 ]]; then
        echo
        echo "== idle allocations: $IDLE_ALLOCS requested =="
        awk -F'\t' 'NR == 1 { printf "%-12s %10s %7s %11s %11s %11s %8s %7s\n", "server", "allocated", "failed", "RSS before", "RSS after", "HWM after", "B/alloc", "fds"; next }
            { printf "%-12s %10d %7d %7.1f MiB %7.1f MiB %7.1f MiB %8d %7d\n", $1, $3, $4, $5/1024, $6/1024, $7/1024, $8, $9 }' "$IDLE"
        echo "(RSS is user-space memory: each relay socket's kernel memory, one per allocation in"
        echo " both servers as the fds column shows, is not in it.)"
    fi
    echo
    echo "raw outputs: $OUT"
} | tee "$OUT/report.txt"
