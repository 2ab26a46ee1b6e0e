#!/usr/bin/env python3
"""Writes the hand-made seeds of turn/fuzz (no network, no daemon):

- seeds/stun_message/rfc5769-*.bin: the four RFC 5769 test vectors (§2.1–2.4), byte for byte
  (the same bytes as the stun-types crate's rfc5769 tests and our server/tests/auth.rs);
- seeds/relay_core/*.bin: operation sequences in relay_core's input format (see the module
  docs of fuzz_targets/relay_core.rs) that take the relay deep at once: allocate, permission,
  Send, Data, ChannelBind, ChannelData both ways, over UDP and TCP, hairpin between two
  allocations, quotas, expiry, failed relay sockets.

Run from anywhere: python3 turn/fuzz/make-seeds.py
"""

import os

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes(data))


def hexbytes(s):
    return bytes.fromhex("".join(s.split()))


# ---- RFC 5769 -------------------------------------------------------------------------------

RFC5769 = {
    # §2.1 Sample Request (short-term credentials, FINGERPRINT).
    "rfc5769-2.1-request.bin": """
        000100582112a442b7e7a701bc34d686fa87dfae
        802200105354554e207465737420636c69656e74 002400046e0001ff 80290008932ff9b151263b36
        000600096576746a3a6836765920202000080014 9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2
        80280004e57a3bcf""",
    # §2.2 Sample IPv4 Response.
    "rfc5769-2.2-response-ipv4.bin": """
        0101003c2112a442b7e7a701bc34d686fa87dfae
        8022000b7465737420766563746f7220 00200008 0001a147e112a643
        000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7 80280004c07d4c96""",
    # §2.3 Sample IPv6 Response.
    "rfc5769-2.3-response-ipv6.bin": """
        010100482112a442b7e7a701bc34d686fa87dfae
        8022000b7465737420766563746f7220 00200014 0002a1470113a9faa5d3f179bc25f4b5bed2b9d9
        00080014a382954e4be67bf11784c97c8292c275bfe3ed41 80280004c8fb0b4c""",
    # §2.4 Sample Request with Long-Term Authentication.
    "rfc5769-2.4-request-long-term.bin": """
        000100602112a44278ad3433c6ad72c029da412e
        00060012e3839ee38388e383aae38383e382afe382b90000
        0015001c662f2f3439396b3935346436 4f4c33346f4c394653547679363473 41
        0014000b6578616d706c652e6f726700
        00080014f67024656dd64a3e02b8e0712e85c9a28ca89666""",
}

# ---- relay_core operations -----------------------------------------------------------------

# Methods (op 0's method byte).
ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND, BINDING, SEND = 0, 1, 2, 3, 4, 5
# Users (auth bits 0-1) and auth flags.
ALICE, BOB, CAROL, EXPIRED = 0, 1, 2, 3
NONCE_ANY, NONCE_GARBAGE, NO_NONCE = 1 << 2, 2 << 2, 3 << 2
WRONG_KEY, WRONG_REALM, FINGERPRINT, UNAUTH = 0x10, 0x20, 0x40, 0x80
# Clients (see client() in src/lib.rs) and peers (peer()).
UDP0, UDP1, UDP2, UDP6, TCP, TLS = 0, 1, 2, 3, 4, 5
PEER_A, PEER_A2, PEER_B, PEER_V6 = 0, 1, 2, 3
RELAY_50000, RELAY_50001 = 8, 9


def rt(p=0):
    return [0, p]


def lifetime(sel):
    return [1, sel]


def xpa(peer):
    return [2, peer]


def chan(c=0):
    return [3, c]


def data(payload):
    return [4, len(payload), *payload]


def raf(f):
    return [5, f]


def aaf(f=1):
    return [6, f]


def even(r=0):
    return [7, r]


def req(client, method, auth, attrs, reuse=0):
    out = [0, client, method, auth, reuse, len(attrs)]
    for a in attrs:
        out += a
    return out


def channel_data(client, c, payload, flags=0):
    return [1, client, c, len(payload), *payload, flags]


def raw(client, payload):
    return [2, client, len(payload) >> 8, len(payload) & 0xFF, *payload]


def from_peer(sel, peer, payload):
    return [3, sel, peer, len(payload), *payload]


def answer(sel, result):
    return [4, sel, result]


def advance(secs):
    return [5, secs >> 8, secs & 0xFF]


def close(sel):
    return [6, sel]


TIMEOUT = [7]
OPEN_ALL = [8]
NO_PORTS, IO_ERROR = 6, 7


def seq(flags, *ops):
    out = [flags]
    for op in ops:
        out += op
    return out


def allocate(client, user, extra=()):
    """The client's way in: challenged, then authenticated with the nonce, then the socket."""
    return [
        req(client, ALLOCATE, UNAUTH, [rt()]),
        req(client, ALLOCATE, user, [rt(), lifetime(4), *extra]),
        OPEN_ALL,
    ]


