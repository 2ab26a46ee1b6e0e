//! The direct egress ([`SfuConfig::direct_egress`](super::SfuConfig)): forwarded media leaves
//! for a subscriber without going through its str0m connection. str0m stays the control plane
//! (ICE, DTLS, the RTCP it sends and receives, keyframe requests, stats); what a forwarded
//! packet costs is what is here: one RTP header written, SRTP with the connection's own keys
//! ([`crate::srtp`]), one datagram.
//!
//! What str0m did for those packets and is done here instead:
//! - the transport-wide sequence number (TWCC), one counter per connection, on every packet;
//! - retransmission: a subscriber's NACK (RFC 4585) is answered from this stream's recent
//!   packets on its RTX stream (RFC 4588), never on the original sequence number, whose
//!   nonce must not protect a second, different packet;
//! - sender reports: str0m still makes them (it knows the streams from the SDP, not what was
//!   sent on them), and each of ours is corrected on the way out (packet and octet counts, the
//!   RTP time at its NTP time), so that receivers keep lip sync and round-trip times.
//!
//! - the bandwidth estimate ([`estimate`]), from the subscriber's TWCC feedback, which str0m's
//!   estimator cannot make (it sent none of these packets), with probes for the layers the
//!   allocation wants and the estimate does not yet allow.
//!
//! There is no pacing: a packet leaves when it comes, as from the publisher.

mod estimate;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::crypto::CryptoProvider;
use str0m::media::{MediaKind, Mid};
use str0m::rtp::Extension;
use str0m::Rtc;

use super::negotiate::RTX_MAX_AGE;
use super::Transmit;
use crate::srtp::{Context, Keys};
use estimate::Estimator;

/// Packets of a video stream kept for retransmission, at most.
const HISTORY: usize = 256;
/// Retransmissions a subscriber earns per packet sent it (a NACK asks for up to 17 packets per
/// 4 bytes: without a budget, a participant could have the SFU resend its whole history over
/// and over), and the most it can save up.
const RESEND_SHARE: f64 = 0.25;
const RESEND_BURST: f64 = 64.0;
/// Sender reports remembered for the round trip (a few seconds of them).
const REPORTS: usize = 64;
/// Packets one probe sends, at most.
const PROBE_PACKETS: usize = 64;
/// One-byte header extensions (RFC 8285).
const ONE_BYTE: [u8; 2] = [0xBE, 0xDE];

/// A forwarded packet as the subscriber's stream numbers it: its payload is in [`Payloads`].
#[derive(Clone, Copy)]
struct Sent {
    seq: u64,
    time: u32,
    marker: bool,
    payload: u64,
}

/// What a history slot holds before its first packet.
const EMPTY: Sent = Sent {
    seq: u64::MAX,
    time: 0,
    marker: false,
    payload: 0,
};

/// Forwarded video payloads kept for retransmission ([`RTX_MAX_AGE`]), each once however
/// many subscribers it went to: a subscriber's history names them by id. (Each history
/// holding the payloads itself cost every forwarded packet a shared count taken and, a few
/// hundred packets later, one released on a cold cache line: a tenth of the SFU's CPU.)
#[derive(Default)]
pub(crate) struct Payloads {
    /// The id of the first kept.
    base: u64,
    kept: VecDeque<(Instant, Arc<[u8]>)>,
}

/// Payloads kept at most, whatever their age (some 80 MB of video).
const MAX_KEPT: usize = 65_536;

impl Payloads {
    /// Keeps `payload`, sent now; returns its id. Those past [`RTX_MAX_AGE`] go.
    pub fn keep(&mut self, payload: &Arc<[u8]>, now: Instant) -> u64 {
        while let Some((at, _)) = self.kept.front() {
            if now.saturating_duration_since(*at) <= RTX_MAX_AGE && self.kept.len() < MAX_KEPT {
                break;
            }
            self.kept.pop_front();
            self.base += 1;
        }
        self.kept.push_back((now, payload.clone()));
        self.base + self.kept.len() as u64 - 1
    }

    fn get(&self, id: u64) -> Option<&Arc<[u8]>> {
        let i = usize::try_from(id.checked_sub(self.base)?).ok()?;
        self.kept.get(i).map(|(_, p)| p)
    }
}

