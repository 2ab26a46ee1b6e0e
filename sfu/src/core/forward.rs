//! Forwarding: a publisher's RTP packets to its room's subscribers, each on its own m-line with
//! its own numbering, and the simulcast layer each subscriber gets.

use std::sync::Arc;
use std::time::Instant;

use str0m::bwe::Bitrate;
use str0m::format::{Codec, PayloadParams};
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Rid};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use uuid::Uuid;

use super::egress::Packet;
use super::keyframe::{starts_key_frame, VideoCodec};
use super::peer::{Line, PeerId, Published, Quality, Subscription};
use super::rewrite::{Rewriter, Verdict};
use super::Sfu;

impl Sfu {
    pub(super) fn request_key_frame(
        &mut self,
        publisher: PeerId,
        mid: Mid,
        rid: Option<Rid>,
        now: Instant,
    ) {
        let Some(p) = self.peers.get_mut(&publisher) else {
            return;
        };
        if !p.may_request_key(mid, now) {
            return;
        }
        if let Some(rx) = p.rtc.direct_api().stream_rx_by_mid(mid, rid).as_mut() {
            rx.request_keyframe(KeyframeRequestKind::Pli);
            self.dirty.push(publisher);
        }
    }

    /// Tells publisher `id`'s browser the video bit rate it may send, at most
    /// ([`Caps::max_bitrate`](super::Caps)): an RTCP REMB on each of its video streams.
    pub(super) fn cap_bitrate(&mut self, id: PeerId) {
        let (Some(cap), Some(peer)) = (self.config.caps.max_bitrate, self.peers.get_mut(&id))
        else {
            return;
        };
        let mut asked = false;
        for t in peer.published.iter().filter(|t| t.kind == MediaKind::Video) {
            let layers: Vec<Option<Rid>> = if t.rids.is_empty() {
                vec![None]
            } else {
                t.rids.iter().copied().map(Some).collect()
            };
            for rid in layers {
                if let Some(rx) = peer.rtc.direct_api().stream_rx_by_mid(t.mid, rid) {
                    rx.request_remb(Bitrate::bps(cap));
                    asked = true;
                }
            }
        }
        if asked {
            self.dirty.push(id);
        }
    }

