//! Webhooks to the host application: what a call's transitions tell it, queued durably.
//!
//! Each transition the store saves (`Db::insert_call`, `Db::save_call`) is compared with the
//! call before it, and what changed becomes webhook events ([`for_insert`], [`for_save`]),
//! which the store writes to its `webhook_outbox` table (`store/outbox.rs`) in the same
//! transaction as the transition: a committed transition always has its webhook rows, a
//! rolled-back one never does. One row per event and URL, so that each URL is delivered to in
//! creation order and retried on its own. The daemon's delivery task reads the rows back
//! (`Db::webhook_batch`) once they are committed, posts them, and deletes or reschedules each.
//!
//! This module knows nothing of the store: it turns calls into bodies, and [`Webhooks`] says
//! where they go and wakes the delivery after a commit.
//!
//! Events (`type`): `call.initiated`, `call.ringing_user_offline` (an invitee with no socket
//! connected when the call was made: a push notification's cue), `call.answered` (the first
//! answer: the call is active), `call.participant_joined`, `call.participant_left` (from a call
//! that goes on), `call.rejected`, `call.missed` (one per invitee who did not answer),
//! `call.ended` (with `duration` and `endReason`). The body's fields are [`Body`]'s.

use std::cell::Cell;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;
use uuid::Uuid;

use crate::call::{Call, CallStatus, CallType, EndReason, ParticipantStatus};
use crate::time::Timestamp;

/// At most this many participants are listed in a body (`participantCount` has them all):
/// a body stays a few tens of KiB whatever `calls.max_participants` is.
pub const MAX_LISTED: usize = 50;

/// Webhooks as the store writes them: where to, who is online, whom to wake.
pub struct Webhooks {
    urls: Vec<String>,
    online: Arc<dyn Fn(Uuid) -> bool + Send + Sync>,
    wake: watch::Sender<u64>,
    /// Set when the current batch wrote a row: the delivery task is woken after its commit.
    written: Cell<bool>,
}

impl Webhooks {
    /// `urls`: one row per event for each. `online`: whether a user has a socket connected
    /// now (the hub's), for `call.ringing_user_offline`.
    pub fn new(urls: Vec<String>, online: Arc<dyn Fn(Uuid) -> bool + Send + Sync>) -> Webhooks {
        Webhooks {
            urls,
            online,
            wake: watch::channel(0).0,
            written: Cell::new(false),
        }
    }

    /// A receiver that changes after every commit that queued a webhook.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    /// The URLs each event is queued for.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Whether the current batch queued a row so far.
    pub(crate) fn queued(&self) -> bool {
        self.written.get()
    }

    /// After a rollback: what [`Webhooks::queued`] said before the rolled-back work.
    pub(crate) fn set_queued(&self, queued: bool) {
        self.written.set(queued);
    }

    /// After a commit: wakes the delivery task if the batch queued something.
    pub(crate) fn committed(&self) {
        if self.written.take() {
            self.wake.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    pub(crate) fn is_online(&self, user: Uuid) -> bool {
        (self.online)(user)
    }
}

/// A webhook's JSON body.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Body {
    /// The event's id: the same on every retry and for every URL (de-duplicate by it).
    pub id: Uuid,
    /// `call.initiated`, `call.ended`, ...
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the transition happened.
    pub created_at: Timestamp,
    pub call_id: Uuid,
    pub conversation_id: Uuid,
    pub call_type: CallType,
    pub initiated_by: Uuid,
    /// The call's status after the transition.
    pub call_status: CallStatus,
    /// Whom the event is about (every type but `call.initiated` and `call.ended`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    pub started_at: Option<Timestamp>,
    /// `call.ended` only, with `duration` (seconds from the first answer, 0 if none) and
    /// `endReason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    pub participant_count: usize,
    /// The first [`MAX_LISTED`] participants, the initiator first.
    pub participants: Vec<Listed>,
}

/// A participant as a webhook lists them.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    pub user_id: Uuid,
    pub user_name: Option<String>,
    pub user_identifier: Option<String>,
    pub status: ParticipantStatus,
}

