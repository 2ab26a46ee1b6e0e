//! The signaling domain, wired: the hub, the call service over its store, and the background
//! tasks that close the loop between them.
//!
//! The hub and the service need each other. The store delivers every committed event to the
//! hub (its [`EventSink`]); the hub reports back which invitees' devices ring and which joined
//! users lost their last socket ([`Reports`]), and the service's tasks act on those reports.
//! [`Domain::open`] builds the parts in that order, with the channels between them, and starts
//! the tasks: nothing is set on a part once it is shared.
//!
//! The tasks ([`CallService`]'s `run_*`): the ring timer, the ringing reports, the reconnect
//! grace and the TURN credential cleanup. The [`Domain`] owns them: [`Domain::stop`] ends them
//! (and so does dropping it).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use switchboard_sfu::io::SfuHandle;
use switchboard_sfu::SfuEvent;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::call::EndReason;
use crate::event::EventSink;
use crate::hub::{Hub, Reports};
use crate::media::{run_sfu_events, SfuSink};
use crate::revoke::{RelayRevokeFn, Revocations};
use crate::service::{CallError, CallService, RelayUsageFn, Settings};
use crate::socket::limits::MAX_SOCKETS_PER_USER;
use crate::store::{Store, StoreError};
use crate::time::Clock;
use crate::turn::TurnIssuer;
use crate::webhook::Webhooks;

/// What [`Domain::open`] needs.
pub struct Setup {
    /// The SQLite file, created if need be (its directory must exist).
    pub store: PathBuf,
    pub settings: Settings,
    /// Mints the TURN credentials the API hands out.
    pub turn: TurnIssuer,
    /// Where each webhook goes (a row per event and URL); none: no webhooks.
    pub webhook_urls: Vec<String>,
    /// The relay the daemon runs, if it runs one.
    pub relay: Option<RelayHooks>,
    /// The SFU the daemon runs for group calls, if it runs one, and what it says.
    pub sfu: Option<(SfuHandle, mpsc::UnboundedReceiver<SfuEvent>)>,
    /// The time every operation and task reads.
    pub clock: Clock,
}

/// What the domain asks of the relay running beside it.
#[derive(Clone)]
pub struct RelayHooks {
    /// What it carried for a user (for `quality_stats`).
    pub usage: RelayUsageFn,
    /// Whose credentials to refuse, and until when (revocations).
    pub revoke: RelayRevokeFn,
}

/// Why the domain did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The store cannot be opened or migrated.
    #[error(transparent)]
    Store(StoreError),
    /// The store opened, but its first jobs (dropping the webhooks of URLs no longer
    /// configured, ending the calls a crash left live) failed.
    #[error(transparent)]
    Start(CallError),
}

/// The wired domain, with [`MAX_SOCKETS_PER_USER`] sockets per user. `hub` and `calls` are
/// shared with the transports and the API (clone them); the domain keeps the background tasks.
pub struct Domain {
    pub hub: Arc<Hub>,
    pub calls: CallService,
    /// The revocations in force, which user tokens are checked against (`Auth`).
    pub revocations: Arc<Revocations>,
    /// Changes after each commit that queued webhooks (with webhooks only).
    webhook_wake: Option<watch::Receiver<u64>>,
    tasks: JoinSet<()>,
}

