//! The HTTP side of `serve`: the call store and its service, the background tasks (ring
//! timeout, TURN credential cleanup), and the REST API on `http.listen`.
//!
//! The API is served by our own accept loop rather than `axum::serve`, which bounds nothing:
//! every connection gets HTTP/1 with a header-read timer (slow or silent clients are closed),
//! at most `http.max_connections` are open at once (more are closed as they come), and a stop
//! drains the connections for at most [`DRAIN`] and then ends them, so that no handler of ours
//! runs once [`Http::stop`] has returned.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use switchboard_signaling::api::{self, ApiState};
use switchboard_signaling::auth::Auth;
use switchboard_signaling::call::{reason, User};
use switchboard_signaling::event::EventSink;
use switchboard_signaling::hub::Hub;
use switchboard_signaling::service::{CallService, Settings};
use switchboard_signaling::store::Store;
use switchboard_signaling::turn::TurnIssuer;
use switchboard_signaling::{sio, ws};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;

use crate::config::Config;
use crate::webhooks::{self, Delivery};
use crate::{cors, metrics};
use crate::{demo, web};
use metrics_exporter_prometheus::PrometheusHandle;
use switchboard_turn::io::Stats;
use uuid::Uuid;

/// How long a stop waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(5);
/// How long a stop lets webhooks that are due go out (within systemd's TimeoutStopSec=20s
/// with [`DRAIN`] and [`STORE_CLOSE`]).
const WEBHOOK_FLUSH: Duration = Duration::from_secs(3);
/// How long a stop waits for the store to finish its queue, checkpoint and close.
const STORE_CLOSE: Duration = Duration::from_secs(5);
/// How long a client has to send a request's head, counted from when the server starts waiting
/// for it: from the accept for the first request, and from the end of the previous response
/// on a keep-alive connection (see [`connection_builder`]).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after a failed accept (EMFILE, ENFILE, ENOBUFS...): the error usually persists
/// for a while, and retrying at once would spin a core.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// At most one log line per this interval for each kind of recurring accept trouble.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The running API.
pub struct Http {
    calls: CallService,
    hub: Arc<Hub>,
    /// Cancelled by [`Http::stop`]: the accept loop stops and every connection shuts down.
    stop: CancellationToken,
    /// The accept loop, which owns the connection tasks and drains them when stopped.
    server: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    /// Webhook delivery, when `webhooks.url` is set.
    webhooks: Option<Delivery>,
    /// `/socket.io/`'s sessions, which a stop closes in two steps.
    sio: Arc<sio::Engine>,
    addr: SocketAddr,
}

/// Opens the store (migrating it) and ends the calls a crash left live, before the API
/// listens, so nothing can see a half-reconciled store. `turn_urls` are the relay's, as bound.
/// Committed call events go to `hub`.
pub async fn open_calls(
    config: &Config,
    turn_urls: Vec<String>,
    hub: Arc<Hub>,
) -> anyhow::Result<CallService> {
    let path = &config.store.path;
    create_parent(path)?;
    let sink: Arc<dyn EventSink> = hub.clone();
    let store = Store::open(path, sink)
        .map_err(|e| anyhow::anyhow!("store.path: {}: {e}", path.display()))?;
    // Webhooks on before anything is saved: the restart reconciliation below queues its own.
    webhooks::enable(&config.webhooks, &store, hub).await?;
    let turn = &config.turn;
    let issuer = TurnIssuer::new(
        turn.secret.expose().as_bytes(),
        turn.credential_ttl,
        turn_urls,
    )
    .with_separator(turn.rest_api_separator);
    let settings = Settings {
        ring_timeout: config.calls.ring_timeout,
        reconnect_grace: config.calls.reconnect_grace,
        max_participants: config.calls.max_participants as usize,
        open_conversations: config.auth.open_conversations,
    };
    let calls = CallService::new(store, settings, issuer);
    let ended = calls.reconcile().await?;
    if ended > 0 {
        tracing::warn!(
            calls = ended,
            "live calls from before a restart ended (server-restart)"
        );
    }
    tracing::info!(path = %path.display(), "call store open");
    Ok(calls)
}