fn body(kind: &'static str, call: &Call, user: Option<Uuid>, at: Timestamp) -> Body {
    let over = !call.status.is_live();
    Body {
        id: Uuid::new_v4(),
        kind,
        created_at: at,
        call_id: call.id,
        conversation_id: call.conversation_id,
        call_type: call.kind,
        initiated_by: call.initiated_by,
        call_status: call.status,
        user_id: user,
        started_at: call.started_at,
        ended_at: if kind == ENDED { call.ended_at } else { None },
        duration: if kind == ENDED && over {
            call.duration_seconds
        } else {
            None
        },
        end_reason: if kind == ENDED { call.end_reason } else { None },
        participant_count: call.participants.len(),
        participants: call
            .participants
            .iter()
            .take(MAX_LISTED)
            .map(|p| Listed {
                user_id: p.user.id,
                user_name: p.user.name.clone(),
                user_identifier: p.user.email.clone(),
                status: p.status,
            })
            .collect(),
    }
}

pub const INITIATED: &str = "call.initiated";
pub const RINGING_USER_OFFLINE: &str = "call.ringing_user_offline";
pub const ANSWERED: &str = "call.answered";
pub const PARTICIPANT_JOINED: &str = "call.participant_joined";
pub const PARTICIPANT_LEFT: &str = "call.participant_left";
pub const REJECTED: &str = "call.rejected";
pub const MISSED: &str = "call.missed";
pub const ENDED: &str = "call.ended";

/// The events of a new call: `call.initiated`, then `call.ringing_user_offline` for each
/// invitee `online` says has no socket.
pub fn for_insert(call: &Call, online: impl Fn(Uuid) -> bool) -> Vec<Body> {
    let at = call.created_at;
    let mut out = vec![body(INITIATED, call, None, at)];
    for p in call.invitees() {
        if p.status.is_pending() && !online(p.user.id) {
            out.push(body(RINGING_USER_OFFLINE, call, Some(p.user.id), at));
        }
    }
    out
}

