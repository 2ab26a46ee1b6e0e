#!/usr/bin/env bash
# bench/soak.sh — the daemon under a long mixed load, on loopback (a script, not a CI test).
#
# For $DURATION seconds (default 600), all at once against one release daemon:
#   - signaling: `loadgen hub` (bench/loadgen), $SOCKETS sockets (default 2,000) over /socket.io/ in
#     $SOCKETS/2 live calls, every pair passing call:ice-candidate back and forth at $RATE per
#     socket per second (a closed loop of one message per pair: a lost message would stop its
#     pair for good);
#   - relay: turnutils_uclient -y -c -m $ALLOCS (default 500) allocations relaying to each other
#     through the relay's in-process hairpin, ChannelData of 120 bytes every $RELAY_MS ms each;
#   - churn: `loadgen calls`, one client looping over whole call lifecycles over HTTP
#     (initiate, answer, media, end: four durable transitions each).
# Every $SAMPLE s it records the daemon's RSS, file descriptors and threads, and prints the curve.
# It passes when: hub_load reports no error and received all but at most the messages in flight
# at the window's end (one per pair); uclient lost no packet; the churn had no error; RSS after
# the first $WARMUP s stays within 10 % of its median; the daemon's descriptors after the load
# are within 16 of before it, besides one per allocation still open; and the daemon exits 0 on
# SIGTERM.
#
# Usage: bench/soak.sh   (DURATION=60 for a short run; builds what it needs)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"

DURATION=${DURATION:-600}
SOCKETS=${SOCKETS:-2000}
RATE=${RATE:-2}
ALLOCS=${ALLOCS:-500}
RELAY_MS=${RELAY_MS:-100}
SAMPLE=${SAMPLE:-10}
WARMUP=${WARMUP:-60}
((DURATION >= 30 && DURATION <= 7200)) || die "DURATION must be 30..7200"
((SOCKETS >= 2 && SOCKETS <= 10000 && SOCKETS % 2 == 0)) || die "SOCKETS must be even, 2..10000"
((ALLOCS >= 2 && ALLOCS <= 2000 && ALLOCS % 2 == 0)) || die "ALLOCS must be even, 2..2000"
((WARMUP < DURATION)) || die "WARMUP must be below DURATION"
command -v turnutils_uclient >/dev/null || die "turnutils_uclient is needed (apt-get install coturn)"
(($(ulimit -n) >= SOCKETS + ALLOCS * 3 + 1024)) || ulimit -n $((SOCKETS + ALLOCS * 3 + 4096))

JWT_SECRET=soak-jwt-secret-0123456789abcdef
TURN_SECRET=soak-turn-secret-0123456789
mkdir -p "$OUT"
log "output: $OUT"
build_all
BIN=$TARGET_DIR/release

conf=$OUT/switchboard.toml
daemon_config "$conf" "$OUT/switchboard.db" warn "user_quota = $((ALLOCS * 2 + 16))" \
    "max_connections = $((SOCKETS + 1024))"
"$BIN/switchboard" serve --config "$conf" >"$OUT/daemon.log" 2>&1 &
pid=$!
PIDS+=("$pid")
for _ in $(seq 100); do
    grep -q 'http listening' "$OUT/daemon.log" 2>/dev/null && break
    sleep 0.1
done
# level = "warn" hides the listening lines: the ports from the process's sockets instead. TURN
# listens on one port for UDP and TCP; HTTP is the other TCP listener.
turn=$(ss -Hlunp | awk -v p="pid=$pid," '$0 ~ p { print $4 }' | head -n1)
http=$(ss -Hltnp | awk -v p="pid=$pid," -v t="$turn" '$0 ~ p && $4 != t { print $4 }' | head -n1)
[[ -n $http && -n $turn ]] || { show_tail "$OUT/daemon.log"; die "the daemon did not listen"; }
log "daemon pid $pid: http $http, turn $turn"

sample() { # seconds rss_kib fds threads
    local rss fds thr
    rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
    fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
    thr=$(find "/proc/$pid/task" -mindepth 1 -maxdepth 1 | wc -l)
    echo "$1 $rss $fds $thr"
}
fds_before=$(sample 0 | awk '{ print $3 }')

t0=$SECONDS
# The signaling load: connect and set up the calls, then one phase of $DURATION s.
"$LOADGEN" hub --addr "$http" --transport sio --jwt-secret "$JWT_SECRET" \
    --sockets "$SOCKETS" --window 1 --phases "soak:$RATE" --warmup 0 --duration "$DURATION" \
    --server-pid "$pid" --label soak >"$OUT/hub_load.log" 2>&1 &
hub=$!
PIDS+=("$hub")
# The relay load: ALLOCS allocations in pairs (-y), for about $DURATION s.
messages=$((DURATION * 1000 / RELAY_MS))
user="$(($(date +%s) + DURATION + 3600)):soak"
password=$(printf '%s' "$user" | openssl dgst -sha1 -hmac "$TURN_SECRET" -binary | base64)
turnutils_uclient -y -c -m "$ALLOCS" -n "$messages" -l 120 -z "$RELAY_MS" \
    -u "$user" -w "$password" -p "${turn##*:}" "${turn%:*}" >"$OUT/uclient.log" 2>&1 &
