//! The call operations, as the REST API (and the hub) perform them: each one is a single store
//! job — authorize, load, apply one state-machine transition, write what changed, raise its
//! events — so it commits whole or not at all, and its events are delivered only once it has.
//!
//! Visibility: a call is visible to the members of its conversation; to anyone else it does
//! not exist (404). Roles within a visible call are the state machine's (403).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::call::{
    reason, Call, CallStatus, CallType, InitiateError, MediaChange, MediaState, ParticipantStatus,
    ParticipantView, Refusal, User,
};
use crate::event::{Event, Payload, QualityReport};
use crate::hub::{Departure, Hub};
use crate::quality::{CallQuality, Figures, MediaStats, ParticipantQuality, Quality};
use crate::store::{Db, Store, StoreError};
use crate::time::Timestamp;
use crate::turn::{TurnCredentials, TurnIssuer};
use switchboard_turn::proto::Usage;

/// The `[calls]` and `[auth]` settings the service follows.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Invitees still ringing this long after the call started miss it.
    pub ring_timeout: Duration,
    /// A joined participant whose last socket has been gone this long leaves the call.
    pub reconnect_grace: Duration,
    /// The most participants in a call, its initiator included.
    pub max_participants: usize,
    /// Create a conversation on first use, and add invitees to it.
    pub open_conversations: bool,
}

/// Sleeps until `at`, or forever.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Why an operation failed. The API maps each to a status and a JSON error once.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// 400: a request field is wrong.
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
    /// 404: unknown, or not visible to the caller.
    #[error("{0} not found")]
    NotFound(Missing),
    /// 403 or 409: the state machine refused.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// 422: the call cannot be made as asked.
    #[error(transparent)]
    Initiate(#[from] InitiateError),
    /// 422: invitees that are not members of the conversation.
    #[error("participantIds: not members of the conversation: {}", list(.0))]
    NotMembers(Vec<Uuid>),
    /// 429: the same report again too soon.
    #[error("{what} at most once every {} ms", .every.as_millis())]
    TooFrequent { what: &'static str, every: Duration },
    /// 503: the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a 404 is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    Call,
    Conversation,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Missing::Call => "call",
            Missing::Conversation => "conversation",
        })
    }
}

