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
//!
//! # Layout
//! This file holds the handle, the thread, jobs, migrations and errors; the queries are
//! `impl Db` blocks by concern: `users.rs` (users, conversations, members), `calls.rs` (calls,
//! live calls, history, media stats), `credentials.rs` (TURN credentials), `outbox.rs` (the
//! webhook outbox, whose rows [`crate::webhook`] derives from each transition).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::event::{Event, EventSink};
use crate::time::Timestamp;
use crate::webhook::Webhooks;

mod calls;
mod credentials;
mod outbox;
#[cfg(test)]
mod tests;
mod users;

pub use outbox::Pending;
pub use users::{Conversation, Revocation};

/// The schema, version 1.
pub const SCHEMA: &str = include_str!("../../../schema.sql");

/// The migrations, in order; the database's `user_version` is how many have been applied.
/// New versions append here; applied ones never change.
const MIGRATIONS: &[&str] = &[SCHEMA, outbox::MIGRATION, users::REVOCATION];

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
    /// Webhooks, when configured (at [`Store::open`]): each saved transition queues its rows
    /// in the outbox (see [`crate::webhook`]).
    webhooks: Option<Webhooks>,
}

/// A handle to the store thread; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Msg>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
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
    /// thread. Events that committed jobs raise go to `sink`. With `webhooks`, every saved
    /// transition queues its webhooks (in its own transaction), and committing them wakes
    /// [`Webhooks::subscribe`]'s receivers.
    pub fn open(
        path: &Path,
        sink: Arc<dyn EventSink>,
        webhooks: Option<Webhooks>,
    ) -> Result<Store, StoreError> {
        let conn = open_connection(path)?;
        Store::start(conn, sink, webhooks)
    }

    fn start(
        conn: Connection,
        sink: Arc<dyn EventSink>,
        webhooks: Option<Webhooks>,
    ) -> Result<Store, StoreError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        // Calls stay in `created_at` order across restarts, whatever the clock did meanwhile.
        let last: Option<String> =
            conn.query_row("SELECT max(created_at) FROM calls", [], |r| r.get(0))?;
        let db = Db {
            conn,
            last_created: time(last)?.unwrap_or(Timestamp::from_unix_millis(0)),
            events: Vec::new(),
            webhooks,
        };
        let thread = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || store_thread(db, rx, sink))
            .expect("spawn the store thread");
        Ok(Store {
            tx,
            thread: Arc::new(Mutex::new(Some(thread))),
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
}
