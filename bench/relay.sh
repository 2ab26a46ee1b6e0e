#!/usr/bin/env bash
# bench/relay.sh — relay benchmark: switchboard against coturn and against a bare UDP forwarder.
#
# What it measures, all on 127.0.0.1:
#   1. Relay cost. The same paced turnutils_uclient load (UDP, ChannelData, REST credentials)
#      against coturn and switchboard, and the same load shape (`loadgen udp`, bench/loadgen) through
#      a minimal forwarder (`loadgen udp-forwarder`) as the floor, all echoed by one
#      turnutils_peer. Servers run one at a time, restarted for every run, in alternating order
#      over $ROUNDS rounds. The figure of merit is server CPU per round trip received back by
#      the client: the process's on-CPU time, all threads (schedstat; utime+stime from
#      /proc/PID/stat alongside). Wake-ups per round trip are reported too: they show whether
#      two loads reached the servers in the same bursts.
#   2. Idle allocation memory. `loadgen idle-allocs` makes $IDLE_ALLOCS allocations through
#      the server's UDP port; VmRSS/VmHWM before and after give bytes per allocation.
#
# The load: turnutils_uclient -c -m 20 -n 2000 -l 120 -z 5, i.e. 20 sessions (allocations with
# a channel to the peer), each sending 2000 ChannelData messages of 120 bytes every 5 ms:
# 4000 packets/s in and out, ~16 s per run, no loss on either server. -c turns off uclient's
# RTCP sessions, whose RTP allocation asks for a reserved port pair (EVEN-PORT with R), which
# switchboard declines with 508 by design. uclient also leaves a "probe" allocation per session.
#
# Transports: TRANSPORTS="udp" by default. TRANSPORTS="udp tcp tls" runs the same load, in the
# same rounds, over each listed client transport: tcp is uclient -t to the servers' TURN port
# (coturn without --no-tcp; switchboard's turn.listen serves TCP on the UDP port), tls is
# uclient -t -S to each server's TLS port (coturn --tls-listening-port, with --no-tcp, so only
# its TLS listener takes TCP; switchboard turn.tls_listen), with a throwaway self-signed
# certificate (openssl CLI, SAN IP:127.0.0.1) made in the output directory, which uclient
# checks (-E). The relay-to-peer leg stays UDP. The forwarder is a UDP floor and runs over udp
# only; over tcp and tls the anchor is coturn: the report has a table per transport and
# switchboard / coturn from the same run. uclient tries a random TLS method per connection
# (TLS 1.0, 1.1, 1.2 or "any"), retrying those the server refuses, so its sessions mix TLS 1.3
# and 1.2: the report lists what each server negotiated. A server that does not listen on a
# transport (or fails) is reported (server, transport, the tail of its log) and skipped.
# Idle allocations (part 2) stay UDP.
#
# Usage: bench/relay.sh            (from anywhere; builds what it needs)
#        TRANSPORTS="udp tcp tls" SERVERS="coturn switchboard" bench/relay.sh
# Knobs (environment): ROUNDS=3 CLIENTS=20 MESSAGES=2000 SIZE=120 INTERVAL_MS=5
#   IDLE_ALLOCS=10000 SERVERS="coturn switchboard forwarder" (also: forwarder-threads,
#   forwarder-unconnected: relay sockets that sendto/recvfrom as a TURN relay's must)
#   TRANSPORTS="udp" (any of udp tcp tls) COTURN_RELAY_THREADS=1 (or "default")
#   FORWARDER_MODE=epoll|threads SKIP_IDLE=0 BENCH_SKIP_BUILD=0 CARGO_TARGET_DIR BENCH_OUT
# Raw outputs go to bench/out/<timestamp>/ (git-ignored).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh" # log, die, ...; TARGET_DIR and OUT

ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-20}           # uclient -m: sessions (= relayed allocations, = flows)
MESSAGES=${MESSAGES:-2000}       # uclient -n: messages per session
SIZE=${SIZE:-120}                # uclient -l: payload bytes
INTERVAL_MS=${INTERVAL_MS:-5}    # uclient -z: per-session interval
IDLE_ALLOCS=${IDLE_ALLOCS:-10000}
SERVERS=${SERVERS:-"coturn switchboard forwarder"}
TRANSPORTS=${TRANSPORTS:-udp}
COTURN_RELAY_THREADS=${COTURN_RELAY_THREADS:-1}   # "default" = coturn's own choice (one per CPU)
FORWARDER_MODE=${FORWARDER_MODE:-epoll}
SKIP_IDLE=${SKIP_IDLE:-0}

