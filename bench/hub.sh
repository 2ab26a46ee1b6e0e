#!/usr/bin/env bash
# bench/hub.sh — signaling hub benchmark: N sockets in pairs exchanging call:ice-candidate
# messages through switchboard's hub (over Socket.IO and over /ws), beside a Node socket.io
# server doing the same relay, driven by the same load generator in the same run.
#
# What it measures, all on 127.0.0.1, one server at a time, each started fresh:
#   - switchboard-sio: `switchboard serve` (HTTP on port 0, open conversations, a fresh store in
#     $STORE_DIR, http.max_connections above $SOCKETS), driven over /socket.io/ (Engine.IO v4,
#     websocket transport, spoken raw by the generator);
#   - switchboard-ws: the same daemon, fresh again, driven over its JSON WebSocket /ws;
#   - node: bench/node/relay_server.mjs, the npm `socket.io` (4.x, installed here with
#     `npm ci --ignore-scripts`) doing the same relay: the handshake's JWT checked (HS256, exp),
#     a room per user, rosters per call, sender and target checked, fromUserId set by the
#     server. It keeps no store and enforces no rate, queue or per-user bound (switchboard does).
# The load (`loadgen hub`, bench/loadgen/src/hub, one tokio thread by default, the same binary and settings for
# every server):
#   1. $SOCKETS sockets connect (one user each); the server's VmRSS before and after gives
#      MiB per 1,000 sockets.
#   2. Each pair (A, B) gets a live call over the server's REST API (B known, A initiates, B
#      answers: on switchboard three durable transitions, plus the ringing its socket causes).
#   3. Phases, each $WARMUP s of warm-up and $DURATION s measured, one second apart:
#      - max: every pair passes $WINDOW candidate(s) back and forth, a socket sending at most
#        $MAX_RATE per second (under the hub's 50/s): a closed loop bound by the server, so
#        messages/s is its throughput here (the generator shares the machine's CPUs);
#      - fixed: the same at $FIXED_LOAD messages/s in all ($FIXED_LOAD / $SOCKETS per socket
#        per second), a load every server carries: latency without saturation.
#      Latency is send → receipt of each candidate (its send time travels in it). Server CPU:
#      the sum of its threads' on-CPU time (schedstat) per message delivered; the generator's
#      (getrusage) and what other processes took (/proc/stat) are printed too.
#   4. The sockets close; the server is stopped with SIGTERM (switchboard must exit 0).
# Any error (a socket refused or closed, an `error` event such as rate_limited, a candidate
# from the wrong sender, a failed setup request) fails the run. Targets (issue 5): switchboard
# ≥ 5× node's throughput at a lower p99, and $SOCKETS = 10,000 sockets in under 200 MiB.
#
# Usage: bench/hub.sh                     (from anywhere; builds what it needs; ~2.5 min after it)
#        SOCKETS=2000 SERVERS="switchboard-ws node" bench/hub.sh
# Knobs (environment): SOCKETS=10000 (even) WINDOW=1 MAX_RATE=40 FIXED_LOAD=5000 WARMUP=2
#   DURATION=10 SERVERS="switchboard-sio switchboard-ws node" THREADS=1 (generator threads)
#   PIN=1|0 (1, the default with two CPUs or more: the server on CPU 1, the generator on CPU
#   0, with taskset, so that each server has one whole CPU, as Node's one JS thread does, and
#   the generator cannot take its time; 0: anywhere, which measured noisier and lower)
#   SWITCHBOARD_BIN (another build of the daemon to measure, e.g. one kept from before a change)
#   STORE_DIR=/var/tmp LOG_LEVEL=info BENCH_SKIP_BUILD=0 CARGO_TARGET_DIR BENCH_OUT
# Raw outputs go to bench/out/<timestamp>/ (git-ignored); the exit status is non-zero if any
# run failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh" # log, die, ...; TARGET_DIR and OUT

SOCKETS=${SOCKETS:-10000}
WINDOW=${WINDOW:-1}
MAX_RATE=${MAX_RATE:-40}
FIXED_LOAD=${FIXED_LOAD:-5000}
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-10}
SERVERS=${SERVERS:-"switchboard-sio switchboard-ws node"}
THREADS=${THREADS:-1}
PIN=${PIN:-$( (($(nproc) >= 2)) && echo 1 || echo 0)}

TARGET_RATIO=5
TARGET_MIB=200

SB_BIN=${SWITCHBOARD_BIN:-$TARGET_DIR/release/switchboard}
NODE_DIR=$ROOT/bench/node

[[ $SOCKETS =~ ^[0-9]+$ ]] && ((SOCKETS >= 2 && SOCKETS <= 20000 && SOCKETS % 2 == 0)) ||
    die "SOCKETS must be even, 2..20000"
