//! The application `serve` runs behind its accept loop (`http.rs`): the signaling domain opened
//! from the config, the router over it (the REST API, `/ws`, `/socket.io/`, the probes,
//! `/metrics`, the demo and the web client, under the middleware), and the tasks that go with
//! them (the sockets' heartbeat, webhook delivery, the metrics' upkeep).
//!
//! [`router`] is the whole HTTP surface as one `Router`, which the unit tests below drive with
//! `oneshot`, without a socket.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use switchboard_sfu::io::SfuHandle;
use switchboard_sfu::SfuEvent;
use switchboard_signaling::api::{self, ApiState, UserLimits};
use switchboard_signaling::auth::Auth;
use switchboard_signaling::domain::{OpenError, RelayHooks, Setup};
use switchboard_signaling::service::Settings;
use switchboard_signaling::time::Clock;
use switchboard_signaling::turn::TurnIssuer;
use switchboard_signaling::{sio, ws, Domain};
use switchboard_turn::io::Stats;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;

use crate::config::Config;
use crate::webhooks::Delivery;
use crate::{cors, demo, metrics, web};

/// How long a stop lets webhooks that are due go out (within systemd's TimeoutStopSec=20s
/// with the HTTP drain and [`STORE_CLOSE`]).
const WEBHOOK_FLUSH: Duration = Duration::from_secs(3);
/// How long a stop waits for the store to finish its queue, checkpoint and close.
const STORE_CLOSE: Duration = Duration::from_secs(5);
/// How long `/readyz` waits for the store.
const READY_WITHIN: Duration = Duration::from_secs(1);

/// Opens the call domain: the store (migrated, and the calls a crash left live ended, before
/// the API listens, so nothing can see a half-reconciled store), the hub and the call service,
/// wired, with their background tasks. `turn_urls` are the relay's, as bound; `relay`, when
/// the daemon runs one, reads its counters for `quality_stats` and tells it of revocations.
pub async fn open_domain(
    config: &Config,
    turn_urls: Vec<String>,
    relay: Option<RelayHooks>,
    sfu: Option<(SfuHandle, mpsc::UnboundedReceiver<SfuEvent>)>,
) -> anyhow::Result<Domain> {
    let path = &config.store.path;
    create_parent(path)?;
    let turn = &config.turn;
    let issuer = TurnIssuer::new(
        turn.secret.expose().as_bytes(),
        turn.credential_ttl,
        turn_urls,
    )
    .with_separator(turn.rest_api_separator);
    let setup = Setup {
        store: path.clone(),
        settings: Settings {
            ring_timeout: config.calls.ring_timeout,
            reconnect_grace: config.calls.reconnect_grace,
            max_participants: config.calls.max_participants as usize,
            open_conversations: config.auth.open_conversations,
            max_live_per_user: config.calls.max_live_per_user as usize,
            sfu_from: sfu.as_ref().map(|_| config.calls.sfu_from as usize),
        },
        turn: issuer,
        webhook_urls: config.webhooks.urls.clone(),
        relay,
        sfu,
        clock: Clock::system(),
    };
    let domain = Domain::open(setup).await.map_err(|e| match e {
        OpenError::Store(e) => anyhow::anyhow!("store.path: {}: {e}", path.display()),
        OpenError::Start(e) => anyhow::Error::new(e),
    })?;
    tracing::info!(path = %path.display(), "call store open");
    Ok(domain)
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

/// The running application: the domain, what the transports share, and the tasks.
pub struct App {
    domain: Domain,
    state: Arc<ApiState>,
    /// `/socket.io/`'s sessions, which a stop closes in two steps.
    sio: Arc<sio::Engine>,
    tasks: Vec<JoinHandle<()>>,
    /// Webhook delivery, when `webhooks.url` is set.
    webhooks: Option<Delivery>,
}

impl App {
    /// The application over `domain`; starts the sockets' heartbeat and webhook delivery.
    pub fn start(config: &Config, domain: Domain) -> App {
        let auth = Auth::new(
            config.auth.jwt_secret.as_ref().map(|s| s.expose()),
            config.auth.admin_token.as_ref().map(|s| s.expose()),
        )
        .with_scope(config.auth.scope.clone())
        .with_revocations(domain.revocations.clone());
        let state = Arc::new(ApiState {
            calls: domain.calls.clone(),
            auth,
            hub: domain.hub.clone(),
            limits: UserLimits::new(config.http.user_rate, config.http.user_burst),
        });
        let sio = sio::Engine::new(state.clone());
        let tasks = vec![tokio::spawn(ws::run_heartbeat(domain.hub.clone()))];
        let webhooks = domain
            .webhook_wakeups()
            .map(|wake| Delivery::start(&config.webhooks, domain.calls.store().clone(), wake));
        App {
            domain,
            state,
            sio,
            tasks,
            webhooks,
        }
    }

    /// The router over the application (see [`router`]); with `telemetry` (the metrics
    /// recorder's handle and the relay's counters), `/metrics` too, and its upkeep task.
    pub fn router(
        &mut self,
        config: &Config,
        telemetry: Option<(PrometheusHandle, Arc<Stats>)>,
    ) -> Router {
        let sources = telemetry.map(|(handle, relay)| {
            self.tasks
                .push(tokio::spawn(metrics::upkeep(handle.clone())));
            metrics::Sources {
                handle,
                relay,
                hub: self.domain.hub.clone(),
                calls: self.domain.calls.clone(),
            }
        });
        router(config, self.state.clone(), &self.sio, sources)
    }

    /// The first step of a stop, before the connections drain: long polls would hold the
    /// drain, so their sessions are closed first, which answers them.
    pub fn stop_polling(&self) {
        self.sio.stop_polling();
    }

    /// The rest of a stop, once no request is served: stops the tasks, ends the calls still
    /// live (`server-shutdown`), lets the webhooks due go out (bounded by [`WEBHOOK_FLUSH`]),
    /// disconnects the sockets and closes the store (bounded by [`STORE_CLOSE`]).
    pub async fn stop(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // The relay stops with the process: calls still live cannot go on.
        match self.domain.stop().await {
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
        self.domain.hub.disconnect_all(ws::SHUTDOWN);
        self.sio.close_all();
        match tokio::time::timeout(STORE_CLOSE, self.domain.close()).await {
            Ok(()) => tracing::info!("call store closed"),
            // Every commit is already durable (WAL, synchronous=FULL): what is lost is the
            // final checkpoint, which the next open does.
            Err(_) => tracing::warn!("the call store did not close within {STORE_CLOSE:?}"),
        }
    }
}

/// Every route `serve` answers, under the middleware, from the outside in: metrics, CORS, the
/// panic catcher. `/metrics` with `metrics` only.
pub fn router(
    config: &Config,
    state: Arc<ApiState>,
    sio: &Arc<sio::Engine>,
    metrics: Option<metrics::Sources>,
) -> Router {
    let demo_secret = config
        .dev
        .then(|| {
            config
                .auth
                .jwt_secret
                .as_ref()
                .map(|s| s.expose().to_owned())
        })
        .flatten();
    let app = api::router(state.clone())
        .merge(
            Router::new()
                .route("/ws", get(ws::handler))
                .route("/healthz", get(healthz))
                .route("/readyz", get(readyz))
                .with_state(state.clone()),
        )
        .merge(sio.router())
        .merge(demo::router(state, demo_secret))
        .merge(web::router());
    let app = match metrics {
        Some(sources) => app.merge(
            Router::new()
                .route("/metrics", get(metrics::scrape))
                .with_state(sources),
        ),
        None => app,
    };
    app.fallback(api::not_found)
        .layer(CatchPanicLayer::custom(|_| api::panic_response()))
        // Outside the panic catcher: its 500 is readable cross-origin too.
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(cors::Cors::new(
                config.http.allowed_origins.clone(),
                config.http.public_url.as_deref(),
            )),
            cors::layer,
        ))
        .layer(axum::middleware::from_fn(metrics::track))
}

