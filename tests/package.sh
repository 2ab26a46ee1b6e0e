#!/usr/bin/env bash
# The appliance's packaging checks (issue 7), run by tests/run.sh:
#   - the systemd unit's exposure: `systemd-analyze security --offline=true --threshold=20`
#     must pass (an exposure of at most 2.0) on systemd/switchboard.service.
# Still to come here: the .deb (cargo deb), lintian, and a boot of a minimal Debian root under
# systemd-nspawn that installs, reloads, upgrades and purges it.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "== installing systemd (for systemd-analyze)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi

echo "== systemd-analyze security systemd/switchboard.service (threshold 2.0)"
out=$(systemd-analyze security --offline=true --threshold=20 systemd/switchboard.service 2>&1) || {
    echo "$out" | grep -E '^✗|Overall' >&2
    echo "tests/package.sh: systemd/switchboard.service is exposed above 2.0" >&2
    exit 1
}
echo "$out" | grep 'Overall'
