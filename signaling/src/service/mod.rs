//! The call operations, as the REST API (and the hub) perform them: each one is a single store
//! job — authorize, load, apply one state-machine transition, write what changed, raise its
//! events — so it commits whole or not at all, and its events are delivered only once it has.
//!
//! Visibility: a call is visible to the members of its conversation; to anyone else it does
//! not exist (404). Roles within a visible call are the state machine's (403).
//!
//! Layout: this file holds the service, its errors and the job plumbing every operation runs
//! through; `views` the request and response bodies; `calls` the call operations; `tasks` the
//! background tasks (ring timer, reconnect grace, credential cleanup) and the end of live calls at
//! restart and shutdown; `admin` the admin API's users, conversations and revocations.

mod admin;
mod calls;
mod media;
mod tasks;
#[cfg(test)]
mod tests;
mod views;

pub use views::{
    AnswerResponse, CallResponse, CallView, ConversationView, EndResponse, HistoryResponse,
    InitiateRequest, InitiateResponse, MediaRequest, MediaResponse, RejectResponse, RevokeResponse,
    StatsResponse, UserView, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT,
};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_sfu::io::SfuHandle;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::call::{Call, InitiateError, Refusal, User};
use crate::event::Event;
use crate::quality::{CallQuality, MediaStats, ParticipantQuality, RelayUsage};
use crate::store::{Db, Store, StoreError};
use crate::time::{Clock, Timestamp};
use crate::turn::TurnIssuer;

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
    /// The most live calls a user may be joined in when they start or answer another.
    pub max_live_per_user: usize,
    /// Calls of this many participants or more (the initiator included) go through the SFU;
    /// none when no SFU runs.
    pub sfu_from: Option<usize>,
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
    /// 409: the caller is already joined in this many live calls.
    #[error(
        "you are already in {max} live calls, the most (calls.max_live_per_user); end one first"
    )]
    TooManyCalls { max: usize },
    /// 429: the same report again too soon.
    #[error("{what} at most once every {} ms", .every.as_millis())]
    TooFrequent { what: &'static str, every: Duration },
    /// 409: the call's media does not go through the SFU (a 1:1 call, or no SFU runs).
    #[error("this call's media does not go through the SFU")]
    NotOnSfu,
    /// 409: not in the call's SFU room: not a joined participant of the live call (an offer),
    /// or no offer accepted yet (an answer, a layer).
    #[error("not in this call's SFU room: join the call, then send call:sfu-offer")]
    NotInRoom,
    /// 503: the SFU is not running.
    #[error("the SFU is unavailable; try again")]
    SfuUnavailable,
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

/// The call operations; cheap to clone.
#[derive(Clone)]
pub struct CallService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    settings: Settings,
    turn: TurnIssuer,
    /// Every `now` the operations and the background tasks use.
    clock: Clock,
    /// Wakes the ring timer when a call starts.
    ringing: Notify,
    /// What the relay has carried for a user so far, when the daemon runs one.
    relay: Option<RelayUsageFn>,
    /// Each live call's reading of its participants' relay counters when it started.
    relay_marks: Mutex<HashMap<Uuid, Vec<(Uuid, RelayUsage)>>>,
    /// The SFU of group calls, when one runs.
    sfu: Option<Arc<SfuHandle>>,
}

/// Reads what the relay has carried for a user so far: their allocations' counters, which
/// only grow (the daemon reads them from the relay, for the user of the credentials the API
/// minted them). Calls read them when they start and end, for `quality_stats`.
pub type RelayUsageFn = Arc<dyn Fn(Uuid) -> RelayUsage + Send + Sync>;

/// A transition of the state machine made by a user, which returns only its events.
type Act = fn(&mut Call, Uuid, Timestamp) -> Result<Vec<Event>, Refusal>;

/// A participant reports their connection at most this often (`call:stats`).
pub const STATS_EVERY: Duration = Duration::from_secs(1);

impl Inner {
    fn relay_usage(&self, user: Uuid) -> Option<RelayUsage> {
        self.relay.as_ref().map(|f| f(user))
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Vec<(Uuid, RelayUsage)>>> {
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
                    .and_then(|(_, mark)| Some(self.relay_usage(id)?.since(*mark)));
                ParticipantQuality::new(id, stats.get(&id), relay)
            })
            .collect();
        call.quality_stats = serde_json::to_string(&CallQuality::new(participants)).ok();
        Ok(())
    }
}

impl CallService {
    /// The service over `store`, minting TURN credentials with `turn`. `relay`: what the
    /// relay carried for a user (without it, `quality_stats` has no relay figures). Every
    /// operation reads the time from `clock`.
    pub fn new(
        store: Store,
        settings: Settings,
        turn: TurnIssuer,
        relay: Option<RelayUsageFn>,
        sfu: Option<Arc<SfuHandle>>,
        clock: Clock,
    ) -> CallService {
        CallService {
            inner: Arc::new(Inner {
                store,
                settings,
                turn,
                clock,
                ringing: Notify::new(),
                relay,
                relay_marks: Mutex::new(HashMap::new()),
                sfu,
            }),
        }
    }

    /// How long the TURN credentials it mints are valid.
    pub(crate) fn turn_ttl(&self) -> Duration {
        self.inner.turn.ttl
    }

    /// The time by the service's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
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
        self.at_now(move |db, now| {
            db.record_user(&caller, now)?;
            f(db, now)
        })
        .await
    }

    /// Runs one store job at the clock's time, read on the store thread as the job starts.
    async fn at_now<T, F>(&self, f: F) -> Result<T, CallError>
    where
        F: FnOnce(&mut Db, Timestamp) -> Result<T, CallError> + Send + 'static,
        T: Send + 'static,
    {
        let clock = self.inner.clock.clone();
        self.inner.store.run(move |db| f(db, clock.now())).await
    }

    /// `caller` does `act` to the call `call_id` (see [`CallService::transition`]); returns
    /// the call after it.
    async fn act(&self, caller: &User, call_id: Uuid, act: Act) -> Result<Call, CallError> {
        let user = caller.id;
        let ((), call) = self
            .transition(caller, call_id, move |call, now| {
                Ok(((), act(call, user, now)?))
            })
            .await?;
        Ok(call)
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
        self.transition_checked(caller, call_id, f, |_| Ok(()))
            .await
    }

    /// [`CallService::transition`], refused by `check` (given the store, where the transition
    /// is not yet) when the call took it but something else forbids it.
    async fn transition_checked<T, F, C>(
        &self,
        caller: &User,
        call_id: Uuid,
        f: F,
        check: C,
    ) -> Result<(T, Call), CallError>
    where
        F: FnOnce(&mut Call, Timestamp) -> Result<(T, Vec<Event>), Refusal> + Send + 'static,
        C: FnOnce(&Db) -> Result<(), CallError> + Send + 'static,
        T: Send + 'static,
    {
        let caller = caller.clone();
        let ring_timeout = self.inner.settings.ring_timeout;
        let inner = self.inner.clone();
        self.inner
            .store
            .run(move |db| {
                let now = inner.clock.now();
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
                    check(db)?;
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
