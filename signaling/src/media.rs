//! The domain's link to the SFU of group calls (switchboard-sfu, on a thread of its own).
//!
//! Two ways, neither blocking:
//! - what the SFU says (its answers, its offers, a connection it dropped) goes to the
//!   participant's socket that holds its SFU connection, through the hub ([`run_sfu_events`]);
//! - what the call state machine decides reaches the SFU from the committed events
//!   ([`SfuSink`], in front of the hub): a participant who left leaves the SFU room, a call that
//!   ended closes it.
//!
//! The participant's offers, answers and layer choices go the other way through the call
//! service (`service/media.rs`).

use std::sync::Arc;

use switchboard_sfu::io::SfuHandle;
use switchboard_sfu::SfuEvent;
use tokio::sync::mpsc;

use crate::event::{
    ActiveSpeaker, Event, EventSink, Payload, SfuClosed, SfuOffer, SfuSdp, SfuTrack,
};
use crate::hub::{Hub, Message};
use crate::service::CallService;

/// The hub, and the SFU told of departures and ends first.
pub struct SfuSink {
    pub hub: Arc<dyn EventSink>,
    pub sfu: Arc<SfuHandle>,
}

impl EventSink for SfuSink {
    fn deliver(&self, events: Vec<Event>) {
        for e in &events {
            // A full command queue loses nothing lasting: the SFU also drops a participant
            // whose connection stays down past the grace.
            let _ = match &e.payload {
                Payload::ParticipantLeft(l) => self.sfu.leave(l.call_id, l.user_id),
                Payload::Ended(ended) => self.sfu.close_room(ended.call_id),
                _ => Ok(()),
            };
        }
        self.hub.deliver(events);
    }
}

/// Delivers what the SFU says to the participants it is for (to the socket of each that holds
/// its SFU connection: [`Hub::send_sfu`]), and keeps its view of their connections as the
/// call's quality, until the SFU stops.
pub async fn run_sfu_events(
    hub: Arc<Hub>,
    calls: CallService,
    mut events: mpsc::UnboundedReceiver<SfuEvent>,
) {
    while let Some(e) = events.recv().await {
        let (room, to, payload) = match e {
            SfuEvent::Answer { room, user, sdp } => (
                room,
                vec![user],
                Payload::SfuAnswer(SfuSdp { call_id: room, sdp }),
            ),
            SfuEvent::Offer {
                room,
                user,
                sdp,
                tracks,
            } => (
                room,
                vec![user],
                Payload::SfuOffer(SfuOffer {
                    call_id: room,
                    sdp,
                    tracks: tracks
                        .into_iter()
                        .map(|t| SfuTrack {
                            mid: t.mid,
                            user_id: t.user,
                            kind: t.kind,
                        })
                        .collect(),
                }),
            ),
            SfuEvent::Gone { room, user } => {
                let closed = Payload::SfuClosed(SfuClosed {
                    call_id: room,
                    reason: "failed",
                });
                hub.send_sfu(room, &[user], &Message::of(&closed));
                // Out of the room: its next offer, from whichever socket, joins afresh.
                hub.forget_sfu(room, user);
                continue;
            }
            SfuEvent::Connected { room, user } => {
                tracing::debug!(call = %room, %user, "SFU media connected");
                continue;
            }
            SfuEvent::Quality {
                room,
                user,
                figures,
            } => {
                // Refused only when they are no longer in the call: nothing to keep then.
                // (`call:quality` goes to the other participants' every socket, as their own
                // reports' does: it is about the call, not about a peer connection.)
                if let Err(e) = calls.record_sfu_stats(room, user, figures).await {
                    tracing::debug!(call = %room, %user, error = %e, "SFU figures not kept");
                }
                continue;
            }
            SfuEvent::ActiveSpeaker { room, user, to } => (
                room,
                to,
                Payload::ActiveSpeaker(ActiveSpeaker {
                    call_id: room,
                    user_id: user,
                }),
            ),
        };
        hub.send_sfu(room, &to, &Message::of(&payload));
    }
}
