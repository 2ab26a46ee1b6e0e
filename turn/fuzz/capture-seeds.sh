#!/usr/bin/env bash
# Captures real TURN client traffic for the fuzz seeds: coturn's turnutils_stunclient and
# turnutils_uclient (UDP and TCP) against the real switchboard daemon, on loopback only.
#
# Writes:
#   seeds/stun_message/<client>-<method>-<class>[-auth]-<n>.bin   one client->server datagram each
#   seeds/stream_framer/tcp-*.bin     a uclient TCP stream (client->server), with chunk sizes
#   seeds/stream_framer/udp-concat-*.bin   captured datagrams concatenated as a stream would
#
# Needs: the daemon built (cargo build in the workspace), tcpdump, python3, coturn's tools
# (turnutils_uclient, turnutils_peer, turnutils_stunclient). Run as root (tcpdump on lo).
# Every step is under a timeout; everything started here is killed on exit, by its pid.
#
#   turn/fuzz/capture-seeds.sh            # daemon from $CARGO_TARGET_DIR or /var/tmp/switchboard-target
#   SWITCHBOARD_BIN=... TURN_PORT=3478 PEER_PORT=3480 turn/fuzz/capture-seeds.sh

set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${SWITCHBOARD_BIN:-${CARGO_TARGET_DIR:-/var/tmp/switchboard-target}/debug/switchboard}
TURN_PORT=${TURN_PORT:-3478}
PEER_PORT=${PEER_PORT:-3480}
SECRET=fuzz-capture-secret
STEP=30 # seconds, the bound of every step

for tool in "$BIN" tcpdump python3 turnutils_uclient turnutils_peer turnutils_stunclient; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/switchboard-capture.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Waits (bounded) until file $1 contains $2.
wait_for() {
    for _ in $(seq 1 100); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timed out waiting for '$2' in $1:" >&2
    cat "$1" >&2
    return 1
}

# The daemon: the development settings, on loopback, with a fixed secret and the loopback
# peer allowed (the default policy refuses 127.0.0.0/8 peers).
cat >"$WORK/switchboard.toml" <<EOF
dev = true

[turn]
listen = ["127.0.0.1:$TURN_PORT"]
relay_ip = "127.0.0.1"
relay_ports = "40000-40999"
secret = "$SECRET"
allow_peers = ["127.0.0.1/32"]
user_quota = 100

[http]
listen = "127.0.0.1:0"

[auth]
jwt_secret = "fuzz-capture-jwt-secret-0123456789"
admin_token = "fuzz-capture-admin-token-0123456789"
open_conversations = true

[store]
path = "switchboard.db"

[log]
level = "info"
format = "text"
EOF

(cd "$WORK" && exec timeout $((STEP * 8)) "$BIN" serve --config "$WORK/switchboard.toml") \
    >"$WORK/daemon.log" 2>&1 &
PIDS+=($!)
wait_for "$WORK/daemon.log" "http listening"

timeout $((STEP * 8)) turnutils_peer -L 127.0.0.1 -p "$PEER_PORT" >"$WORK/peer.log" 2>&1 &
PIDS+=($!)

# Client->server traffic to the TURN port, loopback only.
timeout $((STEP * 8)) tcpdump -i lo -n -U -s 0 -w "$WORK/capture.pcap" \
    "dst host 127.0.0.1 and src host 127.0.0.1 and (udp or tcp) and dst port $TURN_PORT" \
    >"$WORK/tcpdump.log" 2>&1 &
TCPDUMP=$!
PIDS+=($TCPDUMP)
wait_for "$WORK/tcpdump.log" "listening on lo"

uclient() {
    timeout "$STEP" turnutils_uclient -W "$SECRET" -u uclient -l 120 -n 3 -m 1 \
        -e 127.0.0.1 -r "$PEER_PORT" -p "$TURN_PORT" "$@" 127.0.0.1 >>"$WORK/uclient.log" 2>&1 || true
}

timeout "$STEP" turnutils_stunclient -p "$TURN_PORT" 127.0.0.1 >"$WORK/stunclient.log" 2>&1 || true
uclient -c          # UDP: Allocate (401, then authenticated), ChannelBind, ChannelData, Refresh
uclient -c -s       # UDP: CreatePermission, Send indications, Data indications
uclient -c -g -G    # DONT-FRAGMENT, extra CreatePermission/ChannelBind requests
uclient -c -x       # REQUESTED-ADDRESS-FAMILY IPv6 (refused here: no IPv6 relay address)
uclient -Z          # ADDITIONAL-ADDRESS-FAMILY (a dual allocation)
uclient -t -c       # TCP: the same, STUN and ChannelData on one stream

sleep 1
kill -INT "$TCPDUMP" 2>/dev/null || true
wait "$TCPDUMP" 2>/dev/null || true

