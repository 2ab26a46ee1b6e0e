//! Webhooks to the host application: what a call's transitions tell it, queued durably.
//!
//! Each transition the store saves ([`Db::insert_call`], [`Db::save_call`]) is compared with
//! the call before it, and what changed becomes webhook events ([`for_insert`],
//! [`for_save`]), written to the `webhook_outbox` table in the same transaction as the
//! transition: a committed transition always has its webhook rows, a rolled-back one never
//! does. One row per event and URL, so that each URL is delivered to in creation order and
//! retried on its own. The daemon's delivery task reads the rows back ([`Db::webhook_batch`])
//! once they are committed, posts them, and deletes or reschedules each.
//!
//! Events (`type`): `call.initiated`, `call.ringing_user_offline` (an invitee with no socket
//! connected when the call was made: a push notification's cue), `call.answered` (the first
//! answer: the call is active), `call.participant_joined`, `call.participant_left` (from a call
//! that goes on), `call.rejected`, `call.missed` (one per invitee who did not answer),
//! `call.ended` (with `duration` and `endReason`). The body's fields are [`Body`]'s.

use std::cell::Cell;
use std::sync::Arc;

use rusqlite::params;
use serde::Serialize;
use tokio::sync::watch;
use uuid::Uuid;

use crate::call::{Call, CallStatus, CallType, ParticipantStatus};
use crate::store::{Db, StoreError};
use crate::time::Timestamp;

/// The outbox table: schema version 2, appended to the store's migrations.
pub const MIGRATION: &str = "
-- Webhooks waiting to be delivered (signaling/src/webhook.rs): one row per event and URL,
-- delivered per URL in `seq` order, deleted once delivered or given up.
CREATE TABLE webhook_outbox (
  seq         INTEGER PRIMARY KEY,
  event_id    TEXT NOT NULL
              CHECK (event_id GLOB '????????-????-????-????-????????????'
                     AND event_id NOT GLOB '*[^0-9a-f-]*'),
  url         TEXT NOT NULL CHECK (length(url) <= 2048),
  body        TEXT NOT NULL CHECK (json_valid(body)),
  created_at  TEXT NOT NULL CHECK (created_at GLOB '????-??-??T??:??:??.???Z'),
  attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  next_at     TEXT NOT NULL CHECK (next_at GLOB '????-??-??T??:??:??.???Z'),
  last_error  TEXT CHECK (last_error IS NULL OR length(last_error) <= 500),
  UNIQUE (event_id, url)
) STRICT;
-- Each URL's queue in order.
CREATE INDEX webhook_outbox_by_url ON webhook_outbox(url, seq);
";

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

    /// Writes the events' rows, one per URL.
    pub(crate) fn enqueue(&self, db: &Db, events: Vec<Body>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut stmt = db.conn().prepare_cached(
            "INSERT INTO webhook_outbox (event_id, url, body, created_at, next_at)
             VALUES (?1, ?2, ?3, ?4, ?4)",
        )?;
        for e in events {
            let body = serde_json::to_string(&e).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            for url in &self.urls {
                stmt.execute(params![
                    e.id.to_string(),
                    url,
                    body,
                    e.created_at.to_string()
                ])?;
            }
        }
        self.written.set(true);
        Ok(())
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
    pub end_reason: Option<String>,
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
        end_reason: if kind == ENDED {
            call.end_reason.clone()
        } else {
            None
        },
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

/// One queued delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub seq: i64,
    pub event_id: Uuid,
    pub kind: String,
    pub body: String,
    pub created_at: Timestamp,
    pub attempts: u32,
    pub next_at: Timestamp,
}

impl Db {
    /// Queues the webhooks of a new call, if webhooks are on.
    pub(crate) fn webhooks_for_insert(&self, call: &Call) -> Result<(), StoreError> {
        if let Some(w) = self.webhooks() {
            w.enqueue(self, for_insert(call, |u| w.is_online(u)))?;
        }
        Ok(())
    }

    /// Queues the webhooks of a transition, if webhooks are on.
    pub(crate) fn webhooks_for_save(&self, before: &Call, after: &Call) -> Result<(), StoreError> {
        if let Some(w) = self.webhooks() {
            w.enqueue(self, for_save(before, after))?;
        }
        Ok(())
    }

    /// The first `limit` rows queued for `url`, oldest first.
    pub fn webhook_batch(&self, url: &str, limit: u32) -> Result<Vec<Pending>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT seq, event_id, body ->> '$.type', body, created_at, attempts, next_at
             FROM webhook_outbox WHERE url = ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![url, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, id, kind, body, created, attempts, next) = row?;
            let stamp = |s: &str| {
                Timestamp::parse(s)
                    .ok_or_else(|| StoreError::Corrupt(format!("`{s}` is not a time")))
            };
            out.push(Pending {
                seq,
                event_id: Uuid::parse_str(&id)
                    .map_err(|_| StoreError::Corrupt(format!("`{id}` is not a UUID")))?,
                kind: kind.unwrap_or_default(),
                body,
                created_at: stamp(&created)?,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                next_at: stamp(&next)?,
            });
        }
        Ok(out)
    }

    /// A delivery is done (delivered, or given up): its row goes.
    pub fn webhook_done(&self, seq: i64) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("DELETE FROM webhook_outbox WHERE seq = ?1")?
            .execute([seq])?;
        Ok(())
    }

    /// A delivery failed: tried again at `next_at`.
    pub fn webhook_retry(
        &self,
        seq: i64,
        attempts: u32,
        next_at: Timestamp,
        error: &str,
    ) -> Result<(), StoreError> {
        let error: String = error.chars().take(500).collect();
        self.conn()
            .prepare_cached(
                "UPDATE webhook_outbox SET attempts = ?2, next_at = ?3, last_error = ?4
                 WHERE seq = ?1",
            )?
            .execute(params![seq, attempts, next_at.to_string(), error])?;
        Ok(())
    }

    /// How many deliveries are queued, all URLs.
    pub fn webhook_depth(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn()
            .prepare_cached("SELECT count(*) FROM webhook_outbox")?
            .query_row([], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Deletes the deliveries queued for URLs not in `urls` (removed from the config since):
    /// returns how many.
    pub fn webhook_forget_others(&self, urls: &[String]) -> Result<usize, StoreError> {
        let keep = serde_json::to_string(urls).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(self
            .conn()
            .prepare_cached(
                "DELETE FROM webhook_outbox WHERE url NOT IN (SELECT value FROM json_each(?1))",
            )?
            .execute([keep])?)
    }
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
        assert_eq!(events[1].end_reason.as_deref(), Some("cancelled"));
        assert_eq!(events[1].duration, Some(0));
    }

    #[tokio::test]
    async fn rows_commit_with_their_transition_and_wake_the_delivery() {
        use crate::event::LogSink;
        use crate::store::Store;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), Arc::new(LogSink)).unwrap();
        let depth = || store.run(|db| db.webhook_depth());
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
        assert_eq!(depth().await.unwrap(), 0);
        assert!(store.webhook_wakeups().is_none());

        let urls = vec!["http://a.test/".to_owned(), "http://b.test/".to_owned()];
        store
            .set_webhooks(Webhooks::new(urls, Arc::new(|_| true)))
            .await
            .unwrap();
        let mut wake = store.webhook_wakeups().unwrap();
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
