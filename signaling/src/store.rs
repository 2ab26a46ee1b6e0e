//! The SQLite call store (DESIGN.md, "The store"): one file, WAL, foreign keys on, the schema
//! in `schema.sql` applied in one transaction and versioned with `PRAGMA user_version`.
//!
//! # One thread, group commit
//! The connection lives on its own thread; async callers hand it jobs ([`Store::run`]) and
//! await the result, so SQLite never blocks an async worker. A job is one state transition
//! (or one read): it runs inside its own `SAVEPOINT`, so it is all or nothing — a job that
//! fails is rolled back alone and changes nothing. The thread runs the jobs waiting at that
//! moment in one `BEGIN IMMEDIATE … COMMIT`, and only then replies to them and delivers the
//! events they raised, in commit order. Every reply is therefore durable (`synchronous =
//! FULL`: the WAL is fsynced at each commit) and several transitions share one fsync when
//! they arrive together, which is what makes a durable store fast on one disk.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{params, Connection, OptionalExtension as _, Row};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::call::{Call, MediaState, Participant, User};
use crate::event::{Event, EventSink};
use crate::time::Timestamp;
use crate::webhook::Webhooks;

/// The schema, version 1.
pub const SCHEMA: &str = include_str!("../../schema.sql");

/// The migrations, in order; the database's `user_version` is how many have been applied.
/// New versions append here; applied ones never change.
const MIGRATIONS: &[&str] = &[SCHEMA, crate::webhook::MIGRATION];

/// The most jobs committed together.
const MAX_BATCH: usize = 128;
/// Jobs waiting for the store thread before callers wait to queue.
const QUEUE: usize = 4096;

/// What can go wrong below the call rules.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "the database at {path} is at schema version {found}; this switchboard knows up to {known}"
    )]
    TooNew {
        path: String,
        found: i64,
        known: usize,
    },
    #[error("a stored value is malformed: {0}")]
    Corrupt(String),
    #[error("cannot create the database file {0}")]
    Create(String),
    /// The transaction a job was in did not commit (or did not begin); the job's changes are
    /// not stored.
    #[error("the transaction failed: {0}")]
    TransactionFailed(String),
    #[error("the store is closed")]
    Closed,
    #[error("a store job panicked")]
    Panicked,
}

/// The connection and what the store thread keeps beside it.
pub struct Db {
    conn: Connection,
    /// The `created_at` of the last call made, so that each call's is unique and increasing:
    /// history pages by `created_at` and must not skip calls made in the same millisecond.
    last_created: Timestamp,
    /// Events raised by the current job, delivered after the commit.
    events: Vec<Event>,
    /// Webhooks, when configured ([`Store::set_webhooks`]): each saved transition queues its
    /// rows in the outbox (see [`crate::webhook`]).
    webhooks: Option<Webhooks>,
}

/// A conversation with its members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    pub name: Option<String>,
    pub members: Vec<User>,
}

/// A handle to the store thread; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Msg>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// Changes after each commit that queued webhooks, once they are on.
    webhook_wake: Arc<std::sync::OnceLock<tokio::sync::watch::Receiver<u64>>>,
}

enum Msg {
    Job(Box<dyn Job>),
    /// Finish what is queued before this, then stop.
    Close,
}

trait Job: Send {
    /// Runs in the transaction; false if the job failed (its savepoint is rolled back).
    fn run(&mut self, db: &mut Db) -> bool;
    /// After the commit (or its failure): reply.
    fn finish(self: Box<Self>, committed: Result<(), &StoreError>);
}

struct Task<F, T, E> {
    f: Option<F>,
    out: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> Job for Task<F, T, E>
where
    F: FnOnce(&mut Db) -> Result<T, E> + Send,
    T: Send,
    E: From<StoreError> + Send,
{
    fn run(&mut self, db: &mut Db) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        let out = match catch_unwind(AssertUnwindSafe(|| f(db))) {
            Ok(out) => out,
            Err(_) => {
                tracing::error!("a store job panicked; it is rolled back");
                Err(StoreError::Panicked.into())
            }
        };
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn finish(self: Box<Self>, committed: Result<(), &StoreError>) {
        let out = match (self.out, committed) {
            (Some(Ok(_)) | None, Err(e)) => {
                Err(StoreError::TransactionFailed(e.to_string()).into())
            }
            (Some(out), _) => out,
            (None, Ok(())) => Err(StoreError::Closed.into()),
        };
        let _ = self.reply.send(out);
    }
}

impl Store {
    /// Opens (creating if need be) the database at `path`, migrates it, and starts the store
    /// thread. Events that committed jobs raise go to `sink`.
    pub fn open(path: &Path, sink: Arc<dyn EventSink>) -> Result<Store, StoreError> {
        let conn = open_connection(path)?;
        Store::start(conn, sink)
    }

