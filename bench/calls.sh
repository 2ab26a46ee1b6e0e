#!/usr/bin/env bash
# bench/calls.sh — call lifecycle benchmark: full call lifecycles per second over real HTTP,
# beside the raw SQLite durable transaction rate of the same disk, measured in the same run.
#
# What it measures, all on 127.0.0.1, for each value in $CLIENTS (a fresh daemon and a fresh
# store for each):
#   1. The anchor: `loadgen calls --sqlite-anchor` (bench/loadgen), a fresh SQLite file in $STORE_DIR
#      (WAL, synchronous=FULL, as the call store), one small INSERT per BEGIN IMMEDIATE…COMMIT,
#      single-threaded, for $ANCHOR_SECS: durable transactions per second, one fsync each. It
#      runs right before the load, on the disk the daemon's store is on.
#   2. The load: `switchboard serve` (HTTP and TURN on 127.0.0.1 port 0, open conversations,
#      its store in $STORE_DIR) driven by `loadgen calls --http`: N clients, each its
#      own keep-alive HTTP/1.1 connection and pair of users, looping over full lifecycles
#      (initiate 201 → answer 200 → media 200 → end 200: four durable transitions). After
#      $WARMUP s, it counts what completes in $DURATION s: lifecycles/s, requests/s, lifecycle
#      latency p50/p99 (and per request). Any error fails the run.
#   3. The daemon's CPU over the load (warm-up included): utime+stime of /proc/PID/stat (clock
#      ticks), and the sum of its threads' on-CPU time from /proc/PID/task/*/schedstat (ns),
#      both per lifecycle completed; the same per thread name (the `store` thread, the tokio
#      workers, ...) gives the store thread's share, its minor page faults and how much of the
#      load's wall time it spent on a CPU or runnable. With perf, the fsync/fdatasync calls the
#      daemon made during the load: commits, hence transitions per commit (the group commit's
#      batch size; a WAL checkpoint adds two fsyncs).
#   4. The durability cross-check: after SIGTERM (the daemon must exit 0), its store is read
#      (`loadgen calls --count-calls`, rusqlite): ended calls must equal the lifecycles the client
#      completed, calls the calls it initiated, and none may be live.
# The ratio printed: the daemon's durable transitions/s (4 per lifecycle) / the anchor's tx/s.
# Above 1 means the group commit makes transitions share fsyncs. Target: 1,000 lifecycles/s.
#
# Usage: bench/calls.sh                       (from anywhere; builds what it needs)
#        CLIENTS="1 8 32 64" bench/calls.sh   (one run per value, one table)
# Knobs (environment): CLIENTS=32 DURATION=10 WARMUP=2 ANCHOR_SECS=3
#   STORE_DIR=/var/tmp (the store and the anchor's file: keep them on the same disk)
#   LOG_LEVEL=info (the daemon's; it must print `http listening addr=...`, an info line)
#   FSYNCS=auto|0 (count the daemon's fsyncs with `perf stat`, if perf works)
#   PROFILE=0|1 (perf record, DWARF call graphs, of the daemon during each load; reports in
#   the output dir, perf-<run>.txt; the sampling slows the daemon, so its figures are not
#   comparable with an unprofiled run's)
#   KEEP_STORE=0 BENCH_SKIP_BUILD=0 CARGO_TARGET_DIR BENCH_OUT
# Raw outputs go to bench/out/<timestamp>/ (git-ignored); the exit status is non-zero if any
# run failed (an error, a daemon that did not start or stop cleanly, a cross-check mismatch).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh" # log, die, ...; TARGET_DIR and OUT

CLIENTS=${CLIENTS:-32}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ANCHOR_SECS=${ANCHOR_SECS:-3}
FSYNCS=${FSYNCS:-auto}
PROFILE=${PROFILE:-0}
KEEP_STORE=${KEEP_STORE:-0}

TARGET_RATE=1000

SB_BIN=$TARGET_DIR/release/switchboard
CLK_TCK=$(getconf CLK_TCK)