[[ $WINDOW =~ ^[0-9]+$ ]] && ((WINDOW >= 1 && WINDOW <= 16)) || die "WINDOW must be 1..16"
[[ $MAX_RATE =~ ^[0-9]+$ ]] && ((MAX_RATE >= 1 && MAX_RATE <= 45)) ||
    die "MAX_RATE must be 1..45 (messages per socket per second; the hub allows 50)"
[[ $FIXED_LOAD =~ ^[0-9]+$ ]] && ((FIXED_LOAD >= 1)) || die "FIXED_LOAD must be a whole number of messages/s"
for value in WARMUP DURATION; do
    [[ ${!value} =~ ^[0-9]+$ ]] && ((${!value} <= 120)) || die "$value must be whole seconds, 0..120"
done
((DURATION > 0)) || die "DURATION must be at least 1"
FIXED_RATE=$(awk -v l="$FIXED_LOAD" -v n="$SOCKETS" 'BEGIN { printf "%.4f", l / n }')
awk -v r="$FIXED_RATE" -v m="$MAX_RATE" 'BEGIN { exit !(r >= 0.1 && r <= m) }' ||
    die "FIXED_LOAD / SOCKETS = $FIXED_RATE per socket per second: it must be 0.1..MAX_RATE"
for s in $SERVERS; do
    case $s in switchboard-sio | switchboard-ws | node) ;; *) die "SERVERS: unknown server $s" ;; esac
done
if [[ $PIN == 1 ]]; then
    command -v taskset >/dev/null || die "PIN=1 needs taskset"
    (($(nproc) >= 2)) || die "PIN=1 needs two CPUs"
fi

# ---------------------------------------------------------------------------------------------
# 1. Build, and install the Node anchor.
start_bench "$SB_BIN" "$LOADGEN"

if [[ " $SERVERS " == *" node "* ]]; then
    command -v node >/dev/null && command -v npm >/dev/null || die "the node anchor needs node and npm"
    # npm ci when node_modules is missing or was installed from another package-lock.json (a
    # stamp copied in after each install says which); --ignore-scripts: no install scripts run.
    stamp=$NODE_DIR/node_modules/.installed-package-lock.json
    if ! cmp -s "$NODE_DIR/package-lock.json" "$stamp"; then
        log "npm ci (bench/node: socket.io)"
        (cd "$NODE_DIR" && npm ci --no-audit --no-fund --ignore-scripts) >"$OUT/npm.log" 2>&1 ||
            { show_tail "$OUT/npm.log"; die "npm ci failed in bench/node"; }
        cp "$NODE_DIR/package-lock.json" "$stamp"
    fi
fi

# Every socket is a file descriptor in the generator and in the server.
ulimit -Sn "$(ulimit -Hn)"
(($(ulimit -n) >= SOCKETS + 512)) ||
    die "the open files limit is $(ulimit -n): $SOCKETS sockets need at least $((SOCKETS + 512))"

mkdir -p "$STORE_DIR" || die "cannot create STORE_DIR $STORE_DIR"
WORK=$(mktemp -d "$STORE_DIR/switchboard-hub.XXXXXX")
NPROC=$(nproc)
# (empty when the node anchor is not installed: SERVERS without node need none)
SIO_VERSION=$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$NODE_DIR/node_modules/socket.io/package.json" 2>/dev/null | head -1 || true)
{
    describe_host "; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    describe_switchboard "$SB_BIN"
    echo "node: $(node --version 2>/dev/null || echo '-'), socket.io ${SIO_VERSION:--}"
    echo "load: $SOCKETS sockets ($((SOCKETS / 2)) pairs, one user each), window $WINDOW per pair; max: ≤ $MAX_RATE msgs/s per socket; fixed: $FIXED_LOAD msgs/s ($FIXED_RATE per socket); warm-up $WARMUP s, measured $DURATION s; generator threads $THREADS; pinned: $([[ $PIN == 1 ]] && echo 'server CPU 1, generator CPU 0' || echo no)"
} | tee "$OUT/env.txt" >&2

# ---------------------------------------------------------------------------------------------
# 2. The runs.
RESULTS=$OUT/results.tsv
printf 'server\tok\tconnected\tconnect_per_s\trss_idle_mib\trss_connected_mib\tmib_per_1000\trss_calls_mib\trss_loaded_mib\tpeak_mib\tmax_per_s\tmax_p50\tmax_p99\tmax_us\tmax_server_cores\tmax_client_cores\tmax_other_cores\tfixed_per_s\tfixed_p50\tfixed_p99\tfixed_us\tfixed_other_cores\tsetup_s\terrors\n' >"$RESULTS"
FAILED=0
GEN_PIN=()
SRV_PIN=()
if [[ $PIN == 1 ]]; then
    GEN_PIN=(taskset -c 0)
    SRV_PIN=(taskset -c 1)
fi

