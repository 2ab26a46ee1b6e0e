#!/usr/bin/env bash
# The appliance's packaging checks (issue 7), run by tests/run.sh after cargo test:
#   1. the systemd unit's exposure: `systemd-analyze security --offline=true --threshold=20`
#      (at most 2.0) on systemd/switchboard.service;
#   2. the .deb: `cargo deb --strip`, then lintian with no errors and no warnings but the
#      waived ones below;
#   3. a real boot: a minimal Debian root (debootstrap, cached outside the clone) booted with
#      systemd-nspawn, and inside it: dpkg -i, the service active with its STATUS=, a STUN
#      Binding on 3478 and /healthz answered, reload keeping the MainPID, HTTP moved to port 80
#      (the capability), an upgrade restarting it with the secrets and the edited conffile
#      kept, purge removing the user, the secrets and the state.
# Needs root (it boots a container); re-runs itself with sudo otherwise. Every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    exec sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME,CARGO_TARGET_DIR "$0" "$@"
fi

TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
# Tools and the base root live beside the target dir, outside the clone, so warm runs reuse
# them; none of it is in git.
WORK=${SWITCHBOARD_PACKAGE_WORK:-/var/tmp/switchboard-package}
CARGO_DEB_VERSION=3.8.0
mkdir -p "$WORK"

step() { echo "== $*"; }
fail() {
    echo "tests/package.sh: $*" >&2
    exit 1
}

