#!/usr/bin/env python3
"""Writes the seeds of sfu_core (seeds/sfu_core/*.bin): operation sequences in the target's
input format (see the doc of fuzz_targets/sfu_core.rs) that reach the deep paths: clients
joining, connecting (ICE, DTLS-SRTP), answering the SFU's offers and sending RTP that is
forwarded; simulcast layer switches; leaving, timing out, shutting down; strangers' datagrams
of every kind; replays; offers of arbitrary and of browser-shaped SDP text.

Run from sfu/fuzz: ./make-seeds.py
"""

import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "sfu_core")


def blob(b):
    if isinstance(b, str):
        b = b.encode()
    if len(b) < 255:
        return bytes([len(b)]) + b
    return bytes([255]) + struct.pack(">H", len(b)) + b


def offer(client, audio=True, video=True, simulcast=False, recv=False, splice=None):
    flags = audio * 1 | video * 2 | simulcast * 4 | recv * 8
    at, cut, insert = 0, 0, b""
    if splice:
        flags |= 0x80
        at, cut, insert = splice
    return bytes([0, client, flags]) + struct.pack(">HB", at, cut) + blob(insert)


def text_offer(room, user, sdp):
    return bytes([1, room, user]) + blob(sdp)


def answer(client, mode=0, splice=(0, 0, b"")):
    at, cut, insert = splice
    return bytes([2, client, mode]) + struct.pack(">HB", at, cut) + blob(insert)


def leave(room, user):
    return bytes([3, room, user])


def quality(room, sub, pub, q):
    # q: 0 low, 1 medium, 2 high, 3 off
    return bytes([4, room, sub, pub, q])


def datagram(source, kind, *args, other_port=False):
    return bytes([5, source, int(other_port), kind]) + b"".join(args)


def replay(sel, stranger=False, mutate=0, at=0, value=0, stranger_sel=0):
    how = int(stranger) | (mutate << 1) | (stranger_sel << 4)
    return bytes([6, sel, how]) + struct.pack(">HB", at, value)


def rtp(client, track, layer, pt, seq, time, marker, payload):
    return bytes([7, client, track, layer, pt]) + struct.pack(">HIB", seq, time, marker) + blob(
        payload
    )


def net(rounds, step_ms):
    return bytes([8, rounds - 1, step_ms - 1])


def clock(ms=None, secs=None):
    v = (0x8000 | ms) if ms is not None else secs
    return bytes([9]) + struct.pack(">H", v)


TIMEOUT_NOW = bytes([10])


def quiet(client):
    return bytes([11, client])


SHUTDOWN = bytes([12])

# A VP8 key frame's first packet: payload descriptor (S=1, partition 0), then a frame tag
# with the key frame bit (0) and the start code; and an interframe.
VP8_KEY = bytes([0x10, 0x00, 0x00, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0xE0, 0x01]) + bytes(80)
VP8_DELTA = bytes([0x10, 0x01, 0x00, 0x00]) + bytes(60)
OPUS = bytes([0xFC, 0xFF, 0xFE]) + bytes(40)


def connect_two(simulcast=False):
    """Two clients join and connect, and each answers the SFU's offer of the other's tracks."""
    return (
        offer(0, simulcast=simulcast)
        + net(40, 5)
        + offer(1)
        + net(40, 5)
        + answer(0)
        + answer(1)
        + net(40, 5)
    )


def media(client, n, video_track=1, layers=(0,)):
    ops = b""
    for k in range(n):
        ops += rtp(client, 0, 0, 0, 100 + k, 960 * k, 1, OPUS)
        for layer in layers:
            frame = VP8_KEY if k == 0 else VP8_DELTA
            ops += rtp(client, video_track, layer, 0, 200 + k, 3000 * k, 1, frame)
        ops += net(2, 10)
    return ops


# Every m-line's connection, ICE and DTLS lines (bundled: the same in each).
TRANSPORT = [
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:Wq3x",
    "a=ice-pwd:abcdefghijklmnopqrstuvwx",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 " + ":".join("%02X" % ((i * 37 + 11) & 0xFF) for i in range(32)),
    "a=setup:actpass",
]

# A browser-shaped offer (written for these seeds; the values are made up): audio and video,
# BUNDLE, ICE, a DTLS fingerprint, header extensions, simulcast.
BROWSER_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=extmap-allow-mixed",
        "a=msid-semantic: WMS stream",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 0",
        *TRANSPORT,
        "a=mid:0",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=sendonly",
        "a=msid:stream audio-track",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=rtcp-fb:111 transport-cc",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=rtpmap:0 PCMU/8000",
        "a=ssrc:1001 cname:browser",
        "a=ssrc:1001 msid:stream audio-track",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98",
        *TRANSPORT,
        "a=mid:1",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
        "a=sendonly",
        "a=msid:stream video-track",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 goog-remb",
        "a=rtcp-fb:96 transport-cc",
        "a=rtcp-fb:96 ccm fir",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:96 nack pli",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "a=rtpmap:98 H264/90000",
        "a=fmtp:98 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        "a=rid:q send",
        "a=rid:h send",
        "a=simulcast:send q;h",
        "",
    ]
)

