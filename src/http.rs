//! The HTTP side of `serve`: the call store and its service, the background tasks (ring
//! timeout, TURN credential cleanup), and the REST API on `http.listen`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchboard_signaling::api::{self, ApiState};
use switchboard_signaling::auth::Auth;
use switchboard_signaling::call::reason;
use switchboard_signaling::event::{EventSink, LogSink};
use switchboard_signaling::service::{CallService, Settings};
use switchboard_signaling::store::Store;
use switchboard_signaling::turn::TurnIssuer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;

use crate::config::Config;

/// How long a stop waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(5);

/// The running API.
pub struct Http {
    calls: CallService,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Opens the store (migrating it) and ends the calls a crash left live, before the API
/// listens, so nothing can see a half-reconciled store. `turn_urls` are the relay's, as bound.
pub async fn open_calls(config: &Config, turn_urls: Vec<String>) -> anyhow::Result<CallService> {
    let path = &config.store.path;
    create_parent(path)?;
    let sink: Arc<dyn EventSink> = Arc::new(LogSink);
    let store = Store::open(path, sink)
        .map_err(|e| anyhow::anyhow!("store.path: {}: {e}", path.display()))?;
    let turn = &config.turn;
    let issuer = TurnIssuer::new(
        turn.secret.expose().as_bytes(),
        turn.credential_ttl,
        turn_urls,
    );
    let settings = Settings {
        ring_timeout: config.calls.ring_timeout,
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

impl Http {
    /// Binds `http.listen` and serves the API; starts the background tasks.
    pub async fn start(config: &Config, calls: CallService) -> anyhow::Result<Http> {
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
        });
        let app = api::router(state)
            .fallback(api::not_found)
            .layer(CatchPanicLayer::custom(|_| api::panic_response()));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(addr = %addr, "http listening");
        let cleanup_every = (config.turn.credential_ttl / 2)
            .clamp(Duration::from_secs(1), Duration::from_secs(600));
        let tasks = vec![
            tokio::spawn(calls.clone().run_ring_timer()),
            tokio::spawn(calls.clone().run_credential_cleanup(cleanup_every)),
        ];
        Ok(Http {
            calls,
            stop: Some(stop),
            server,
            tasks,
        })
    }

    /// Stops accepting, lets requests in flight finish (bounded), stops the tasks, ends the
    /// calls still live (`server-shutdown`) and closes the store.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(DRAIN, &mut self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "http server failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "http server task failed"),
            Err(_) => {
                tracing::warn!("requests still running after {DRAIN:?}; dropping them");
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
        self.calls.store().close().await;
        tracing::info!("call store closed");
    }
}
