#!/usr/bin/env bash
# Runs every cargo-fuzz target of the relay (turn/fuzz), the signaling (signaling/fuzz) and the
# SFU (sfu/fuzz) for FUZZ_SECONDS each (default 60), starting from the committed seeds
# (<crate>/fuzz/seeds/<target>) plus the corpus earlier runs grew (kept outside the clone), and
# prints each target's executions, coverage and crashes. A crash (or a leak, or a timeout) fails
# the run and leaves its reproducer in $WORK/artifacts/<crate>-<target>/.
#
# FUZZ_CRATES picks some of the crates (default: all three). cargo-fuzz is installed into
# $WORK/tools; the toolchain is stable, so RUSTC_BOOTSTRAP=1 lets it pass the sanitizer flags.
# Run by tests/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
WORK=${SWITCHBOARD_FUZZ_WORK:-/var/tmp/switchboard-fuzz}
CARGO_FUZZ_VERSION=0.13.2
FUZZ_CRATES=${FUZZ_CRATES:-turn signaling sfu}
[[ $FUZZ_SECONDS =~ ^[0-9]+$ ]] && ((FUZZ_SECONDS >= 1 && FUZZ_SECONDS <= 3600)) || {
    echo "tests/fuzz.sh: FUZZ_SECONDS must be 1..3600" >&2
    exit 2
}
for crate in $FUZZ_CRATES; do
    [[ $crate =~ ^(turn|signaling|sfu)$ ]] || {
        echo "tests/fuzz.sh: FUZZ_CRATES names turn, signaling or sfu, not $crate" >&2
        exit 2
    }
done

cargo_fuzz="$WORK/tools/bin/cargo-fuzz"
if [[ "$("$cargo_fuzz" --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    echo "== cargo install cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --quiet --locked --version "$CARGO_FUZZ_VERSION" --root "$WORK/tools" cargo-fuzz
fi

summary=()
failed=0
for crate in $FUZZ_CRATES; do
    targets=$(cd "$crate" && "$cargo_fuzz" fuzz list)
    for target in $targets; do
        name="$crate-$target"
        corpus="$WORK/corpus/$name"
        artifacts="$WORK/artifacts/$name"
        log="$WORK/logs/$name.log"
        mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
        echo "== fuzz $name for ${FUZZ_SECONDS}s"
        rc=0
        # The build is bounded by cargo; the run by -max_total_time, and by timeout(1) should
        # libFuzzer itself hang.
        (cd "$crate" && CARGO_TARGET_DIR="$WORK/target-$crate" RUSTC_BOOTSTRAP=1 \
            timeout --kill-after=30 $((FUZZ_SECONDS + 600)) \
            "$cargo_fuzz" fuzz run "$target" "$corpus" "fuzz/seeds/$target" -- \
            -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -timeout=10 \
            -artifact_prefix="$artifacts/" -print_final_stats=1) >"$log" 2>&1 || rc=$?
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 | cut -d' ' -f2)
        units=$(find "$corpus" -type f | wc -l)
        if [ "$rc" != 0 ]; then
            failed=1
            echo "--- $name failed (exit $rc); the end of its log:" >&2
            tail -n 40 "$log" >&2
            summary+=("$name: FAILED (exit $rc), ${execs:-?} executions; reproducers in $artifacts")
        else
            summary+=("$name: ${execs:-?} executions in ${FUZZ_SECONDS}s, coverage ${cov:-?}, corpus $units, no crash")
        fi
    done
done
echo "== fuzzing"
printf '   %s\n' "${summary[@]}"
exit "$failed"
