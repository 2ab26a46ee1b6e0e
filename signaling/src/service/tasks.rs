//! The background tasks: the ring timer, the hub's ringing reports, the reconnect grace and the
//! TURN credential cleanup, with the sweeps they run; and the end of every live call at restart
//! and shutdown. [`crate::Domain`] starts the tasks and owns them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::{CallError, CallService};
use crate::call::{Call, EndReason, User};
use crate::hub::{Departure, Hub};
use crate::store::StoreError;
use crate::time::Timestamp;

/// Sleeps until `at`, or forever.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl CallService {
    /// Every socket of `user` has been gone longer than the reconnect grace: they leave
    /// `call_id` (see [`Call::connection_lost`]).
    pub async fn connection_lost(&self, user: &User, call_id: Uuid) -> Result<(), CallError> {
        self.act(user, call_id, Call::connection_lost)
            .await
            .map(|_| ())
    }

    /// The reconnect grace: a user joined in a live call whose last socket went (a
    /// [`Departure`] from `hub`, through `departures`) and who has not reconnected
    /// `reconnect_grace` later leaves every call they are still joined in. Runs until the task
    /// is dropped or the hub is.
    pub async fn run_reconnect_grace(
        self,
        hub: Arc<Hub>,
        mut departures: mpsc::UnboundedReceiver<Departure>,
    ) {
        let grace = self.inner.settings.reconnect_grace;
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

    /// Ends the calls a crash left live (reason `server-restart`); returns how many.
    pub async fn reconcile(&self) -> Result<usize, CallError> {
        self.end_live_calls(EndReason::ServerRestart).await
    }

    /// Ends every live call with `why` (restart reconciliation, shutdown), in one job, each
    /// call in its own savepoint (one that cannot be ended is logged and left for the next
    /// start); returns how many were ended.
    pub async fn end_live_calls(&self, why: EndReason) -> Result<usize, CallError> {
        let inner = self.inner.clone();
        self.at_now(move |db, now| {
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
            let now = self.inner.clock.now();
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
            let now = self.inner.clock.now();
            match self.delete_expired_turn_credentials(now).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "expired turn credentials deleted"),
                Err(e) => tracing::error!(error = %e, "turn credential cleanup failed"),
            }
        }
    }

    /// The hub's ringing reports: a device of `user` got `call:incoming`, so the invitee (and
    /// the call) move to ringing. Runs until the task is dropped or the hub is.
    pub async fn run_ring_reports(self, mut rung: mpsc::Receiver<(Uuid, Uuid)>) {
        while let Some((user, call)) = rung.recv().await {
            // The token's name and email are not at hand: a bare user keeps the stored.
            let who = User {
                id: user,
                name: None,
                email: None,
            };
            if let Err(e) = self.ring(&who, call).await {
                tracing::debug!(error = %e, "ringing not recorded");
            }
        }
    }
}
