#!/usr/bin/env bash
# Runs every test of switchboard, installing what the tests drive first: coturn's client tools
# (turnutils_*; the coturn server itself is never started). Safe to run again: installs are
# skipped when present. Needs root (or sudo) for apt on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v turnutils_uclient >/dev/null 2>&1; then
    echo "== installing coturn's client tools (the coturn service stays stopped)"
    # A policy-rc.d that says "no" keeps the package from starting its daemon on hosts with
    # an init system; it is removed again right after.
    policy=/usr/sbin/policy-rc.d
    had_policy=0
    [ -e "$policy" ] && had_policy=1
    if [ "$had_policy" = 0 ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod +x "$policy"
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends coturn >/dev/null
    [ "$had_policy" = 0 ] && as_root rm -f "$policy"
fi

echo "== cargo test --workspace"
cargo test --workspace --locked