/// One m-line of the subscriber's that we send on.
struct Stream {
    ssrc: u32,
    pt: u8,
    /// Its RTX stream's SSRC and payload type, and the RTX stream's next sequence number.
    rtx: Option<(u32, u8)>,
    rtx_seq: u64,
    clock: u32,
    twcc_id: Option<u8>,
    level_id: Option<u8>,
    orientation_id: Option<u8>,
    /// The last [`HISTORY`] packets sent, each at its sequence number modulo the size, and the
    /// newest's sequence number.
    history: Box<[Sent; HISTORY]>,
    newest: Option<u64>,
    /// For its sender reports: packets and payload octets sent, and the last RTP time with
    /// when it was sent.
    packets: u32,
    octets: u32,
    last: Option<(u32, Instant)>,
}

/// One subscriber's direct egress.
pub(crate) struct Egress {
    send: Context,
    /// Reads what str0m sends (its RTCP, whose sender reports are corrected).
    read_sent: Context,
    /// Reads what the subscriber sends (its NACKs).
    read: Context,
    /// Where str0m sends to: the nominated pair (source, destination).
    pub route: Option<(SocketAddr, SocketAddr)>,
    twcc: u64,
    streams: HashMap<Mid, Stream>,
    by_ssrc: HashMap<u32, Mid>,
    clear: Vec<u8>,
    /// Retransmissions it may have now ([`RESEND_SHARE`]).
    budget: f64,
    estimator: Estimator,
    bytes: u64,
    /// Packets sent again on NACKs, and as probes.
    pub resent: u64,
    pub probes: u64,
    /// The last sender reports sent: (middle of the NTP time, when).
    reports: VecDeque<(u32, Instant)>,
    /// From report blocks about our streams since [`Egress::take_reports`]: the latest round
    /// trip, the worst jitter (ms).
    rtt_ms: Option<f64>,
    jitter_ms: Option<f64>,
    /// What the allocation would spend if the estimate allowed (bits/s): probed for.
    wanted: u64,
}

/// What one forwarded packet carries besides its numbers.
pub(crate) struct Packet<'a> {
    pub marker: bool,
    /// The audio level (RFC 6464): -dBov, and voice activity.
    pub level: Option<(i8, bool)>,
    /// The video orientation's byte (3GPP TS 26.114: rotation, camera, flip), as a phone sends
    /// it instead of rotating its frames.
    pub orientation: Option<u8>,
    pub payload: &'a Arc<[u8]>,
    /// Its id in [`Payloads`], if kept for retransmission (video).
    pub kept: Option<u64>,
}

impl Egress {
    /// `start`: the estimate before feedback (bits/s).
    pub fn new(keys: &Keys, crypto: &CryptoProvider, start: u64) -> Egress {
        Egress {
            send: keys.sender(crypto),
            read_sent: keys.reader_of_sent(crypto),
            read: keys.receiver(crypto),
            route: None,
            twcc: 0,
            streams: HashMap::new(),
            by_ssrc: HashMap::new(),
            clear: Vec::with_capacity(1500),
            budget: RESEND_BURST,
            estimator: Estimator::new(start),
            bytes: 0,
            resent: 0,
            probes: 0,
            reports: VecDeque::new(),
            rtt_ms: None,
            jitter_ms: None,
            wanted: 0,
        }
    }

    /// Learns m-line `mid` of `rtc` (its SSRCs, payload types, extension ids) the first time.
    fn stream(&mut self, rtc: &mut Rtc, mid: Mid, pt: u8, kind: MediaKind) -> Option<&mut Stream> {
        if !self.streams.contains_key(&mid) {
            let (ssrc, rtx_ssrc) = {
                let mut api = rtc.direct_api();
                let tx = api.stream_tx_by_mid(mid, None)?;
                (*tx.ssrc(), tx.rtx().map(|s| *s))
            };
            let rtx_pt = rtc
                .codec_config()
                .find(|p| *p.pt() == pt)
                .and_then(|p| p.resend())
                .map(|p| *p);
            let exts = rtc.media(mid)?.remote_extmap();
            let stream = Stream {
                ssrc,
                pt,
                rtx: rtx_ssrc.zip(rtx_pt),
                rtx_seq: u64::from(rand::random::<u16>()),
                clock: if kind == MediaKind::Audio {
                    48_000
                } else {
                    90_000
                },
                twcc_id: exts.id_of(Extension::TransportSequenceNumber),
                level_id: exts.id_of(Extension::AudioLevel),
                orientation_id: exts.id_of(Extension::VideoOrientation),
                history: Box::new([EMPTY; HISTORY]),
                newest: None,
                packets: 0,
                octets: 0,
                last: None,
            };
            self.by_ssrc.insert(ssrc, mid);
            self.streams.insert(mid, stream);
        }
        self.streams.get_mut(&mid)
    }

