//! The direct ingress ([`SfuConfig::direct_ingress`](super::SfuConfig)): a publisher's RTP
//! packets read by the SFU itself, with the connection's own keys ([`crate::srtp`]) and
//! [`crate::rtp::RtpView`], rather than by its str0m connection, whose receive side (decrypt,
//! parse, and a walk over every stream of the connection per datagram) is about a fifth of a
//! forwarded packet's CPU in a room of twenty (`bench/sfu.sh`).
//!
//! str0m still gets what it needs to stay the control plane: the first packets of each
//! stream (from which it learns a simulcast layer's SSRC), retransmissions, and all RTCP.
//! Experimental: not the daemon's yet. What str0m did with every packet and is not done here
//! yet: NACKs for the publisher's lost packets, and its receiver statistics.

use std::collections::HashMap;
use std::sync::Arc;

use str0m::crypto::CryptoProvider;
use str0m::media::{Mid, Rid};
use str0m::Rtc;

use super::forward::Incoming;
use crate::rtp::{ExtIds, RtpView};
use crate::srtp::{Context, Keys, Rollover};

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
}

impl Ingress {
    pub fn new(keys: &Keys, crypto: &CryptoProvider) -> Ingress {
        Ingress {
            read: keys.receiver(crypto),
            rollovers: HashMap::new(),
            sources: HashMap::new(),
            ids: HashMap::new(),
            clear: Vec::with_capacity(1500),
        }
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