apt_install() {
    local missing=()
    for pkg in "$@"; do
        [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" = 'install ok installed' ] ||
            missing+=("$pkg")
    done
    [ ${#missing[@]} = 0 ] && return
    step "installing ${missing[*]}"
    env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}
# systemd-analyze; lintian; a Debian root and its boot; curl and coturn's stunclient (from
# tests/run.sh) probe the booted service from the host, inside the container's network.
apt_install systemd lintian debootstrap systemd-container curl

# ---------------------------------------------------------------------------------------------
step "systemd-analyze security systemd/switchboard.service (threshold 2.0)"
out=$(systemd-analyze security --offline=true --threshold=20 systemd/switchboard.service 2>&1) || {
    grep -E '^✗|Overall' <<<"$out" >&2
    fail "systemd/switchboard.service is exposed above 2.0"
}
grep 'Overall' <<<"$out"

# ---------------------------------------------------------------------------------------------
cargo_deb="$WORK/tools/bin/cargo-deb"
if [[ "$("$cargo_deb" --version 2>/dev/null || true)" != *" $CARGO_DEB_VERSION"* ]]; then
    step "cargo install cargo-deb $CARGO_DEB_VERSION"
    cargo install --quiet --locked --version "$CARGO_DEB_VERSION" --root "$WORK/tools" cargo-deb
fi
step "cargo deb"
debs="$WORK/debs"
rm -rf "$debs" && mkdir -p "$debs"
# --strip: the release profile keeps line tables for backtraces; the package ships none.
"$cargo_deb" deb --locked --strip --output "$debs/" >/dev/null
deb=$(echo "$debs"/switchboard_*.deb)
[ -f "$deb" ] || fail "cargo deb made no package"
ls -l "$deb"
contents=$(dpkg-deb --contents "$deb")
if grep -E 'secret|token' <<<"$contents"; then fail "the package ships a secret"; fi

step "lintian"
# Waived, each for its reason:
#   initial-upload-closes-no-bugs: the package is not uploaded to Debian, so there is no ITP
#     bug to close.
lintian --allow-root --fail-on error,warning --display-level '>=warning' \
    --suppress-tags initial-upload-closes-no-bugs "$deb"
echo "lintian: no errors, no warnings"

# ---------------------------------------------------------------------------------------------
# The base root: minbase plus what booting and the package need, from the mirror apt uses.
# Built once per include list and suite (a stamp is written last, so a half-made root is
# made again).
. /etc/os-release
suite=$VERSION_CODENAME
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null |
    awk 'match($0, /https?:\/\/[^ ]+\/debian\/?( |$)/) { print substr($0, RSTART, RLENGTH); exit }' || true)
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror% }
include=systemd,systemd-sysv,dbus,adduser
base="$WORK/root-$suite-$(echo "$include" | md5sum | cut -c1-8)"
if [ ! -e "$base/.switchboard-complete" ]; then
    step "debootstrap $suite ($include) from $mirror"
    rm -rf "$base"
    timeout 600 debootstrap --variant=minbase --include="$include" "$suite" "$base" "$mirror" \
        >"$WORK/debootstrap.log" 2>&1 || {
        tail -n 20 "$WORK/debootstrap.log" >&2
        fail "debootstrap failed"
    }
    touch "$base/.switchboard-complete"
fi

# ---------------------------------------------------------------------------------------------
# The boot. There may be no systemd on the host, so the container gets a cgroup of its own
# (removed at the end), and --keep-unit keeps nspawn from asking the host's bus for a scope.
step "boot $suite in systemd-nspawn"
name=sb-package-$$
cgroup=switchboard-package-$$
console="$WORK/console.log"
cgroup_dirs=()
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    cgroup_dirs=("/sys/fs/cgroup/$cgroup")
else
    for h in systemd unified; do
        [ -d "/sys/fs/cgroup/$h" ] && cgroup_dirs+=("/sys/fs/cgroup/$h/$cgroup")
    done
fi
for dir in "${cgroup_dirs[@]}"; do
    mkdir -p "$dir"
    echo $BASHPID >"$dir/cgroup.procs"
done

setsid timeout --kill-after=10 600 systemd-nspawn --quiet --register=no --keep-unit --boot \
    --private-network --ephemeral -M "$name" -D "$base" --bind-ro="$debs:/srv/debs" \
    >"$console" 2>&1 </dev/null &
nspawn=$!
init=

cleanup() {
    local rc=$?
    if [ -n "$init" ]; then
        timeout 20 nsenter --target "$init" --mount --pid -- systemctl poweroff >/dev/null 2>&1 || true
    fi
    for _ in $(seq 100); do
        kill -0 "$nspawn" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$nspawn" 2>/dev/null; then
        kill -TERM -- "-$nspawn" 2>/dev/null || true
        sleep 2
        kill -KILL -- "-$nspawn" 2>/dev/null || true
    fi
    wait "$nspawn" 2>/dev/null || true
    for dir in "${cgroup_dirs[@]}"; do
        echo $BASHPID >"$(dirname "$dir")/cgroup.procs"
        find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    if [ "$rc" != 0 ]; then
        echo "--- container console (tail)" >&2
        tail -n 30 "$console" >&2 || true
    fi
    exit "$rc"
}
trap cleanup EXIT

# The container's init: systemd, the child of nspawn.
for _ in $(seq 300); do
    inner=$(pgrep -P "$nspawn" -x systemd-nspawn || true)
    [ -n "$inner" ] && init=$(pgrep -P "$inner" -x systemd || true)
    [ -n "$init" ] && break
    kill -0 "$nspawn" 2>/dev/null || break
    sleep 0.1
done
[ -n "$init" ] || fail "the container did not start"

# A command inside the container (its mounts, pid and network namespaces), bounded.
IN() { timeout 60 nsenter --target "$init" --mount --uts --ipc --net --pid -- "$@"; }
# A host program (curl, stunclient) inside the container's network only.
NET() { timeout 10 nsenter --target "$init" --net -- "$@"; }

state=
for _ in $(seq 100); do
    state=$(IN systemctl is-system-running --wait 2>/dev/null || true)
    [ -n "$state" ] && break
    sleep 0.2
done
echo "container booted: $state"

unit_show() { IN systemctl show -p "$1" --value switchboard; }
journal() { IN journalctl -u switchboard --no-pager -o cat; }
# Whether the journal says $1 (read whole first: grep -q closing a pipe early would fail it).
journal_has() {
    local text
    text=$(journal)
    grep -q -- "$1" <<<"$text"
}
expect_active() {
    local s
    s=$(IN systemctl is-active switchboard || true)
    if [ "$s" != active ]; then
        journal | tail -n 30 >&2
        fail "$1: switchboard is $s, not active"
    fi
}
secrets_sum() { IN sh -c 'cat /etc/switchboard/turn-secret /etc/switchboard/jwt-secret /etc/switchboard/admin-token | sha256sum'; }
expect_stun() {
    local out
    out=$(NET turnutils_stunclient -p 3478 127.0.0.1 2>&1) || true
    grep -q 'UDP reflexive addr: 127.0.0.1:' <<<"$out" ||
        fail "$1: no STUN Binding answer on 127.0.0.1:3478 (stunclient said: $out)"
}
expect_healthz() {
    local code port=${2:-8080}
    code=$(NET curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/healthz" || true)
    [ "$code" = 200 ] || fail "$1: /healthz on port $port answered '$code', not 200"
}

step "dpkg -i (inside)"
# dpkg exits 0 even when the service fails to start: the state is checked below.
IN dpkg -i "/srv/debs/$(basename "$deb")" >/dev/null
expect_active "after install"
[ "$(IN systemctl is-enabled switchboard)" = enabled ] || fail "the unit is not enabled"
status=$(unit_show StatusText)
echo "STATUS: $status"
case $status in
*"turn 0.0.0.0:3478 (udp, tcp), sfu 0.0.0.0:3480 (udp), http 127.0.0.1:8080"*) ;;
*) fail "unexpected STATUS= text: $status" ;;
esac
[ "$(IN stat -c %U "/proc/$(unit_show MainPID)")" = switchboard ] ||
    fail "the daemon does not run as the switchboard user"
