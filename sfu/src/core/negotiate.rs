//! Negotiation: a participant's offers and answers (the first offer joins it: a connection of
//! its own, ICE-lite, with credentials minted here), and the SFU's own offers to it, adding an
//! m-line for each track of another's it now receives and stopping those of participants who
//! left.

use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, IceCreds, RtcConfig};
use uuid::Uuid;

use super::forward::subscription;
use super::peer::{Line, Peer, PeerId};
use super::{bwe, quality, Result, Sfu, SfuError, SfuEvent, TrackInfo, SWEEP_EVERY};
use crate::srtp::keys::take_last_slot;

/// Video packets kept per forwarded stream of a subscriber's (see [`Sfu::add_peer`]).
const SEND_BUFFER_VIDEO: usize = 128;
/// How long a forwarded video packet is kept for retransmission (str0m keeps 3 s): a NACK
/// comes a round trip after the loss, and a resend later than half a second comes after the
/// receiver's jitter buffer gave the frame up. Janus keeps at least 200 ms (`min_nack_queue`),
/// more on a longer round trip. Each subscriber keeps its own copy of each stream it is sent,
/// so in a room of twenty this is most of the SFU's memory (bench/sfu.sh: 2.4 MiB per
/// participant at 3 s, 1.7 at 500 ms).
pub(super) const RTX_MAX_AGE: Duration = Duration::from_millis(500);
/// str0m's default: queued resends are dropped while they are over 15% of what a stream sends.
const RTX_RATIO_CAP: Option<f32> = Some(0.15);