fn list(ids: &[Uuid]) -> String {
    ids.iter()
        .map(Uuid::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

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
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnswerResponse {
    pub call_id: Uuid,
    pub status: CallStatus,
    pub started_at: Option<Timestamp>,
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
    pub end_reason: Option<String>,
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
    pub end_reason: Option<String>,
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
            end_reason: c.end_reason.clone(),
            sfu_room_id: None,
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

/// The call operations; cheap to clone.
#[derive(Clone)]
pub struct CallService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    settings: Settings,
    turn: TurnIssuer,
    /// Wakes the ring timer when a call starts.
    ringing: Notify,
    /// What the relay has carried for a user so far (see [`CallService::set_relay_usage`]).
    relay: OnceLock<RelayUsageFn>,
    /// Each live call's reading of its participants' relay counters when it started.
    relay_marks: Mutex<HashMap<Uuid, Vec<(Uuid, Usage)>>>,
}

type RelayUsageFn = Box<dyn Fn(Uuid) -> Usage + Send + Sync>;

/// A participant reports their connection at most this often (`call:stats`).
pub const STATS_EVERY: Duration = Duration::from_secs(1);

impl Inner {
    fn relay_usage(&self, user: Uuid) -> Option<Usage> {
        self.relay.get().map(|f| f(user))
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Vec<(Uuid, Usage)>>> {
        self.relay_marks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a transition of `call` from `before`, with its `quality_stats` if it ended.
    fn save(&self, db: &Db, before: &Call, call: &mut Call) -> Result<(), StoreError> {
        self.summarise(db, before, call)?;
        db.save_call(before, call)
    }

    /// When `call` has just ended (it was live in `before`): its `quality_stats`, if it was
    /// answered: every participant's reports (`media_stats`) and what the relay carried for
    /// them since the call started.
    fn summarise(&self, db: &Db, before: &Call, call: &mut Call) -> Result<(), StoreError> {
        if !before.status.is_live() || call.status.is_live() {
            return Ok(());
        }
        let marks = self.marks().remove(&call.id).unwrap_or_default();
        if call.started_at.is_none() {
            return Ok(());
        }
        let stats: HashMap<Uuid, MediaStats> = db
            .media_stats(call.id)?
            .into_iter()
            .filter_map(|(user, json)| Some((user, serde_json::from_str(&json).ok()?)))
            .collect();
        let participants = call
            .participants
            .iter()
            .map(|p| {
                let id = p.user.id;
                let relay = marks
                    .iter()
                    .find(|(u, _)| *u == id)
                    .and_then(|(_, mark)| Some(self.relay_usage(id)?.since(*mark).into()));
                ParticipantQuality::new(id, stats.get(&id), relay)
            })
            .collect();
        call.quality_stats = serde_json::to_string(&CallQuality::new(participants)).ok();
        Ok(())
    }
}

impl CallService {
    pub fn new(store: Store, settings: Settings, turn: TurnIssuer) -> CallService {
        CallService {
            inner: Arc::new(Inner {
                store,
                settings,
                turn,
                ringing: Notify::new(),
                relay: OnceLock::new(),
                relay_marks: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Where to read what the relay carried for a user (their allocations' counters, see
    /// [`switchboard_turn`]'s `Stats::user_usage`): calls read them when they start and end, for
    /// `quality_stats`. Without it, `quality_stats` has no relay figures. Set once.
    pub fn set_relay_usage(&self, f: impl Fn(Uuid) -> Usage + Send + Sync + 'static) {
        let _ = self.inner.relay.set(Box::new(f));
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Runs one job: the caller is recorded (name and email from their token, see
    /// [`Db::record_user`]) in the same savepoint, so a refused request leaves no trace either.
    async fn job<T, F>(&self, caller: &User, f: F) -> Result<T, CallError>
    where
        F: FnOnce(&mut Db, Timestamp) -> Result<T, CallError> + Send + 'static,
        T: Send + 'static,
    {
        let caller = caller.clone();
        self.inner
            .store
            .run(move |db| {
                let now = Timestamp::now();
                db.record_user(&caller, now)?;
                f(db, now)
            })
            .await
    }

    /// One transition of a call visible to `caller`.
    async fn transition<T, F>(
        &self,
        caller: &User,
        call_id: Uuid,
        f: F,
    ) -> Result<(T, Call), CallError>
    where
        F: FnOnce(&mut Call, Timestamp) -> Result<(T, Vec<Event>), Refusal> + Send + 'static,
        T: Send + 'static,
    {
        let caller = caller.clone();
        let ring_timeout = self.inner.settings.ring_timeout;
        let inner = self.inner.clone();
        self.inner
            .store
            .run(move |db| {
                let now = Timestamp::now();
                let mut call = visible_call(db, caller.id, call_id)?;
                // The ring timeout holds to the millisecond, whether or not its timer has run
                // yet: an answer past it finds the invitation missed. That is the timer's
                // change, not the request's, so it stands even if the request is refused.
                let before = call.clone();
                let expired = call.expire_ringing(ring_timeout, now);
                let timed_out = call != before;
                if timed_out {
                    inner.save(db, &before, &mut call)?;
                    db.emit(expired);
                }
                // The request itself: all or nothing. Its own savepoint only when the timeout
                // wrote something to keep; otherwise the job's savepoint is enough.
                let request = |db: &mut Db| {
                    db.record_user(&caller, now)?;
                    let before = call.clone();
                    let (out, events) = f(&mut call, now)?;
                    inner.save(db, &before, &mut call)?;
                    db.emit(events);
                    Ok::<_, CallError>((out, call))
                };
                if timed_out {
                    Ok(db.nested(request))
                } else {
                    request(db).map(Ok)
                }
            })
            .await?
    }

    pub async fn initiate(
        &self,
        caller: &User,
        req: InitiateRequest,
    ) -> Result<InitiateResponse, CallError> {
        let settings = self.inner.settings.clone();
        let initiator = caller.clone();
        let inner = self.inner.clone();
        // The caller and duplicates dropped, the count checked, before any lookup: a body
        // full of ids costs the store nothing. (Inviting every member, the caller included, is
        // a normal way for a client to call a conversation.)
        let mut ids: Vec<Uuid> = Vec::with_capacity(req.participant_ids.len());
        for (i, &id) in req.participant_ids.iter().enumerate() {
            if id.is_nil() {
                return Err(CallError::InvalidField {
                    field: format!("participantIds[{i}]"),
                    message: "the nil UUID is not a user".into(),
                });
            }
            if id != caller.id && !ids.contains(&id) {
                ids.push(id);
                if ids.len() + 1 > settings.max_participants {
                    return Err(InitiateError::TooMany {
                        count: ids.len() + 1,
                        max: settings.max_participants,
                    }
                    .into());
                }
            }
        }
        let call = self
            .job(caller, move |db, now| {
                let conv = req.conversation_id;
                let open = settings.open_conversations;
                let exists = db.conversation_exists(conv)?;
                if exists && !db.is_member(conv, initiator.id)? || !exists && !open {
                    return Err(CallError::NotFound(Missing::Conversation));
                }
                if exists {
                    // An existing conversation's members are its own (the admin API's, or its
                    // first call's), whatever the mode.
                    let mut outsiders = Vec::new();
                    for &id in &ids {
                        if !db.is_member(conv, id)? {
                            outsiders.push(id);
                        }
                    }
                    if !outsiders.is_empty() {
                        return Err(CallError::NotMembers(outsiders));
                    }
                }
                // The members of a chat app live in the chat app: an invitee switchboard has
                // not seen yet (in a new open conversation; a provisioned member not named by
                // a token yet) is a user all the same, bare until their first token names
                // them. Created here, so a refused call leaves no row behind.
                let mut invitees = Vec::with_capacity(ids.len());
                for id in ids {
                    let user = match db.user(id)? {
                        Some(u) => u,
                        None => {
                            db.ensure_user(id, now)?;
                            User {
                                id,
                                name: None,
                                email: None,
                            }
                        }
                    };
                    invitees.push(user);
                }
                let created = db.next_created_at(now);
                let (call, events) = Call::initiate(
                    Uuid::new_v4(),
                    conv,
                    req.kind,
                    initiator.clone(),
                    invitees,
                    settings.max_participants,
                    Uuid::new_v4,
                    created,
                )?;
                if !exists {
                    // Open conversations: the first call creates its conversation with its
                    // participants.
                    db.upsert_conversation(conv, None, now)?;
                    for p in &call.participants {
                        db.add_member(conv, p.user.id, now)?;
                    }
                }
                db.insert_call(&call)?;
                // The relay's counters as the call starts, before anything can end it.
                if inner.relay.get().is_some() {
                    let marks = call
                        .participants
                        .iter()
                        .filter_map(|p| Some((p.user.id, inner.relay_usage(p.user.id)?)))
                        .collect();
                    inner.marks().insert(call.id, marks);
                }
                db.emit(events);
                Ok(call)
            })
            .await?;
        self.inner.ringing.notify_one();
        Ok(InitiateResponse {
            call_id: call.id,
            status: call.status,
            participants: call.invitees().map(|p| p.view()).collect(),
        })
    }

    pub async fn answer(&self, caller: &User, call_id: Uuid) -> Result<AnswerResponse, CallError> {
        let user = caller.id;
        let ((), call) = self
            .transition(caller, call_id, move |call, now| {
                Ok(((), call.answer(user, now)?))
            })
            .await?;
        Ok(AnswerResponse {
            call_id,
            status: call.status,
            started_at: call.started_at,
        })
    }

    pub async fn reject(&self, caller: &User, call_id: Uuid) -> Result<RejectResponse, CallError> {
        let user = caller.id;
        let ((), call) = self
            .transition(caller, call_id, move |call, now| {
                Ok(((), call.reject(user, now)?))
            })
            .await?;
        Ok(RejectResponse {
            call_id,
            status: ParticipantStatus::Rejected,
            call_status: call.status,
        })
    }

    pub async fn end(&self, caller: &User, call_id: Uuid) -> Result<EndResponse, CallError> {
        let user = caller.id;
        let ((), call) = self
            .transition(caller, call_id, move |call, now| {
                Ok(((), call.end(user, now)?))
            })
            .await?;
        let over = !call.status.is_live();
        Ok(EndResponse {
            call_id,
            status: if over { "ended" } else { "left" },
            call_status: call.status,
            duration: call.duration_seconds,
            end_reason: call.end_reason.clone(),
        })
    }

    pub async fn media(
        &self,
        caller: &User,
        call_id: Uuid,
        req: MediaRequest,
    ) -> Result<MediaResponse, CallError> {
        if req.audio_enabled.is_none()
            && req.video_enabled.is_none()
            && req.screen_sharing.is_none()
        {
            return Err(CallError::InvalidField {
                field: "body".into(),
                message: "give at least one of audioEnabled, videoEnabled, screenSharing".into(),
            });
        }
        let change = MediaChange {
            audio_enabled: req.audio_enabled,
            video_enabled: req.video_enabled,
            screen_sharing: req.screen_sharing,
        };
        let user = caller.id;
        let (media_state, _) = self
            .transition(caller, call_id, move |call, now| {
                call.set_media(user, change, now)
            })
            .await?;
        Ok(MediaResponse {
            success: true,
            media_state,
        })
    }

    /// Every socket of `user` has been gone longer than the reconnect grace: they leave
    /// `call_id` (see [`Call::connection_lost`]).
    pub async fn connection_lost(&self, user: &User, call_id: Uuid) -> Result<(), CallError> {
        let id = user.id;
        self.transition(user, call_id, move |call, now| {
            Ok(((), call.connection_lost(id, now)?))
        })
        .await
        .map(|_| ())
    }

    /// The reconnect grace: a user joined in a live call whose last socket went (a
    /// [`Departure`] from `hub`) and who has not reconnected `reconnect_grace` later leaves
    /// every call they are still joined in. Runs until the task is dropped.
    pub async fn run_reconnect_grace(self, hub: Arc<Hub>) {
        let grace = self.inner.settings.reconnect_grace;
        let mut departures = hub.watch_departures();
        // Departures arrive in time order and share one grace: their deadlines are in order.
        let mut due: VecDeque<Departure> = VecDeque::new();
        loop {
            let next = due.front().map(|d| d.at + grace);
            tokio::select! {
                d = departures.recv() => match d {
                    Some(d) => due.push_back(d),
                    None => return,
                },
                () = sleep_until_some(next) => {
                    let Some(d) = due.pop_front() else { continue };
                    // The token's name and email are not at hand: a bare user keeps the stored.
                    let who = User { id: d.user, name: None, email: None };
                    let mut failed = false;
                    for call in hub.gone_for_good(&d) {
                        match self.connection_lost(&who, call).await {
                            Ok(()) => tracing::info!(user = %d.user, %call, "left the call: no connection within the reconnect grace"),
                            Err(CallError::Store(e)) => {
                                tracing::warn!(user = %d.user, %call, error = %e, "connection loss not stored; trying again after another grace");
                                failed = true;
                            }
                            // Refused: they left, or the call ended, meanwhile.
                            Err(e) => tracing::debug!(user = %d.user, %call, error = %e, "connection loss not applied"),
                        }
                    }
                    if failed {
                        // Still away and joined: a new departure, due a grace from now.
                        hub.recheck_presence(d.user);
                    }
                }
            }
        }
    }

    /// `call:stats`: `caller`, joined in the live call `call_id`, reports their connection.
    /// Stored in their `media_stats` (a running summary) and `connection_quality`; the other
    /// live participants are sent `call:quality`. At most one report per [`STATS_EVERY`].
    pub async fn record_stats(
        &self,
        caller: &User,
        call_id: Uuid,
        figures: Figures,
    ) -> Result<StatsResponse, CallError> {
        figures
            .validate()
            .map_err(|(field, message)| CallError::InvalidField {
                field: field.into(),
                message,
            })?;
        let user = caller.id;
        self.job(caller, move |db, now| {
            let call = visible_call(db, user, call_id)?;
            let me = call.participant(user).ok_or(Refusal::NotParticipant)?;
            if !call.status.is_live() || me.status != ParticipantStatus::Joined {
                return Err(Refusal::Conflict(format!(
                    "only a participant joined in a live call reports stats (you are {}, the call is {})",
                    me.status, call.status
                ))
                .into());
            }
            let mut stats: MediaStats = db
                .media_stats(call_id)?
                .into_iter()
                .find(|(u, _)| *u == user)
                .and_then(|(_, json)| serde_json::from_str(&json).ok())
                .unwrap_or_default();
            if stats.last_at.is_some_and(|t| now < t + STATS_EVERY) {
                return Err(CallError::TooFrequent {
                    what: "call:stats",
                    every: STATS_EVERY,
                });
            }
            let quality = figures.grade();
            stats.add(&figures, quality, now);
            let json = serde_json::to_string(&stats).unwrap_or_else(|_| "{}".into());
            db.set_media_stats(me.id, &json, quality.as_str(), now)?;
            let to = call
                .participants
                .iter()
                .filter(|p| p.user.id != user && p.status == ParticipantStatus::Joined)
                .map(|p| p.user.id)
                .collect();
            db.emit(vec![Event {
                to,
                payload: Payload::Quality(QualityReport {
                    call_id,
                    user_id: user,
                    quality,
                    stats: figures,
                }),
            }]);
            Ok(StatsResponse {
                success: true,
                quality,
            })
        })
        .await
    }

    /// A socket of `user` connected with a valid token: their name and email are recorded from
    /// it (see [`Db::record_user`]), as any REST request of theirs does, so that an invitee
    /// who has only ever connected a socket is named in the calls.
    pub async fn record_user(&self, user: &User) -> Result<(), CallError> {
        self.job(user, |_, _| Ok(())).await
    }

    /// The hub delivered `call:incoming` to one of `user`'s sockets.
    pub async fn ring(&self, user: &User, call_id: Uuid) -> Result<(), CallError> {
        let id = user.id;
        self.transition(user, call_id, move |call, now| {
            call.ring(id, now);
            Ok(((), Vec::new()))
        })
        .await
        .map(|_| ())
    }

    pub async fn get(&self, caller: &User, call_id: Uuid) -> Result<CallResponse, CallError> {
        let user = caller.id;
        let call = self
            .job(caller, move |db, _| visible_call(db, user, call_id))
            .await?;
        Ok(CallResponse {
            call: CallView::from(&call),
        })
    }

    pub async fn history(
        &self,
        caller: &User,
        conversation: Option<Uuid>,
        before: Option<Timestamp>,
        limit: u32,
    ) -> Result<HistoryResponse, CallError> {
        let user = caller.id;
        let limit = limit.clamp(1, HISTORY_MAX_LIMIT);
        let calls = self
            .job(caller, move |db, _| {
                if let Some(c) = conversation {
                    if !db.is_member(c, user)? {
                        return Err(CallError::NotFound(Missing::Conversation));
                    }
                }
                Ok(db.history(user, conversation, before, limit)?)
            })
            .await?;
        let next_before = (calls.len() == limit as usize)
            .then(|| calls.last().map(|c| c.created_at))
            .flatten();
        Ok(HistoryResponse {
            calls: calls.iter().map(CallView::from).collect(),
            next_before,
        })
    }

    /// TURN credentials for `caller`: the ones last minted if they are valid for more than
    /// half the TTL still, else new ones, recorded. So a client asking often gets the same
    /// credentials, and the table grows with users, not with requests.
    pub async fn turn_credentials(&self, caller: &User) -> Result<TurnCredentials, CallError> {
        let turn = self.inner.turn.clone();
        let user = caller.id;
        self.job(caller, move |db, now| {
            if let Some((username, expires)) = db.turn_credential(user, now + turn.ttl / 2)? {
                if let Some(body) = turn.reissue(&username, expires) {
                    return Ok(body);
                }
            }
            let body = turn.issue(&user.to_string(), now, turn.ttl);
            let expires = Timestamp::from_unix_millis(
                now.unix_seconds()
                    .saturating_add(turn.ttl.as_secs())
                    .saturating_mul(1000),
            );
            db.insert_turn_credential(
                user,
                &body.credentials.username,
                &body.credentials.credential,
                expires,
                now,
            )?;
            Ok(body)
        })
        .await
    }

    /// Ends the calls a crash left live (reason `server-restart`); returns how many.
    pub async fn reconcile(&self) -> Result<usize, CallError> {
        self.end_live_calls(reason::SERVER_RESTART).await
    }

    /// Ends every live call with `why` (restart reconciliation, shutdown), in one job, each
    /// call in its own savepoint (one that cannot be ended is logged and left for the next
    /// start); returns how many were ended.
    pub async fn end_live_calls(&self, why: &'static str) -> Result<usize, CallError> {
        let inner = self.inner.clone();
        self.inner
            .store
            .run(move |db| {
                let now = Timestamp::now();
                let mut ended = 0;
                for id in db.live_calls()? {
                    let done = db.nested(|db| {
                        let Some(mut call) = db.load_call(id)? else {
                            return Ok::<_, StoreError>(false);
                        };
                        let before = call.clone();
                        let events = call.end_by_server(why, now);
                        inner.save(db, &before, &mut call)?;
                        db.emit(events);
                        Ok(before.status.is_live())
                    });
                    match done {
                        Ok(done) => ended += usize::from(done),
                        Err(e) => tracing::error!(call = %id, error = %e, "cannot end a live call"),
                    }
                }
                Ok(ended)
            })
            .await
    }

    /// The ring timeout for every call past it; returns when the next one is due.
    pub async fn expire_ringing(&self, now: Timestamp) -> Result<Option<Timestamp>, CallError> {
        let timeout = self.inner.settings.ring_timeout;
        let inner = self.inner.clone();
        self.inner
            .store
            .run(move |db| {
                let (_, due) = db.ringing_calls(now - timeout)?;
                // Each call in its own savepoint: one that fails is logged, not a stop to the
                // others (it stays due, and is tried again at the next sweep).
                let mut failed = false;
                for id in due {
                    let expired = db.nested(|db| {
                        if let Some(mut call) = db.load_call(id)? {
                            let before = call.clone();
                            let events = call.expire_ringing(timeout, now);
                            inner.save(db, &before, &mut call)?;
                            db.emit(events);
                        }
                        Ok::<_, StoreError>(())
                    });
                    if let Err(e) = expired {
                        tracing::error!(call = %id, error = %e, "cannot apply the ring timeout");
                        failed = true;
                    }
                }
                let (first, _) = db.ringing_calls(Timestamp::from_unix_millis(0))?;
                let next = first.map(|t| t + timeout);
                // A failed call is due already: retry in a few seconds, not in a busy loop.
                Ok(if failed {
                    Some(now + Duration::from_secs(5))
                } else {
                    next
                })
            })
            .await
    }

    /// The ring timer: sleeps until the next ring deadline (or a new call), then expires what
    /// is due. Runs until the task is dropped.
    pub async fn run_ring_timer(self) {
        loop {
            let now = Timestamp::now();
            let wait = match self.expire_ringing(now).await {
                Ok(Some(next)) => {
                    Duration::from_millis(next.unix_millis().saturating_sub(now.unix_millis()))
                }
                Ok(None) => Duration::from_secs(3600),
                Err(e) => {
                    tracing::error!(error = %e, "ring timeout sweep failed; retrying in 5 s");
                    Duration::from_secs(5)
                }
            };
            // A little past the deadline, so that it has passed by the clock we read then.
            let wait = wait + Duration::from_millis(5);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.ringing.notified() => {}
            }
        }
    }

    /// The spec's `cleanup_expired_turn_credentials()`; returns how many rows went.
    pub async fn delete_expired_turn_credentials(
        &self,
        now: Timestamp,
    ) -> Result<usize, CallError> {
        self.inner
            .store
            .run(move |db| Ok(db.delete_expired_turn_credentials(now)?))
            .await
    }

    /// Deletes expired TURN credentials every `every`. Runs until the task is dropped.
    pub async fn run_credential_cleanup(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.delete_expired_turn_credentials(Timestamp::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "expired turn credentials deleted"),
                Err(e) => tracing::error!(error = %e, "turn credential cleanup failed"),
            }
        }
    }

    // -- admin ------------------------------------------------------------------------------

    pub async fn admin_upsert_user(&self, user: User) -> Result<UserView, CallError> {
        self.inner
            .store
            .run(move |db| {
                db.upsert_user(&user, Timestamp::now())?;
                Ok(UserView::from(user))
            })
            .await
    }

    /// Creates or updates a conversation; its members become exactly `members` (users not
    /// known yet are created, to be named by their first token).
    pub async fn admin_put_conversation(
        &self,
        id: Uuid,
        name: Option<String>,
        members: Vec<Uuid>,
    ) -> Result<ConversationView, CallError> {
        self.inner
            .store
            .run(move |db| {
                let now = Timestamp::now();
                db.upsert_conversation(id, name.as_deref(), now)?;
                for &m in &members {
                    db.ensure_user(m, now)?;
                    db.add_member(id, m, now)?;
                }
                db.retain_members(id, &members)?;
                conversation_view(db, id)
            })
            .await
    }

    /// Adds `user` (created, or renamed to their name) to conversation `id` (created, named
    /// `name`, if new), unless that would make it more than `max_members`: the demo's sign-in.
    pub async fn join_conversation(
        &self,
        id: Uuid,
        name: &'static str,
        user: User,
        max_members: usize,
    ) -> Result<ConversationView, CallError> {
        self.inner
            .store
            .run(move |db| {
                let now = Timestamp::now();
                db.upsert_conversation(id, None, now)?;
                let before = conversation_view(db, id)?;
                if before.name.is_none() {
                    db.upsert_conversation(id, Some(name), now)?;
                }
                let member = before.members.iter().any(|m| m.id == user.id);
                if !member && before.members.len() >= max_members {
                    let full = format!("the conversation is full ({max_members} members)");
                    return Err(Refusal::Conflict(full).into());
                }
                db.upsert_user(&user, now)?;
                db.add_member(id, user.id, now)?;
                conversation_view(db, id)
            })
            .await
    }

    pub async fn admin_conversation(&self, id: Uuid) -> Result<ConversationView, CallError> {
        self.inner
            .store
            .run(move |db| conversation_view(db, id))
            .await
    }
}

fn conversation_view(db: &Db, id: Uuid) -> Result<ConversationView, CallError> {
    let c = db
        .conversation(id)?
        .ok_or(CallError::NotFound(Missing::Conversation))?;
    Ok(ConversationView {
        id,
        name: c.name,
        members: c.members.into_iter().map(UserView::from).collect(),
    })
}

/// The call, if it exists and `user` is a member of its conversation.
fn visible_call(db: &Db, user: Uuid, call_id: Uuid) -> Result<Call, CallError> {
    let call = db
        .load_call(call_id)?
        .ok_or(CallError::NotFound(Missing::Call))?;
    if !db.is_member(call.conversation_id, user)? {
        return Err(CallError::NotFound(Missing::Call));
    }
    Ok(call)
}