for f in turn-secret jwt-secret admin-token; do
    perms=$(IN stat -c '%U:%G %a' "/etc/switchboard/$f")
    [ "$perms" = "root:switchboard 640" ] || fail "/etc/switchboard/$f is $perms, not root:switchboard 640"
done
perms=$(IN stat -c '%U:%G %a' /var/lib/switchboard/switchboard.db)
[ "$perms" = "switchboard:switchboard 600" ] || fail "the store is $perms"
expect_stun "after install"
expect_healthz "after install"
# The relay listed this box's addresses under the hardened unit (getifaddrs needs AF_NETLINK):
# without them a wide allow_peers range would reach the box's own services. Loopback at least.
own=$(journal | grep -m1 "the box's own addresses" || true)
grep -q 'addresses=.*127\.0\.0\.1' <<<"$own" ||
    fail "the relay did not log its own addresses with 127.0.0.1: '$own'"
echo "active, STUN answered on 3478, /healthz 200, secrets root:switchboard 640, ${own##*addresses=}"

# The shipped config on a box with no route: the service runs (relaying on loopback, with a
# warning in the journal) and check-config fails, naming the key.
if out=$(IN switchboard check-config --config /etc/switchboard/switchboard.toml 2>&1); then
    fail "check-config passed without a route to take turn.relay_ip from: $out"
fi
grep -q 'error: /etc/switchboard/switchboard.toml: turn.relay_ip: not set, and this box has no IPv4 route' <<<"$out" ||
    fail "check-config did not name turn.relay_ip: $out"
# The packaged HTTP listener is loopback (a proxy terminates TLS): no plain-HTTP warning.
! grep -q 'http.listen' <<<"$out" || fail "check-config warned of the packaged http.listen: $out"
journal_has 'turn.relay_ip: not set' || fail "serve did not warn of the missing route"

step "systemctl reload (inside)"
pid=$(unit_show MainPID)
IN systemctl reload switchboard
expect_active "after reload"
[ "$(unit_show MainPID)" = "$pid" ] || fail "reload changed the MainPID ($pid -> $(unit_show MainPID))"
journal_has 'SIGHUP: reloading' || fail "the daemon did not log the reload"
echo "reloaded, MainPID $pid kept"

step "the operator's edit: HTTP on port 80 (inside)"
# A privileged port as the service user: AmbientCapabilities=CAP_NET_BIND_SERVICE.
IN sed -i 's/^listen = "127.0.0.1:8080"$/listen = "127.0.0.1:80"/' /etc/switchboard/switchboard.toml
IN systemctl restart switchboard
expect_active "on port 80"
expect_healthz "on port 80" 80
pid=$(unit_show MainPID)
echo "serving HTTP on port 80 as the switchboard user"

step "upgrade: dpkg -i again (inside)"
sum=$(secrets_sum)
IN dpkg -i --force-confold "/srv/debs/$(basename "$deb")" >/dev/null
expect_active "after the upgrade"
[ "$(unit_show MainPID)" != "$pid" ] || fail "the upgrade did not restart the daemon (MainPID $pid)"
[ "$(secrets_sum)" = "$sum" ] || fail "the upgrade changed the secrets"
expect_stun "after the upgrade"
# The edited conffile is kept.
expect_healthz "after the upgrade" 80
echo "restarted: MainPID $pid -> $(unit_show MainPID), secrets and the edited config kept"

step "dpkg --purge (inside)"
IN dpkg --purge switchboard >/dev/null
IN sh -c '! getent passwd switchboard && ! getent group switchboard' ||
    fail "purge left the switchboard user or group"
for path in /var/lib/switchboard /etc/switchboard /usr/bin/switchboard; do
    if IN test -e "$path"; then fail "purge left $path"; fi
done
# (No procps in the root: the process table read by hand.)
IN sh -c 'for p in /proc/[0-9]*; do [ "$(cat "$p/comm" 2>/dev/null)" != switchboard ] || exit 1; done' ||
    fail "purge left the daemon running"
journal_has 'shutting down' || fail "the daemon did not log a graceful stop"
echo "purged: no user, no group, no /etc/switchboard, no /var/lib/switchboard"