impl Domain {
    /// Opens the store (migrating it), drops the webhooks queued for URLs no longer in
    /// `webhook_urls`, ends the calls a crash left live (`server-restart`), puts the stored
    /// revocations in force again (the relay's too), and starts the background tasks. Inside
    /// a tokio runtime.
    pub async fn open(setup: Setup) -> Result<Domain, OpenError> {
        let (hub, reports) = Hub::new(MAX_SOCKETS_PER_USER);
        let hub = Arc::new(hub);
        let urls = setup.webhook_urls;
        let webhooks = (!urls.is_empty()).then(|| {
            let hub = hub.clone();
            let online = Arc::new(move |user| hub.sockets_of(user) > 0);
            Webhooks::new(urls.clone(), online)
        });
        let webhook_wake = webhooks.as_ref().map(Webhooks::subscribe);
        let (sfu, sfu_events) = match setup.sfu {
            Some((handle, events)) => (Some(Arc::new(handle)), Some(events)),
            None => (None, None),
        };
        let sink: Arc<dyn EventSink> = match &sfu {
            Some(sfu) => Arc::new(SfuSink {
                hub: hub.clone(),
                sfu: sfu.clone(),
            }),
            None => hub.clone(),
        };
        let store = Store::open(&setup.store, sink, webhooks).map_err(OpenError::Store)?;
        let calls = CallService::new(
            store,
            setup.settings,
            setup.turn,
            setup.relay.as_ref().map(|r| r.usage.clone()),
            sfu,
            setup.clock,
        );
        let revocations = Arc::new(Revocations::new(setup.relay.map(|r| r.revoke)));
        if let Err(e) = start(&calls, urls, &revocations).await {
            calls.store().close().await;
            return Err(OpenError::Start(e));
        }
        let mut tasks = spawn_tasks(&calls, &hub, reports);
        if let Some(events) = sfu_events {
            tasks.spawn(run_sfu_events(hub.clone(), calls.clone(), events));
        }
        Ok(Domain {
            hub,
            calls,
            revocations,
            webhook_wake,
            tasks,
        })
    }

    /// A receiver that changes after each commit that queued webhooks: the delivery's cue.
    /// `None` without webhooks.
    pub fn webhook_wakeups(&self) -> Option<watch::Receiver<u64>> {
        self.webhook_wake.clone()
    }

    /// The first step of a stop, once no request is served any more: stops the background
    /// tasks and ends every live call (`server-shutdown`), which tells the participants'
    /// sockets and queues the calls' webhooks; returns how many calls ended. The daemon then
    /// lets the webhooks due go out, disconnects the sockets, and [`Domain::close`]s.
    pub async fn stop(&mut self) -> Result<usize, CallError> {
        self.tasks.shutdown().await;
        self.calls.end_live_calls(EndReason::ServerShutdown).await
    }

    /// The last step of a stop: the store finishes its queue, checkpoints and closes (see
    /// [`Store::close`]).
    pub async fn close(self) {
        self.calls.store().close().await;
    }
}

/// The store's first jobs, before anything else can use it.
async fn start(
    calls: &CallService,
    urls: Vec<String>,
    revocations: &Revocations,
) -> Result<(), CallError> {
    if !urls.is_empty() {
        let gone = calls
            .store()
            .run(move |db| db.webhook_forget_others(&urls))
            .await?;
        if gone > 0 {
            tracing::warn!(
                deliveries = gone,
                "webhooks queued for URLs no longer in webhooks.url were dropped"
            );
        }
    }
    let now = calls.now();
    for r in calls.revocations().await? {
        revocations.apply(&r, now);
    }
    let ended = calls.reconcile().await?;
    if ended > 0 {
        tracing::warn!(
            calls = ended,
            "live calls from before a restart ended (server-restart)"
        );
    }
    Ok(())
}