fn create_parent(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| anyhow::anyhow!("store.path: cannot create {}: {e}", dir.display())),
        _ => Ok(()),
    }
}

/// `GET /healthz`: liveness. The process answers HTTP.
async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: readiness. 200 while the store answers within [`READY_WITHIN`], else 503.
async fn readyz(
    axum::extract::State(s): axum::extract::State<Arc<ApiState>>,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    use axum::http::StatusCode;
    match s.calls.store().ping(READY_WITHIN).await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ready"})),
        ),
        Err(reason) => {
            let body = serde_json::json!({"status": "unavailable", "reason": reason});
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body))
        }
    }
}

/// How long `/readyz` waits for the store.
const READY_WITHIN: Duration = Duration::from_secs(1);

impl Http {
    /// The bound HTTP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Binds `http.listen` and serves the API; starts the background tasks.
    /// `telemetry`: the metrics recorder's handle and the relay's counters, for `/metrics`.
    pub async fn start(
        config: &Config,
        calls: CallService,
        hub: Arc<Hub>,
        telemetry: Option<(PrometheusHandle, Arc<Stats>)>,
    ) -> anyhow::Result<Http> {
        let listen = config.http.listen;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("http.listen: cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr()?;
        let auth = Auth::new(
            config.auth.jwt_secret.as_ref().map(|s| s.expose()),
            config.auth.admin_token.as_ref().map(|s| s.expose()),
        );
        let state = Arc::new(ApiState {
            calls: calls.clone(),
            auth,
            hub: hub.clone(),
        });
        let sio = sio::Engine::new(state.clone());
        let app = api::router(state.clone())
            .merge(
                Router::new()
                    .route("/ws", axum::routing::get(ws::handler))
                    .route("/healthz", axum::routing::get(healthz))
                    .route("/readyz", axum::routing::get(readyz))
                    .with_state(state.clone()),
            )
            .merge(sio.router())
            .merge(demo::router(
                state.clone(),
                config
                    .dev
                    .then(|| {
                        config
                            .auth
                            .jwt_secret
                            .as_ref()
                            .map(|s| s.expose().to_owned())
                    })
                    .flatten(),
            ))
            .merge(web::router());
        let app = match telemetry {
            Some((handle, relay)) => {
                tokio::spawn(metrics::upkeep(handle.clone()));
                let sources = metrics::Sources {
                    handle,
                    relay,
                    hub: hub.clone(),
                    calls: calls.clone(),
                };
                app.merge(
                    Router::new()
                        .route("/metrics", axum::routing::get(metrics::scrape))
                        .with_state(sources),
                )
            }
            None => app,
        };
        let app = app
            .fallback(api::not_found)
            .layer(CatchPanicLayer::custom(|_| api::panic_response()))
            // Outside the panic catcher: its 500 is readable cross-origin too.
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(cors::Cors::new(
                    config.http.allowed_origins.clone(),
                    config.http.public_url.as_deref(),
                )),
                cors::layer,
            ))
            .layer(axum::middleware::from_fn(metrics::track));
        let stop = CancellationToken::new();
        let server = Server {
            listener,
            service: TowerToHyperService::new(app),
            builder: connection_builder(),
            max_connections: config.http.max_connections,
            slots: Arc::new(Semaphore::new(config.http.max_connections as usize)),
            stop: stop.clone(),
        };
        let server = tokio::spawn(server.run());
        tracing::info!(addr = %addr, "http listening");
        let cleanup_every = (config.turn.credential_ttl / 2)
            .clamp(Duration::from_secs(1), Duration::from_secs(600));
        // A device that got `call:incoming` is ringing: the invitee (and the call) move there.
        let (rung, mut ringing) = tokio::sync::mpsc::channel::<(Uuid, Uuid)>(4096);
        hub.report_ringing(rung);
        let ringer = calls.clone();
        let tasks = vec![
            tokio::spawn(calls.clone().run_ring_timer()),
            tokio::spawn(calls.clone().run_credential_cleanup(cleanup_every)),
            tokio::spawn(calls.clone().run_reconnect_grace(hub.clone())),
            tokio::spawn(ws::run_heartbeat(hub.clone())),
            tokio::spawn(async move {
                while let Some((user, call)) = ringing.recv().await {
                    // The token's name and email are not at hand: a bare user keeps the stored.
                    let who = User {
                        id: user,
                        name: None,
                        email: None,
                    };
                    if let Err(e) = ringer.ring(&who, call).await {
                        tracing::debug!(error = %e, "ringing not recorded");
                    }
                }
            }),
        ];
        let webhooks = calls
            .store()
            .webhook_wakeups()
            .map(|wake| Delivery::start(&config.webhooks, calls.store().clone(), wake));
        Ok(Http {
            calls,
            hub,
            stop,
            server,
            tasks,
            webhooks,
            sio,
            addr,
        })
    }

    /// Stops accepting, lets requests in flight finish (bounded by [`DRAIN`], after which the
    /// connections left are ended), stops the tasks, ends the calls still live
    /// (`server-shutdown`) and closes the store (bounded by [`STORE_CLOSE`]).
    pub async fn stop(mut self) {
        // Long polls would hold the drain: their sessions are closed first, which answers them.
        self.sio.stop_polling();
        self.stop.cancel();
        // The accept loop drains for DRAIN, then aborts the connection tasks left and waits
        // for them to end, which is immediate unless a handler blocks its thread: the margin
        // is for that, and past it nothing more can be done than to leave it.
        match tokio::time::timeout(DRAIN + Duration::from_secs(1), &mut self.server).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "http server task failed"),
            Err(_) => {
                tracing::error!("http connections did not end when aborted; leaving them");
                self.server.abort();
            }
        }
        for t in &self.tasks {
            t.abort();
        }
        // The relay stops with the process: calls still live cannot go on.
        match self.calls.end_live_calls(reason::SERVER_SHUTDOWN).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(calls = n, "live calls ended (server-shutdown)"),
            Err(e) => tracing::error!(error = %e, "cannot end the live calls"),
        }
        // The webhooks due (the shutdown's own `call.ended` included) get a moment to go out;
        // what is left is delivered after the next start.
        if let Some(webhooks) = self.webhooks.take() {
            webhooks.stop(WEBHOOK_FLUSH).await;
        }
        // WebSockets last, once they have been told their calls ended (their upgraded
        // connections are not the accept loop's to drain).
        self.hub.disconnect_all(ws::SHUTDOWN);
        self.sio.close_all();
        match tokio::time::timeout(STORE_CLOSE, self.calls.store().close()).await {
            Ok(()) => tracing::info!("call store closed"),
            // Every commit is already durable (WAL, synchronous=FULL): what is lost is the
            // final checkpoint, which the next open does.
            Err(_) => tracing::warn!("the call store did not close within {STORE_CLOSE:?}"),
        }
    }
}