    fn start(conn: Connection, sink: Arc<dyn EventSink>) -> Result<Store, StoreError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        // Calls stay in `created_at` order across restarts, whatever the clock did meanwhile.
        let last: Option<String> =
            conn.query_row("SELECT max(created_at) FROM calls", [], |r| r.get(0))?;
        let db = Db {
            conn,
            last_created: time(last)?.unwrap_or(Timestamp::from_unix_millis(0)),
            events: Vec::new(),
            webhooks: None,
        };
        let thread = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || store_thread(db, rx, sink))
            .expect("spawn the store thread");
        Ok(Store {
            tx,
            thread: Arc::new(Mutex::new(Some(thread))),
            webhook_wake: Arc::default(),
        })
    }

    /// Runs `f` on the store thread inside its own savepoint, and returns its result once it is
    /// committed. An `Err` from `f` rolls back everything `f` did.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Db) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let task = Task {
            f: Some(f),
            out: None,
            reply,
        };
        let queued = std::time::Instant::now();
        if self.tx.send(Msg::Job(Box::new(task))).await.is_err() {
            return Err(StoreError::Closed.into());
        }
        let out = rx.await.unwrap_or_else(|_| Err(StoreError::Closed.into()));
        // Queue, transaction and commit: what a request waits for the store.
        metrics::histogram!("switchboard_store_job_seconds").record(queued.elapsed().as_secs_f64());
        out
    }

    /// Turns webhooks on: from the next job on, every saved transition queues its webhooks
    /// (in its own transaction), and committing them wakes `webhooks`' receiver. Also deletes
    /// the rows queued for URLs no longer configured; returns how many.
    pub async fn set_webhooks(&self, webhooks: Webhooks) -> Result<usize, StoreError> {
        let _ = self.webhook_wake.set(webhooks.subscribe());
        self.run(move |db| {
            let gone = db.webhook_forget_others(webhooks.urls())?;
            db.webhooks = Some(webhooks);
            Ok(gone)
        })
        .await
    }

    /// What changes after each commit that queued webhooks: `None` until
    /// [`Store::set_webhooks`].
    pub fn webhook_wakeups(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.webhook_wake.get().cloned()
    }

    /// Whether the store answers an empty job within `limit`: why not, if it does not (for the
    /// readiness probe and the service watchdog).
    pub async fn ping(&self, limit: std::time::Duration) -> Result<(), &'static str> {
        match tokio::time::timeout(limit, self.run(|_| Ok::<(), StoreError>(()))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("the store is closed"),
            Err(_) => Err("the store does not answer"),
        }
    }

    /// Finishes the jobs queued so far, checkpoints the WAL and closes the database, waiting
    /// for the store thread. Later calls of [`Store::run`], from any clone, get
    /// [`StoreError::Closed`].
    pub async fn close(&self) {
        let _ = self.tx.send(Msg::Close).await;
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    // The file holds users' emails and TURN credentials: readable by the daemon only. SQLite
    // gives its -wal and -shm files the database file's mode.
    if !path.exists() {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| StoreError::Create(format!("{}: {e}", path.display())))?;
    }
    let mut conn = Connection::open(path)?;
    // WAL: readers never block the writer; FULL: a commit is on disk before it is answered.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Savepoint journals and sorts in memory, not in temporary files.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Keep each prepared statement's plan: without this SQLite re-plans some statements every
    // time a new value is bound, which the statement cache then pays for on every run.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    migrate(&mut conn, &path.display().to_string())?;
    Ok(conn)
}

/// Applies the migrations the database lacks, all in one transaction.
fn migrate(conn: &mut Connection, path: &str) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version < 0 || version as usize > MIGRATIONS.len() {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(m)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tracing::info!(version = i + 1, "store schema applied");
    }
    tx.commit()?;
    Ok(())
}

fn store_thread(mut db: Db, mut rx: mpsc::Receiver<Msg>, sink: Arc<dyn EventSink>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut events: Vec<Event> = Vec::new();
    let mut closing = false;
    while !closing {
        match rx.blocking_recv() {
            Some(Msg::Job(first)) => batch.push(first),
            Some(Msg::Close) | None => break,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => batch.push(job),
                Ok(Msg::Close) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let committed = run_batch(&mut db, &mut batch, &mut events);
        if let Err(e) = &committed {
            tracing::error!(error = %e, jobs = batch.len(), "store commit failed; the jobs are refused");
            events.clear();
        }
        // Events first, then the replies: what a transition caused is with the hub (rosters
        // and sockets) before the request that made it is answered.
        if !events.is_empty() {
            sink.deliver(std::mem::take(&mut events));
        }
        // The delivery task reads rows once they are committed: wake it now.
        if let Some(w) = &db.webhooks {
            if committed.is_ok() {
                w.committed();
            } else {
                w.set_queued(false);
            }
        }
        for job in batch.drain(..) {
            job.finish(committed.as_ref().map(|_| ()));
        }
    }
    // Jobs queued behind the close are dropped: their callers get `Closed`.
    rx.close();
    if let Err(e) = db
        .conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
    {
        tracing::warn!(error = %e, "store: WAL checkpoint at close failed");
    }
    tracing::debug!("store closed");
}

/// One transaction for the batch, a savepoint per job.
fn run_batch(
    db: &mut Db,
    batch: &mut [Box<dyn Job>],
    events: &mut Vec<Event>,
) -> Result<(), StoreError> {
    control(&db.conn, "BEGIN IMMEDIATE")?;
    let last_created = db.last_created;
    for job in batch.iter_mut() {
        db.events.clear();
        let mark = db.last_created;
        let queued = db.webhooks_queued();
        let step = control(&db.conn, "SAVEPOINT job");
        let ok = step.is_ok() && job.run(db);
        let end = if ok {
            events.append(&mut db.events);
            control(&db.conn, "RELEASE job")
        } else {
            db.last_created = mark;
            db.set_webhooks_queued(queued);
            control(&db.conn, "ROLLBACK TO job").and_then(|()| control(&db.conn, "RELEASE job"))
        };
        if let Err(e) = step.and(end) {
            abandon(db, last_created);
            return Err(e);
        }
    }
    if let Err(e) = control(&db.conn, "COMMIT") {
        abandon(db, last_created);
        return Err(e);
    }
    Ok(())
}

/// Rolls the batch's transaction back after a failure. The connection must come out of it
/// outside any transaction, or every later batch would fail to begin.
fn abandon(db: &mut Db, last_created: Timestamp) {
    db.last_created = last_created;
    if db.conn.is_autocommit() {
        return;
    }
    if let Err(e) = db.conn.execute_batch("ROLLBACK") {
        tracing::error!(error = %e, "store: rollback failed");
    }
    if !db.conn.is_autocommit() {
        tracing::error!("store: the connection is still in a transaction after a rollback");
    }
}

/// A transaction-control statement, prepared once (they run several times per job).
fn control(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Queries. Every function runs inside a job's savepoint.

fn uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|_| StoreError::Corrupt(format!("`{s}` is not a UUID")))
}