SECRET=bench-secret-0123456789abcdef
REALM=bench.example
# Fixed ports below Linux's ephemeral range (32768-60999), so no client socket takes them.
PEER_PORT=13480
COTURN_PORT=13478        # UDP, and TCP for TRANSPORTS tcp
COTURN_TLS_PORT=13476    # TCP, TLS (tls)
SB_PORT=13578            # UDP, and TCP for TRANSPORTS tcp
SB_TLS_PORT=13576        # TCP, TLS (tls)
SB_HTTP_PORT=13580
FWD_PORT=13678
IDLE_CLIENT_PORTS=14000-31999
LOAD_RELAY_PORTS=50000-59999
IDLE_RELAY_PORTS=40000-59999

SB_BIN=$TARGET_DIR/release/switchboard
CLK_TCK=$(getconf CLK_TCK)
RUN_TIMEOUT=$((MESSAGES * INTERVAL_MS / 1000 + 60))   # seconds, per load run


# ---------------------------------------------------------------------------------------------

# True once something listens on port $2 of $1 (udp or tcp, IPv4), from /proc/net/$1; for TCP,
# in state 0A (LISTEN).
listening() {
    local hex
    hex=$(printf ':%04X' "$2")
    awk -v p="$hex" -v tcp="$([[ $1 == tcp ]] && echo 1)" \
        'NR > 1 && (!tcp || $4 == "0A") && substr($2, length($2) - 4) == p { found = 1 }
        END { exit !found }' "/proc/net/$1"
}
# Waits up to $3 seconds for a listener on port $2 of $1 (udp or tcp), giving up early if pid
# $4 died.
wait_listening() {
    local proto=$1 port=$2 secs=$3 pid=$4 i
    for ((i = 0; i < secs * 10; i++)); do
        listening "$proto" "$port" && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# Server CPU: cpu_ticks and cpu_ns, in bench/lib.sh.
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
    build_loadgen
    if [[ " $SERVERS " == *" switchboard "* ]]; then
        log "building switchboard (release)"
        if ! (cd "$ROOT" && cargo build --release --bin switchboard) >"$OUT/build-switchboard.log" 2>&1; then
            log "warning: switchboard did not build (see $OUT/build-switchboard.log); skipping it"
            SB_OK=0
        fi
    fi
fi
[[ -x $LOADGEN ]] || die "missing $LOADGEN"
if [[ " $SERVERS " == *" switchboard "* && ! -x $SB_BIN ]]; then
    log "warning: no $SB_BIN; skipping switchboard"
    SB_OK=0
fi
for name in $SERVERS; do
    case $name in coturn | switchboard | forwarder | forwarder-threads | forwarder-unconnected) ;; *) die "unknown server $name" ;; esac
done
for transport in $TRANSPORTS; do
    case $transport in udp | tcp | tls) ;; *) die "unknown transport $transport (udp, tcp, tls)" ;; esac
done
has_transport() { [[ " $TRANSPORTS " == *" $1 "* ]]; }

for port in $PEER_PORT $COTURN_PORT $SB_PORT $FWD_PORT; do
    ! listening udp "$port" || die "UDP port $port is already in use"
done
if has_transport tcp; then
    for port in $COTURN_PORT $SB_PORT; do
        listening tcp "$port" && die "TCP port $port is already in use"
    done
