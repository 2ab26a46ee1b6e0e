//! One participant's peer connection with the SFU: its str0m [`Rtc`], the tracks it publishes,
//! the tracks of others it receives, and where its SDP negotiation stands.

use std::time::{Duration, Instant};

use str0m::change::SdpPendingOffer;
use str0m::media::{Direction, MediaKind, Mid, Rid};
use str0m::Rtc;
use uuid::Uuid;

use super::bwe::{Budget, Meter};
use super::keyframe::VideoCodec;
use super::rewrite::Rewriter;
use crate::srtp::keys::KeySlot;

/// A peer's handle in the SFU, never reused.
pub(crate) type PeerId = u64;

/// Keyframe requests to one publisher's stream are at most this frequent.
const KEY_FRAME_EVERY: Duration = Duration::from_millis(300);

pub(crate) struct Peer {
    pub(super) room: Uuid,
    pub(super) user: Uuid,
    pub(super) rtc: Rtc,
    /// Where its DTLS puts the SRTP keys (`None` with a crypto provider not from
    /// [`crate::crypto`]).
    pub(super) keys: Option<KeySlot>,
    /// Its direct egress, once its keys are known ([`super::SfuConfig::direct_egress`]).
    pub(super) egress: Option<super::egress::Egress>,
    /// Its direct ingress ([`super::SfuConfig::direct_ingress`]), created with the egress.
    pub(super) ingress: Option<super::ingress::Ingress>,
    /// Our ICE username fragment for this peer (the first half of a binding request's
    /// USERNAME): how a datagram from an address not seen yet finds its peer.
    pub(super) ufrag: String,
    /// The 5-tuples (source, destination) this peer's traffic came by.
    pub(super) tuples: Vec<(std::net::SocketAddr, std::net::SocketAddr)>,
    pub(super) published: Vec<Published>,
    pub(super) subscriptions: Vec<Subscription>,
    /// Our offer awaiting the peer's answer.
    pub(super) pending: Option<SdpPendingOffer>,
    /// When str0m wants [`Rtc::handle_input`] with a timeout next.
    pub(super) deadline: Instant,
    pub(super) connected: bool,
    /// When the peer's ICE connection was last seen up (or the peer joined): a peer
    /// disconnected for longer than the grace is removed.
    pub(super) last_up: Instant,
    /// Its stats since the last figures.
    pub(super) watch: super::quality::Watch,
    /// Its downlink's estimate, and when its layers last changed.
    pub(super) budget: Budget,
}

/// A track the peer sends us.
pub(crate) struct Published {
    pub mid: Mid,
    pub kind: MediaKind,
    /// Its simulcast layers, lowest first; empty without simulcast.
    pub rids: Vec<Rid>,
    /// The bitrate of each layer (of the track, without simulcast).
    pub meters: Vec<Meter>,
    /// The last keyframe request sent for it (any layer).
    pub key_requested: Option<Instant>,
    /// Whether the peer sends it: a track whose m-line the peer made inactive (or stopped) is
    /// off, its subscribers' m-lines stopped, until the peer sends on it again.
    pub on: bool,
}

impl Published {
    pub fn new(mid: Mid, kind: MediaKind, rids: Vec<Rid>) -> Published {
        Published {
            mid,
            kind,
            meters: vec![Meter::default(); rids.len().max(1)],
            rids,
            key_requested: None,
            on: true,
        }
    }

    /// The peer sends on the track again: its layers are measured afresh.
    pub fn restart(&mut self) {
        self.on = true;
        self.meters.fill(Meter::default());
    }
}

/// A track of another peer that this peer receives, on an m-line of its own.
pub(crate) struct Subscription {
    pub publisher: PeerId,
    /// The publisher's user id: the m-line's stream id, which the browser shows as
    /// `event.streams[0].id`.
    pub publisher_user: Uuid,
    pub source_mid: Mid,
    pub kind: MediaKind,
    pub state: Line,
    pub rewriter: Rewriter<Option<Rid>>,
    /// The publisher's codec, learned from its first packet.
    pub codec: Option<VideoCodec>,
    /// The payload type of the publisher's last packet and the subscriber's for the same
    /// codec, found once rather than per packet; forgotten when either side negotiates.
    pub pt: Option<(u8, u8)>,
    /// The layer this subscriber would like (an index into the publisher's rids, from the
    /// top): 0 for the best.
    pub quality: Quality,
}