fn time(s: Option<String>) -> Result<Option<Timestamp>, StoreError> {
    s.as_deref().map(stamp).transpose()
}

fn stamp(s: &str) -> Result<Timestamp, StoreError> {
    Timestamp::parse(s).ok_or_else(|| StoreError::Corrupt(format!("`{s}` is not a time")))
}

fn parsed<T: std::str::FromStr<Err = String>>(s: &str) -> Result<T, StoreError> {
    s.parse().map_err(StoreError::Corrupt)
}

impl Db {
    /// The connection, for the queries of other modules (inside a job).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn webhooks(&self) -> Option<&Webhooks> {
        self.webhooks.as_ref()
    }

    /// Whether the current batch has queued webhooks so far (to undo with a rollback).
    fn webhooks_queued(&self) -> bool {
        self.webhooks.as_ref().is_some_and(Webhooks::queued)
    }

    fn set_webhooks_queued(&self, queued: bool) {
        if let Some(w) = &self.webhooks {
            w.set_queued(queued);
        }
    }

    /// Runs `f` in a savepoint of its own inside the job: an `Err` rolls back what `f` did
    /// (and drops the events it raised), keeping what the job did before.
    pub fn nested<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Db) -> Result<T, E>,
    ) -> Result<T, E> {
        control(&self.conn, "SAVEPOINT nested")?;
        let mark = (self.events.len(), self.last_created, self.webhooks_queued());
        let out = f(self);
        if out.is_ok() {
            match control(&self.conn, "RELEASE nested") {
                Ok(()) => return out,
                // Not released: undone below like a failure, and reported as one.
                Err(e) => {
                    self.undo_nested(mark)?;
                    return Err(e.into());
                }
            }
        }
        self.undo_nested(mark)?;
        out
    }

    fn undo_nested(
        &mut self,
        (events, last_created, queued): (usize, Timestamp, bool),
    ) -> Result<(), StoreError> {
        self.events.truncate(events);
        self.last_created = last_created;
        self.set_webhooks_queued(queued);
        control(&self.conn, "ROLLBACK TO nested")?;
        control(&self.conn, "RELEASE nested")
    }

    /// Queues events for delivery once this job commits.
    pub fn emit(&mut self, events: Vec<Event>) {
        self.events.extend(events);
    }

    /// A `created_at` for a new call: `now`, or 1 ms after the previous call's if that is not
    /// before `now`, so that calls made in the same millisecond keep their order (history
    /// pages by `created_at`). Only by up to a second: a stored time far ahead (a clock that
    /// was wrong, then corrected) is not followed, since the ring timeout counts from it.
    pub fn next_created_at(&mut self, now: Timestamp) -> Timestamp {
        let last = self.last_created.unix_millis();
        let t = if now.unix_millis() > last || last - now.unix_millis() >= 1000 {
            now
        } else {
            Timestamp::from_unix_millis(last + 1)
        };
        self.last_created = t;
        t
    }

    /// Inserts or updates a user, name and email as given (the admin API); a user already
    /// stored so is left untouched (no write).
    pub fn upsert_user(&self, user: &User, now: Timestamp) -> Result<(), StoreError> {
        let now = now.to_string();
        self.conn
            .prepare_cached(
                "INSERT INTO users (id, name, email, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email,
                   updated_at = excluded.updated_at
                 WHERE name IS NOT excluded.name OR email IS NOT excluded.email",
            )?
            .execute(params![user.id.to_string(), user.name, user.email, now])?;
        Ok(())
    }

    /// Records the user a token stands for: inserted if new; a name or email the token carries
    /// replaces the stored one, one it lacks keeps it (so a bare token does not erase what the
    /// admin API provisioned). No write when nothing changes.
    pub fn record_user(&self, user: &User, now: Timestamp) -> Result<(), StoreError> {
        let now = now.to_string();
        self.conn
            .prepare_cached(
                "INSERT INTO users (id, name, email, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT (id) DO UPDATE SET name = coalesce(excluded.name, name),
                   email = coalesce(excluded.email, email), updated_at = excluded.updated_at
                 WHERE coalesce(excluded.name, name) IS NOT name
                    OR coalesce(excluded.email, email) IS NOT email",
            )?
            .execute(params![user.id.to_string(), user.name, user.email, now])?;
        Ok(())
    }

    /// Makes sure a user row exists, keeping its name and email if it does.
    pub fn ensure_user(&self, id: Uuid, now: Timestamp) -> Result<(), StoreError> {
        let now = now.to_string();
        self.conn
            .prepare_cached(
                "INSERT INTO users (id, created_at, updated_at) VALUES (?1, ?2, ?2)
                 ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![id.to_string(), now])?;
        Ok(())
    }

    pub fn user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        let row = self
            .conn
            .prepare_cached("SELECT name, email FROM users WHERE id = ?1")?
            .query_row([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.map(|(name, email)| User { id, name, email }))
    }

    pub fn conversation_exists(&self, id: Uuid) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM conversations WHERE id = ?1")?
            .exists([id.to_string()])?)
    }

    pub fn is_member(&self, conversation: Uuid, user: Uuid) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 FROM conversation_members WHERE conversation_id = ?1 AND user_id = ?2",
            )?
            .exists([conversation.to_string(), user.to_string()])?)
    }

    /// Creates the conversation, or renames it if `name` is given (`""` clears the name).
    pub fn upsert_conversation(
        &self,
        id: Uuid,
        name: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO conversations (id, name, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (id) DO UPDATE SET name = coalesce(excluded.name, name),
                   updated_at = excluded.updated_at",
            )?
            .execute(params![id.to_string(), name, now.to_string()])?;
        if name == Some("") {
            self.conn
                .prepare_cached("UPDATE conversations SET name = NULL WHERE id = ?1")?
                .execute([id.to_string()])?;
        }
        Ok(())
    }

    pub fn add_member(
        &self,
        conversation: Uuid,
        user: Uuid,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO conversation_members (conversation_id, user_id, created_at)
                 VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                conversation.to_string(),
                user.to_string(),
                now.to_string()
            ])?;
        Ok(())
    }

    /// Removes every member not in `keep`.
    pub fn retain_members(&self, conversation: Uuid, keep: &[Uuid]) -> Result<(), StoreError> {
        let keep: Vec<String> = keep.iter().map(Uuid::to_string).collect();
        let keep = serde_json::to_string(&keep).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn
            .prepare_cached(
                "DELETE FROM conversation_members WHERE conversation_id = ?1
                 AND user_id NOT IN (SELECT value FROM json_each(?2))",
            )?
            .execute(params![conversation.to_string(), keep])?;
        Ok(())
    }

    /// A conversation's name and its members (with their names), or None.
    pub fn conversation(&self, id: Uuid) -> Result<Option<Conversation>, StoreError> {
        let name: Option<Option<String>> = self
            .conn
            .prepare_cached("SELECT name FROM conversations WHERE id = ?1")?
            .query_row([id.to_string()], |r| r.get(0))
            .optional()?;
        let Some(name) = name else {
            return Ok(None);
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT u.id, u.name, u.email FROM conversation_members m JOIN users u ON u.id = m.user_id
             WHERE m.conversation_id = ?1 ORDER BY m.created_at, u.id",
        )?;
        let rows = stmt.query_map([id.to_string()], |r| {
            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))
        })?;
        let mut members = Vec::new();
        for row in rows {
            let (uid, name, email) = row?;
            members.push(User {
                id: uuid(&uid)?,
                name,
                email,
            });
        }
        Ok(Some(Conversation { name, members }))
    }

    pub fn insert_call(&self, call: &Call) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO calls (id, conversation_id, type, status, initiated_by, started_at,
                   ended_at, duration_seconds, end_reason, quality_stats, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                call.id.to_string(),
                call.conversation_id.to_string(),
                call.kind.as_str(),
                call.status.as_str(),
                call.initiated_by.to_string(),
                call.started_at.map(|t| t.to_string()),
                call.ended_at.map(|t| t.to_string()),
                call.duration_seconds.map(secs),
                call.end_reason,
                call.quality_stats,
                call.created_at.to_string(),
                call.updated_at.to_string(),
            ])?;
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO call_participants (id, call_id, user_id, status, joined_at, left_at,
               media_state, connection_quality, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for p in &call.participants {
            stmt.execute(params![
                p.id.to_string(),
                call.id.to_string(),
                p.user.id.to_string(),
                p.status.as_str(),
                p.joined_at.map(|t| t.to_string()),
                p.left_at.map(|t| t.to_string()),
                media_json(&p.media_state),
                p.connection_quality,
                p.created_at.to_string(),
                p.updated_at.to_string(),
            ])?;
        }
        self.webhooks_for_insert(call)
    }

    /// Writes what changed from `before` to `after` (the same call), with the webhooks the
    /// change causes.
    pub fn save_call(&self, before: &Call, after: &Call) -> Result<(), StoreError> {
        if before.status != after.status
            || before.started_at != after.started_at
            || before.ended_at != after.ended_at
            || before.duration_seconds != after.duration_seconds
            || before.end_reason != after.end_reason
            || before.quality_stats != after.quality_stats
            || before.updated_at != after.updated_at
        {
            self.conn
                .prepare_cached(
                    "UPDATE calls SET status = ?2, started_at = ?3, ended_at = ?4,
                       duration_seconds = ?5, end_reason = ?6, quality_stats = ?7, updated_at = ?8
                     WHERE id = ?1",
                )?
                .execute(params![
                    after.id.to_string(),
                    after.status.as_str(),
                    after.started_at.map(|t| t.to_string()),
                    after.ended_at.map(|t| t.to_string()),
                    after.duration_seconds.map(secs),
                    after.end_reason,
                    after.quality_stats,
                    after.updated_at.to_string(),
                ])?;
        }
        let mut stmt = self.conn.prepare_cached(
            "UPDATE call_participants SET status = ?2, joined_at = ?3, left_at = ?4,
               media_state = ?5, connection_quality = ?6, updated_at = ?7
             WHERE id = ?1",
        )?;
        for p in &after.participants {
            if before.participants.iter().any(|b| b == p) {
                continue;
            }
            stmt.execute(params![
                p.id.to_string(),
                p.status.as_str(),
                p.joined_at.map(|t| t.to_string()),
                p.left_at.map(|t| t.to_string()),
                media_json(&p.media_state),
                p.connection_quality,
                p.updated_at.to_string(),
            ])?;
        }
        self.webhooks_for_save(before, after)
    }

    /// The `media_stats` of a call's participants who have some, by user.
    pub fn media_stats(&self, call_id: Uuid) -> Result<Vec<(Uuid, String)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT user_id, media_stats FROM call_participants
             WHERE call_id = ?1 AND media_stats IS NOT NULL",
        )?;
        let rows = stmt.query_map([call_id.to_string()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (user, stats) = row?;
            out.push((uuid(&user)?, stats));
        }
        Ok(out)
    }

    /// Writes a participant's `media_stats` (JSON text) and `connection_quality`.
    pub fn set_media_stats(
        &self,
        participant: Uuid,
        stats: &str,
        quality: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE call_participants SET media_stats = ?2, connection_quality = ?3,
                   updated_at = ?4
                 WHERE id = ?1",
            )?
            .execute(params![
                participant.to_string(),
                stats,
                quality,
                now.to_string()
            ])?;
        Ok(())
    }

    pub fn load_call(&self, id: Uuid) -> Result<Option<Call>, StoreError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT id, conversation_id, type, status, initiated_by, started_at, ended_at,
                   duration_seconds, end_reason, quality_stats, created_at, updated_at
                 FROM calls WHERE id = ?1",
            )?
            .query_row([id.to_string()], CallRow::read)
            .optional()?;
        row.map(|r| self.complete(r)).transpose()
    }

    fn complete(&self, r: CallRow) -> Result<Call, StoreError> {
        let id = uuid(&r.id)?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT p.id, p.user_id, u.name, u.email, p.status, p.joined_at, p.left_at,
               p.media_state, p.connection_quality, p.created_at, p.updated_at
             FROM call_participants p JOIN users u ON u.id = p.user_id
             WHERE p.call_id = ?1 ORDER BY p.rowid",
        )?;
        let rows = stmt.query_map([&r.id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, Option<String>>(5)?,
                row.get::<_, Option<String>>(6)?,
                row.get::<_, String>(7)?,
                row.get::<_, Option<String>>(8)?,
                row.get::<_, String>(9)?,
                row.get::<_, String>(10)?,
            ))
        })?;
        let mut participants = Vec::new();
        for row in rows {
            let (pid, uid, name, email, status, joined, left, media, quality, created, updated) =
                row?;
            participants.push(Participant {
                id: uuid(&pid)?,
                user: User {
                    id: uuid(&uid)?,
                    name,
                    email,
                },
                status: parsed(&status)?,
                joined_at: time(joined)?,
                left_at: time(left)?,
                media_state: serde_json::from_str::<MediaState>(&media)
                    .map_err(|e| StoreError::Corrupt(format!("media_state: {e}")))?,
                connection_quality: quality,
                created_at: stamp(&created)?,
                updated_at: stamp(&updated)?,
            });
        }
        let initiated_by = uuid(&r.initiated_by)?;
        // The initiator first, then in the order they were invited.
        participants.sort_by_key(|p| p.user.id != initiated_by);
        Ok(Call {
            id,
            conversation_id: uuid(&r.conversation_id)?,
            kind: parsed(&r.kind)?,
            status: parsed(&r.status)?,
            initiated_by,
            started_at: time(r.started_at)?,
            ended_at: time(r.ended_at)?,
            duration_seconds: r
                .duration_seconds
                .map(|d| u64::try_from(d).map_err(|_| StoreError::Corrupt(format!("duration {d}"))))
                .transpose()?,
            end_reason: r.end_reason,
            quality_stats: r.quality_stats,
            created_at: stamp(&r.created_at)?,
            updated_at: stamp(&r.updated_at)?,
            participants,
        })
    }

    /// The ids of every live call.
    pub fn live_calls(&self) -> Result<Vec<Uuid>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM calls WHERE status = 'initiated' OR status = 'ringing' OR status = 'active'
             ORDER BY created_at",
        )?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0))?;
        ids.map(|id| uuid(&id?)).collect()
    }

    /// How many calls are live in each live state (zeros included), for metrics.
    pub fn live_call_counts(&self) -> Result<Vec<(&'static str, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT status, COUNT(*) FROM calls
             WHERE status = 'initiated' OR status = 'ringing' OR status = 'active'
             GROUP BY status",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut counts = vec![("initiated", 0), ("ringing", 0), ("active", 0)];
        for row in rows {
            let (status, n) = row?;
            if let Some(c) = counts.iter_mut().find(|(s, _)| *s == status) {
                c.1 = n.max(0) as u64;
            }
        }
        Ok(counts)
    }

    /// The earliest `created_at` of a live call with someone still being rung, and the ids of
    /// the live calls with someone being rung that were created at or before `until`.
    pub fn ringing_calls(
        &self,
        until: Timestamp,
    ) -> Result<(Option<Timestamp>, Vec<Uuid>), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.id, c.created_at FROM calls c
             WHERE (c.status = 'initiated' OR c.status = 'ringing' OR c.status = 'active')
               AND EXISTS (SELECT 1 FROM call_participants p
                           WHERE p.call_id = c.id AND (p.status = 'invited' OR p.status = 'ringing'))
             ORDER BY c.created_at",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut first = None;
        let mut due = Vec::new();
        for row in rows {
            let (id, created) = row?;
            let created = stamp(&created)?;
            first = first.or(Some(created));
            if created <= until {
                due.push(uuid(&id)?);
            }
        }
        Ok((first, due))
    }

    /// Calls visible to `user`, newest first, created before `before`, at most `limit`: those
    /// of `conversation` (whose membership the caller has checked), or of every conversation
    /// `user` is a member of.
    pub fn history(
        &self,
        user: Uuid,
        conversation: Option<Uuid>,
        before: Option<Timestamp>,
        limit: u32,
    ) -> Result<Vec<Call>, StoreError> {
        const COLUMNS: &str = "c.id, c.conversation_id, c.type, c.status, c.initiated_by, \
            c.started_at, c.ended_at, c.duration_seconds, c.end_reason, c.quality_stats, \
            c.created_at, c.updated_at";
        let before = before.map_or_else(|| "9999".to_owned(), |t| t.to_string());
        // Two statements, so that each keeps a plan walking an index newest first
        // (calls_by_conversation) rather than sorting the whole history.
        let rows: Vec<CallRow> = match conversation {
            Some(c) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM calls c WHERE c.conversation_id = ?1 AND c.created_at < ?2
                     ORDER BY c.created_at DESC LIMIT ?3"
                );
                let mut stmt = self.conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params![c.to_string(), before, limit], CallRow::read)?;
                rows.collect::<Result<_, _>>()?
            }
            None => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM conversation_members m
                       JOIN calls c ON c.conversation_id = m.conversation_id
                     WHERE m.user_id = ?1 AND c.created_at < ?2
                     ORDER BY c.created_at DESC LIMIT ?3"
                );
                let mut stmt = self.conn.prepare_cached(&sql)?;
                let rows =
                    stmt.query_map(params![user.to_string(), before, limit], CallRow::read)?;
                rows.collect::<Result<_, _>>()?
            }
        };
        rows.into_iter().map(|r| self.complete(r)).collect()
    }

    /// The newest unexpired TURN credential of `user` expiring after `after`:
    /// (username, expires_at).
    pub fn turn_credential(
        &self,
        user: Uuid,
        after: Timestamp,
    ) -> Result<Option<(String, Timestamp)>, StoreError> {
        let row: Option<(String, String)> = self
            .conn
            .prepare_cached(
                "SELECT username, expires_at FROM turn_credentials
                 WHERE user_id = ?1 AND expires_at > ?2 ORDER BY expires_at DESC LIMIT 1",
            )?
            .query_row(params![user.to_string(), after.to_string()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        row.map(|(u, e)| Ok((u, stamp(&e)?))).transpose()
    }

    pub fn insert_turn_credential(
        &self,
        user: Uuid,
        username: &str,
        credential: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO turn_credentials (id, user_id, username, credential, expires_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                Uuid::new_v4().to_string(),
                user.to_string(),
                username,
                credential,
                expires_at.to_string(),
                now.to_string()
            ])?;
        Ok(())
    }

    /// The spec's `cleanup_expired_turn_credentials()`: deletes what expired before `now`.
    pub fn delete_expired_turn_credentials(&self, now: Timestamp) -> Result<usize, StoreError> {
        Ok(self
            .conn
            .prepare_cached("DELETE FROM turn_credentials WHERE expires_at < ?1")?
            .execute([now.to_string()])?)
    }
}