RELAY_CORE = {
    # UDP: allocate, permission, Send out, Data in, ChannelBind, ChannelData both ways,
    # permission expiry, refresh, delete.
    "udp-allocate-permission-send-channel.bin": seq(
        0x10,
        *allocate(UDP0, ALICE),
        req(UDP0, CREATE_PERMISSION, ALICE, [xpa(PEER_A)]),
        req(UDP0, SEND, UNAUTH, [xpa(PEER_A), data(b"hello peer")]),
        from_peer(0, PEER_A, b"hello client"),
        req(UDP0, CHANNEL_BIND, ALICE, [chan(0), xpa(PEER_A2)]),
        channel_data(UDP0, 0, b"over the channel"),
        from_peer(0, PEER_A2, b"back on the channel"),
        advance(301),
        req(UDP0, SEND, UNAUTH, [xpa(PEER_A), data(b"too late")]),
        req(UDP0, REFRESH, ALICE, [lifetime(5)]),
        req(UDP0, REFRESH, ALICE, [lifetime(0)]),
        req(UDP0, REFRESH, ALICE, [lifetime(0)], reuse=1),
    ),
    # TCP: the same over a stream (padded ChannelData), and the connection closing.
    "tcp-allocate-channel-close.bin": seq(
        0x10,
        *allocate(TCP, BOB),
        req(TCP, CHANNEL_BIND, BOB | FINGERPRINT, [chan(5), xpa(PEER_B)]),
        channel_data(TCP, 5, b"odd"),
        from_peer(0, PEER_B, b"12345"),
        req(TCP, CREATE_PERMISSION, BOB, [xpa(PEER_A), xpa(PEER_V6)]),
        req(TCP, CREATE_PERMISSION, BOB, [xpa(PEER_A), xpa(PEER_B)]),
        from_peer(0, PEER_A, b"data indication over tcp"),
        close(TCP),
        from_peer(0, PEER_A, b"after close"),
    ),
    # Dual stack, external addresses, two allocations relaying to each other (hairpin).
    "dual-hairpin.bin": seq(
        0x01 | 0x30 | 0x40,
        *allocate(UDP0, ALICE, [aaf()]),
        *allocate(UDP1, BOB),
        req(UDP0, CREATE_PERMISSION, ALICE, [xpa(RELAY_50001), xpa(PEER_V6)]),
        req(UDP1, CREATE_PERMISSION, BOB, [xpa(RELAY_50000)]),
        req(UDP0, SEND, UNAUTH, [xpa(RELAY_50001), data(b"hairpin")]),
        req(UDP1, SEND, UNAUTH, [xpa(RELAY_50000), data(b"and back")]),
        req(UDP0, CHANNEL_BIND, ALICE, [chan(1), xpa(PEER_V6)]),
        channel_data(UDP0, 1, b"to an ipv6 peer"),
        from_peer(1, PEER_V6, b"from an ipv6 peer"),
        *allocate(UDP6, CAROL, [raf(1)]),
    ),
    # Behind NAT: external addresses advertised, and a hairpin to one's own relayed address.
    "external-hairpin.bin": seq(
        0x02 | 0x08 | 0x10,
        *allocate(UDP2, CAROL),
        req(UDP2, CREATE_PERMISSION, CAROL, [xpa(12)]),
        req(UDP2, CREATE_PERMISSION, CAROL, [xpa(13)]),
        req(UDP2, SEND, UNAUTH, [xpa(12), data(b"to myself")]),
        req(UDP2, CHANNEL_BIND, CAROL, [chan(0xFB), xpa(12)]),
        channel_data(UDP2, 0xFB, b"via channel 0x7fff"),
        req(UDP2, SEND, UNAUTH, [xpa(13), data(b"host address")]),
    ),
    # Quotas (one per user, two in all), credentials expiring, allocations expiring.
    "quota-expiry.bin": seq(
        0x00,
        *allocate(UDP0, ALICE),
        *allocate(UDP1, ALICE),
        *allocate(UDP2, BOB),
        *allocate(TLS, CAROL),
        req(UDP0, ALLOCATE, ALICE, [rt()], reuse=1),
        advance(3000),
        req(UDP0, REFRESH, ALICE, [lifetime(7)]),
        advance(700),
        req(UDP2, REFRESH, BOB | NONCE_ANY, []),
        req(UDP2, ALLOCATE, EXPIRED, [rt()]),
        advance(4000),
        TIMEOUT,
    ),
    # Relay sockets that fail, allocations closed while their sockets open.
    "open-failures.bin": seq(
        0x01 | 0x30,
        req(UDP0, ALLOCATE, UNAUTH, [rt()]),
        req(UDP0, ALLOCATE, ALICE, [rt()]),
        answer(0, NO_PORTS),
        req(UDP0, ALLOCATE, ALICE, [rt(), aaf(), even()]),
        answer(0, 0),
        answer(0, IO_ERROR),
        req(UDP1, ALLOCATE, UNAUTH, [rt()]),
        req(UDP1, ALLOCATE, BOB, [rt(), aaf()]),
        answer(0, 8),
        close(UDP1),
        answer(0, 16),
        req(UDP2, ALLOCATE, UNAUTH, [rt()]),
        req(UDP2, ALLOCATE, CAROL, [rt()]),
        close(0x80),
        OPEN_ALL,
    ),
    # What an unauthenticated client can do: bad nonces, wrong keys, raw bytes.
    "auth-failures.bin": seq(
        0x00,
        req(UDP0, ALLOCATE, UNAUTH, [rt()]),
        req(UDP0, ALLOCATE, ALICE | WRONG_KEY, [rt()]),
        req(UDP0, ALLOCATE, ALICE | WRONG_REALM, [rt()]),
        req(UDP0, ALLOCATE, ALICE | NONCE_GARBAGE, [rt()]),
        req(UDP0, ALLOCATE, ALICE | NO_NONCE, [rt()]),
        req(UDP1, ALLOCATE, ALICE | NONCE_ANY, [rt()]),
        req(UDP0, BINDING, UNAUTH | FINGERPRINT, []),
        raw(UDP0, b"\x00\x01\x00\x00\x21\x12\xa4\x42abcdefghijkl"),
        raw(TCP, b"GET / HTTP/1.1\r\n\r\n"),
        channel_data(UDP0, 0, b"no allocation"),
    ),
}


def main():
    for name, h in RFC5769.items():
        write("stun_message", name, hexbytes(h))
    for name, ops in RELAY_CORE.items():
        write("relay_core", name, ops)


if __name__ == "__main__":
    main()