fi
if has_transport tls; then
    for port in $COTURN_TLS_PORT $SB_TLS_PORT; do
        listening tcp "$port" && die "TCP port $port is already in use"
    done
fi

# A throwaway self-signed certificate for TLS, both servers the same; uclient checks it (-E).
TLS_CERT=$OUT/tls/cert.pem
TLS_KEY=$OUT/tls/key.pem
if has_transport tls; then
    command -v openssl >/dev/null || die "TRANSPORTS has tls, but there is no openssl CLI to make a certificate"
    mkdir -p "$OUT/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=$IP" -addext "subjectAltName=IP:$IP" -keyout "$TLS_KEY" -out "$TLS_CERT" \
        >"$OUT/tls/openssl.log" 2>&1 || die "openssl could not make a certificate (see $OUT/tls/openssl.log)"
    log "TLS certificate: $TLS_CERT (self-signed, P-256, SAN IP:$IP)"
fi

NPROC=$(nproc)
COTURN_VERSION=$(turnserver --version 2>/dev/null | head -1 || true)
{
    describe_host
    echo "coturn: $COTURN_VERSION; relay threads: $COTURN_RELAY_THREADS (coturn's default: one per CPU = $NPROC)"
    echo "load: turnutils_uclient -c -m $CLIENTS -n $MESSAGES -l $SIZE -z $INTERVAL_MS (UDP, ChannelData, no RTCP)"
    echo "forwarder mode: $FORWARDER_MODE; rounds: $ROUNDS; servers: $SERVERS"
    if [[ $TRANSPORTS != udp ]]; then
        echo "transports: $TRANSPORTS (tcp: uclient -t; tls: uclient -t -S; relay to peer: UDP; forwarder: udp only)"
        has_transport tls && echo "tls: ports coturn $COTURN_TLS_PORT, switchboard $SB_TLS_PORT; $(openssl version)"
    fi
} | tee "$OUT/env.txt" >&2

# ---------------------------------------------------------------------------------------------
# 2. The echo peer, shared by every run.
turnutils_peer -L "$IP" -p "$PEER_PORT" >"$OUT/peer.log" 2>&1 &
PEER_PID=$!
PIDS+=("$PEER_PID")
wait_listening udp "$PEER_PORT" 10 "$PEER_PID" || die "turnutils_peer did not start (see $OUT/peer.log)"