/// `GET /healthz`: liveness. The process answers HTTP.
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: readiness. 200 while the store answers within [`READY_WITHIN`], else 503.
async fn readyz(State(s): State<Arc<ApiState>>) -> (StatusCode, Json<Value>) {
    match s.calls.store().ping(READY_WITHIN).await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Err(reason) => {
            let body = json!({"status": "unavailable", "reason": reason});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body))
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;
    use crate::config::{self, Origin};

    /// The application over a store in `dir`, and its router.
    async fn app(dir: &Path) -> (App, Router) {
        let text = "[turn]\nsecret = \"s3cret-s3cret-s3cret\"\nrelay_ip = \"127.0.0.1\"\n\
                    [store]\npath = \"calls.db\"\n";
        let config = config::load_str(text, dir, Origin::File("t".into())).unwrap();
        let domain = open_domain(&config, Vec::new(), None, None).await.unwrap();
        let mut app = App::start(&config, domain);
        let router = app.router(&config, None);
        (app, router)
    }

    async fn get(router: &Router, uri: &str) -> (StatusCode, Value) {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn probes_answer_until_the_store_closes() {
        let dir = tempfile::tempdir().unwrap();
        let (app, router) = app(dir.path()).await;
        let ok = (StatusCode::OK, json!({"status": "ok"}));
        assert_eq!(get(&router, "/healthz").await, ok);
        let ready = (StatusCode::OK, json!({"status": "ready"}));
        assert_eq!(get(&router, "/readyz").await, ready);
        app.stop().await;
        assert_eq!(get(&router, "/healthz").await, ok);
        let closed = json!({"status": "unavailable", "reason": "the store is closed"});
        let unready = (StatusCode::SERVICE_UNAVAILABLE, closed);
        assert_eq!(get(&router, "/readyz").await, unready);
    }

    #[tokio::test]
    async fn the_api_refuses_without_a_token_and_unknown_routes_are_json_404s() {
        let dir = tempfile::tempdir().unwrap();
        let (app, router) = app(dir.path()).await;
        let (status, body) = get(&router, "/api/calls/history").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let (status, body) = get(&router, "/no/such/thing").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "route_not_found", "{body}");
        app.stop().await;
    }
}
