//! The accept loop of `serve`'s HTTP API on `http.listen`, in front of the application
//! (`app.rs`: the domain, the router, the tasks).
//!
//! The API is served by our own accept loop rather than `axum::serve`, which bounds nothing:
//! every connection gets HTTP/1 with a header-read timer (slow or silent clients are closed)
//! and a deadline for each whole request, its body included (`conn.rs`); at most
//! `http.max_connections` are open at once, and at most `http.max_connections_per_source` from
//! one address or IPv6 /64 (for a trusted proxy's connections, the client it names:
//! `source.rs`), more being closed as they come; closing with a request body unread lingers
//! ([`Slotted`]); and a stop drains the connections for at most [`DRAIN`] and then ends them,
//! so that no handler of ours runs once [`Http::stop`] has returned.

mod conn;
mod source;

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use switchboard_signaling::Domain;
use switchboard_turn::io::Stats;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use self::conn::{Conn, ConnService, Shared};
use self::source::{Proxies, Sources};
use crate::app::App;
use crate::config::Config;

/// How long a stop waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(5);
/// How long a client has to send a request's head, counted from when the server starts waiting
/// for it: from the accept for the first request, and from the end of the previous response
/// on a keep-alive connection (see [`connection_builder`]).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// At most how long, and how many bytes, a connection closed with a request body unread
/// reads and discards what the client still sends before it closes (see [`Slotted`]).
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_BYTES: usize = 32 << 20;
/// The pause after a failed accept (EMFILE, ENFILE, ENOBUFS...): the error usually persists
/// for a while, and retrying at once would spin a core.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// At most one log line per this interval for each kind of recurring accept trouble.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The running API.
pub struct Http {
    app: App,
    /// Cancelled by [`Http::stop`]: the accept loop stops and every connection shuts down.
    stop: CancellationToken,
    /// The accept loop, which owns the connection tasks and drains them when stopped.
    server: JoinHandle<()>,
    addr: SocketAddr,
}

impl Http {
    /// The bound HTTP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Binds `http.listen` and serves the application over `domain`.
    /// `telemetry`: the metrics recorder's handle and the relay's counters, for `/metrics`.
    pub async fn start(
        config: &Config,
        domain: Domain,
        telemetry: Option<(PrometheusHandle, Arc<Stats>)>,
    ) -> anyhow::Result<Http> {
        let listen = config.http.listen;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("http.listen: cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr()?;
        let mut app = App::start(config, domain);
        let router = app.router(config, telemetry);
        let stop = CancellationToken::new();
        let shared = Shared {
            router,
            sources: Sources::new(config.http.max_connections_per_source),
            proxies: Proxies::new(config.http.trusted_proxies.clone()),
            request_timeout: config.http.request_timeout,
        };
        let server = Server {
            listener,
            shared: Arc::new(shared),
            builder: connection_builder(),
            max_connections: config.http.max_connections,
            slots: Arc::new(Semaphore::new(config.http.max_connections as usize)),
            stop: stop.clone(),
        };
        let server = tokio::spawn(server.run());
        tracing::info!(addr = %addr, "http listening");
        Ok(Http {
            app,
            stop,
            server,
            addr,
        })
    }

    /// Stops accepting, lets requests in flight finish (bounded by [`DRAIN`], after which the
    /// connections left are ended), then stops the application (see [`App::stop`]).
    pub async fn stop(mut self) {
        self.app.stop_polling();
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
        self.app.stop().await;
    }
}

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
    // tests/daemon/http_limits.rs checks the three cases.
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
    shared: Arc<Shared>,
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
        let mut refused_source = Tally::new(LOG_EVERY);
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
            let Some(conn) = Conn::accept(&self.shared, peer) else {
                if let Some(connections) = refused_source.note() {
                    tracing::debug!(
                        connections,
                        peer = %peer.ip(),
                        max = self.shared.sources.cap(),
                        "http.max_connections_per_source reached: closing new connections"
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
                conn: conn.clone(),
                lingering: None,
            });
            let service = ConnService {
                shared: self.shared.clone(),
                conn: conn.clone(),
            };
            let served = self.builder.serve_connection(io, service).with_upgrades();
            conns.spawn(serve_connection(served, self.stop.clone(), conn));
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
    conn: http1::UpgradeableConnection<TokioIo<Slotted>, ConnService>,
    stop: CancellationToken,
    from: Arc<Conn>,
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
        let (peer, client) = (from.peer, from.client());
        tracing::debug!(peer = %peer, client = %client, error = %e, "http connection ended");
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

/// An accepted socket with its slot of `http.max_connections` and its connection state (with
/// its slot of `http.max_connections_per_source`). The slots go with the socket, so they are
/// given back when the socket closes, also when an upgraded connection (a WebSocket) outlives
/// the HTTP connection task it came from.
///
/// Closing a connection whose client may still be sending a request body (answered early, as
/// a 413 is) lingers, as nginx does: after the answer, the write side is shut (FIN), then what
/// the client sends is read and thrown away until it closes, for at most [`LINGER_TIME`] and
/// [`LINGER_BYTES`]. Closed at once instead, with unread bytes in its buffer, the socket would
/// be reset, and a client that writes its whole body before it reads (Python's urllib) would
/// get a broken pipe or a reset instead of the answer.
struct Slotted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    conn: Arc<Conn>,
    /// Until when, and how many bytes more, closing reads and discards.
    lingering: Option<(Pin<Box<tokio::time::Sleep>>, usize)>,
}

impl AsyncRead for Slotted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.conn.note_bytes();
        }
        read
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
        let this = self.get_mut();
        if this.lingering.is_none() {
            std::task::ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
            if !this.conn.must_linger() {
                return Poll::Ready(Ok(()));
            }
            let until = Box::pin(tokio::time::sleep(LINGER_TIME));
            this.lingering = Some((until, LINGER_BYTES));
        }
        let Some((until, left)) = this.lingering.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut scratch = [0u8; 16 * 1024];
        loop {
            if until.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                // The client closed (or reset): nothing is left to spoil the answer.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    *left = left.saturating_sub(buf.filled().len());
                    if *left == 0 {
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
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