uclient=$!
PIDS+=("$uclient")
# The churn.
"$LOADGEN" calls --http "$http" --jwt-secret "$JWT_SECRET" --clients 1 \
    --warmup 0 --duration "$DURATION" >"$OUT/churn.log" 2>&1 &
churn=$!
PIDS+=("$churn")

log "soaking for $DURATION s: $SOCKETS sockets at $RATE/s, $ALLOCS allocations every $RELAY_MS ms, call churn"
: >"$OUT/samples.txt"
while kill -0 "$hub" 2>/dev/null || kill -0 "$uclient" 2>/dev/null || kill -0 "$churn" 2>/dev/null; do
    sample $((SECONDS - t0)) >>"$OUT/samples.txt"
    ((SECONDS - t0 < DURATION + 300)) || { log "the load did not end within $((DURATION + 300)) s"; break; }
    sleep "$SAMPLE"
done
rc_hub=0 rc_ucl=0 rc_churn=0
wait "$hub" || rc_hub=$?
wait "$uclient" || rc_ucl=$?
wait "$churn" || rc_churn=$?
forget_pid "$hub"; forget_pid "$uclient"; forget_pid "$churn"
sleep 2
after=$(sample $((SECONDS - t0)))
fds_after=$(awk '{ print $3 }' <<<"$after")
# Allocations left open (uclient leaves one "probe" allocation per session, until its
# lifetime runs out): each holds a relay socket.
open_allocs=$(curl -s --max-time 5 "http://$http/metrics" | awk '$1 == "switchboard_turn_allocations" { print $2 }')
open_allocs=${open_allocs:-0}
stop_for_status "$pid" 20
forget_pid "$pid"

# --- The report.
fail=0
check() { if eval "$2"; then echo "  ok    $1"; else echo "  FAIL  $1"; fail=1; fi; }
sent=$(kv phase sent "$OUT/hub_load.log" || true)
received=$(kv phase received "$OUT/hub_load.log" || true)
errors=$(kv end errors "$OUT/hub_load.log" || true)
u_sent=$(sed -n 's/.*tot_send_msgs=\([0-9]*\), tot_recv_msgs=.*/\1/p' "$OUT/uclient.log" | tail -n1)
u_recv=$(sed -n 's/.*tot_send_msgs=[0-9]*, tot_recv_msgs=\([0-9]*\).*/\1/p' "$OUT/uclient.log" | tail -n1)
lifecycles=$(sed -n 's/.* lifecycles=\([0-9]*\).*/\1/p' "$OUT/churn.log" | tail -n1)

echo
echo "soak: $DURATION s on $(nproc) CPUs, $(date -Is)"
echo "RSS / fds / threads every $SAMPLE s (seconds rss_MiB fds threads):"
awk '{ printf "  %5d %7.1f %6d %4d\n", $1, $2 / 1024, $3, $4 }' "$OUT/samples.txt"
read -r rss_min rss_med rss_max < <(awk -v w="$WARMUP" '$1 >= w { print $2 }' "$OUT/samples.txt" | sort -n |
    awk '{ v[NR] = $1 } END { printf "%d %d %d\n", v[1], v[int((NR + 1) / 2)], v[NR] }')
echo "signaling: ${sent:-?} sent, ${received:-?} received, errors ${errors:-?} (hub_load exit $rc_hub)"
echo "relay: ${u_sent:-?} sent, ${u_recv:-?} received (uclient exit $rc_ucl)"
echo "churn: ${lifecycles:-?} call lifecycles (exit $rc_churn)"
echo "RSS after ${WARMUP} s: min $((rss_min / 1024)) MiB, median $((rss_med / 1024)) MiB, max $((rss_max / 1024)) MiB"
echo "descriptors: $fds_before before, $fds_after after, with $open_allocs allocations still open"
check "hub_load: no error" '[[ $rc_hub == 0 && ${errors:-1} == 0 ]]'
check "signaling: received all but those in flight (at most $((SOCKETS / 2)))" \
    '[[ -n $sent && -n $received ]] && ((sent - received <= SOCKETS / 2 && sent > 0))'
check "relay: no packet lost" '[[ -n $u_sent && -n $u_recv ]] && ((u_sent > 0 && u_recv >= u_sent))'
check "churn: no error" '[[ $rc_churn == 0 && -n $lifecycles ]] && ((lifecycles > 0))'
check "RSS flat after warm-up (within 10 % of the median)" \
    '((rss_max - rss_min <= rss_med / 10))'
check "no descriptor growth (one per open allocation, and at most 16 more)" \
    '((fds_after <= fds_before + open_allocs + 16))'
check "the daemon exits 0 on SIGTERM" '[[ $STOP_RC == 0 ]]'
exit "$fail"