/// The API's service, as hyper calls it.
type Service = TowerToHyperService<Router>;

/// The HTTP/1 settings of every API connection.
fn connection_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    // The header-read timeout needs a timer (hyper panics without one when it is set, and
    // axum::serve sets none, which left the default 30 s timeout unarmed).
    //
    // It also bounds idle keep-alive connections: hyper (1.12, src/proto/h1/conn.rs) starts
    // the timer whenever it begins waiting for a request head, that is at the accept and
    // again as soon as a response is done on a keep-alive connection (`State::idle` sets
    // `notify_read` when the timeout is set, so the dispatcher re-enters `poll_read_head`
    // and arms it before any byte of the next request). So a connection is closed after
    // HEADER_READ_TIMEOUT without a complete request head, whether it is silent, trickling
    // a header, or idle between requests; no separate idle timer is needed. Keep-alive
    // clients (a reverse proxy's upstream pool) should use a shorter idle timeout than this.
    // tests/http_limits.rs checks the three cases.
    //
    // This is also why the connections are hyper's http1 ones rather than hyper-util's
    // `auto::Builder`: its `serve_connection_with_upgrades` first reads up to 24 bytes to
    // tell HTTP/1 from an HTTP/2 preface (even with `http1_only`, which it ignores), with no
    // timer, so a client that connects and sends nothing would be held forever.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder
}