    /// One forwarded packet on m-line `mid` with payload type `pt`, numbered `seq` (extended:
    /// the rollover counter above the sequence number) and `time`: the datagram, written in
    /// `buffer` (a spare one, see [`Sfu::recycle`](super::Sfu::recycle)).
    #[allow(clippy::too_many_arguments)]
    pub fn rtp(
        &mut self,
        rtc: &mut Rtc,
        mid: Mid,
        kind: MediaKind,
        pt: u8,
        seq: u64,
        time: u32,
        packet: Packet<'_>,
        now: Instant,
        buffer: Vec<u8>,
    ) -> Option<Transmit> {
        let (source, destination) = self.route?;
        self.budget = (self.budget + RESEND_SHARE).min(RESEND_BURST);
        let twcc = self.twcc;
        let s = self.stream(rtc, mid, pt, kind)?;
        s.packets = s.packets.wrapping_add(1);
        s.octets = s.octets.wrapping_add(packet.payload.len() as u32);
        if s.last.is_none_or(|(t, _)| time.wrapping_sub(t) < 1 << 31) {
            s.last = Some((time, now));
        }
        let (ssrc, pt, twcc_id) = (s.ssrc, s.pt, s.twcc_id);
        let level = s.level_id.zip(packet.level).map(|(id, (level, voice))| {
            // RFC 6464: the voice activity flag, then the level in -dBov.
            (id, u8::from(voice) << 7 | level.unsigned_abs().min(127))
        });
        let orientation = s.orientation_id.zip(packet.orientation);
        if let (Some(_), Some(payload)) = (s.rtx, packet.kept) {
            s.history[seq as usize % HISTORY] = Sent {
                seq,
                time,
                marker: packet.marker,
                payload,
            };
            s.newest = Some(seq);
        }
        self.twcc += u64::from(twcc_id.is_some());
        // The header in the clear, then the payload encrypted from where it is shared.
        let mut contents = buffer;
        contents.clear();
        write_header(&mut contents, packet.marker, pt, seq as u16, time, ssrc);
        let twcc_bytes = (twcc as u16).to_be_bytes();
        let elements = [
            twcc_id.map(|id| (id, &twcc_bytes[..])),
            level.as_ref().map(|(id, b)| (*id, std::slice::from_ref(b))),
            orientation
                .as_ref()
                .map(|(id, b)| (*id, std::slice::from_ref(b))),
        ];
        write_extensions(&mut contents, &elements);
        self.send
            .protect_rtp_payload(&mut contents, packet.payload, seq)
            .ok()?;
        if twcc_id.is_some() {
            self.estimator.sent(twcc, contents.len(), now, false);
        }
        self.bytes += contents.len() as u64;
        Some(Transmit {
            source,
            destination,
            contents,
        })
    }

    /// A report block (RFC 3550 section 6.4.1): the round trip from the sender report it echoes
    /// (LSR) and the receiver's delay since (DLSR); the jitter in the stream's clock.
    fn report_block(&mut self, b: &[u8], now: Instant) {
        let word = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let Some(s) = self.by_ssrc.get(&word(0)).and_then(|m| self.streams.get(m)) else {
            return;
        };
        let jitter = f64::from(word(12)) * 1000.0 / f64::from(s.clock);
        self.jitter_ms = Some(self.jitter_ms.map_or(jitter, |j| j.max(jitter)));
        let (lsr, dlsr) = (word(16), word(20));
        let sent = self
            .reports
            .iter()
            .rev()
            .find(|(l, _)| *l == lsr && lsr != 0);
        if let Some((_, at)) = sent {
            let held = f64::from(dlsr) / 65_536.0;
            let rtt = now.saturating_duration_since(*at).as_secs_f64() - held;
            self.rtt_ms = Some((rtt * 1000.0).max(0.0));
        }
    }

    /// The round trip and the worst jitter (ms) the subscriber's reports gave since the last
    /// call.
    pub fn take_reports(&mut self) -> (Option<f64>, Option<f64>) {
        (self.rtt_ms.take(), self.jitter_ms.take())
    }

