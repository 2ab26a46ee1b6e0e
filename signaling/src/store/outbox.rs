//! The webhook outbox: the rows [`crate::webhook`] derives from each transition, written in the
//! transition's own transaction, and what the delivery task reads, deletes and reschedules.

use rusqlite::params;
use uuid::Uuid;

use super::{Db, StoreError};
use crate::call::Call;
use crate::time::Timestamp;
use crate::webhook::{for_insert, for_save, Body, Webhooks};

/// The outbox table: schema version 2, appended to the store's migrations.
pub(super) const MIGRATION: &str = "
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
    /// Writes the events' rows, one per URL.
    fn enqueue_webhooks(&self, w: &Webhooks, events: Vec<Body>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut stmt = self.conn().prepare_cached(
            "INSERT INTO webhook_outbox (event_id, url, body, created_at, next_at)
             VALUES (?1, ?2, ?3, ?4, ?4)",
        )?;
        for e in events {
            let body = serde_json::to_string(&e).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            for url in w.urls() {
                stmt.execute(params![
                    e.id.to_string(),
                    url,
                    body,
                    e.created_at.to_string()
                ])?;
            }
        }
        w.set_queued(true);
        Ok(())
    }

    /// Queues the webhooks of a new call, if webhooks are on.
    pub(crate) fn webhooks_for_insert(&self, call: &Call) -> Result<(), StoreError> {
        if let Some(w) = self.webhooks() {
            self.enqueue_webhooks(w, for_insert(call, |u| w.is_online(u)))?;
        }
        Ok(())
    }

    /// Queues the webhooks of a transition, if webhooks are on.
    pub(crate) fn webhooks_for_save(&self, before: &Call, after: &Call) -> Result<(), StoreError> {
        if let Some(w) = self.webhooks() {
            self.enqueue_webhooks(w, for_save(before, after))?;
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