impl Subscription {
    /// Its publisher stopped the track: its m-line is to be stopped. Returns whether the
    /// subscription stays (until that is negotiated); one never offered just goes.
    pub fn stop(&mut self) -> bool {
        match self.state {
            Line::ToOpen => false,
            Line::Open(m) | Line::Offered(m) => {
                self.state = Line::ToStop(m);
                true
            }
            Line::ToStop(_) | Line::Stopping(_) => true,
        }
    }
}

/// Where a subscription's m-line stands in the negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// To be added in our next offer.
    ToOpen,
    /// In our offer, awaiting the answer.
    Offered(Mid),
    /// Negotiated: media flows.
    Open(Mid),
    /// The publisher left or stopped the track: to be stopped in our next offer.
    ToStop(Mid),
    /// Stopped in our offer, awaiting the answer (then the subscription goes).
    Stopping(Mid),
}

/// The simulcast layer a subscriber asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quality {
    /// The smallest layer: a thumbnail.
    Low,
    Medium,
    /// The best layer: the focus.
    #[default]
    High,
    /// None: the track is paused for this subscriber.
    Off,
}

impl Quality {
    /// The rid of `rids` (lowest first) this quality picks; `None` in the inner option is the
    /// track without simulcast.
    pub fn pick(self, rids: &[Rid]) -> Option<Option<Rid>> {
        if self == Quality::Off {
            return None;
        }
        if rids.is_empty() {
            return Some(None);
        }
        let top = rids.len() - 1;
        let i = match self {
            Quality::Low => 0,
            Quality::Medium => top.min(1),
            Quality::High | Quality::Off => top,
        };
        Some(Some(rids[i]))
    }
}

impl Peer {
    pub fn new(room: Uuid, user: Uuid, rtc: Rtc, ufrag: String, now: Instant) -> Peer {
        Peer {
            keys: None,
            egress: None,
            ingress: None,
            room,
            user,
            rtc,
            ufrag,
            tuples: Vec::new(),
            published: Vec::new(),
            subscriptions: Vec::new(),
            pending: None,
            deadline: now,
            connected: false,
            last_up: now,
            watch: Default::default(),
            budget: Budget::default(),
        }
    }

    /// Whether our next offer has something to say.
    pub fn needs_offer(&self) -> bool {
        self.pending.is_none()
            && self
                .subscriptions
                .iter()
                .any(|s| matches!(s.state, Line::ToOpen | Line::ToStop(_)))
    }

    /// Our offer was superseded (the peer's own offer came first): what it carried is
    /// offered again next time.
    pub fn offer_dropped(&mut self) {
        self.pending = None;
        for s in &mut self.subscriptions {
            s.state = match s.state {
                Line::Offered(_) => Line::ToOpen,
                Line::Stopping(m) => Line::ToStop(m),
                other => other,
            };
        }
    }

    /// The peer answered our offer: what it carried is in force. Returns the video m-lines it
    /// opened.
    pub fn offer_answered(&mut self) -> Vec<Mid> {
        let mut opened = Vec::new();
        for s in &mut self.subscriptions {
            if let Line::Offered(m) = s.state {
                s.state = Line::Open(m);
                if s.kind == MediaKind::Video {
                    opened.push(m);
                }
            }
        }
        self.subscriptions
            .retain(|s| !matches!(s.state, Line::Stopping(_)));
        opened
    }

    /// Whether a keyframe may be asked of published track `mid` now (and notes that it is).
    pub fn may_request_key(&mut self, mid: Mid, now: Instant) -> bool {
        let Some(p) = self.published.iter_mut().find(|p| p.mid == mid) else {
            return false;
        };
        if p.key_requested.is_some_and(|t| now < t + KEY_FRAME_EVERY) {
            return false;
        }
        p.key_requested = Some(now);
        true
    }

    /// The direction of our m-line for a track the peer publishes.
    pub fn receives(direction: Direction) -> bool {
        matches!(direction, Direction::RecvOnly | Direction::SendRecv)
    }
}
