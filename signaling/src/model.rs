//! The calls' vocabulary, shared by the state machine ([`crate::call`]) and the events it
//! raises ([`crate::event`]): the stored text enums (call type, status and end reason,
//! participant status, why a participant is out), media state, users and participants, and
//! how the API and the events show a participant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::time::Timestamp;

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $text)] $variant),+
        }

        /// From its text only (not serde's `{"video": null}` map form).
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<$name, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "`{s}` is not one of {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

text_enum!(
    /// `calls.type`.
    CallType { Audio = "audio", Video = "video", Screen = "screen" }
);

text_enum!(
    /// `calls.status`.
    CallStatus {
        Initiated = "initiated",
        Ringing = "ringing",
        Active = "active",
        Ended = "ended",
        Missed = "missed",
        Rejected = "rejected",
        Failed = "failed",
    }
);

text_enum!(
    /// `call_participants.status`.
    ParticipantStatus {
        Invited = "invited",
        Ringing = "ringing",
        Joined = "joined",
        Left = "left",
        Rejected = "rejected",
        Missed = "missed",
    }
);

text_enum!(
    /// `calls.end_reason`, and the `reason` of `call:ended`.
    EndReason {
        /// A participant hung up (or the last but one left a group call).
        EndedByUser = "ended-by-user",
        /// The initiator hung up before anyone answered.
        Cancelled = "cancelled",
        /// The invitee of a 1:1 call (or every invitee of a group call) rejected it.
        Rejected = "rejected",
        /// Nobody answered within the ring timeout.
        NoAnswer = "no-answer",
        /// The daemon restarted (after a crash) while the call was live.
        ServerRestart = "server-restart",
        /// The daemon was stopped while the call was live.
        ServerShutdown = "server-shutdown",
        /// A participant of a 1:1 call lost every connection for longer than the reconnect
        /// grace.
        ConnectionLost = "connection-lost",
        /// The admin API cut a participant of a 1:1 call off (a revocation).
        Revoked = "revoked",
    }
);

text_enum!(
    /// Why a participant is out of a call that goes on: the `reason` of
    /// `call:participant-left`.
    LeftReason {
        /// They hung up.
        Left = "left",
        /// They lost every connection for longer than the reconnect grace.
        Disconnected = "disconnected",
        /// They rejected the invitation.
        Rejected = "rejected",
        /// They did not answer within the ring timeout.
        Missed = "missed",
        /// The admin API cut them off (a revocation).
        Revoked = "revoked",
    }
);

impl CallStatus {
    /// Initiated, ringing or active: the call can still change.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            CallStatus::Initiated | CallStatus::Ringing | CallStatus::Active
        )
    }
}

impl ParticipantStatus {
    /// Invited or ringing: may still answer.
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            ParticipantStatus::Invited | ParticipantStatus::Ringing
        )
    }

    /// Joined or pending: still part of the call, so told what happens in it.
    pub fn is_live(self) -> bool {
        self == ParticipantStatus::Joined || self.is_pending()
    }
}

/// `call_participants.media_state`, and the media PATCH body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MediaState {
    pub audio_enabled: bool,
    pub video_enabled: bool,
    pub screen_sharing: bool,
}

impl Default for MediaState {
    fn default() -> MediaState {
        MediaState {
            audio_enabled: true,
            video_enabled: true,
            screen_sharing: false,
        }
    }
}

/// A change to some of the three media flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaChange {
    pub audio_enabled: Option<bool>,
    pub video_enabled: Option<bool>,
    pub screen_sharing: Option<bool>,
}

impl MediaState {
    pub fn apply(self, c: MediaChange) -> MediaState {
        MediaState {
            audio_enabled: c.audio_enabled.unwrap_or(self.audio_enabled),
            video_enabled: c.video_enabled.unwrap_or(self.video_enabled),
            screen_sharing: c.screen_sharing.unwrap_or(self.screen_sharing),
        }
    }
}

/// A user as the calls show them: the spec's userName and userIdentifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub name: Option<String>,
    pub email: Option<String>,
}

/// One row of `call_participants`.
#[derive(Clone, Debug, PartialEq)]
pub struct Participant {
    pub id: Uuid,
    pub user: User,
    pub status: ParticipantStatus,
    pub joined_at: Option<Timestamp>,
    pub left_at: Option<Timestamp>,
    pub media_state: MediaState,
    pub connection_quality: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A participant as the API and the events show them.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantView {
    pub user_id: Uuid,
    pub user_name: Option<String>,
    pub user_identifier: Option<String>,
    pub status: ParticipantStatus,
    pub joined_at: Option<Timestamp>,
    pub left_at: Option<Timestamp>,
    pub media_state: MediaState,
    pub connection_quality: Option<String>,
}

impl Participant {
    pub fn view(&self) -> ParticipantView {
        ParticipantView {
            user_id: self.user.id,
            user_name: self.user.name.clone(),
            user_identifier: self.user.email.clone(),
            status: self.status,
            joined_at: self.joined_at,
            left_at: self.left_at,
            media_state: self.media_state,
            connection_quality: self.connection_quality.clone(),
        }
    }

    pub(crate) fn set(&mut self, status: ParticipantStatus, now: Timestamp) {
        match status {
            ParticipantStatus::Joined => {
                self.joined_at = Some(now);
                self.left_at = None;
            }
            ParticipantStatus::Left => self.left_at = Some(now),
            _ => {}
        }
        self.status = status;
        self.updated_at = now;
    }
}