/// The accept loop and what it needs.
struct Server {
    listener: TcpListener,
    service: Service,
    builder: http1::Builder,
    max_connections: u32,
    /// One permit per open connection, `http.max_connections` in all.
    slots: Arc<Semaphore>,
    stop: CancellationToken,
}

impl Server {
    /// Accepts until stopped, then drains the connections.
    async fn run(self) {
        let mut conns = JoinSet::new();
        let mut refused = Tally::new(LOG_EVERY);
        let mut failed = Tally::new(LOG_EVERY);
        loop {
            let accepted = tokio::select! {
                biased;
                () = self.stop.cancelled() => break,
                // Reaps finished connection tasks, so the set holds only open connections.
                Some(joined) = conns.join_next(), if !conns.is_empty() => {
                    if let Err(e) = joined {
                        if e.is_panic() {
                            tracing::error!(error = %e, "http connection task panicked");
                        }
                    }
                    continue;
                }
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if let Some(errors) = failed.note() {
                        tracing::warn!(error = %e, errors, "http accept failed; pausing accepts");
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            // Over the cap: closed at once, before any byte is read.
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                if let Some(connections) = refused.note() {
                    tracing::debug!(
                        connections,
                        max = self.max_connections,
                        "http.max_connections reached: closing new connections"
                    );
                }
                drop(stream);
                continue;
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(peer = %peer, error = %e, "cannot set TCP_NODELAY");
            }
            let io = TokioIo::new(Slotted {
                stream,
                _slot: slot,
            });
            let conn = self
                .builder
                .serve_connection(io, self.service.clone())
                .with_upgrades();
            conns.spawn(serve_connection(conn, self.stop.clone(), peer));
        }
        // Stop accepting: the listening socket closes, so new clients are refused by the
        // kernel rather than left in the backlog.
        drop(self.listener);
        drain(conns).await;
    }
}

/// One connection, until it ends or, once stopped, until hyper has shut it down gracefully:
/// at once when it is idle, after the response when a request is in flight.
async fn serve_connection(
    conn: http1::UpgradeableConnection<TokioIo<Slotted>, Service>,
    stop: CancellationToken,
    peer: SocketAddr,
) {
    tokio::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        // Header timeouts, resets, malformed requests: the client's doing, and per
        // connection, so not above debug.
        tracing::debug!(peer = %peer, error = %e, "http connection ended");
    }
}

/// Waits at most [`DRAIN`] for the connections to end, then aborts those left and waits
/// until they have: after this no connection task (and so no handler) of ours runs.
async fn drain(mut conns: JoinSet<()>) {
    if conns.is_empty() {
        return;
    }
    tracing::info!(
        connections = conns.len(),
        "http stopped accepting; finishing requests in flight"
    );
    let all_ended = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN, all_ended).await.is_err() {
        tracing::warn!(
            connections = conns.len(),
            "http connections still open after {DRAIN:?}; closing them"
        );
        conns.shutdown().await;
    }
}

/// An accepted socket with its slot of `http.max_connections`. The slot goes with the socket,
/// so it is given back when the socket closes, also when an upgraded connection (a WebSocket)
/// outlives the HTTP connection task it came from.
struct Slotted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Slotted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Counts a recurring event and says when to log it: at most once per interval, with the
/// number of events since the last line, so that a flood costs one line per interval.
struct Tally {
    every: Duration,
    since_logged: u64,
    logged: Option<Instant>,
}

impl Tally {
    fn new(every: Duration) -> Tally {
        Tally {
            every,
            since_logged: 0,
            logged: None,
        }
    }

    /// Counts one event; `Some(events since the last line, this one included)` when it is
    /// time for a line.
    fn note(&mut self) -> Option<u64> {
        self.since_logged += 1;
        let now = Instant::now();
        if self
            .logged
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            return None;
        }
        self.logged = Some(now);
        Some(std::mem::take(&mut self.since_logged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_logs_the_first_event_then_once_per_interval_with_the_count() {
        let mut t = Tally::new(Duration::from_millis(200));
        assert_eq!(t.note(), Some(1));
        assert_eq!(t.note(), None);
        assert_eq!(t.note(), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(t.note(), Some(3));
        assert_eq!(t.note(), None);
    }
}