SEEDS = {
    # Two participants, audio and VP8 both ways, a quality change, one leaves, time passes.
    "01-two-clients-media": connect_two()
    + media(0, 6)
    + media(1, 6)
    + quality(0, 0, 1, 3)
    + media(1, 3)
    + quality(0, 0, 1, 2)
    + media(1, 3)
    + leave(0, 1)
    + net(10, 5)
    + answer(0)
    + net(10, 5)
    + clock(secs=10),
    # Simulcast: client 0 sends three layers; client 1 moves from high to low, off, medium.
    "02-simulcast": connect_two(simulcast=True)
    + media(0, 4, layers=(0, 1, 2))
    + quality(0, 1, 0, 0)
    + media(0, 4, layers=(0, 1, 2))
    + quality(0, 1, 0, 3)
    + media(0, 2, layers=(0, 1, 2))
    + quality(0, 1, 0, 1)
    + media(0, 4, layers=(0, 1, 2)),
    # Three clients, a renegotiation adding a track, crossing offers, a client going quiet
    # until the grace removes it.
    "03-three-renegotiate-timeout": connect_two()
    + offer(2, video=False)
    + net(30, 5)
    + offer(0, audio=False, video=True)
    + answer(1)
    + answer(2)
    + net(30, 5)
    + answer(0)
    + answer(0, mode=3)
    + quiet(2)
    + net(60, 50)
    + clock(secs=5)
    + net(5, 5),
    # Strangers: every kind of datagram, to both ports; binding requests naming a live ufrag;
    # replays of the clients' datagrams, from strangers, mutated and cut.
    "04-strangers-and-replays": offer(0)
    + net(20, 5)
    + datagram(1, 0, blob(b"abcd:efgh"), bytes([7]), blob(b""))
    + datagram(2, 0x10, blob(b"\xff\xfe:x"), bytes([8]), blob(b"\x80\x28\x00\x04abcd"))
    + datagram(1, 1, bytes([0]), blob(b"remote"), bytes([9]), blob(b""))
    + datagram(3, 0x11, bytes([0]), blob(b"remote"), bytes([9]), blob(b""))
    + datagram(1, 2, bytes([0x60]), blob(bytes(range(40))))
    + datagram(1, 3, bytes([1]), bytes([0]), blob(bytes(28)))
    + datagram(1, 4, bytes([0]), blob(bytes(range(60))))
    + datagram(1, 5, blob(b"\x00\x01\x00\x00garbage"))
    + datagram(1, 7)
    + datagram(0x80, 2, bytes([0x60]), blob(bytes(20)))
    + datagram(0x80, 4, bytes([3]), blob(bytes(30)), other_port=True)
    + replay(0)
    + replay(1, stranger=True, stranger_sel=1)
    + replay(2, mutate=1, at=30, value=0x40)
    + replay(3, stranger=True, mutate=2, at=25)
    + replay(4, mutate=1, at=5, value=1)
    + net(10, 5)
    + replay(31, mutate=1, at=100, value=2)
    + replay(30, stranger=True, stranger_sel=2)
    + net(10, 5),
    # Browser-shaped and arbitrary SDP text; answers without an offer, and of garbage.
    "05-sdp-text": text_offer(1, 3, BROWSER_OFFER)
    + text_offer(0, 2, BROWSER_OFFER.replace("a=setup:actpass", "a=setup:passive"))
    + text_offer(0, 3, "v=0\r\n")
    + text_offer(1, 0, "")
    + offer(0, splice=(200, 4, b"a=sendrecv\r\n"))
    + offer(1, splice=(40, 10, b""))
    + answer(0, mode=2, splice=(0, 0, b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"))
    + answer(2, mode=2, splice=(0, 0, b"garbage"))
    + quality(1, 3, 2, 0)
    + leave(1, 3)
    + net(10, 5),
    # A call shut down and started again; a client rejoining after leaving.
    "06-shutdown-rejoin": connect_two()
    + media(0, 2)
    + SHUTDOWN
    + offer(0)
    + offer(1)
    + net(30, 5)
    + leave(0, 0)
    + offer(0)
    + net(30, 5)
    + TIMEOUT_NOW
    + clock(ms=1500),
}


# Seeds also run with forwarding through the direct egress: the first tag byte with its top
# bit set, the same operation (130 is a multiple of 13 at or above 128).
DIRECT = ["01-two-clients-media", "02-simulcast", "03-three-renegotiate-timeout"]


def main():
    os.makedirs(OUT, exist_ok=True)
    seeds = dict(SEEDS)
    for name in DIRECT:
        data = SEEDS[name]
        seeds[name + "-direct"] = bytes([130 + data[0] % 13]) + data[1:]
    for name, data in seeds.items():
        with open(os.path.join(OUT, name + ".bin"), "wb") as f:
            f.write(data)
        print(f"{name}.bin: {len(data)} bytes")


if __name__ == "__main__":
    main()