/// The events of a transition from `before` to `after` (the same call), in this order:
/// `call.answered` (the first answer), `call.participant_joined` for each who joined,
/// `call.rejected` and `call.missed` for each invitee who did, `call.participant_left` for
/// each who left a call that goes on, `call.ended` when it is over.
pub fn for_save(before: &Call, after: &Call) -> Vec<Body> {
    let at = after.updated_at;
    let mut out = Vec::new();
    let was = |user: Uuid| before.participant(user).map(|p| p.status);
    if before.started_at.is_none() && after.started_at.is_some() {
        // The first answer: whoever is joined now and was not.
        let by = after
            .participants
            .iter()
            .find(|p| p.status == ParticipantStatus::Joined && was(p.user.id) != Some(p.status))
            .map(|p| p.user.id);
        out.push(body(ANSWERED, after, by, at));
    }
    let mut joined = Vec::new();
    let mut settled = Vec::new();
    let mut left = Vec::new();
    for p in &after.participants {
        let old = was(p.user.id);
        if old == Some(p.status) {
            continue;
        }
        match p.status {
            ParticipantStatus::Joined => {
                joined.push(body(PARTICIPANT_JOINED, after, Some(p.user.id), at))
            }
            ParticipantStatus::Rejected => settled.push(body(REJECTED, after, Some(p.user.id), at)),
            ParticipantStatus::Missed => settled.push(body(MISSED, after, Some(p.user.id), at)),
            ParticipantStatus::Left if after.status.is_live() => {
                left.push(body(PARTICIPANT_LEFT, after, Some(p.user.id), at))
            }
            _ => {}
        }
    }
    out.extend(joined);
    out.extend(settled);
    out.extend(left);
    if before.status.is_live() && !after.status.is_live() {
        out.push(body(ENDED, after, None, at));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::User;
    use std::time::Duration;

    fn user(n: u128, name: &str) -> User {
        User {
            id: Uuid::from_u128(n),
            name: Some(name.into()),
            email: None,
        }
    }

    fn call(invitees: &[User]) -> Call {
        let mut ids = 100u128;
        Call::initiate(
            Uuid::from_u128(50),
            Uuid::from_u128(60),
            CallType::Video,
            user(1, "Alice"),
            invitees.to_vec(),
            10,
            move || {
                ids += 1;
                Uuid::from_u128(ids)
            },
            Timestamp::from_unix_millis(1_736_519_400_000),
        )
        .unwrap()
        .0
    }

    fn kinds(events: &[Body]) -> Vec<(&'static str, Option<u128>)> {
        events
            .iter()
            .map(|e| (e.kind, e.user_id.map(|u| u.as_u128())))
            .collect()
    }

    #[test]
    fn a_new_call_is_initiated_and_offline_invitees_are_named() {
        let c = call(&[user(2, "Bob"), user(3, "Carol")]);
        let events = for_insert(&c, |u| u == Uuid::from_u128(2));
        assert_eq!(
            kinds(&events),
            [(INITIATED, None), (RINGING_USER_OFFLINE, Some(3))]
        );
        let json = serde_json::to_value(&events[0]).unwrap();
        assert_eq!(json["type"], "call.initiated");
        assert_eq!(json["callType"], "video");
        assert_eq!(json["createdAt"], "2025-01-10T14:30:00.000Z");
        assert_eq!(json["participantCount"], 3);
        assert_eq!(json["participants"][0]["userName"], "Alice");
        assert_eq!(json["participants"][1]["status"], "invited");
        assert!(json.get("userId").is_none() && json.get("duration").is_none());
        assert_ne!(events[0].id, events[1].id);
    }

    #[test]
    fn a_call_answered_then_hung_up() {
        let start = Timestamp::from_unix_millis(1_736_519_400_000);
        let c0 = call(&[user(2, "Bob")]);
        let mut c1 = c0.clone();
        c1.answer(Uuid::from_u128(2), start + Duration::from_secs(3))
            .unwrap();
        assert_eq!(
            kinds(&for_save(&c0, &c1)),
            [(ANSWERED, Some(2)), (PARTICIPANT_JOINED, Some(2))]
        );
        let mut c2 = c1.clone();
        c2.end(Uuid::from_u128(1), start + Duration::from_secs(45))
            .unwrap();
        let events = for_save(&c1, &c2);
        // A 1:1 call: the hang-up ends it; nobody "leaves" a call that goes on.
        assert_eq!(kinds(&events), [(ENDED, None)]);
        let json = serde_json::to_value(&events[0]).unwrap();
        assert_eq!(json["duration"], 42);
        assert_eq!(json["endReason"], "ended-by-user");
        assert_eq!(json["callStatus"], "ended");
        assert_eq!(json["endedAt"], "2025-01-10T14:30:45.000Z");
    }

    #[test]
    fn rejections_misses_and_leaving_a_group() {
        let start = Timestamp::from_unix_millis(1_736_519_400_000);
        let c0 = call(&[user(2, "Bob"), user(3, "Carol"), user(4, "Dan")]);
        let mut c1 = c0.clone();
        c1.reject(Uuid::from_u128(3), start).unwrap();
        assert_eq!(kinds(&for_save(&c0, &c1)), [(REJECTED, Some(3))]);
        let mut c2 = c1.clone();
        c2.answer(Uuid::from_u128(2), start).unwrap();
        let mut c3 = c2.clone();
        c3.expire_ringing(Duration::from_secs(30), start + Duration::from_secs(30));
        assert_eq!(kinds(&for_save(&c2, &c3)), [(MISSED, Some(4))]);
        let mut c4 = c3.clone();
        c4.answer(Uuid::from_u128(3), start + Duration::from_secs(31))
            .unwrap();
        let mut c5 = c4.clone();
        c5.end(Uuid::from_u128(2), start + Duration::from_secs(40))
            .unwrap();
        assert_eq!(kinds(&for_save(&c4, &c5)), [(PARTICIPANT_LEFT, Some(2))]);
        // Nothing changed, nothing said (a ring, a media change).
        assert!(for_save(&c5, &c5).is_empty());
    }

    #[test]
    fn a_cancelled_call_is_missed_by_its_invitee_and_ends() {
        let c0 = call(&[user(2, "Bob")]);
        let mut c1 = c0.clone();
        c1.end(
            Uuid::from_u128(1),
            Timestamp::from_unix_millis(1_736_519_405_000),
        )
        .unwrap();
        let events = for_save(&c0, &c1);
        assert_eq!(kinds(&events), [(MISSED, Some(2)), (ENDED, None)]);
        assert_eq!(
            events[1].end_reason.map(EndReason::as_str),
            Some("cancelled")
        );
        assert_eq!(events[1].duration, Some(0));
    }

    #[tokio::test]
    async fn rows_commit_with_their_transition_and_wake_the_delivery() {
        use crate::event::LogSink;
        use crate::store::{Store, StoreError};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::open(&path, Arc::new(LogSink), None).unwrap();
        let c0 = call(&[user(2, "Bob")]);
        let mut c1 = c0.clone();
        c1.answer(Uuid::from_u128(2), c0.created_at + Duration::from_secs(2))
            .unwrap();
        let new = c0.clone();
        store
            .run(move |db| {
                for p in &new.participants {
                    db.upsert_user(&p.user, new.created_at)?;
                }
                db.upsert_conversation(new.conversation_id, None, new.created_at)?;
                db.insert_call(&new)
            })
            .await
            .unwrap();
        // Off: nothing queued.
        assert_eq!(store.run(|db| db.webhook_depth()).await.unwrap(), 0);
        store.close().await;

        let urls = vec!["http://a.test/".to_owned(), "http://b.test/".to_owned()];
        let webhooks = Webhooks::new(urls, Arc::new(|_| true));
        let mut wake = webhooks.subscribe();
        let store = Store::open(&path, Arc::new(LogSink), Some(webhooks)).unwrap();
        let depth = || store.run(|db| db.webhook_depth());
        wake.borrow_and_update();
        // A transition whose job fails: its rows go with it, and nobody is woken.
        let (a, b) = (c0.clone(), c1.clone());
        let refused = store
            .run(move |db| {
                db.save_call(&a, &b)?;
                Err::<(), _>(StoreError::Corrupt("refused".into()))
            })
            .await;
        assert!(refused.is_err());
        assert_eq!(depth().await.unwrap(), 0);
        assert!(!wake.has_changed().unwrap());
        // Committed: two events (answered, joined) for each URL, and a wake-up.
        let (a, b) = (c0.clone(), c1.clone());
        store.run(move |db| db.save_call(&a, &b)).await.unwrap();
        assert_eq!(depth().await.unwrap(), 4);
        assert!(wake.has_changed().unwrap());
        let batch = |url: &'static str| store.run(move |db| db.webhook_batch(url, 10));
        let (qa, qb) = (
            batch("http://a.test/").await.unwrap(),
            batch("http://b.test/").await.unwrap(),
        );
        let kinds: Vec<&str> = qa.iter().map(|p| p.kind.as_str()).collect();
        assert_eq!(kinds, [ANSWERED, PARTICIPANT_JOINED]);
        assert!(qa[0].seq < qa[1].seq && qa[0].attempts == 0);
        assert_eq!(qa[0].next_at, c1.updated_at);
        // The same event, the same id and body, for each URL.
        assert_eq!(
            qa.iter().map(|p| (p.event_id, &p.body)).collect::<Vec<_>>(),
            qb.iter().map(|p| (p.event_id, &p.body)).collect::<Vec<_>>()
        );
        let body: serde_json::Value = serde_json::from_str(&qa[0].body).unwrap();
        assert_eq!(body["id"], qa[0].event_id.to_string());
        assert_eq!(body["userId"], Uuid::from_u128(2).to_string());
        // A failure is recorded on its row; a delivery removes it; a URL no longer
        // configured loses its rows.
        let (seq, later) = (qa[0].seq, c1.updated_at + Duration::from_secs(1));
        store
            .run(move |db| db.webhook_retry(seq, 1, later, "answered 500"))
            .await
            .unwrap();
        let qa = batch("http://a.test/").await.unwrap();
        assert_eq!((qa[0].attempts, qa[0].next_at), (1, later));
        store.run(move |db| db.webhook_done(seq)).await.unwrap();
        assert_eq!(batch("http://a.test/").await.unwrap().len(), 1);
        let keep = vec!["http://a.test/".to_owned()];
        let gone = store
            .run(move |db| db.webhook_forget_others(&keep))
            .await
            .unwrap();
        assert_eq!((gone, depth().await.unwrap()), (2, 1));
        store.close().await;
    }

    #[test]
    fn a_body_lists_a_bounded_number_of_participants() {
        let many: Vec<User> = (2..=80).map(|n| user(n, "x")).collect();
        let mut c = call(&many[..9]);
        // Past the state machine's own limit, as a large `max_participants` would allow.
        let extra = c.participants[1].clone();
        for (i, u) in many[9..].iter().enumerate() {
            let mut p = extra.clone();
            p.id = Uuid::from_u128(1000 + i as u128);
            p.user = u.clone();
            c.participants.push(p);
        }
        let b = body(INITIATED, &c, None, c.created_at);
        assert_eq!(b.participant_count, 80);
        assert_eq!(b.participants.len(), MAX_LISTED);
    }
}