timeout "$STEP" python3 - "$WORK/capture.pcap" "$HERE/seeds" "$TURN_PORT" <<'PY'
import os, struct, sys
from collections import defaultdict

pcap, seeds, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(pcap, "rb").read()
magic = data[:4]
endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
linktype = struct.unpack(endian + "I", data[20:24])[0]
link_len = {0: 4, 1: 14, 113: 16, 276: 20}[linktype]

udp = []                      # client->server datagrams, in order
tcp = defaultdict(dict)       # client port -> {seq: payload}
off = 24
while off + 16 <= len(data):
    _, _, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
    pkt = data[off + 16:off + 16 + incl]
    off += 16 + incl
    ip = pkt[link_len:]
    if len(ip) < 20 or ip[0] >> 4 != 4:
        continue
    ihl = (ip[0] & 15) * 4
    total = struct.unpack(">H", ip[2:4])[0]
    proto, l4 = ip[9], ip[ihl:total]
    if proto == 17:
        sport, dport = struct.unpack(">HH", l4[:4])
        if dport == port:
            udp.append(l4[8:])
    elif proto == 6:
        sport, dport, seq = struct.unpack(">HHI", l4[:8])
        body = l4[(l4[12] >> 4) * 4:]
        if dport == port and body:
            tcp[sport].setdefault(seq, body)

METHODS = {0x001: "binding", 0x003: "allocate", 0x004: "refresh", 0x006: "send",
           0x008: "createpermission", 0x009: "channelbind"}
CLASSES = {0: "request", 1: "indication", 2: "success", 3: "error"}

def attribute_types(d):
    i, types = 20, []
    while i + 4 <= len(d):
        at, al = struct.unpack(">HH", d[i:i + 4])
        types.append(at)
        i += 4 + ((al + 3) & ~3)
    return types

def kind(d):
    if d and d[0] & 0xC0 == 0x40:
        return "channeldata"
    if len(d) < 20:
        return "short"
    t = struct.unpack(">H", d[:2])[0]
    method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2)
    cls = ((t & 0x0010) >> 4) | ((t & 0x0100) >> 7)
    name = METHODS.get(method, "method%03x" % method) + "-" + CLASSES[cls]
    return name + ("-auth" if 0x0008 in attribute_types(d) else "")

def write(target, name, payload):
    os.makedirs(os.path.join(seeds, target), exist_ok=True)
    with open(os.path.join(seeds, target, name), "wb") as f:
        f.write(payload)

# stun_message: one file per distinct message shape (kind and attribute types), two of each
# at most, 36 in all (with the 4 RFC 5769 vectors: 40).
per_shape, per_kind, seen, written = defaultdict(int), defaultdict(int), set(), 0
for d in udp:
    k = kind(d)
    shape = (k, tuple(sorted(set(attribute_types(d)))) if k != "channeldata" else len(d) % 4)
    if d in seen or per_shape[shape] >= 2 or written >= 36:
        continue
    seen.add(d)
    per_shape[shape] += 1
    per_kind[k] += 1
    written += 1
    write("stun_message", "coturn-%s-%d.bin" % (k, per_kind[k]), d)
print("stun_message: %d datagrams captured, %d written: %s"
      % (len(udp), written, dict(per_kind)))

# stream_framer: input = [number of chunk sizes][sizes...][stream].
def stream_seed(name, stream, sizes):
    write("stream_framer", name, bytes([len(sizes)] + sizes) + stream)

streams = []
for sport, segs in sorted(tcp.items()):
    stream, nxt = b"", None
    for seq in sorted(segs):
        body = segs[seq]
        if nxt is not None and seq < nxt:
            body = body[nxt - seq:]
        stream += body
        nxt = seq + len(segs[seq])
    streams.append(stream)
for i, s in enumerate(streams[:2]):
    stream_seed("tcp-uclient-%d-whole.bin" % i, s, [])
    stream_seed("tcp-uclient-%d-chunked.bin" % i, s, [6, 19, 1, 254, 37])

def padded(d):
    return d + b"\0" * (-len(d) % 4)

distinct = [d for d in dict.fromkeys(udp)]
stun_only = b"".join(d for d in distinct if d[0] & 0xC0 == 0)[:4000]
mixed = b"".join(padded(d) for d in distinct)[:4000]
stream_seed("udp-concat-stun.bin", stun_only, [])
stream_seed("udp-concat-mixed-chunked.bin", mixed, [3, 7, 0, 20, 255])
print("stream_framer: %d TCP streams (%s bytes), 2 concatenations"
      % (len(streams), [len(s) for s in streams]))
PY

echo "uclient runs:"
grep -E "Total (transmit|lost)|ERROR|error" "$WORK/uclient.log" | head -20 || true
