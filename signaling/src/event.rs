//! What the call state machine tells the hub: each transition returns the events it causes as
//! values, addressed to users. The hub (or any [`EventSink`]) delivers them after the transition
//! is committed, to every socket of every addressed user.
//!
//! The payloads are the spec's server→client events ("WebSocket Events"), camelCase, with a few
//! fields added where the spec leaves a gap (`reason` on `call:participant-left`).

use serde::Serialize;
use uuid::Uuid;

use crate::model::{CallType, MediaState, ParticipantView};
use crate::quality::{Figures, Quality};

/// One event for a set of users.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// The users to deliver to (every socket of each).
    #[serde(skip)]
    pub to: Vec<Uuid>,
    #[serde(flatten)]
    pub payload: Payload,
}

impl Event {
    /// The Socket.IO event name, e.g. `call:incoming`.
    pub fn name(&self) -> &'static str {
        self.payload.name()
    }
}

/// The event names and their `data`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", content = "data")]
pub enum Payload {
    /// To each invitee when a call starts.
    #[serde(rename = "call:incoming")]
    Incoming(Incoming),
    /// To every other live participant when someone answers (1:1 calls included: it is how the
    /// caller learns to send its offer).
    #[serde(rename = "call:participant-joined")]
    ParticipantJoined(ParticipantJoined),
    /// To the other live participants of a call that goes on without someone.
    #[serde(rename = "call:participant-left")]
    ParticipantLeft(ParticipantLeft),
    /// To everyone still in (or still being rung for) a call that is over.
    #[serde(rename = "call:ended")]
    Ended(Ended),
    /// To the other live participants when someone's media state changes.
    #[serde(rename = "call:media-state-changed")]
    MediaStateChanged(MediaStateChanged),
    /// To the other live participants when someone reports their connection (`call:stats`).
    #[serde(rename = "call:quality")]
    Quality(QualityReport),
    /// To a participant of a group call: the SFU's answer to its `call:sfu-offer`.
    #[serde(rename = "call:sfu-answer")]
    SfuAnswer(SfuSdp),
    /// To a participant of a group call: an offer of the SFU's (others' tracks added or
    /// stopped), to be answered with `call:sfu-answer`.
    #[serde(rename = "call:sfu-offer")]
    SfuOffer(SfuOffer),
    /// To a participant of a group call whose media connection with the SFU failed or stayed
    /// down past the grace: it is out of the SFU room, and may offer again.
    #[serde(rename = "call:sfu-closed")]
    SfuClosed(SfuClosed),
    /// To everyone in a group call's SFU room: who speaks now, told by the SFU from the audio
    /// level of their packets.
    #[serde(rename = "call:active-speaker")]
    ActiveSpeaker(ActiveSpeaker),
}

impl Payload {
    pub fn name(&self) -> &'static str {
        match self {
            Payload::Incoming(_) => "call:incoming",
            Payload::ParticipantJoined(_) => "call:participant-joined",
            Payload::ParticipantLeft(_) => "call:participant-left",
            Payload::Ended(_) => "call:ended",
            Payload::MediaStateChanged(_) => "call:media-state-changed",
            Payload::Quality(_) => "call:quality",
            Payload::SfuAnswer(_) => "call:sfu-answer",
            Payload::SfuOffer(_) => "call:sfu-offer",
            Payload::SfuClosed(_) => "call:sfu-closed",
            Payload::ActiveSpeaker(_) => "call:active-speaker",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Incoming {
    pub call_id: Uuid,
    pub conversation_id: Uuid,
    #[serde(rename = "type")]
    pub kind: CallType,
    pub initiated_by: Uuid,
    /// Everyone in the call, the initiator first.
    pub participants: Vec<ParticipantView>,
    /// The call's SFU room when its media goes through the SFU (a group call), else `null`:
    /// the client then negotiates with the SFU (`call:sfu-offer`) rather than with each peer.
    pub sfu_room_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantJoined {
    pub call_id: Uuid,
    pub user_id: Uuid,
    pub user_name: Option<String>,
    pub user_identifier: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantLeft {
    pub call_id: Uuid,
    pub user_id: Uuid,
    /// Why: `left`, `rejected` or `missed`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ended {
    pub call_id: Uuid,
    /// The call's end reason (see [`crate::call::EndReason`]).
    pub reason: &'static str,
    /// Who ended it; `null` when a timer or the server did.
    pub ended_by: Option<Uuid>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaStateChanged {
    pub call_id: Uuid,
    pub user_id: Uuid,
    pub media_state: MediaState,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QualityReport {
    pub call_id: Uuid,
    pub user_id: Uuid,
    /// The grade of this report (see [`crate::quality`]).
    pub quality: Quality,
    /// The figures reported.
    pub stats: Figures,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SfuSdp {
    pub call_id: Uuid,
    pub sdp: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SfuOffer {
    pub call_id: Uuid,
    pub sdp: String,
    /// Whose track each m-line of the offer carries: `{mid, userId, kind}`. (The m-line's
    /// stream id, which the browser gives as `event.streams[0].id`, is that user's id too.)
    pub tracks: Vec<SfuTrack>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SfuTrack {
    pub mid: String,
    pub user_id: Uuid,
    /// `audio` or `video`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SfuClosed {
    pub call_id: Uuid,
    /// `failed`: the SFU dropped the connection (it failed, or stayed down past the grace);
    /// `replaced`: another device of the user offered a connection of its own, which took over.
    pub reason: &'static str,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveSpeaker {
    pub call_id: Uuid,
    pub user_id: Uuid,
}

/// Where committed events go: the hub, in the daemon. Delivery must not block.
pub trait EventSink: Send + Sync + 'static {
    fn deliver(&self, events: Vec<Event>);
}

/// A sink that drops events, logging them at debug level (the daemon before the hub exists).
#[derive(Debug, Default)]
pub struct LogSink;

impl EventSink for LogSink {
    fn deliver(&self, events: Vec<Event>) {
        for e in events {
            tracing::debug!(event = e.name(), to = e.to.len(), "call event");
        }
    }
}