/// Seconds as SQLite stores integers.
fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

fn media_json(m: &MediaState) -> String {
    // Three booleans: serializing cannot fail.
    serde_json::to_string(m).unwrap_or_else(|_| "{}".into())
}

struct CallRow {
    id: String,
    conversation_id: String,
    kind: String,
    status: String,
    initiated_by: String,
    started_at: Option<String>,
    ended_at: Option<String>,
    duration_seconds: Option<i64>,
    end_reason: Option<String>,
    quality_stats: Option<String>,
    created_at: String,
    updated_at: String,
}

impl CallRow {
    fn read(r: &Row<'_>) -> rusqlite::Result<CallRow> {
        Ok(CallRow {
            id: r.get(0)?,
            conversation_id: r.get(1)?,
            kind: r.get(2)?,
            status: r.get(3)?,
            initiated_by: r.get(4)?,
            started_at: r.get(5)?,
            ended_at: r.get(6)?,
            duration_seconds: r.get(7)?,
            end_reason: r.get(8)?,
            quality_stats: r.get(9)?,
            created_at: r.get(10)?,
            updated_at: r.get(11)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::LogSink;

    fn open(dir: &tempfile::TempDir) -> Connection {
        open_connection(&dir.path().join("t.db")).unwrap()
    }

    #[test]
    fn schema_is_applied_once_and_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir);
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(conn);
        // A second open applies nothing again (it would fail: the tables exist).
        let conn = open(&dir);
        let fk: i64 = conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        // A newer database is refused, not downgraded.
        conn.pragma_update(None, "user_version", 7).unwrap();
        drop(conn);
        let e = open_connection(&dir.path().join("t.db")).unwrap_err();
        assert!(matches!(e, StoreError::TooNew { found: 7, .. }), "{e}");
    }

    #[test]
    fn constraints_refuse_bad_rows() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir);
        let now = "2025-01-10T14:30:00.000Z";
        let u = "0b6f1a3c-2d4e-4f5a-8b9c-0d1e2f3a4b5c";
        let ok = conn.execute(
            "INSERT INTO users (id, created_at, updated_at) VALUES (?1, ?2, ?2)",
            [u, now],
        );
        assert_eq!(ok.unwrap(), 1);
        for (sql, args) in [
            // Not a lowercase UUID.
            ("INSERT INTO users (id, created_at, updated_at) VALUES (?1, ?2, ?2)", ["0B6F1A3C-2D4E-4F5A-8B9C-0D1E2F3A4B5C", now]),
            // Not our timestamp form.
            ("INSERT INTO users (id, created_at, updated_at) VALUES (?1, ?2, ?2)", ["1b6f1a3c-2d4e-4f5a-8b9c-0d1e2f3a4b5c", "2025-01-10 14:30:00"]),
            // A conversation that does not exist.
            ("INSERT INTO calls (id, conversation_id, initiated_by, created_at, updated_at) VALUES ('2b6f1a3c-2d4e-4f5a-8b9c-0d1e2f3a4b5c', ?1, ?1, ?2, ?2)", [u, now]),
        ] {
            assert!(conn.execute(sql, args).is_err(), "{sql} {args:?}");
        }
        conn.execute(
            "INSERT INTO conversations (id, created_at, updated_at) VALUES (?1, ?2, ?2)",
            [u, now],
        )
        .unwrap();
        let call = "INSERT INTO calls (id, conversation_id, initiated_by, type, status, ended_at, \
                    quality_stats, created_at, updated_at) \
                    VALUES ('3b6f1a3c-2d4e-4f5a-8b9c-0d1e2f3a4b5c', ?1, ?1, ?2, ?3, ?4, ?5, ?6, ?6)";
        let bad: [[Option<&str>; 6]; 5] = [
            [
                Some(u),
                Some("fax"),
                Some("initiated"),
                None,
                None,
                Some(now),
            ],
            [
                Some(u),
                Some("audio"),
                Some("on-hold"),
                None,
                None,
                Some(now),
            ],
            // A live call cannot have ended.
            [
                Some(u),
                Some("audio"),
                Some("ringing"),
                Some(now),
                None,
                Some(now),
            ],
            // JSON that is not.
            [
                Some(u),
                Some("audio"),
                Some("initiated"),
                None,
                Some("{nope"),
                Some(now),
            ],
            // Active without a start.
            [
                Some(u),
                Some("audio"),
                Some("active"),
                None,
                None,
                Some(now),
            ],
        ];
        for args in bad {
            assert!(conn.execute(call, args).is_err(), "{args:?}");
        }
        let good: [Option<&str>; 6] = [
            Some(u),
            Some("screen"),
            Some("initiated"),
            None,
            Some("{}"),
            Some(now),
        ];
        assert_eq!(conn.execute(call, good).unwrap(), 1);
    }

    #[tokio::test]
    async fn a_failed_nested_step_keeps_what_came_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), Arc::new(LogSink)).unwrap();
        let now = Timestamp::from_unix_millis(1_736_519_400_000);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let user = |id| User {
            id,
            name: None,
            email: None,
        };
        let (inner, events) = store
            .run(move |db| {
                db.upsert_user(&user(a), now)?;
                let inner = db.nested(|db| {
                    db.upsert_user(&user(b), now)?;
                    db.next_created_at(now);
                    Err::<(), _>(StoreError::Corrupt("refused".into()))
                });
                Ok::<_, StoreError>((inner, db.events.len()))
            })
            .await
            .unwrap();
        assert!(matches!(inner, Err(StoreError::Corrupt(_))));
        assert_eq!(events, 0);
        let (ua, ub, next) = store
            .run(move |db| Ok::<_, StoreError>((db.user(a)?, db.user(b)?, db.next_created_at(now))))
            .await
            .unwrap();
        assert!(ua.is_some());
        assert_eq!(ub, None);
        // The rolled-back step's created_at was given back.
        assert_eq!(next, now);
        store.close().await;
    }

    #[tokio::test]
    async fn a_bare_token_keeps_the_provisioned_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), Arc::new(LogSink)).unwrap();
        let now = Timestamp::from_unix_millis(1_736_519_400_000);
        let id = Uuid::from_u128(7);
        let named = User {
            id,
            name: Some("Ada".into()),
            email: Some("ada@example.com".into()),
        };
        let bare = User {
            id,
            name: None,
            email: None,
        };
        let renamed = User {
            id,
            name: Some("Ada L.".into()),
            email: None,
        };
        let seen = store
            .run(move |db| {
                db.upsert_user(&named, now)?;
                db.record_user(&bare, now)?;
                let a = db.user(id)?;
                db.record_user(&renamed, now)?;
                let b = db.user(id)?;
                // The admin API sets exactly what it is given.
                db.upsert_user(&bare, now)?;
                Ok::<_, StoreError>((a, b, db.user(id)?))
            })
            .await
            .unwrap();
        let (a, b, c) = seen;
        assert_eq!(a.unwrap().name.as_deref(), Some("Ada"));
        let b = b.unwrap();
        assert_eq!(
            (b.name.as_deref(), b.email.as_deref()),
            (Some("Ada L."), Some("ada@example.com"))
        );
        assert_eq!(c.unwrap().name, None);
        store.close().await;
    }

    #[tokio::test]
    async fn created_at_keeps_its_order_across_restarts_but_not_a_wrong_clock() {
        let now = Timestamp::from_unix_millis(1_736_519_400_000);
        // (the stored call's created_at, the next call's)
        let cases = [
            // Just ahead (calls in the same millisecond before a restart): just after it.
            ("2025-01-10T14:30:00.500Z", "2025-01-10T14:30:00.501Z"),
            // Far ahead (a clock that was wrong): not followed; the ring timeout counts from it.
            ("2999-01-01T00:00:00.000Z", "2025-01-10T14:30:00.000Z"),
        ];
        for (stored, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.db");
            let conn = open_connection(&path).unwrap();
            let u = "0b6f1a3c-2d4e-4f5a-8b9c-0d1e2f3a4b5c";
            conn.execute_batch(&format!(
                "INSERT INTO users (id, created_at, updated_at) VALUES ('{u}', '{stored}', '{stored}');
                 INSERT INTO conversations (id, created_at, updated_at) VALUES ('{u}', '{stored}', '{stored}');
                 INSERT INTO calls (id, conversation_id, initiated_by, created_at, updated_at)
                   VALUES ('{u}', '{u}', '{u}', '{stored}', '{stored}');"
            ))
            .unwrap();
            drop(conn);
            let store = Store::open(&path, Arc::new(LogSink)).unwrap();
            let next = store
                .run(move |db| Ok::<_, StoreError>(db.next_created_at(now)))
                .await
                .unwrap();
            assert_eq!(next.to_string(), expected, "after {stored}");
            store.close().await;
        }
    }

    #[tokio::test]
    async fn a_failed_job_changes_nothing_and_the_others_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), Arc::new(LogSink)).unwrap();
        let now = Timestamp::from_unix_millis(1_736_519_400_000);
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let (ra, rb, rc) = tokio::join!(
            store.run(move |db| db.upsert_user(
                &User {
                    id: a,
                    name: Some("A".into()),
                    email: None
                },
                now
            )),
            store.run(move |db| {
                db.upsert_user(
                    &User {
                        id: b,
                        name: None,
                        email: None,
                    },
                    now,
                )?;
                Err::<(), _>(StoreError::Corrupt("refused".into()))
            }),
            store.run(move |_db| -> Result<(), StoreError> { panic!("a bug in a job") }),
        );
        ra.unwrap();
        assert!(matches!(rb, Err(StoreError::Corrupt(_))));
        assert!(matches!(rc, Err(StoreError::Panicked)));
        let (ua, ub) = store
            .run(move |db| Ok::<_, StoreError>((db.user(a)?, db.user(b)?)))
            .await
            .unwrap();
        assert_eq!(ua.unwrap().name.as_deref(), Some("A"));
        assert_eq!(ub, None);
        store.close().await;
        let r = store.run(|_| Ok::<_, StoreError>(())).await;
        assert!(matches!(r, Err(StoreError::Closed)));
    }
}
