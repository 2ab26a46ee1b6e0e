#!/usr/bin/env bash
# Runs every test of switchboard, installing what the tests drive first: coturn's client tools
# (turnutils_*; the coturn server itself is never started), Debian's Chromium and the
# tests' npm packages (tests/browser: playwright-core, which drives that Chromium and
# never downloads a browser of its own, and socket.io-client; examples/chat-app:
# socket.io-client), schemathesis (PyPI, in a venv)
# and iproute2. Safe to run again: installs are skipped when present.
# Then: cargo test, tests/package.sh (the .deb, booted) and tests/fuzz.sh (every fuzz target,
# FUZZ_SECONDS each).
# Needs root (or sudo) for apt on a fresh machine, python3 with venv, and node >= 20 with npm.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=0
apt_update_once() {
    if [ "$apt_updated" = 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
}

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
    apt_update_once
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends coturn >/dev/null
    [ "$had_policy" = 0 ] && as_root rm -f "$policy"
fi

# tests/e2e/relay_chromium.rs runs exactly this path (playwright-core's executablePath).
if [ ! -x /usr/bin/chromium ]; then
    echo "== installing chromium (Debian's; the browser tests run it headless)"
    apt_update_once
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

# tests/relay/relay_abuse.rs makes a network namespace of its own with `ip`.
if ! command -v ip >/dev/null 2>&1; then
    echo "== installing iproute2"
    apt_update_once
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
fi

# tests/daemon/openapi_fuzz.rs runs schemathesis (PyPI), pinned, in a venv outside the clone.
schemathesis_venv=/var/tmp/switchboard-schemathesis
schemathesis_version=4.32.5
if [ "$("$schemathesis_venv/bin/schemathesis" --version 2>/dev/null || true)" != "schemathesis, version $schemathesis_version" ]; then
    echo "== installing schemathesis $schemathesis_version (venv in $schemathesis_venv)"
    rm -rf "$schemathesis_venv"
    python3 -m venv "$schemathesis_venv"
    "$schemathesis_venv/bin/pip" install -q "schemathesis==$schemathesis_version"
fi

# Node is not installed here: Debian 12's nodejs is 18, and playwright-core needs 20.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "tests/run.sh: node (>= 20) and npm are needed for tests/browser; install them first" >&2
    exit 1
fi
# npm ci when node_modules is missing or was installed from another package-lock.json (a stamp
# copied in after each install says which). --ignore-scripts: no package may run install
# scripts, so nothing can fetch a browser.
# The same for the worked host-app example (examples/chat-app: socket.io-client, served to its
# page), which tests/e2e/chat_app.rs runs.
for dir in tests/browser examples/chat-app; do
    lock=$dir/package-lock.json
    stamp=$dir/node_modules/.installed-package-lock.json
    if ! cmp -s "$lock" "$stamp"; then
        echo "== npm ci ($dir)"
        (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts)
        cp "$lock" "$stamp"
    fi
done

echo "== cargo test --workspace"
cargo test --workspace --locked

echo "== packaging checks (tests/package.sh)"
./tests/package.sh

echo "== fuzzing (tests/fuzz.sh, ${FUZZ_SECONDS:-60} s a target)"
./tests/fuzz.sh