    /// Bytes of media sent (RTP headers and payloads, protected), retransmissions included.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes
    }

    /// The share of packets its feedback reported lost since the last call, if any was reported.
    pub fn take_loss(&mut self) -> Option<f32> {
        self.estimator.take_loss()
    }

    /// The rate the allocation would spend on this subscriber (bits/s): probed for when over
    /// the estimate.
    pub fn want(&mut self, rate: u64) {
        self.wanted = rate;
    }

    /// An RTCP datagram str0m sends the subscriber: the sender reports of our streams
    /// corrected, and with `drop_twcc` its transport-wide feedback taken out (the direct
    /// ingress sends its own), protected again with the same SRTCP index. Returns whether
    /// anything is left to send.
    pub fn patch_rtcp(&mut self, datagram: &mut Vec<u8>, now: Instant, drop_twcc: bool) -> bool {
        let Ok(index) = self.read_sent.unprotect_rtcp(datagram, &mut self.clear) else {
            return true;
        };
        let mut changed = false;
        let mut at = 0;
        while let Some(len) = rtcp_len(&self.clear[at..]) {
            let p = &mut self.clear[at..at + len];
            // A sender report (PT 200) with its sender info.
            if p[1] == 200 && len >= 28 {
                let ssrc = u32::from_be_bytes(p[4..8].try_into().expect("4 bytes"));
                let stream = self.by_ssrc.get(&ssrc).and_then(|m| self.streams.get(m));
                if let Some(s) = stream {
                    let time = s.last.map_or(0, |(t, at)| {
                        let ticks =
                            now.saturating_duration_since(at).as_secs_f64() * f64::from(s.clock);
                        t.wrapping_add(ticks as u32)
                    });
                    p[16..20].copy_from_slice(&time.to_be_bytes());
                    p[20..24].copy_from_slice(&s.packets.to_be_bytes());
                    p[24..28].copy_from_slice(&s.octets.to_be_bytes());
                    changed = true;
                    // The middle of its NTP time, which receiver reports echo (LSR).
                    let lsr = u32::from_be_bytes(p[10..14].try_into().expect("4 bytes"));
                    if self.reports.len() == REPORTS {
                        self.reports.pop_front();
                    }
                    self.reports.push_back((lsr, now));
                }
            }
            at += len;
        }
        if drop_twcc {
            let mut kept = Vec::with_capacity(self.clear.len());
            let mut at = 0;
            while let Some(len) = rtcp_len(&self.clear[at..]) {
                let p = &self.clear[at..at + len];
                if !(p[1] == 205 && p[0] & 0x1f == 15) {
                    kept.extend_from_slice(p);
                }
                at += len;
            }
            if kept.is_empty() {
                return false;
            }
            if kept.len() != at {
                self.clear = kept;
                changed = true;
            }
        }
        if changed {
            let mut again = Vec::with_capacity(datagram.len());
            if self
                .send
                .protect_rtcp_at(&self.clear, index, &mut again)
                .is_ok()
            {
                *datagram = again;
            }
        }
        true
    }

    /// An RTCP datagram from the subscriber (str0m takes it too): its NACKs for our streams
    /// answered on their RTX streams and probes sent, into `out`; its TWCC feedback taken.
    /// Returns the new estimate, if it changed.
    pub fn on_rtcp(
        &mut self,
        datagram: &[u8],
        now: Instant,
        payloads: &Payloads,
        out: &mut VecDeque<Transmit>,
    ) -> Option<u64> {
        let (source, destination) = self.route?;
        self.read.unprotect_rtcp(datagram, &mut self.clear).ok()?;
        let (mut nacked, mut reports) = (Vec::new(), Vec::new());
        let mut estimate = None;
        let mut at = 0;
        while let Some(len) = rtcp_len(&self.clear[at..]) {
            let p = &self.clear[at..at + len];
            // Transport-layer feedback (PT 205), generic NACK (FMT 1): PID and a bitmask of
            // the 16 packets after it, per entry.
            if p[1] == 205 && p[0] & 0x1f == 1 && len >= 16 {
                let ssrc = u32::from_be_bytes(p[8..12].try_into().expect("4 bytes"));
                for fci in p[12..].chunks_exact(4) {
                    let pid = u16::from_be_bytes([fci[0], fci[1]]);
                    let mask = u16::from_be_bytes([fci[2], fci[3]]);
                    nacked.push((ssrc, pid));
                    for bit in 0..16 {
                        if mask & (1 << bit) != 0 {
                            nacked.push((ssrc, pid.wrapping_add(bit + 1)));
                        }
                    }
                }
            }
            // Sender and receiver reports (PT 200, 201): their report blocks about our streams.
            if p[1] == 200 || p[1] == 201 {
                let blocks = if p[1] == 200 { 28 } else { 8 };
                let count = usize::from(p[0] & 0x1f);
                for b in p
                    .get(blocks..)
                    .unwrap_or_default()
                    .chunks_exact(24)
                    .take(count)
                {
                    reports.push(<[u8; 24]>::try_from(b).expect("24 bytes"));
                }
            }
            // Transport-wide congestion control feedback (FMT 15).
            if p[1] == 205 && p[0] & 0x1f == 15 {
                if let Some(f) = crate::twcc::parse(p) {
                    estimate = self.estimator.on_feedback(&f, now).or(estimate);
                }
            }
            at += len;
        }
        for b in reports {
            self.report_block(&b, now);
        }
        nacked.sort_unstable();
        nacked.dedup();
        for (ssrc, seq) in nacked {
            if self.budget < 1.0 {
                break;
            }
            if let Some(contents) = self.resend(ssrc, seq, now, payloads, false) {
                self.budget -= 1.0;
                self.resent += 1;
                out.push_back(Transmit {
                    source,
                    destination,
                    contents,
                });
            }
        }
        self.probe(now, payloads, out);
        estimate
    }

    /// A probe, if the estimate is short of what is wanted: the latest video packets again on
    /// their RTX streams (the subscriber has them), as much as the burst should carry.
    fn probe(&mut self, now: Instant, payloads: &Payloads, out: &mut VecDeque<Transmit>) {
        let Some((source, destination)) = self.route else {
            return;
        };
        let Some(mut bytes) = self.estimator.probe(self.wanted, now) else {
            return;
        };
        // The newest packet of each stream with a history, again and again: its RTP time is
        // current, so that the receiver's jitter of the RTX stream stays what the network made
        // it (old packets would read as late ones).
        let newest: Vec<(u32, u16, usize)> = self
            .streams
            .values()
            .filter(|s| s.rtx.is_some())
            .filter_map(|s| {
                let p = s.history[s.newest? as usize % HISTORY];
                Some((s.ssrc, p.seq as u16, payloads.get(p.payload)?.len()))
            })
            .collect();
        let mut picks: Vec<(u32, u16)> = Vec::new();
        'fill: for _ in 0..PROBE_PACKETS {
            for &(ssrc, seq, len) in &newest {
                if bytes == 0 || picks.len() == PROBE_PACKETS {
                    break 'fill;
                }
                bytes = bytes.saturating_sub(len.max(1));
                picks.push((ssrc, seq));
            }
        }
        for (ssrc, seq) in picks {
            if let Some(contents) = self.resend(ssrc, seq, now, payloads, true) {
                self.probes += 1;
                out.push_back(Transmit {
                    source,
                    destination,
                    contents,
                });
            }
        }
        self.estimator.probe_sent(self.twcc.saturating_sub(1));
    }

    /// Packet `seq` of stream `ssrc` again, on its RTX stream (RFC 4588: the original
    /// sequence number before the payload).
    fn resend(
        &mut self,
        ssrc: u32,
        seq: u16,
        now: Instant,
        payloads: &Payloads,
        probe: bool,
    ) -> Option<Vec<u8>> {
        let mid = self.by_ssrc.get(&ssrc)?;
        let s = self.streams.get_mut(mid)?;
        let (rtx_ssrc, rtx_pt) = s.rtx?;
        // HISTORY divides 2^16: the slot of a 16-bit number is its extended number's.
        let sent = s.history[usize::from(seq) % HISTORY];
        if sent.seq == EMPTY.seq || sent.seq as u16 != seq {
            return None;
        }
        let payload = payloads.get(sent.payload)?;
        let rtx_seq = s.rtx_seq;
        s.rtx_seq += 1;
        let twcc_id = s.twcc_id;
        let twcc = self.twcc;
        self.twcc += u64::from(twcc_id.is_some());
        let clear = &mut self.clear;
        clear.clear();
        write_header(
            clear,
            sent.marker,
            rtx_pt,
            rtx_seq as u16,
            sent.time,
            rtx_ssrc,
        );
        let twcc_bytes = (twcc as u16).to_be_bytes();
        write_extensions(clear, &[twcc_id.map(|id| (id, &twcc_bytes[..]))]);
        clear.extend_from_slice(&(sent.seq as u16).to_be_bytes());
        clear.extend_from_slice(payload);
        let mut contents = Vec::with_capacity(clear.len() + self.send.rtp_overhead());
        self.send.protect_rtp(clear, rtx_seq, &mut contents).ok()?;
        if twcc_id.is_some() {
            self.estimator.sent(twcc, contents.len(), now, probe);
        }
        self.bytes += contents.len() as u64;
        Some(contents)
    }
}