impl Sfu {
    /// `user`'s offer in `room`: the first one joins the room (signaling has checked that the
    /// user is a joined participant of the call), a later one renegotiates (a track added or
    /// removed). The answer comes as [`SfuEvent::Answer`], before any offer of ours.
    pub fn offer(&mut self, now: Instant, room: Uuid, user: Uuid, sdp: &str) -> Result<()> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let sending = sending_lines(sdp);
        if sending > self.config.caps.max_tracks {
            return Err(SfuError::TooManyTracks(
                sending,
                self.config.caps.max_tracks,
            ));
        }
        let (id, joined) = match self.by_user.get(&(room, user)) {
            Some(&id) => (id, false),
            None => (self.add_peer(now, room, user)?, true),
        };
        let peer = self.peers.get_mut(&id).expect("indexed peers exist");
        let answer = match peer.rtc.sdp_api().accept_offer(offer) {
            Ok(a) => a,
            Err(e) => {
                if joined {
                    self.remove_peer(id);
                }
                return Err(SfuError::Refused(e.to_string()));
            }
        };
        self.payload_types_changed(id);
        let peer = self.peers.get_mut(&id).expect("indexed peers exist");
        // An offer of ours that crossed this one is void; what it carried goes in the next.
        if peer.pending.is_some() {
            peer.offer_dropped();
        }
        // An ICE restart (the client's) gives the peer a new ufrag of ours: route by it.
        let ufrag = peer.rtc.direct_api().local_ice_credentials().ufrag;
        if ufrag != peer.ufrag {
            let old = std::mem::replace(&mut peer.ufrag, ufrag.clone());
            self.by_ufrag.remove(&old);
            self.by_ufrag.insert(ufrag, id);
        }
        self.events.push_back(SfuEvent::Answer {
            room,
            user,
            sdp: answer.to_sdp_string(),
        });
        if joined {
            self.subscribe_to_room(id);
        }
        self.poll_peer(id, now);
        self.settle(now);
        Ok(())
    }

    /// `user`'s answer to our last offer.
    pub fn answer(&mut self, now: Instant, room: Uuid, user: Uuid, sdp: &str) -> Result<()> {
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let id = *self.by_user.get(&(room, user)).ok_or(SfuError::NotJoined)?;
        let peer = self.peers.get_mut(&id).expect("indexed peers exist");
        let pending = peer.pending.take().ok_or(SfuError::NoOffer)?;
        if let Err(e) = peer.rtc.sdp_api().accept_answer(pending, answer) {
            // Our offer is void (str0m dropped its changes): what it carried is offered again,
            // or the peer would never get those tracks, nor see those m-lines stop.
            peer.offer_dropped();
            self.settle(now);
            return Err(SfuError::Refused(e.to_string()));
        }
        self.payload_types_changed(id);
        let peer = self.peers.get_mut(&id).expect("indexed peers exist");
        for mid in peer.offer_answered() {
            if let Some(tx) = peer.rtc.direct_api().stream_tx_by_mid(mid, None) {
                tx.set_rtx_cache(SEND_BUFFER_VIDEO, RTX_MAX_AGE, RTX_RATIO_CAP);
            }
        }
        self.start_subscriptions(id, now);
        self.poll_peer(id, now);
        self.settle(now);
        Ok(())
    }

    /// Peer `id` negotiated: the payload types found for its subscriptions, and for others'
    /// subscriptions to its tracks, are found again on their next packet.
    fn payload_types_changed(&mut self, id: PeerId) {
        for (&pid, p) in self.peers.iter_mut() {
            for s in p.subscriptions.iter_mut() {
                if pid == id || s.publisher == id {
                    s.pt = None;
                }
            }
        }
    }

    fn add_peer(&mut self, now: Instant, room: Uuid, user: Uuid) -> Result<PeerId> {
        let creds = mint_ice_credentials();
        let rtc = RtcConfig::new()
            .set_crypto_provider(self.crypto.clone())
            .set_local_ice_credentials(creds.clone())
            .set_ice_lite(true)
            .set_rtp_mode(true)
            // Opus and VP8, which every browser sends (Safari since 12.1). Each codec an m-line
            // lists costs its SDP lines (H.264's profiles a dozen), and a room of twenty has 38
            // m-lines: the answer to it must fit one frame of the hub (see the room-of-twenty
            // test: 94 KB with str0m's default codecs, 77 KB with H.264 kept).
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .set_stats_interval(Some(quality::STATS_EVERY))
            // Each forwarded video stream's packets kept for retransmission (NACK) and pacing:
            // str0m's default of 1,000 is 13 s of a 700 kbit/s layer, and a subscriber in a
            // room of twenty keeps 19 such streams (21 MB). 128 is a second and a half of that
            // layer, half a second of a 2.5 Mbit/s screen: more than a round trip to resend.
            .set_send_buffer_video(SEND_BUFFER_VIDEO)
            // The direct egress sends what str0m's estimate would be made from (and str0m's
            // probes would go out with numbers of its own).
            .enable_bwe(
                (!self.config.direct_egress).then(|| Bitrate::bps(self.config.start_estimate)),
            );
        // The build makes the connection's DTLS instance, whose keys slot is taken right after.
        let _ = take_last_slot();
        let mut rtc = rtc.build(now);
        let keys = take_last_slot();
        for addr in &self.config.candidates {
            let c = Candidate::host(*addr, "udp").map_err(|e| SfuError::Refused(e.to_string()))?;
            rtc.add_local_candidate(c);
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut peer = Peer::new(room, user, rtc, creds.ufrag.clone(), now);
        peer.keys = keys;
        self.peers.insert(id, peer);
        self.by_ufrag.insert(creds.ufrag, id);
        self.by_user.insert((room, user), id);
        self.rooms.entry(room).or_default().push(id);
        self.next_sweep.get_or_insert(now + SWEEP_EVERY);
        self.next_allocation
            .get_or_insert(now + bwe::ALLOCATE_EVERY);
        Ok(id)
    }

    /// A new peer subscribes to every track already published in its room.
    pub(super) fn subscribe_to_room(&mut self, id: PeerId) {
        let Some(room) = self.peers.get(&id).map(|p| p.room) else {
            return;
        };
        let mut tracks = Vec::new();
        for other in self.room_members(room) {
            if other == id {
                continue;
            }
            if let Some(o) = self.peers.get(&other) {
                let on = o.published.iter().filter(|p| p.on);
                tracks.extend(on.map(|p| (other, o.user, p.mid, p.kind)));
            }
        }
        if let Some(peer) = self.peers.get_mut(&id) {
            for (publisher, user, mid, kind) in tracks {
                peer.subscriptions
                    .push(subscription(publisher, user, mid, kind));
            }
        }
    }

    pub(super) fn send_offer(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let mut api = peer.rtc.sdp_api();
        for s in &mut peer.subscriptions {
            match s.state {
                Line::ToOpen => {
                    let stream = s.publisher_user.to_string();
                    let track = format!("{}-{}", s.publisher_user, s.source_mid);
                    let mid =
                        api.add_media(s.kind, Direction::SendOnly, Some(stream), Some(track), None);
                    s.state = Line::Offered(mid);
                }
                Line::ToStop(m) => {
                    api.stop_media(m);
                    s.state = Line::Stopping(m);
                }
                _ => {}
            }
        }
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        peer.pending = Some(pending);
        let tracks = peer
            .subscriptions
            .iter()
            .filter_map(|s| match s.state {
                Line::Offered(m) | Line::Open(m) => Some(TrackInfo {
                    mid: m.to_string(),
                    user: s.publisher_user,
                    kind: kind_name(s.kind),
                }),
                _ => None,
            })
            .collect();
        self.events.push_back(SfuEvent::Offer {
            room: peer.room,
            user: peer.user,
            sdp: offer.to_sdp_string(),
            tracks,
        });
    }
}

pub(super) fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

/// The audio and video m-lines of an SDP that send (`sendrecv`, the default, or `sendonly`).
fn sending_lines(sdp: &str) -> usize {
    let mut count = 0;
    let mut section: Option<bool> = None;
    let mut close = |s: Option<bool>| count += usize::from(s == Some(true));
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            close(section);
            let mut fields = m.split(' ');
            let media = matches!(fields.next(), Some("audio" | "video"));
            // Port 0: a stopped or rejected m-line.
            section = (media && fields.next() != Some("0")).then_some(true);
        } else if matches!(line, "a=recvonly" | "a=inactive") {
            if let Some(s) = section.as_mut() {
                *s = false;
            }
        }
    }
    close(section);
    count
}

/// ICE credentials from a cryptographic generator (rand's, seeded by the operating system;
/// str0m's own come from a fast, non-cryptographic one): 8 and 24 alphanumerics, 47 bits of
/// ufrag and 142 of password.
fn mint_ice_credentials() -> IceCreds {
    use rand::distr::{Alphanumeric, SampleString};
    let mut rng = rand::rng();
    IceCreds {
        ufrag: Alphanumeric.sample_string(&mut rng, 8),
        pass: Alphanumeric.sample_string(&mut rng, 24),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_audio_and_video_lines_that_send_count_as_tracks() {
        let sdp = "v=0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 96\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        assert_eq!(super::sending_lines(sdp), 3);
    }
}
