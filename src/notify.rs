//! The service manager's side of `Type=notify` (systemd, sd_notify(3)): `READY=1` with a
//! one-line `STATUS=` once every listener is bound and the store is migrated, `RELOADING=1`
//! and `READY=1` around a SIGHUP, `STOPPING=1` at a stop, a `STATUS=` of the load every
//! [`STATUS_EVERY`], and the watchdog: `WATCHDOG=1` every half `WatchdogSec` while the relay
//! thread runs and the store answers. Without `$NOTIFY_SOCKET` all of it does nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use switchboard_signaling::hub::Hub;
use switchboard_signaling::service::CallService;
use switchboard_turn::io::Stats;

/// How often `STATUS=` is brought up to date.
pub const STATUS_EVERY: Duration = Duration::from_secs(10);

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Before a reload (systemd's `Type=notify-reload` wants the monotonic time with it).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// What is checked before each watchdog ping, and the load for `STATUS=`.
pub struct Health {
    pub relay: Arc<Stats>,
    pub calls: CallService,
    pub hub: Arc<Hub>,
    /// The listeners, for the status line.
    pub serving: String,
}

impl Health {
    /// Whether the daemon works: the relay thread runs and the store answers within `limit`.
    async fn check(&self, limit: Duration) -> Result<(), &'static str> {
        if !self.relay.running.load(Ordering::Acquire) {
            return Err("the relay thread has stopped");
        }
        self.calls.store().ping(limit).await
    }

    fn status(&self) -> String {
        format!(
            "{}; {} sockets, {} live calls, {} allocations",
            self.serving,
            self.hub.socket_count(),
            self.hub.live_call_count(),
            self.relay.allocations.load(Ordering::Relaxed),
        )
    }
}

/// Keeps `STATUS=` up to date and, when systemd asked for one (`WatchdogSec`), feeds the
/// watchdog every half period while [`Health::check`] passes: a hung runtime, a dead relay
/// thread or a stuck store stop the pings, and systemd restarts the service.
pub async fn run(health: Health) {
    let watchdog = sd_notify::watchdog_enabled();
    let every = match watchdog {
        Some(period) => (period / 2).clamp(Duration::from_millis(50), STATUS_EVERY),
        None => STATUS_EVERY,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut status_at = tokio::time::Instant::now();
    let mut failing = false;
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        let status = (now >= status_at).then(|| {
            status_at = now + STATUS_EVERY;
            health.status()
        });
        let mut states = Vec::new();
        if watchdog.is_some() {
            match health.check(every).await {
                Ok(()) => {
                    failing = false;
                    states.push(NotifyState::Watchdog);
                }
                Err(why) => {
                    if !failing {
                        tracing::error!("watchdog not fed: {why}");
                    }
                    failing = true;
                }
            }
        }
        if let Some(status) = &status {
            states.push(NotifyState::Status(status));
        }
        if !states.is_empty() {
            send(&states);
        }
    }
}