fn spawn_tasks(calls: &CallService, hub: &Arc<Hub>, reports: Reports) -> JoinSet<()> {
    // Every half credential lifetime, between a second and ten minutes.
    let cleanup_every =
        (calls.turn_ttl() / 2).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let mut tasks = JoinSet::new();
    tasks.spawn(calls.clone().run_ring_timer());
    tasks.spawn(calls.clone().run_ring_reports(reports.ringing));
    tasks.spawn(
        calls
            .clone()
            .run_reconnect_grace(hub.clone(), reports.departures),
    );
    tasks.spawn(calls.clone().run_credential_cleanup(cleanup_every));
    tasks
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use uuid::Uuid;

    use super::*;
    use crate::call::tests::{ALICE, BOB, CONVERSATION_ID};
    use crate::call::{CallStatus, CallType, EndReason, User};
    use crate::hub::tests::Inbox;
    use crate::service::{CallView, InitiateRequest};

    async fn open(dir: &tempfile::TempDir, grace: Duration, webhooks: bool) -> Domain {
        let setup = Setup {
            store: dir.path().join("calls.db"),
            settings: Settings {
                ring_timeout: Duration::from_secs(60),
                reconnect_grace: grace,
                max_participants: 8,
                open_conversations: true,
                max_live_per_user: 4,
                sfu_from: None,
            },
            turn: TurnIssuer::new(b"s", Duration::from_secs(60), Vec::new()),
            webhook_urls: if webhooks {
                vec!["http://hooks.test/".into()]
            } else {
                Vec::new()
            },
            relay: None,
            sfu: None,
            clock: Clock::system(),
        };
        Domain::open(setup).await.unwrap()
    }

    fn user(id: Uuid) -> User {
        User {
            id,
            name: None,
            email: None,
        }
    }

    async fn call_bob(d: &Domain) -> Uuid {
        let req = InitiateRequest {
            conversation_id: CONVERSATION_ID,
            kind: CallType::Audio,
            participant_ids: vec![BOB],
        };
        d.calls.initiate(&user(ALICE), req).await.unwrap().call_id
    }

    /// The call as Alice sees it once `done` says so (within 5 s).
    async fn until(d: &Domain, call: Uuid, done: impl Fn(&CallView) -> bool) -> CallView {
        let view = || async { d.calls.get(&user(ALICE), call).await.unwrap().call };
        within(async {
            loop {
                let v = view().await;
                if done(&v) {
                    return v;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    }

    async fn within<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), f)
            .await
            .expect("in time")
    }

    /// The loop between the hub and the service: `call:incoming` reaching Bob's phone moves
    /// the call to ringing; Alice, who called without a socket, leaves once the reconnect
    /// grace is over, which ends the call for Bob.
    #[tokio::test]
    async fn the_hub_reports_ringing_and_departures_to_the_service() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = open(&dir, Duration::from_millis(300), false).await;
        let phone = Inbox::with_room(9);
        d.hub.attach(BOB, phone.clone()).unwrap();
        let call = call_bob(&d).await;
        let rung = until(&d, call, |v| v.status != CallStatus::Initiated).await;
        assert_eq!(rung.status, CallStatus::Ringing);
        let over = until(&d, call, |v| !v.status.is_live()).await;
        assert_eq!(over.end_reason, Some(EndReason::ConnectionLost));
        assert_eq!(phone.names(), ["call:incoming", "call:ended"]);
        assert_eq!(d.stop().await.unwrap(), 0);
        d.close().await;
    }

    /// A stop ends the live calls, which queues their webhooks; the delivery's cue changes
    /// after each commit that queued some.
    #[tokio::test]
    async fn a_stop_ends_the_live_calls_and_webhooks_are_queued_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = open(&dir, Duration::from_secs(60), true).await;
        let mut wake = d.webhook_wakeups().expect("webhooks are on");
        wake.borrow_and_update();
        let call = call_bob(&d).await;
        within(wake.changed()).await.unwrap();
        assert_eq!(d.stop().await.unwrap(), 1);
        within(wake.changed()).await.unwrap();
        let view = d.calls.get(&user(ALICE), call).await.unwrap().call;
        assert_eq!(view.end_reason, Some(EndReason::ServerShutdown));
        let kinds = d
            .calls
            .store()
            .run(|db| db.webhook_batch("http://hooks.test/", 10))
            .await
            .unwrap();
        let kinds: Vec<String> = kinds.into_iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            [
                "call.initiated",
                "call.ringing_user_offline",
                "call.missed",
                "call.ended"
            ]
        );
        d.close().await;
        // Without webhook URLs there is nothing to wake.
        let dir = tempfile::tempdir().unwrap();
        assert!(open(&dir, Duration::from_secs(60), false)
            .await
            .webhook_wakeups()
            .is_none());
    }
}
