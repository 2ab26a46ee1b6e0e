//! Negotiation: the SFU's own offers to a participant, adding an m-line for each track of
//! another's it now receives and stopping those of participants who left.

use str0m::media::{Direction, MediaKind};

use super::forward::subscription;
use super::peer::{Line, PeerId};
use super::{Sfu, SfuEvent, TrackInfo};

impl Sfu {
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