run_one() {
    local server=$1 transport=sio
    local slog=$OUT/server-$server.log llog=$OUT/load-$server.log
    : >"$slog"
    local pid
    case $server in
    switchboard-*)
        transport=${server#switchboard-}
        local dir=$WORK/$server conf=$OUT/switchboard-$server.toml
        mkdir -p "$dir"
        daemon_config "$conf" "$dir/switchboard.db" "$LOG_LEVEL" "" \
            "max_connections = $((SOCKETS + 1024))"
        (cd "$dir" && exec env -u RUST_LOG "${SRV_PIN[@]}" "$SB_BIN" serve --config "$conf") >"$slog" 2>&1 &
        pid=$!
        ;;
    node)
        (cd "$NODE_DIR" && exec env JWT_SECRET="$JWT_SECRET" "${SRV_PIN[@]}" node relay_server.mjs --host "$IP" --port 0) >"$slog" 2>&1 &
        pid=$!
        ;;
    esac
    PIDS+=("$pid")
    local addr
    addr=$(logged_addr "$slog" "$pid" "listening ")
    if [[ -z $addr ]]; then
        show_tail "$slog"
        stop_pid "$pid"
        forget_pid "$pid"
        log "FAILED: $server did not report its address (switchboard's log level $LOG_LEVEL must show info lines)"
        return 1
    fi
    log "$server: pid $pid, $addr; $SOCKETS sockets over $transport"

    local rc=0 budget=$((180 + 60 + 2 * (WARMUP + DURATION + 2) + 60))
    timeout -k 5 "$budget" "${GEN_PIN[@]}" "$LOADGEN" hub --addr "$addr" --transport "$transport" \
        --jwt-secret "$JWT_SECRET" --sockets "$SOCKETS" --window "$WINDOW" \
        --phases "max:$MAX_RATE,fixed:$FIXED_RATE" --warmup "$WARMUP" --duration "$DURATION" \
        --server-pid "$pid" --threads "$THREADS" --label "$server" >"$llog" 2>&1 || rc=$?

    # Stop the server: SIGTERM; switchboard must exit 0 (it ends the live calls first).
    stop_for_status "$pid" 20
    local server_rc=$STOP_RC
    if ((STOP_KILLED)); then log "$server did not exit 20 s after SIGTERM; killed it"; fi
    forget_pid "$pid"

    local ok=1
    grep -E '^hub_load: ' "$llog" | head -12 >&2 || true
    if ((rc != 0)); then
        log "FAILED: $server: the load exited with $rc (see $llog)"
        ok=0
    fi
    if ((server_rc != 0)); then
        log "FAILED: $server exited with $server_rc (see $slog)"
        show_tail "$slog"
        ok=0
    fi
    if [[ $server == switchboard-* ]] && grep -qE ' (ERROR|WARN) ' "$slog"; then
        log "warning: the daemon logged warnings or errors (see $slog):"
        grep -E ' (ERROR|WARN) ' "$slog" | head -5 | sed 's/^/      | /' >&2
    fi
    if ! grep -q "^end label=$server " "$llog"; then
        show_tail "$llog"
        log "FAILED: $server: no figures from the load (see $llog)"
        return 1
    fi
    grep -vE '^(connect|phase|end) |^hub_load: ' "$llog" | sed 's/^/    /' >&2

    local f=() k
    for k in connected secs rss_idle_kib rss_connected_kib mib_per_1000 rss_calls_kib setup_secs; do
        f+=("$(kv "connect label=$server" "$k" "$llog")")
    done
    local e=()
    for k in rss_loaded_kib hwm_kib errors error_events wrong_sender malformed closed_early; do
        e+=("$(kv "end label=$server" "$k" "$llog")")
    done
    local m=() x=()
    for k in msgs_per_s p50_ms p99_ms server_us_per_msg server_cores client_cores other_cores; do
        m+=("$(kv "phase .* name=max" "$k" "$llog")")
    done
    for k in msgs_per_s p50_ms p99_ms server_us_per_msg other_cores; do
        x+=("$(kv "phase .* name=fixed" "$k" "$llog")")
    done
    awk -v s="$server" -v ok="$ok" -v c="${f[0]}" -v cs="${f[1]}" -v ri="${f[2]}" -v rc="${f[3]}" \
        -v per="${f[4]}" -v rk="${f[5]}" -v su="${f[6]}" -v rl="${e[0]}" -v hw="${e[1]}" \
        -v errs="$((e[2] + e[3] + e[4] + e[5] + e[6]))" \
        -v m="${m[*]}" -v x="${x[*]}" 'BEGIN {
            split(m, a, " "); split(x, b, " ")
            printf "%s\t%d\t%d\t%.0f\t%.1f\t%.1f\t%.2f\t%.1f\t%.1f\t%.1f\t%.0f\t%.2f\t%.2f\t%.1f\t%.2f\t%.2f\t%.2f\t%.0f\t%.2f\t%.2f\t%.1f\t%.2f\t%.1f\t%d\n",
                s, ok, c, (cs > 0 ? c / cs : 0), ri / 1024, rc / 1024, per, rk / 1024, rl / 1024, hw / 1024,
                a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[1], b[2], b[3], b[4], b[5], su, errs
        }' >>"$RESULTS"
    ((ok == 1))
}

