//! The direct ingress ([`SfuConfig::direct_ingress`](super::SfuConfig)): a publisher's RTP
//! packets read by the SFU itself, with the connection's own keys ([`crate::srtp`]) and
//! [`crate::rtp::RtpView`], rather than by its str0m connection, whose receive side (decrypt,
//! parse, and a walk over every stream of the connection per datagram) is about a fifth of a
//! forwarded packet's CPU in a room of twenty (`bench/sfu.sh`).
//!
//! str0m still gets what it needs to stay the control plane: the first packets of each
//! stream (from which it learns a simulcast layer's SSRC), retransmissions, and all RTCP.
//! The transport-wide congestion control feedback the publisher's bandwidth estimate lives on
//! is ours ([`crate::twcc::Receipts`]), covering every packet, whoever read it: str0m's, which
//! would miss most, is taken out of what it sends
//! ([`Egress::patch_rtcp`](super::egress::Egress::patch_rtcp)).
//!
//! Experimental: not the daemon's yet. What str0m did with every packet and is not done here
//! yet: NACKs for the publisher's lost packets, and its receiver statistics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::crypto::CryptoProvider;
use str0m::media::{Mid, Rid};
use str0m::rtp::Extension;
use str0m::Rtc;

use super::forward::Incoming;
use super::peer::Published;
use crate::rtp::{ExtIds, RtpView};
use crate::srtp::{Context, Keys, Rollover};
use crate::twcc::Receipts;

/// How often the publisher gets TWCC feedback while its packets come (libwebrtc's receivers
/// send it every 50 to 250 ms, by the rate).
const FEEDBACK_EVERY: Duration = Duration::from_millis(50);

/// One publisher's direct ingress.
pub(crate) struct Ingress {
    /// Reads what the participant sends.
    read: Context,
    rollovers: HashMap<u32, Rollover>,
    /// The streams str0m knows, by SSRC: their m-line and layer.
    sources: HashMap<u32, (Mid, Option<Rid>)>,
    /// Each m-line's negotiated header extension ids.
    ids: HashMap<Mid, ExtIds>,
    clear: Vec<u8>,
    /// The TWCC extension's id, once found; the arrivals it numbers, and when they are next
    /// reported.
    twcc_id: Option<u8>,
    receipts: Receipts,
    next_feedback: Option<Instant>,
    /// Protects our feedback, sent as an RTCP sender of our own (`ssrc`): never str0m's SSRC,
    /// so that the two SRTCP streams' nonces never meet.
    write: Context,
    ssrc: u32,
    /// The SSRC of the publisher's latest packet, which feedback names.
    media_ssrc: u32,
}

impl Ingress {
    pub fn new(keys: &Keys, crypto: &CryptoProvider) -> Ingress {
        Ingress {
            read: keys.receiver(crypto),
            rollovers: HashMap::new(),
            sources: HashMap::new(),
            ids: HashMap::new(),
            clear: Vec::with_capacity(1500),
            twcc_id: None,
            receipts: Receipts::default(),
            next_feedback: None,
            write: keys.sender(crypto),
            ssrc: rand::random::<u32>() | 1,
            media_ssrc: 0,
        }
    }

    /// An RTP datagram of the publisher's arrived at `now`: its transport-wide number (in the
    /// clear header) noted, whoever reads the packet.
    pub fn arrived(
        &mut self,
        rtc: &mut Rtc,
        published: &[Published],
        datagram: &[u8],
        now: Instant,
    ) {
        if self.twcc_id.is_none() {
            self.twcc_id = published.iter().find_map(|p| {
                rtc.media(p.mid)?
                    .remote_extmap()
                    .id_of(Extension::TransportSequenceNumber)
            });
        }
        let ids = ExtIds {
            transport_cc: self.twcc_id,
            ..ExtIds::default()
        };
        if let Some(v) = RtpView::parse_header(datagram, &ids) {
            if let Some(seq) = v.ext.transport_cc {
                self.receipts.received(seq, now);
                self.media_ssrc = v.ssrc;
            }
        }
    }

    /// The TWCC feedback due (SRTCP), if any: every [`FEEDBACK_EVERY`] while packets come.
    pub fn feedback(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next_feedback.is_some_and(|t| now < t) || !self.receipts.has_pending() {
            return None;
        }
        self.next_feedback = Some(now + FEEDBACK_EVERY);
        let clear = self.receipts.feedback(self.ssrc, self.media_ssrc)?;
        let mut out = Vec::with_capacity(clear.len() + 32);
        self.write.protect_rtcp(&clear, &mut out).ok()?;
        Some(out)
    }

    /// An SRTP datagram of the participant's (RTP, not RTCP): the packet, read, if it belongs
    /// to a stream str0m has seen (its main SSRC, not its RTX). `None`: str0m's to read (a
    /// stream's first packets, a retransmission), or a packet that did not check (dropped by
    /// str0m as well).
    pub fn read(&mut self, rtc: &mut Rtc, datagram: &[u8]) -> Option<Incoming> {
        let ssrc = u32::from_be_bytes(datagram.get(8..12)?.try_into().ok()?);
        let (mid, rid) = match self.sources.get(&ssrc) {
            Some(s) => *s,
            None => {
                let mut api = rtc.direct_api();
                let rx = api.stream_rx(&ssrc.into())?;
                if *rx.ssrc() != ssrc {
                    return None;
                }
                let source = (rx.mid(), rx.rid());
                self.sources.insert(ssrc, source);
                source
            }
        };
        let ids = match self.ids.get(&mid) {
            Some(ids) => *ids,
            None => {
                let ids = ExtIds::of(rtc.media(mid)?.remote_extmap());
                self.ids.insert(mid, ids);
                ids
            }
        };
        let seq = u16::from_be_bytes([datagram[2], datagram[3]]);
        let rollover = self.rollovers.entry(ssrc).or_default();
        let index = rollover.estimate(seq)?;
        self.read
            .unprotect_rtp(datagram, index, &mut self.clear)
            .ok()?;
        rollover.accept(index);
        let v = RtpView::parse(&self.clear, &ids)?;
        Some(Incoming {
            mid,
            rid,
            seq: index,
            time: v.time,
            payload_type: v.payload_type,
            marker: v.marker,
            len: v.header_len + v.payload.len(),
            level: v.ext.audio_level,
            orientation: v.ext.video_orientation,
            payload: Arc::from(v.payload),
        })
    }
}