# ---------------------------------------------------------------------------------------------
# Servers. start_server NAME PHASE LOGFILE [TRANSPORT] sets SERVER_PID, SERVER_PORT (its UDP
# port) and LOAD_PORT (where the load client connects over TRANSPORT, udp by default); PHASE
# is "load" or "idle" (the idle phase needs quotas and port ranges for $IDLE_ALLOCS
# allocations). It returns 1 if the server did not come up; 2 if it came up over UDP but
# does not listen for TRANSPORT (tcp, tls), having said so with the tail of its log.
SERVER_PID=
SERVER_PORT=
LOAD_PORT=
start_server() {
    local name=$1 phase=$2 logfile=$3 transport=${4:-udp} ports lo hi
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
        # The client listeners: UDP only, or UDP and TCP on the same port, or UDP and TLS on
        # its own port (with --no-tcp, so the TLS port is the only TCP listener).
        local listeners
        case $transport in
        udp) listeners=(--no-tls --no-dtls --no-tcp) ;;
        tcp) listeners=(--no-tls --no-dtls) ;;
        tls) listeners=(--no-dtls --no-tcp --tls-listening-port="$COTURN_TLS_PORT"
            --cert="$TLS_CERT" --pkey="$TLS_KEY") ;;
        esac
        LOAD_PORT=$COTURN_PORT
        [[ $transport == tls ]] && LOAD_PORT=$COTURN_TLS_PORT
        # -n: no config file. Everything else explicit; userdb in $OUT so nothing system-wide
        # is touched; logs to stdout (redirected).
        turnserver -n --use-auth-secret --static-auth-secret="$SECRET" --realm="$REALM" \
            --listening-ip="$IP" --relay-ip="$IP" --listening-port="$COTURN_PORT" \
            --min-port="$lo" --max-port="$hi" --allow-loopback-peers \
            "${listeners[@]}" --no-cli --no-rfc5780 \
            --log-file=stdout --simple-log --pidfile="$OUT/turnserver.pid" \
            --userdb="$OUT/turndb" "${threads[@]}" "${quota[@]}" \
            >"$logfile" 2>&1 &
        ;;
    switchboard)
        SERVER_PORT=$SB_PORT
        LOAD_PORT=$SB_PORT
        [[ $transport == tls ]] && LOAD_PORT=$SB_TLS_PORT
        local conf=$OUT/switchboard-$phase.toml
        [[ $transport != udp ]] && conf=$OUT/switchboard-$phase-$transport.toml
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
            if [[ $transport == tls ]]; then
                echo "tls_listen = [\"$IP:$SB_TLS_PORT\"]"
                echo "tls_cert = \"$TLS_CERT\""
                echo "tls_key = \"$TLS_KEY\""
            fi
            echo "[log]"
            echo "level = \"warn\""
        } >"$conf"
        (cd "$OUT" && exec "$SB_BIN" serve --config "$conf") >"$logfile" 2>&1 &
        ;;
    forwarder | forwarder-threads | forwarder-unconnected)
        SERVER_PORT=$FWD_PORT
        LOAD_PORT=$FWD_PORT
        local mode=$FORWARDER_MODE extra=()
        [[ $name == forwarder-threads ]] && mode=threads
        [[ $name == forwarder-unconnected ]] && extra=(--unconnected)
        "$LOADGEN" udp-forwarder --listen "$IP:$FWD_PORT" --peer "$IP:$PEER_PORT" \
            --mode "$mode" "${extra[@]}" >"$logfile" 2>&1 &
        ;;
    *) die "unknown server $name" ;;
    esac
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    if ! wait_listening udp "$SERVER_PORT" 15 "$SERVER_PID"; then
        log "warning: $name did not bind $IP:$SERVER_PORT (see $logfile)"
        [[ $transport != udp ]] && show_tail "$logfile"
        stop_server
        return 1
    fi
    # TCP and TLS listeners come up with the UDP one; 10 s is plenty.
    if [[ $transport != udp ]] && ! wait_listening tcp "$LOAD_PORT" 10 "$SERVER_PID"; then
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            log "FAILED: $name over $transport: nothing listens on TCP $IP:$LOAD_PORT 10 s after it bound UDP $IP:$SERVER_PORT (no $transport support in this build?)"
        else
            log "FAILED: $name over $transport: it exited while starting"
        fi
        show_tail "$logfile"
        stop_server
        return 2
    fi
    sleep 0.5 # let it finish starting (coturn initialises relay ports after binding)
}
stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    stop_pid "$SERVER_PID"
    forget_pid "$SERVER_PID"
    SERVER_PID=
}

# ---------------------------------------------------------------------------------------------
# 3./4. Load runs. Each appends one line to $RESULTS, or over tcp and tls to
# results-tcp.tsv and results-tls.tsv (CPU figures are per round trip received).
RESULTS=$OUT/results.tsv
COLUMNS_TSV="server round sent recv lost transmit_s rt_per_s cpu_ns cpu_us_per_rt ticks ticks_us_per_rt"
COLUMNS_TSV+=" user_us_per_rt sys_us_per_rt rtt_avg_ms rtt_max_ms threads load1 wakeups_per_rt"
results_file() { if [[ $1 == udp ]]; then echo "$RESULTS"; else echo "$OUT/results-$1.tsv"; fi; }
for transport in $TRANSPORTS; do
    tr ' ' '\t' <<<"$COLUMNS_TSV" >"$(results_file "$transport")"
