//! The request and response bodies of the call operations and the admin API.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::call::{
    Call, CallStatus, CallType, EndReason, MediaState, ParticipantStatus, ParticipantView, User,
};
use crate::quality::Quality;
use crate::time::Timestamp;

/// `POST /api/calls/initiate`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitiateRequest {
    pub conversation_id: Uuid,
    #[serde(rename = "type", default = "audio")]
    pub kind: CallType,
    pub participant_ids: Vec<Uuid>,
}

fn audio() -> CallType {
    CallType::Audio
}

/// `PATCH /api/calls/:callId/media`: any of the three flags.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MediaRequest {
    pub audio_enabled: Option<bool>,
    pub video_enabled: Option<bool>,
    pub screen_sharing: Option<bool>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitiateResponse {
    pub call_id: Uuid,
    pub status: CallStatus,
    /// The invitees (the caller is in the call's full participant list).
    pub participants: Vec<ParticipantView>,
    /// The call's SFU room when it is a group call on the SFU (see [`CallView`]).
    pub sfu_room_id: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnswerResponse {
    pub call_id: Uuid,
    pub status: CallStatus,
    pub started_at: Option<Timestamp>,
    pub sfu_room_id: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectResponse {
    pub call_id: Uuid,
    /// `rejected`: the caller's answer.
    pub status: ParticipantStatus,
    /// The call's status after it: `rejected` for a 1:1 call, unchanged in a group.
    pub call_status: CallStatus,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndResponse {
    pub call_id: Uuid,
    /// `ended` when the call is over, `left` when a group call goes on without the caller.
    pub status: &'static str,
    pub call_status: CallStatus,
    /// Seconds from the first answer to the end (0 if nobody answered); null while it goes on.
    pub duration: Option<u64>,
    pub end_reason: Option<EndReason>,
}

/// The answer to `call:stats`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsResponse {
    pub success: bool,
    /// The grade of the report.
    pub quality: Quality,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaResponse {
    pub success: bool,
    pub media_state: MediaState,
}

/// A call as `GET /api/calls/:callId` and the history show it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallView {
    pub id: Uuid,
    pub conversation_id: Uuid,
    #[serde(rename = "type")]
    pub kind: CallType,
    pub status: CallStatus,
    pub initiated_by: Uuid,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub duration: Option<u64>,
    pub end_reason: Option<EndReason>,
    pub sfu_room_id: Option<String>,
    pub quality_stats: Option<serde_json::Value>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Everyone in the call, the initiator first.
    pub participants: Vec<ParticipantView>,
}

impl From<&Call> for CallView {
    fn from(c: &Call) -> CallView {
        CallView {
            id: c.id,
            conversation_id: c.conversation_id,
            kind: c.kind,
            status: c.status,
            initiated_by: c.initiated_by,
            started_at: c.started_at,
            ended_at: c.ended_at,
            duration: c.duration_seconds,
            end_reason: c.end_reason,
            sfu_room_id: c.sfu_room_id.clone(),
            quality_stats: c
                .quality_stats
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok()),
            created_at: c.created_at,
            updated_at: c.updated_at,
            participants: c.participants.iter().map(|p| p.view()).collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CallResponse {
    pub call: CallView,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryResponse {
    pub calls: Vec<CallView>,
    /// Pass as `before` for the next (older) page; null on the last page.
    pub next_before: Option<Timestamp>,
}

/// The history page size when none is asked for, and the largest.
pub const HISTORY_DEFAULT_LIMIT: u32 = 50;
pub const HISTORY_MAX_LIMIT: u32 = 100;

/// A user or conversation as the admin API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: Uuid,
    pub name: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationView {
    pub id: Uuid,
    pub name: Option<String>,
    pub members: Vec<UserView>,
}

impl From<User> for UserView {
    fn from(u: User) -> UserView {
        UserView {
            id: u.id,
            name: u.name,
            email: u.email,
        }
    }
}

/// `DELETE /api/admin/users/{userId}/sessions`: what the revocation cut.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokeResponse {
    pub user_id: Uuid,
    /// Tokens of the user issued (`iat`) in this second or before are refused.
    pub revoked_at: Timestamp,
    /// Until when the relay refuses the user's TURN credentials minted before the revocation.
    pub relay_revoked_until: Timestamp,
    /// The user's sockets closed.
    pub sockets_closed: usize,
    /// The live calls the user was taken out of.
    pub calls_left: Vec<Uuid>,
}