    /// `id` publishes a new track: every other peer in its room subscribes.
    pub(super) fn published(&mut self, id: PeerId, mid: Mid, kind: MediaKind, rids: Vec<Rid>) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let (count, max) = (peer.published.len(), self.config.caps.max_tracks);
        match peer.published.iter_mut().find(|p| p.mid == mid) {
            Some(p) if p.on => return,
            // Sent again after a pause (a screen share started again on its m-line).
            Some(p) => p.restart(),
            None if count >= max => return,
            None => peer.published.push(Published::new(mid, kind, rids)),
        }
        let (room, user) = (peer.room, peer.user);
        for other in self.room_members(room) {
            if other == id {
                continue;
            }
            if let Some(o) = self.peers.get_mut(&other) {
                o.subscriptions.push(subscription(id, user, mid, kind));
            }
        }
    }

    /// `id` no longer sends track `mid` (its m-line made inactive or stopped): every
    /// subscriber's m-line for it is stopped in our next offer to them.
    pub(super) fn unpublished(&mut self, id: PeerId, mid: Mid) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(track) = peer.published.iter_mut().find(|p| p.mid == mid && p.on) else {
            return;
        };
        track.on = false;
        let room = peer.room;
        for other in self.room_members(room) {
            if let Some(o) = self.peers.get_mut(&other) {
                o.subscriptions
                    .retain_mut(|s| s.publisher != id || s.source_mid != mid || s.stop());
            }
        }
    }

    /// An RTP packet from publisher `id` as str0m read it, to every subscriber of its track.
    pub(super) fn forward(&mut self, id: PeerId, packet: RtpPacket, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some((mid, rid)) = peer
            .rtc
            .direct_api()
            .stream_rx(&packet.header.ssrc)
            .map(|rx| (rx.mid(), rx.rid()))
        else {
            self.counters.received += 1;
            return;
        };
        let ext = &packet.header.ext_vals;
        let incoming = Incoming {
            mid,
            rid,
            seq: *packet.seq_no,
            time: packet.header.timestamp,
            payload_type: *packet.header.payload_type,
            marker: packet.header.marker,
            len: packet.header.header_len + packet.payload.len(),
            level: ext
                .audio_level
                .map(|l| (l, ext.voice_activity.unwrap_or(false))),
            orientation: ext.video_orientation.map(|o| o as u8),
            payload: Arc::from(&packet.payload[..]),
        };
        self.forward_incoming(id, incoming, Some(&packet), now);
    }

    /// An RTP packet from publisher `id` (`packet`: as str0m read it, for str0m's egress), to
    /// every subscriber of its track.
    pub(super) fn forward_incoming(
        &mut self,
        id: PeerId,
        incoming: Incoming,
        packet: Option<&RtpPacket>,
        now: Instant,
    ) {
        self.counters.received += 1;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let (mid, rid) = (incoming.mid, incoming.rid);
        let Some(track) = peer.published.iter_mut().find(|p| p.mid == mid && p.on) else {
            return;
        };
        let kind = track.kind;
        let layer = rid.and_then(|r| track.rids.iter().position(|x| *x == r));
        if let Some(m) = track.meters.get_mut(layer.unwrap_or(0)) {
            m.add(now, incoming.len);
        }
        let Some(params) = peer
            .rtc
            .codec_config()
            .find(|p| *p.pt() == incoming.payload_type)
            .cloned()
        else {
            return;
        };
        let codec = video_codec(&params);
        let key = kind == MediaKind::Audio || starts_key_frame(codec, &incoming.payload);
        let (room, user) = (peer.room, peer.user);
        if let (MediaKind::Audio, Some((level, _))) = (kind, incoming.level) {
            if let Some(speaker) = self.speakers.heard(room, user, level, now) {
                self.active_speaker(room, speaker);
            }
        }
        let mut waiting = false;
        // The direct egress shares one copy of the payload among the subscribers, and keeps
        // video for retransmission once.
        let shared = self.config.direct_egress.then_some(&incoming.payload);
        let kept = (shared.is_some() && kind == MediaKind::Video)
            .then(|| self.payloads.keep(&incoming.payload, now));
        // The room's members, taken out for the loop (not cloned per packet) and put back.
        let members = self
            .rooms
            .get_mut(&room)
            .map(std::mem::take)
            .unwrap_or_default();
        for &sid in &members {
            if sid == id {
                continue;
            }
            let Some(s) = self.peers.get_mut(&sid) else {
                continue;
            };
            for sub in s.subscriptions.iter_mut() {
                if sub.publisher != id || sub.source_mid != mid {
                    continue;
                }
                let Line::Open(out) = sub.state else {
                    continue;
                };
                sub.codec = Some(codec);
                let verdict = sub
                    .rewriter
                    .packet(rid, incoming.seq, incoming.time, key, now);
                let Verdict::Forward { seq, time } = verdict else {
                    waiting |=
                        sub.rewriter.target() == Some(rid) && sub.rewriter.current() != Some(rid);
                    continue;
                };
                let source_pt = incoming.payload_type;
                let pt = match sub.pt {
                    Some((from, to)) if from == source_pt => to,
                    _ => {
                        let Some(pt) = s.rtc.codec_config().match_params(params).map(|p| *p.pt())
                        else {
                            continue;
                        };
                        sub.pt = Some((source_pt, pt));
                        pt
                    }
                };
                if let Some(payload) = shared {
                    let Some(egress) = s.egress.as_mut() else {
                        continue;
                    };
                    let packet = Packet {
                        marker: incoming.marker,
                        level: incoming.level,
                        orientation: incoming.orientation,
                        payload,
                        kept,
                    };
                    let buffer = self.spare.pop().unwrap_or_else(|| Vec::with_capacity(1500));
                    let out = egress.rtp(&mut s.rtc, out, kind, pt, seq, time, packet, now, buffer);
                    if let Some(t) = out {
                        self.transmits.push_back(t);
                        self.counters.forwarded += 1;
                    }
                    continue;
                }
                let Some(packet) = packet else {
                    continue;
                };
                let mut api = s.rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(out, None) else {
                    continue;
                };
                let write = RtpWrite::new(pt.into(), seq.into(), time, now, packet.payload.clone())
                    .marker(packet.header.marker)
                    .ext_vals(forwarded_extensions(packet))
                    .nackable(kind == MediaKind::Video);
                tx.write_rtp(write);
                self.counters.forwarded += 1;
                if !self.dirty.contains(&sid) {
                    self.dirty.push(sid);
                }
            }
        }
        if let Some(m) = self.rooms.get_mut(&room) {
            *m = members;
        }
        // A subscriber waits for this layer's key frame: ask again (the request is throttled).
        if waiting {
            self.request_key_frame(id, mid, rid, now);
        }
    }
}

/// A publisher's RTP packet as forwarding needs it, read by str0m or by the SFU's own ingress.
pub(super) struct Incoming {
    pub mid: Mid,
    pub rid: Option<Rid>,
    /// The sequence number extended with its rollover counter.
    pub seq: u64,
    pub time: u32,
    pub payload_type: u8,
    pub marker: bool,
    /// Header and payload bytes, for the layer's bitrate.
    pub len: usize,
    /// The audio level (RFC 6464: dBov, voice activity) and the video orientation byte.
    pub level: Option<(i8, bool)>,
    pub orientation: Option<u8>,
    /// The payload, shared by the subscribers it goes to.
    pub payload: Arc<[u8]>,
}

/// The header extension values a forwarded packet keeps: the publisher's (audio level, video
/// orientation, capture time...) but for those naming its own stream (mid, rid), which would
/// misname the subscriber's, and those of the transport (TWCC sequence, send time), which
/// str0m writes anew for each hop.
fn forwarded_extensions(packet: &RtpPacket) -> ExtensionValues {
    let mut ext = packet.header.ext_vals.clone();
    ext.mid = None;
    ext.rid = None;
    ext.rid_repair = None;
    ext.transport_cc = None;
    ext.abs_send_time = None;
    ext
}

pub(super) fn subscription(
    publisher: PeerId,
    user: Uuid,
    mid: Mid,
    kind: MediaKind,
) -> Subscription {
    let clock_rate = if kind == MediaKind::Audio {
        48_000
    } else {
        90_000
    };
    Subscription {
        publisher,
        publisher_user: user,
        source_mid: mid,
        kind,
        state: Line::ToOpen,
        rewriter: Rewriter::new(clock_rate),
        codec: None,
        pt: None,
        quality: Quality::default(),
    }
}

fn video_codec(params: &PayloadParams) -> VideoCodec {
    match params.spec().codec {
        Codec::Vp8 => VideoCodec::Vp8,
        Codec::Vp9 => VideoCodec::Vp9,
        Codec::H264 => VideoCodec::H264,
        _ => VideoCodec::Other,
    }
}