done
# TLS: what uclient negotiated per run (its log has one line per connection attempt).
TLS_TSV=$OUT/tls-sessions.tsv
has_transport tls && printf 'server\tround\tconnected\trefused\tnegotiated\n' >"$TLS_TSV"
# server/transport pairs that did not listen: not tried again in later rounds.
declare -A UNSUPPORTED=()

run_load() {
    local name=$1 round=$2 transport=${3:-udp} tag=$1-r$2
    [[ $transport != udp ]] && tag=$name-$transport-r$round
    local slog=$OUT/server-$tag.log clog=$OUT/load-$tag.log results
    results=$(results_file "$transport")
    if [[ $name == switchboard && $SB_OK == 0 ]]; then
        log "skipping $tag: no switchboard binary"
        return 0
    fi
    if [[ -n ${UNSUPPORTED[$name-$transport]:-} ]]; then
        log "skipping $tag: $name did not listen over $transport in an earlier round"
        return 0
    fi
    kill -0 "$PEER_PID" 2>/dev/null || die "the echo peer died"
    local started=0
    start_server "$name" load "$slog" "$transport" || started=$?
    if ((started == 2)); then
        UNSUPPORTED[$name-$transport]=1
        log "skipping $tag, and $name over $transport in later rounds"
        return 0
    elif ((started != 0)); then
        log "skipping $tag"
        return 0
    fi
    local load1 user0 sys0 user1 sys1 ns0 ns1 wake0 wake1 threads rc=0
    load1=$(loadavg)
    read -r user0 sys0 < <(cpu_ticks "$SERVER_PID")
    ns0=$(cpu_ns "$SERVER_PID")
    wake0=$(wakeups "$SERVER_PID")
    if [[ $name == forwarder* ]]; then
        # The udp load's timer defaults to the interval: that reproduces uclient's bursts (one
        # datagram per session per interval, see bench/loadgen/src/udp.rs).
        timeout -k 5 "$RUN_TIMEOUT" "$LOADGEN" udp --target "$IP:$FWD_PORT" \
            --flows "$CLIENTS" --messages "$MESSAGES" --size "$SIZE" \
            --interval-ms "$INTERVAL_MS" >"$clog" 2>&1 || rc=$?
    else
        # -c: no RTCP sessions. With RTCP, uclient's RTP allocation asks for a reserved port
        # pair (EVEN-PORT with R), which switchboard refuses (508) by design.
        # -t: TCP to the server; -S with it: TLS, -E: checking the server's certificate.
        local client_transport=()
        case $transport in
        tcp) client_transport=(-t) ;;
        tls) client_transport=(-t -S -E "$TLS_CERT") ;;
        esac
        timeout -k 5 "$RUN_TIMEOUT" turnutils_uclient -c "${client_transport[@]}" -W "$SECRET" -u bench \
            -e "$IP" -r "$PEER_PORT" -m "$CLIENTS" -n "$MESSAGES" -l "$SIZE" \
            -z "$INTERVAL_MS" -p "$LOAD_PORT" "$IP" >"$clog" 2>&1 || rc=$?
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        log "warning: $name exited during $tag (see $slog)"
        [[ $transport != udp ]] && show_tail "$slog"
        stop_server
        return 0
    fi
    ns1=$(cpu_ns "$SERVER_PID")
    wake1=$(wakeups "$SERVER_PID")
    read -r user1 sys1 < <(cpu_ticks "$SERVER_PID")
    threads=$(threads_of "$SERVER_PID")
    stop_server
    ((rc == 0)) || log "warning: load client exited with $rc in $tag (see $clog)"
    if [[ $transport == tls ]]; then
        # "tls_connect: client session connected with cipher TLS_AES_256_GCM_SHA384, method=TLSv1.3"
        # "tls_connect: cannot connect: rc=-1, ctx=2" (uclient's TLS 1.0/1.1 tries; it retries)
        local ok refused mix
        ok=$(grep -c 'client session connected with cipher' "$clog" || true)
        refused=$(grep -c 'tls_connect: cannot connect' "$clog" || true)
        mix=$(sed -n 's/.*client session connected with cipher \([^,]*\), method=\([^ ]*\).*/\2 \1/p' "$clog" \
            | sort | uniq -c | awk '{ printf "%s%s %s x%d", (NR > 1 ? ", " : ""), $2, $3, $1 }')
        printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "$ok" "$refused" "${mix:-none}" >>"$TLS_TSV"
        log "$tag: TLS connections $ok ($mix), refused attempts $refused"
    fi

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
        if [[ -z $sent || -z $recv ]]; then
            log "warning: no uclient summary in $clog"
            if [[ $transport != udp ]]; then
                log "FAILED: $name over $transport: the load client did not finish (exit $rc)"
                show_tail "$clog" 8
                show_tail "$slog"
            fi
            return 0
        fi
        if [[ $transport != udp && $recv == 0 ]]; then
            log "FAILED: $name over $transport: no round trip came back"
            show_tail "$clog" 8
            show_tail "$slog"
            return 0
        fi
    fi
    awk -v s="$name" -v r="$round" -v sent="$sent" -v recv="$recv" -v t="${transmit:-0}" \
        -v ns=$((ns1 - ns0)) -v ut=$((user1 - user0)) -v st=$((sys1 - sys0)) -v hz="$CLK_TCK" \
        -v ra="${rtt_avg:-0}" -v rm="${rtt_max:-0}" -v th="$threads" -v l1="$load1" \
        -v wk=$((wake1 - wake0)) 'BEGIN {
            rate = t > 0 ? recv / t : 0
            tick_us = recv > 0 ? 1e6 / hz / recv : 0
            ns_us = recv > 0 ? 1e-3 / recv : 0
            wk_rt = recv > 0 ? wk / recv : 0
            printf "%s\t%d\t%d\t%d\t%d\t%.3f\t%.1f\t%.0f\t%.2f\t%d\t%.2f\t%.2f\t%.2f\t%.4f\t%s\t%d\t%s\t%.3f\n",
                s, r, sent, recv, sent - recv, t, rate, ns, ns * ns_us, ut + st, (ut + st) * tick_us,
                ut * tick_us, st * tick_us, ra, rm, th, l1, wk_rt
        }' >>"$results"
    local what=$name
    [[ $transport != udp ]] && what="$name over $transport"
    log "$(tail -1 "$results" | awk -F'\t' -v what="$what" '{
        printf "%s round %s: %d/%d round trips, lost %d, %.0f rt/s, CPU %.2f us/rt (ticks: %.2f), %.3f wake-ups/rt, %d threads, load %s",
            what, $2, $4, $3, $5, $7, $9, $11, $18, $16, $17 }')"
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
    read -r -a tlist <<<"$TRANSPORTS"
    if ((round % 2 == 0)); then
        tl=()
        for ((i = ${#tlist[@]} - 1; i >= 0; i--)); do tl+=("${tlist[i]}"); done
        tlist=("${tl[@]}")
    fi
    for transport in "${tlist[@]}"; do
        for name in "${list[@]}"; do
            if [[ $transport == udp ]]; then
                log "round $round/$ROUNDS: $name"
            else
                # The forwarder is a UDP floor: over tcp and tls the anchor is coturn.
                [[ $name == forwarder* ]] && continue
                log "round $round/$ROUNDS: $name over $transport"
            fi
            run_load "$name" "$round" "$transport"
        done
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
    timeout -k 5 300 "$LOADGEN" idle-allocs --server "$IP:$SERVER_PORT" --realm "$REALM" \
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
# relay_table FILE "SERVERS": the table of one transport's runs, and the ratios among them.
relay_table() {
    awk -F'\t' -v order="$2" '
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
        }' "$1"
}
# relay_means FILE: "server mean_cpu_us_per_rt loss_pct" per server in FILE.
relay_means() {
    awk -F'\t' 'NR > 1 { n[$1]++; cpu[$1] += $9; sent[$1] += $3; lost[$1] += $5 }
        END { for (s in n) printf "%s %.2f %.3f\n", s, cpu[s] / n[s], (sent[s] ? 100 * lost[s] / sent[s] : 0) }' "$1"
}
# The servers that run over a transport: all but the forwarders, except over udp.
servers_over() {
    local name list=()
    for name in $SERVERS; do [[ $1 != udp && $name == forwarder* ]] || list+=("$name"); done
    echo "${list[*]}"
}
LOAD_SHAPE="$CLIENTS sessions x $MESSAGES messages x $SIZE B every $INTERVAL_MS ms, $ROUNDS round(s)"
{
    for transport in $TRANSPORTS; do
        echo
        case $transport in
        udp) if [[ $TRANSPORTS == udp ]]; then
            echo "== relay cost: $LOAD_SHAPE =="
        else
            echo "== relay cost over UDP (uclient -c): $LOAD_SHAPE =="
        fi ;;
        tcp) echo "== relay cost over TCP (uclient -c -t; relay to peer over UDP): $LOAD_SHAPE ==" ;;
        tls) echo "== relay cost over TLS (uclient -c -t -S; relay to peer over UDP): $LOAD_SHAPE ==" ;;
        esac
        relay_table "$(results_file "$transport")" "$(servers_over "$transport")"
        if [[ $transport == tls ]]; then
            echo "TLS connections uclient made, all rounds (it also tries TLS 1.0/1.1, which are refused):"
            awk -F'\t' 'NR > 1 {
                    ok[$1] += $3; ref[$1] += $4
                    k = split($5, parts, ", ")
                    for (i = 1; i <= k; i++) {
                        if (parts[i] == "none") continue
                        c = parts[i]; sub(/.* x/, "", c); what = parts[i]; sub(/ x[0-9]+$/, "", what)
                        mix[$1, what] += c
                        if (!(($1, what) in seen)) { seen[$1, what] = 1; kinds[$1] = kinds[$1] "\n" what }
                    }
                    if (!($1 in order)) { order[$1] = ++n; names[n] = $1 }
                }
                END {
                    for (i = 1; i <= n; i++) {
                        s = names[i]; line = ""
                        k = split(substr(kinds[s], 2), kind, "\n")
                        for (j = 1; j <= k; j++) line = line (j > 1 ? ", " : "") kind[j] " x" mix[s, kind[j]]
                        printf "  %-12s %d connected (%s); %d refused attempts\n", s, ok[s], (line == "" ? "none" : line), ref[s]
                    }
                }' "$TLS_TSV"
        fi
    done
    if [[ $TRANSPORTS != udp ]]; then
        echo
        echo "== CPU us per round trip by transport (loss % in brackets), all from this run =="
        order=$(servers_over udp)
        any_failed=0
        {
            printf '%-9s' transport
            for name in $order; do printf ' %18s' "$name"; done
            printf ' %19s\n' "switchboard/coturn"
            for transport in $TRANSPORTS; do
                printf '%-9s' "$transport"
                declare -A mean=() loss=()
                while read -r name m l; do
                    mean[$name]=$m
                    loss[$name]=$l
                done < <(relay_means "$(results_file "$transport")")
                for name in $order; do
                    if [[ -n ${mean[$name]:-} ]]; then
                        printf ' %18s' "${mean[$name]} (${loss[$name]})"
                    elif [[ $transport != udp && $name == forwarder* ]]; then
                        printf ' %18s' "-"
                    else
                        printf ' %18s' "failed"
                        any_failed=1
                    fi
                done
                if [[ -n ${mean[switchboard]:-} && -n ${mean[coturn]:-} ]]; then
                    awk -v a="${mean[switchboard]}" -v b="${mean[coturn]}" 'BEGIN { printf " %19.2f\n", a / b }'
                else
                    printf ' %19s\n' "-"
                fi
                unset mean loss
            done
        }
        ((any_failed == 0)) || echo "(failed: no result from that server over that transport; see the log above.)"
    fi
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