for value in DURATION WARMUP ANCHOR_SECS; do
    [[ ${!value} =~ ^[0-9]+$ ]] && ((${!value} <= 600)) || die "$value must be whole seconds, 0..600"
done
((DURATION > 0)) || die "DURATION must be at least 1"
for c in $CLIENTS; do
    [[ $c =~ ^[0-9]+$ ]] && ((c >= 1 && c <= 1024)) || die "CLIENTS: $c is not 1..1024"
done

# The daemon's CPU per thread (cpu_ticks and cpu_ns, for the whole process, are in
# bench/lib.sh): one "tid name ns minflt runqueue-ns" line per thread (schedstat's second
# field: time spent runnable but waiting for a CPU). Minor page faults show
# memory the allocator gave back to the kernel (glibc trims a thread arena with madvise) and
# took again: in the store thread they track SQLite's per-statement temporary b-trees.
thread_ns() {
    local task tid
    for task in "/proc/$1"/task/*; do
        tid=${task##*/}
        [[ -r $task/schedstat ]] || continue
        printf '%s\t%s\t%s\t%s\t%s\n' "$tid" "$(cat "$task/comm" 2>/dev/null || echo '?')" \
            "$(awk '{ print $1 }' "$task/schedstat" 2>/dev/null || echo 0)" \
            "$(sed 's/.*) //' "$task/stat" 2>/dev/null | awk '{ print $8 }' || echo 0)" \
            "$(awk '{ print $2 }' "$task/schedstat" 2>/dev/null || echo 0)"
    done
}
wakeups() { cat "/proc/$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ { s += $2 } END { print s + 0 }'; }

# ---------------------------------------------------------------------------------------------
# 1. Build.
start_bench "$SB_BIN" "$LOADGEN"

mkdir -p "$STORE_DIR" || die "cannot create STORE_DIR $STORE_DIR"
WORK=$(mktemp -d "$STORE_DIR/switchboard-calls.XXXXXX")
PERF_OK=0
if [[ $FSYNCS != 0 || $PROFILE == 1 ]] && command -v perf >/dev/null; then
    if perf stat -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync -- true >/dev/null 2>&1; then
        PERF_OK=1
    else
        log "perf cannot count syscall tracepoints here: no fsync counts"
    fi
fi
[[ $PROFILE == 1 ]] && ! command -v perf >/dev/null && die "PROFILE=1 needs perf"

NPROC=$(nproc)
{
    describe_host
    echo "store dir: $WORK ($(findmnt -no SOURCE,FSTYPE,OPTIONS -T "$WORK" 2>/dev/null || echo '?'))"
    describe_switchboard "$SB_BIN"
    echo "load: clients $CLIENTS; warm-up ${WARMUP} s, measured ${DURATION} s; anchor ${ANCHOR_SECS} s; daemon log level $LOG_LEVEL"
    echo "fsync counts: $([[ $PERF_OK == 1 ]] && echo "perf stat ($(perf --version 2>/dev/null))" || echo no)"
} | tee "$OUT/env.txt" >&2

# ---------------------------------------------------------------------------------------------
# 2. The runs.
RESULTS=$OUT/results.tsv
THREADS_TSV=$OUT/threads.tsv
COLUMNS_TSV="clients anchor_tx_per_s anchor_p50_us anchor_p99_us lifecycles secs lifecycles_per_s"
COLUMNS_TSV+=" requests_per_s p50_ms p99_ms max_ms min_per_s max_per_s errors completed_total"
COLUMNS_TSV+=" initiated_total cpu_ns cpu_us_per_lifecycle ticks_us_per_lifecycle store_us_per_lifecycle"
COLUMNS_TSV+=" store_share fsyncs transitions_per_fsync wakeups_per_lifecycle client_cpu_us_per_lifecycle"
COLUMNS_TSV+=" store_calls store_ended store_live check store_faults_per_lifecycle anchor_cpu_us_per_tx"
tr ' ' '\t' <<<"$COLUMNS_TSV" >"$RESULTS"
printf 'clients\tthread\tthreads\tcpu_ms\tus_per_lifecycle\tshare\tbusy_per_thread\trunqueue_per_thread\n' >"$THREADS_TSV"
FAILED=0

run_one() {
    local c=$1 tag=r$2-c$1
    local dir=$WORK/$tag conf=$OUT/switchboard-$tag.toml slog=$OUT/daemon-$tag.log
    local alog=$OUT/anchor-$tag.log clog=$OUT/load-$tag.log
    mkdir -p "$dir"

    # The anchor, on the store's disk, right before the load.
    log "clients $c: sqlite anchor (${ANCHOR_SECS} s)"
    if ! timeout -k 5 $((ANCHOR_SECS + 60)) "$LOADGEN" calls --sqlite-anchor "$dir/anchor.db" \
        --anchor-secs "$ANCHOR_SECS" >"$alog" 2>&1; then
        show_tail "$alog"
        log "FAILED: clients $c: the sqlite anchor failed"
        return 1
    fi
    rm -f "$dir"/anchor.db*
    local anchor_rate anchor_p50 anchor_p99 anchor_cpu
    anchor_rate=$(kv anchor tx_per_s "$alog")
    anchor_cpu=$(kv anchor cpu_us_per_tx "$alog")
    anchor_p50=$(kv anchor p50_us "$alog")
    anchor_p99=$(kv anchor p99_us "$alog")
    log "clients $c: anchor $anchor_rate tx/s (latency p50 $anchor_p50 us, p99 $anchor_p99 us; CPU $anchor_cpu us/tx)"

    daemon_config "$conf" "$dir/switchboard.db" "$LOG_LEVEL"
    : >"$slog"
    (cd "$dir" && exec env -u RUST_LOG "$SB_BIN" serve --config "$conf") >"$slog" 2>&1 &
    local pid=$! addr
    PIDS+=("$pid")
    addr=$(logged_addr "$slog" "$pid" "http listening ")
    if [[ -z $addr ]]; then
        show_tail "$slog"
        stop_pid "$pid"
        forget_pid "$pid"
        log "FAILED: clients $c: the daemon did not report its HTTP address (log level $LOG_LEVEL must show info lines)"
        return 1
    fi
    log "clients $c: daemon pid $pid, http $addr; load: warm-up ${WARMUP} s, measured ${DURATION} s"

    local perf_pid= rec_pid=
    if [[ $PERF_OK == 1 && $FSYNCS != 0 ]]; then
        perf stat -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync -p "$pid" \
            -o "$OUT/fsyncs-$tag.txt" >/dev/null 2>&1 &
        perf_pid=$!
        PIDS+=("$perf_pid")
    fi
    if [[ $PROFILE == 1 ]]; then
        # DWARF call graphs: the release build has no frame pointers (and line tables only).
        perf record -F 199 --call-graph dwarf,16384 -p "$pid" -o "$OUT/perf-$tag.data" \
            >"$OUT/perf-record-$tag.log" 2>&1 &
        rec_pid=$!
        PIDS+=("$rec_pid")
    fi
    ((${#perf_pid} + ${#rec_pid} > 0)) && sleep 0.5 # let perf attach
    local user0 sys0 user1 sys1 ns0 ns1 wake0 wake1 rc=0
    read -r user0 sys0 < <(cpu_ticks "$pid")
    ns0=$(cpu_ns "$pid")
    wake0=$(wakeups "$pid")
    thread_ns "$pid" >"$dir/threads0"
    local wall0 wall1
    wall0=$(date +%s%N)
    timeout -k 5 $((WARMUP + DURATION + 90)) "$LOADGEN" calls --http "$addr" --jwt-secret "$JWT_SECRET" \
        --clients "$c" --duration "$DURATION" --warmup "$WARMUP" >"$clog" 2>&1 || rc=$?
    wall1=$(date +%s%N)
    read -r user1 sys1 < <(cpu_ticks "$pid")
    ns1=$(cpu_ns "$pid")
    wake1=$(wakeups "$pid")
    thread_ns "$pid" >"$dir/threads1"
    for p in $perf_pid $rec_pid; do
        kill -INT "$p" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        stop_pid "$p"
        forget_pid "$p"
    done

    # Stop the daemon: SIGTERM, and it must exit 0 (it closes the store, checkpointing the WAL).
    stop_for_status "$pid" 15
    local daemon_rc=$STOP_RC
    if ((STOP_KILLED)); then log "the daemon did not exit 15 s after SIGTERM; killed it"; fi
    forget_pid "$pid"

    local ok=1
    grep -E '^calls_load: (error|\.\.\.)' "$clog" >&2 || true
    if ((rc != 0)); then
        log "FAILED: clients $c: the load exited with $rc (see $clog)"
        ok=0
    fi
    if ((daemon_rc != 0)); then
        log "FAILED: clients $c: the daemon exited with $daemon_rc (see $slog)"
        show_tail "$slog"
        ok=0
    fi
    if grep -qE ' (ERROR|WARN) ' "$slog"; then
        log "warning: the daemon logged warnings or errors (see $slog):"
        grep -E ' (ERROR|WARN) ' "$slog" | head -5 | sed 's/^/      | /' >&2
    fi
    local summary
    summary=$(grep '^summary ' "$clog" | tail -1 || true)
    if [[ -z $summary ]]; then
        log "FAILED: clients $c: no summary from the load (see $clog)"
        show_tail "$clog"
        return 1
    fi
    sed -n '/^calls load:/,/^client CPU/p' "$clog" | sed 's/^/    /' >&2

    # The durability cross-check.
    local count_log=$OUT/store-$tag.log store_calls= store_ended= store_live= check=ok
    if "$LOADGEN" calls --count-calls "$dir/switchboard.db" >"$count_log" 2>&1; then
        store_calls=$(kv store calls "$count_log")
        store_ended=$(kv store ended "$count_log")
        store_live=$(kv store live "$count_log")
    else
        show_tail "$count_log"
        check=unreadable
    fi
    local completed initiated
    completed=$(kv summary completed_total "$clog")
    initiated=$(kv summary initiated_total "$clog")
    if [[ $check == ok ]] && [[ $store_ended != "$completed" || $store_calls != "$initiated" || $store_live != 0 ]]; then
        check=MISMATCH
    fi
    if [[ $check != ok ]]; then
        log "FAILED: clients $c: durability cross-check $check: the client completed $completed lifecycles and initiated $initiated calls; the store holds ${store_calls:-?} calls, ${store_ended:-?} ended, ${store_live:-?} live"
        ok=0
    else
        log "clients $c: cross-check ok: $store_ended ended calls in the store = $completed lifecycles completed"
    fi

    # Fsyncs during the load (perf stat's counts; commas as thousands separators).
    local fsyncs=
    if [[ -s $OUT/fsyncs-$tag.txt ]]; then
        fsyncs=$(awk '/syscalls:sys_enter_f(data)?sync/ { gsub(",", "", $1); if ($1 ~ /^[0-9]+$/) s += $1; n++ }
            END { if (n) print s }' "$OUT/fsyncs-$tag.txt")
    fi

    # Per thread name: on-CPU time over the load (threads born during it count from zero).
    awk -F'\t' -v c="$c" -v n="$completed" -v total=$((ns1 - ns0)) -v wall=$((wall1 - wall0)) '
        FNR == NR { before[$1] = $3; wbefore[$1] = $5; next }
        { d = $3 - ($1 in before ? before[$1] : 0); name = $2; sub(/[-_ ]?[0-9]+$/, "", name)
          ns[name] += d; cnt[name]++; rq[name] += $5 - ($1 in wbefore ? wbefore[$1] : 0) }
        END { for (t in ns) printf "%s\t%s\t%d\t%.1f\t%.2f\t%.3f\t%.3f\t%.3f\n", c, t, cnt[t], ns[t] / 1e6,
                  (n > 0 ? ns[t] / 1e3 / n : 0), (total > 0 ? ns[t] / total : 0),
                  (wall > 0 ? ns[t] / wall / cnt[t] : 0), (wall > 0 ? rq[t] / wall / cnt[t] : 0) }' \
        "$dir/threads0" "$dir/threads1" | sort -t$'\t' -k4,4nr >>"$THREADS_TSV"
    local store_ns store_faults
    read -r store_ns store_faults < <(awk -F'\t' 'FNR == NR { b[$1] = $3; f[$1] = $4; next }
        $2 == "store" { s += $3 - ($1 in b ? b[$1] : 0); m += $4 - ($1 in f ? f[$1] : 0) }
        END { print s + 0, m + 0 }' "$dir/threads0" "$dir/threads1")

    awk -v c="$c" -v ar="$anchor_rate" -v a50="$anchor_p50" -v a99="$anchor_p99" -v s="$summary" \
        -v ns=$((ns1 - ns0)) -v tk=$((user1 + sys1 - user0 - sys0)) -v hz="$CLK_TCK" \
        -v sns="$store_ns" -v fs="${fsyncs:-}" -v wk=$((wake1 - wake0)) -v sc="${store_calls:--}" \
        -v se="${store_ended:--}" -v sl="${store_live:--}" -v ck="$check" -v sf="$store_faults" -v acpu="${anchor_cpu:-0}" 'BEGIN {
            k = split(s, kv, " ")
            for (i = 2; i <= k; i++) { split(kv[i], p, "="); f[p[1]] = p[2] }
            n = f["completed_total"]
            per = n > 0 ? 1 / n : 0
            trans = 4 * n
            printf "%d\t%.1f\t%d\t%d\t%d\t%.3f\t%.1f\t%.1f\t%.3f\t%.3f\t%.3f\t%d\t%d\t%d\t%d\t%d\t%.0f\t%.1f\t%.1f\t%.1f\t%.3f\t%s\t%s\t%.2f\t%.1f\t%s\t%s\t%s\t%s\t%.1f\t%.1f\n",
                c, ar, a50, a99, f["lifecycles"], f["secs"], f["lifecycles_per_s"],
                f["requests_per_s"], f["p50_ms"], f["p99_ms"], f["max_ms"], f["min_per_s"],
                f["max_per_s"], f["errors"], n, f["initiated_total"], ns, ns * per / 1e3,
                tk * 1e6 / hz * per, sns * per / 1e3, (ns > 0 ? sns / ns : 0), (fs == "" ? "-" : fs),
                (fs == "" || fs == 0 ? "-" : sprintf("%.2f", trans / fs)), wk * per,
                f["client_cpu_us_per_lifecycle"], sc, se, sl, ck, sf * per, acpu
        }' >>"$RESULTS"
    log "$(tail -1 "$RESULTS" | awk -F'\t' '{ printf "clients %s: %.0f lifecycles/s (%.0f req/s), p50 %.2f ms, p99 %.2f ms; daemon CPU %.0f us/lifecycle (store thread %.0f%%); %s transitions/fsync; anchor %.0f tx/s",
        $1, $7, $8, $9, $10, $18, 100 * $21, $23, $2 }')"

    if [[ $PROFILE == 1 && -s $OUT/perf-$tag.data ]]; then
        {
            echo "# inclusive (children) time by thread and function, call graphs off"
            perf report -i "$OUT/perf-$tag.data" --children --sort comm,symbol -g none --stdio \
                --percent-limit 1 2>/dev/null | grep -v '^$' | head -250
            echo
            echo "# self time by thread, library and function"
            perf report -i "$OUT/perf-$tag.data" --no-children --sort comm,dso,symbol -g none \
                --stdio --percent-limit 0.3 2>/dev/null | grep -v '^$' | head -120
        } | sed 's/ *$//' | cut -c1-220 >"$OUT/perf-$tag.txt" || true
        log "clients $c: profile in $OUT/perf-$tag.txt"
    fi
    ((ok == 1))
}

RUN=0
for c in $CLIENTS; do
    RUN=$((RUN + 1))
    run_one "$c" "$RUN" || FAILED=1
done

# ---------------------------------------------------------------------------------------------
# 3. Report.
{
    echo
    echo "== call lifecycles over HTTP (initiate → answer → media → end), ${DURATION} s each after ${WARMUP} s warm-up =="
    awk -F'\t' -v target="$TARGET_RATE" 'NR == 1 { next }
        {
            rows[NR] = $0
        }
        END {
            printf "%7s %8s %8s %8s %8s %8s %11s %7s %9s %7s %9s %9s %8s %9s %6s %6s %s\n", "clients",
                "lc/s", "req/s", "p50 ms", "p99 ms", "min/s", "anchor tx/s", "ratio", "CPU us/lc",
                "store%", "store us", "faults/lc", "tr/fsync", "client us", "errors", "check", "target"
            for (i = 2; i <= NR; i++) {
                split(rows[i], f, "\t")
                ratio = f[2] > 0 ? 4 * f[7] / f[2] : 0
                printf "%7d %8.0f %8.0f %8.2f %8.2f %8d %11.0f %7.2f %9.0f %6.0f%% %9.0f %9.1f %8s %9.0f %6d %6s %s\n",
                    f[1], f[7], f[8], f[9], f[10], f[12], f[2], ratio, f[18], 100 * f[21], f[20],
                    f[30], f[23], f[25], f[14], f[29], (f[7] >= target ? "met" : "NOT met")
            }
        }' "$RESULTS"
    echo
    echo "lc/s: lifecycles completed per second of the measured window (four durable transitions"
    echo "  each, every reply after its commit); req/s: requests completed per second; p50/p99:"
    echo "  lifecycle latency as one client sees it; min/s: the slowest whole second of the window."
    echo "anchor tx/s: raw SQLite on the same disk, one INSERT per BEGIN IMMEDIATE…COMMIT, WAL,"
    echo "  synchronous=FULL, single-threaded, run right before the load; its CPU per transaction,"
    echo "  per run: $(awk -F'\t' 'NR > 1 { printf "%s%.0f us", (NR > 2 ? ", " : ""), $31 }' "$RESULTS")."
    echo "ratio: daemon durable transitions/s (4 × lc/s) / anchor tx/s; above 1, transitions share fsyncs."
    echo "CPU us/lc: daemon on-CPU time (all threads, schedstat) per lifecycle completed over the"
    echo "  load, warm-up included; store%: the store thread's share of it, store us: its time per"
    echo "  lifecycle; faults/lc: the store thread's minor page faults per lifecycle (memory glibc"
    echo "  trimmed and SQLite touched again); tr/fsync: transitions per fsync during the load (the"
    echo "  group commit's batch; checkpoints add fsyncs, the ring timer's sweeps add jobs);"
    echo "  client us: the load generator's CPU per lifecycle (it shares the machine: $NPROC CPUs)."
    echo "check: ended calls in the store = lifecycles completed, calls = calls initiated, none live."
    echo "target: $TARGET_RATE lifecycles/s durable."
    echo
    echo "== daemon CPU by thread over the load: on-CPU ms, us per lifecycle, share of the daemon's"
    echo "   CPU; per thread of that name, the share of the load's wall time on a CPU and runnable"
    echo "   but waiting for one (the rest: blocked, e.g. in fsync or waiting for work) =="
    awk -F'\t' 'NR > 1 && ($6 >= 0.005) { printf "  clients %-4s %-18s x%-3s %9.1f ms %8.1f us %6.1f%%   on CPU %5.1f%%, runnable %5.1f%%\n", $1, $2, $3, $4, $5, 100 * $6, 100 * $7, 100 * $8 }' "$THREADS_TSV"
} | end_bench