/// The length of the RTCP packet at the start of `buf` (version 2), if it fits.
fn rtcp_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 4 || buf[0] >> 6 != 2 {
        return None;
    }
    let len = 4 * (usize::from(u16::from_be_bytes([buf[2], buf[3]])) + 1);
    (len <= buf.len()).then_some(len)
}

fn write_header(out: &mut Vec<u8>, marker: bool, pt: u8, seq: u16, time: u32, ssrc: u32) {
    out.push(0x80);
    out.push(u8::from(marker) << 7 | (pt & 0x7f));
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&time.to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
}

/// The header extensions (id, value), one-byte form (RFC 8285), after a header written without
/// the X bit: sets it. Values are 1 to 16 bytes.
fn write_extensions(out: &mut Vec<u8>, elements: &[Option<(u8, &[u8])>]) {
    if elements.iter().all(Option::is_none) {
        return;
    }
    out[0] |= 0x10;
    let start = out.len();
    out.extend_from_slice(&ONE_BYTE);
    out.extend_from_slice(&[0, 0]);
    // Ids 1 to 14 fit the one-byte form (the SFU's offers number theirs so).
    for (id, value) in elements
        .iter()
        .flatten()
        .filter(|(id, _)| (1..=14).contains(id))
    {
        out.push(id << 4 | (value.len() as u8 - 1));
        out.extend_from_slice(value);
    }
    while !(out.len() - start).is_multiple_of(4) {
        out.push(0);
    }
    let words = ((out.len() - start) / 4 - 1) as u16;
    out[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::crypto::dtls::SrtpProfile;

    /// An egress with made-up keys, and a reader of what it sends.
    fn egress() -> (Egress, Context) {
        let crypto = crate::crypto();
        let material: Vec<u8> = (0..88u8).collect();
        let keys = Keys::new(SrtpProfile::AEAD_AES_256_GCM, &material, false).unwrap();
        (
            Egress::new(&keys, &crypto, 1_000_000),
            keys.reader_of_sent(&crypto),
        )
    }

    /// An RTCP packet of type `pt` and format `fmt`, `words` 32-bit words after its header.
    fn rtcp(pt: u8, fmt: u8, words: u16) -> Vec<u8> {
        let mut p = vec![0x80 | fmt, pt];
        p.extend(words.to_be_bytes());
        p.extend(std::iter::repeat_n(7, 4 * usize::from(words)));
        p
    }

    #[test]
    fn str0m_s_transport_feedback_is_taken_out_when_the_ingress_sends_its_own() {
        let (mut e, mut read) = egress();
        let (mut w, _) = egress();
        let now = Instant::now();
        let (rr, twcc) = (rtcp(201, 0, 1), rtcp(205, 15, 5));
        // A receiver report and a TWCC feedback in one compound packet: the report stays.
        let mut datagram = Vec::new();
        w.send
            .protect_rtcp(&[rr.clone(), twcc.clone()].concat(), &mut datagram)
            .unwrap();
        let mut kept = datagram.clone();
        assert!(e.patch_rtcp(&mut kept, now, true));
        let mut clear = Vec::new();
        read.unprotect_rtcp(&kept, &mut clear).unwrap();
        assert_eq!(clear, rr);
        // Without the ingress, untouched.
        let mut same = datagram.clone();
        assert!(e.patch_rtcp(&mut same, now, false));
        assert_eq!(same, datagram);
        // Feedback alone: nothing left to send.
        let mut alone = Vec::new();
        w.send.protect_rtcp(&twcc, &mut alone).unwrap();
        assert!(!e.patch_rtcp(&mut alone, now, true));
    }
}
