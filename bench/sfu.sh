#!/usr/bin/env bash
# bench/sfu.sh — SFU load benchmark: rooms of synthetic participants through switchboard's SFU,
# beside a plain UDP fan-out (the floor) driven by the same packets in the same run.
#
# What it measures, all on 127.0.0.1, for each scenario in $SCENARIOS (ROOMSxSIZE: rooms of
# SIZE participants, all live at once), with `loadgen sfu` (bench/loadgen/src/sfu):
#   1. The SFU (the daemon's driver, SfuHandle, on its own thread) starts in a process of its
#      own; the participants, str0m clients, negotiate with it as the SFU's tests do (ICE,
#      DTLS-SRTP, its offers answered), each publishing Opus and VP8 in three simulcast layers.
#   2. Each participant's next WARMUP + DURATION seconds of media are rendered ahead through its
#      own str0m client (Opus 50 packets/s, VIDEO_KBPS of video over the three layers at 30
#      frames/s), so that the replay does no crypto: the generator is not the bottleneck.
#   3. SFU phase: the datagrams are replayed on time to the SFU; every subscriber gets the top
#      layer of each other participant's video and its audio. Counted from the clear RTP headers
#      of what comes back, without decrypting: forwarded packets/s, loss (every forwarded packet
#      sent in the window must reach the room's N-1 others), forwarding latency p50/p99 (replay
#      send → receipt); the SFU thread's on-CPU time per forwarded packet and as % of one core,
#      the generator's CPU beside it, the SFU process's RSS per participant over its idle RSS.
#   4. Floor phase: the same datagrams at the same times to a plain UDP fan-out in a process of
#      its own, as the SFU is (receive one, send it to the N-1 others, no SRTP), measured the
#      same way.
# Each scenario runs once per egress in $EGRESS: "str0m" (the daemon's: each forwarded packet
# goes through the subscriber's str0m connection) and "direct" (SfuConfig::direct_egress: the
# SFU writes, protects and sends it itself; label ROOMSxSIZE-direct), each with its own floor.
# Ratio printed: SFU CPU per forwarded packet / the floor's. Targets (issue 21): a room of 20
# under 50% of one core, the ratio within 2, no loss, RSS under 2 MiB per participant.
#
# Usage: bench/sfu.sh                        (from anywhere; builds what it needs)
#        SCENARIOS="1x20 4x5 2x10" bench/sfu.sh
# Knobs (environment): SCENARIOS="1x20 4x5" EGRESS="str0m direct" WARMUP=3 DURATION=15 VIDEO_KBPS=1000
#   On loopback each datagram the forwarding thread sends wakes the generator's receiving
#   thread, a cost no remote receiver puts on a real SFU; the kernel often runs that thread on
#   the sender's CPU, preempting the sender, and does so to the SFU some ten times as often
#   as to the floor (preempt/s shows it). Two knobs take the generator out of the way:
#   RECEIVE_EVERY_US=0|N (N: the receiving thread looks at its sockets every N us instead of
#   being woken by each datagram; latency then reads up to N us later)
#   PIN=0|1 (1: the forwarding thread on the first CPU, the generator's threads on the last;
#   the cross-CPU wake-ups then cost both forwarders more, the floor most)
#   PROFILE=0|1 (perf record -g of the SFU process over each measured window; the top of the
#   report in perf-<scenario>.txt; the sampling costs the SFU CPU, so its figures read higher)
#   BENCH_SKIP_BUILD=0 CARGO_TARGET_DIR BENCH_OUT
# Raw outputs go to bench/out/<timestamp>/ (git-ignored); the exit status is non-zero if a
# run failed (an error, negotiation that did not finish).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh" # log, die, ...; TARGET_DIR and OUT

SCENARIOS=${SCENARIOS:-"1x20 4x5"}
WARMUP=${WARMUP:-3}
DURATION=${DURATION:-15}
VIDEO_KBPS=${VIDEO_KBPS:-1000}
PROFILE=${PROFILE:-0}
PIN=${PIN:-0}
RECEIVE_EVERY_US=${RECEIVE_EVERY_US:-0}
EGRESS=${EGRESS:-"str0m direct"}