for server in $SERVERS; do
    run_one "$server" || FAILED=1
done

# ---------------------------------------------------------------------------------------------
# 3. Report.
{
    echo
    echo "== signaling hub: $SOCKETS sockets in pairs relaying call:ice-candidate (${DURATION} s measured after ${WARMUP} s warm-up) =="
    printf '%-16s %9s %8s %9s %9s %9s %9s | %9s %8s %8s %8s %7s %7s %7s | %8s %8s %8s %8s %7s | %6s\n' \
        server sockets conn/s "RSS MiB" "MiB/1k" "w/calls" "peak" \
        "max msg/s" "p50 ms" "p99 ms" "us/msg" "srv cpu" "gen cpu" "others" \
        "fix msg/s" "p50 ms" "p99 ms" "us/msg" "others" errors
    awk -F'\t' 'NR > 1 {
        printf "%-16s %9d %8.0f %9.1f %9.2f %9.1f %9.1f | %9.0f %8.2f %8.2f %8.1f %7.2f %7.2f %7.2f | %8.0f %8.2f %8.2f %8.1f %7.2f | %6d%s\n",
            $1, $3, $4, $6, $7, $8, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $24,
            ($2 == 1 ? "" : "  FAILED")
    }' "$RESULTS"
    echo
    echo "RSS MiB: the server's VmRSS with the $SOCKETS sockets connected (idle before: see"
    echo "  raw outputs); MiB/1k: (that - idle) per 1,000 sockets; w/calls: with a live call per"
    echo "  pair too; peak: VmHWM at the end (handshakes and the load included)."
    echo "max: each pair passes $WINDOW candidate(s) back and forth as fast as the server relays"
    echo "  them (≤ $MAX_RATE per socket per second, offered up to $((SOCKETS * MAX_RATE))/s): the"
    echo "  server's throughput, with the generator on the same $NPROC CPUs. fixed: $FIXED_LOAD msgs/s"
    echo "  in all. p50/p99: send → receipt. us/msg: the server's on-CPU time per message delivered;"
    echo "  srv/gen cpu: CPUs busy in the server and the generator; others: the rest of the machine"
    echo "  (other processes, e.g. a build, make the figures noisy)."
    echo "node: socket.io ${SIO_VERSION:-?} on $(node --version 2>/dev/null || echo '?'), one JS thread; it checks the JWT, the"
    echo "  roster, sender and target, as the hub does, but keeps no store and enforces no rate,"
    echo "  queue or per-user limit."
    echo
    awk -F'\t' -v ratio="$TARGET_RATIO" -v mib="$TARGET_MIB" -v n="$SOCKETS" 'NR == 1 { next }
        { name[NR] = $1; ok[NR] = $2; conn[NR] = $3; rss[NR] = $6; calls[NR] = $8; loaded[NR] = $9
          peak[NR] = $10; tput[NR] = $11; p99[NR] = $13; us[NR] = $14; fp99[NR] = $20; fus[NR] = $21
          if ($1 == "node") node = NR }
        END {
            for (i = 2; i <= NR; i++) {
                if (name[i] == "node") continue
                steady = rss[i]; if (calls[i] > steady) steady = calls[i]; if (loaded[i] > steady) steady = loaded[i]
                if (n == 10000 && conn[i] == n)
                    printf "%s: %d sockets in %.1f MiB (the most of connected, with calls, after the load; peak %.1f): target < %d MiB %s\n",
                        name[i], n, steady, peak[i], mib, (steady < mib ? "met" : "NOT met")
                else
                    printf "%s: %d sockets connected in %.1f MiB (the 200 MiB target is for 10,000)\n", name[i], conn[i], steady
                if (!node || !ok[node] || tput[node] <= 0) continue
                r = tput[i] / tput[node]
                printf "%s / node: throughput %.2fx (target >= %dx: %s); p99 at max %.2fx, at the fixed load %.2fx (target < 1: %s); server CPU per message %.2fx\n",
                    name[i], r, ratio, (r >= ratio ? "met" : "NOT met"),
                    (p99[node] > 0 ? p99[i] / p99[node] : 0), (fp99[node] > 0 ? fp99[i] / fp99[node] : 0),
                    (p99[i] < p99[node] && fp99[i] < fp99[node] ? "met" : "NOT met"),
                    (us[node] > 0 ? us[i] / us[node] : 0)
            }
        }' "$RESULTS"
} | end_bench