TARGET_CORE_PCT=50    # a room of 20, % of one core
TARGET_RATIO=2        # SFU CPU per forwarded packet / the floor's
TARGET_KIB=2048       # RSS per participant

mkdir -p "$OUT"
log "output: $OUT"
[[ $BENCH_SKIP_BUILD == 1 ]] || build_loadgen
[[ -x $LOADGEN ]] || die "missing $LOADGEN"
{
    describe_host "; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "load: scenarios $SCENARIOS; warm-up $WARMUP s, measured $DURATION s; video $VIDEO_KBPS kbit/s in 3 layers + Opus 50 packets/s per participant; PIN=$PIN RECEIVE_EVERY_US=$RECEIVE_EVERY_US"
} | tee "$OUT/env.txt" >&2

RESULTS=$OUT/results.tsv
printf 'scenario\ttarget\tok\tfwd_per_s\tus_per_pkt\tcore_pct\tp50_ms\tp99_ms\tloss_pct\tlost\tgen_pct\tothers_pct\tkib_per_participant\tunmatched\trss_window_start_kib\trss_loaded_kib\ttarget_drops\tpreempted_per_s\n' >"$RESULTS"
FAILED=0
for run in $SCENARIOS; do
    for egress in $EGRESS; do
        rooms=${run%x*}
        size=${run#*x}
        [[ $rooms =~ ^[0-9]+$ && $size =~ ^[0-9]+$ ]] || die "a scenario is ROOMSxSIZE, not $run"
        case $egress in
            str0m) s=$run; direct=() ;;
            direct) s=$run-direct; direct=(--direct-egress) ;;
            ingress) s=$run-ingress; direct=(--direct-egress --direct-ingress) ;;
            *) die "EGRESS is str0m, direct and/or ingress, not $egress" ;;
        esac
        llog=$OUT/load-$s.log
        log "scenario $s: $rooms room(s) of $size"
        rc=0
        perf=()
        pin=()
        if [[ $PIN == 1 ]]; then pin=(--pin); fi
        if [[ $PROFILE == 1 ]]; then perf=(--perf "$OUT/perf-$s.data"); fi
        timeout -k 5 $((180 + 3 * (WARMUP + DURATION))) "$LOADGEN" sfu --rooms "$rooms" \
            --size "$size" --warmup "$WARMUP" --duration "$DURATION" --video-kbps "$VIDEO_KBPS" \
            --label "$s" "${direct[@]}" "${perf[@]}" "${pin[@]}" --receive-every-us "$RECEIVE_EVERY_US" >"$llog" 2>&1 || rc=$?
        if [[ $PROFILE == 1 && -s $OUT/perf-$s.data ]]; then
            perf report -i "$OUT/perf-$s.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
                | grep -E '^ +[0-9.]+%' | sed 's/ *- *- *$//' | head -40 >"$OUT/perf-$s.txt" || true
            log "profile of the SFU: $OUT/perf-$s.txt"
        fi
        grep '^sfu_load: ' "$llog" | sed 's/^sfu_load: /    /' >&2 || true
        if ((rc != 0)) || ! grep -q "^result label=$s target=sfu " "$llog"; then
            show_tail "$llog"
            log "FAILED: scenario $s (exit $rc; see $llog)"
            FAILED=1
            continue
        fi
        for target in sfu floor; do
            grep -q "^result label=$s target=$target " "$llog" || continue
            f=()
            for k in fwd_per_s cpu_us_per_pkt cpu_pct p50_ms p99_ms loss_pct lost gen_cpu_pct others_cpu_pct kib_per_participant unmatched rss_window_start_kib rss_loaded_kib target_drops preempted_per_s; do
                v=$(kv "result label=$s target=$target" "$k" "$llog")
                f+=("${v:--}")
            done
            printf '%s\t%s\t1\t%s\n' "$s" "$target" "$(IFS=$'\t'; echo "${f[*]}")" >>"$RESULTS"
        done
    done
done

{
    echo
    echo "== SFU: rooms of synthetic participants, Opus + ${VIDEO_KBPS} kbit/s VP8 (3 layers, the top one forwarded), ${DURATION} s measured after ${WARMUP} s =="
    printf '%-12s %-6s %10s %9s %8s %9s %8s %8s %8s %6s %8s %8s %10s %9s\n' scenario target "fwd pkt/s" "us/pkt" "core %" "preempt/s" "p50 ms" "p99 ms" "loss %" drops "gen %" "others %" "KiB/part" unmatched
    awk -F'\t' 'NR > 1 {
        printf "%-12s %-6s %10.0f %9.2f %8.1f %9s %8.2f %8.2f %8.3f %6s %8.1f %8.1f %10s %9s\n",
            $1, $2, $4, $5, $6, $18, $7, $8, $9, $17, $11, $12, $13, $14
    }' "$RESULTS"
    echo
    echo "fwd pkt/s: RTP packets the participants' sockets received in the window. us/pkt: on-CPU time of"
    echo "  the forwarding thread (the SFU's own thread; the floor's) per packet received; core %: that"
    echo "  thread's share of one core. preempt/s: times that thread was switched out while it could"
    echo "  run (PIN=$PIN, RECEIVE_EVERY_US=$RECEIVE_EVERY_US). p50/p99: from the replay's send to the receiving thread's read."
    echo "  loss: forwarded-stream packets sent in the window that did not reach each of the room's"
    echo "  N-1 others. drops: datagrams the kernel dropped at the SFU's (the floor's) socket over the"
    echo "  window, its receive buffer full. gen %: the generator's replay and receive threads (one core = 100)."
    echo "  others %: the rest of the machine (other processes make the figures noisy). KiB/part: the"
    echo "  SFU process's RSS at the end of the window over its idle RSS, per participant."
    echo "  unmatched: RTP packets received that matched no sent packet (see bench/loadgen/src/sfu/replay.rs)."
    echo
    awk -F'\t' -v core="$TARGET_CORE_PCT" -v ratio="$TARGET_RATIO" -v kib="$TARGET_KIB" 'NR == 1 { next }
        $2 == "sfu" { us[$1] = $5; pct[$1] = $6; lpct[$1] = $9; loss[$1] = $10; per[$1] = $13; r0[$1] = $15; r1[$1] = $16; order[++n] = $1 }
        $2 == "floor" { fus[$1] = $5 }
        $12 > 50 { busy = busy sprintf(" %s/%s %.0f%%", $1, $2, $12) }
        END {
            for (i = 1; i <= n; i++) {
                s = order[i]
                if (s ~ /x20(-direct)?$/)
                    printf "%s: SFU thread %.1f%% of one core: target < %d%% %s\n", s, pct[s], core,
                        (lpct[s] > 1 ? "not measured (over 1% lost: not the full load)" : (pct[s] < core ? "met" : "NOT met"))
                if (fus[s] > 0) {
                    r = us[s] / fus[s]
                    printf "%s: CPU per forwarded packet %.2f us, floor %.2f us: %.2fx (target <= %dx %s)\n", s, us[s], fus[s], r, ratio, (r <= ratio ? "met" : "NOT met")
                }
                printf "%s: lost %d packets (target 0 %s); RSS %s KiB per participant (target < %d %s); the SFU process RSS moved by %+.1f MiB during the window\n", s, loss[s], (loss[s] == 0 ? "met" : "NOT met"), per[s], kib, (per[s] < kib ? "met" : "NOT met"), (r1[s] - r0[s]) / 1024
            }
            if (busy != "")
                printf "warning: other processes were busy (%% of one core):%s; starved, the SFU and the floor drop packets and read late: run again on a quiet machine\n", busy
        }' "$RESULTS"
} | end_bench
