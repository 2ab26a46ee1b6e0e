//! What the accept loop puts between a connection and the router: the connection's state
//! (its source and slot, see `source.rs`), the client address each request is from (the
//! [`ClientAddr`] extension, for rate limits and logs), and the deadline on request bodies.
//!
//! A request's head must arrive within the header-read timeout (hyper's, see
//! `connection_builder`), and the whole request, body included, within `http.request_timeout`
//! of its first byte: a body that has not arrived by then fails the read, the answer is 408
//! and the connection closes. Only what the client still owes is timed: a long poll the server
//! holds open (Engine.IO) or an upgraded WebSocket owes nothing once its head is in.
//!
//! The first byte is when a read first brought bytes after the previous request's body was
//! done (`Slotted` in http.rs notes it): hyper gives the service a request once its head is
//! whole, so the time the head took is counted here from that note. When a read brought the
//! end of one body and the start of the next head together, the next request is timed from
//! its head instead, which only gives it longer.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::Router;
use bytes::Bytes;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use switchboard_signaling::api::ApiError;
use tokio::time::{Instant, Sleep};
use tower_service::Service as _;

use super::source::{Proxies, Source, SourceSlot, Sources};

pub use switchboard_signaling::source::ClientAddr;

/// What every connection shares.
pub struct Shared {
    pub router: Router,
    pub sources: Arc<Sources>,
    pub proxies: Proxies,
    pub request_timeout: Duration,
}

/// One accepted connection.
pub struct Conn {
    pub peer: SocketAddr,
    /// The peer is a trusted proxy: each request names its client.
    proxied: bool,
    /// The client of the latest request, and its slot of `max_connections_per_source` (none
    /// for a trusted proxy until a request names a client that is not one).
    client: Mutex<(IpAddr, Option<SourceSlot>)>,
    /// The body of the request being served missed its deadline.
    expired: AtomicBool,
    /// When the connection was accepted: the base of `first_byte`.
    accepted: Instant,
    /// When a read first brought bytes since the last request's body was done, in
    /// microseconds after `accepted`, plus one; 0 for none.
    first_byte: AtomicU64,
    /// The request being served was answered before its body was read whole: the client may
    /// still be sending it, so closing must linger (see `Slotted` in http.rs).
    linger: AtomicBool,
}

impl Conn {
    /// A connection from `peer`: `None` when its source has all its connections open.
    pub fn accept(shared: &Shared, peer: SocketAddr) -> Option<Arc<Conn>> {
        let proxied = shared.proxies.trusts(peer.ip());
        let slot = if proxied {
            None
        } else {
            Some(shared.sources.open(Source::of(peer.ip()))?)
        };
        Some(Arc::new(Conn {
            peer,
            proxied,
            client: Mutex::new((peer.ip(), slot)),
            expired: AtomicBool::new(false),
            accepted: Instant::now(),
            first_byte: AtomicU64::new(0),
            linger: AtomicBool::new(false),
        }))
    }

    /// Notes that a read brought bytes: the first since the last request's body was done is
    /// the start of the next request.
    pub fn note_bytes(&self) {
        if self.first_byte.load(Ordering::Relaxed) == 0 {
            let micros = self.accepted.elapsed().as_micros() as u64;
            self.first_byte.store(micros + 1, Ordering::Relaxed);
        }
    }

    /// When the request whose head has just arrived began arriving (now if unknown), and from
    /// here on no request has begun.
    fn take_first_byte(&self) -> Instant {
        match self.first_byte.swap(0, Ordering::Relaxed) {
            0 => Instant::now(),
            micros => self.accepted + Duration::from_micros(micros - 1),
        }
    }

    /// Whether closing must linger: the latest request's body was left unread.
    pub fn must_linger(&self) -> bool {
        self.linger.load(Ordering::Relaxed)
    }

    /// The client of the latest request.
    pub fn client(&self) -> IpAddr {
        self.client.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    /// Moves a proxied connection to `client`'s count: `false` if that source has all its
    /// connections open. A client that is a trusted proxy itself is not counted.
    fn admit(&self, shared: &Shared, client: IpAddr) -> bool {
        let mut current = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        let source = Source::of(client);
        let same = match &current.1 {
            Some(slot) => slot.source() == source,
            None => current.0 == client,
        };
        if !same {
            let slot = if shared.proxies.trusts(client) {
                None
            } else {
                match shared.sources.open(source) {
                    Some(slot) => Some(slot),
                    None => return false,
                }
            };
            current.1 = slot;
        }
        current.0 = client;
        true
    }
}

/// The service of one connection: each request gets its [`ClientAddr`] and its body's
/// deadline, then goes to the router.
#[derive(Clone)]
pub struct ConnService {
    pub shared: Arc<Shared>,
    pub conn: Arc<Conn>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let conn = &self.conn;
        conn.expired.store(false, Ordering::Relaxed);
        conn.linger.store(false, Ordering::Relaxed);
        let client = if conn.proxied {
            let client = self.shared.proxies.client(conn.peer.ip(), req.headers());
            if !conn.admit(&self.shared, client) {
                tracing::debug!(
                    client = %client,
                    max = self.shared.sources.cap(),
                    "http.max_connections_per_source reached: refusing a proxied request"
                );
                let refused = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_connections",
                    "too many connections from this address",
                );
                let unread = !req.body().is_end_stream();
                conn.linger.store(unread, Ordering::Relaxed);
                return Box::pin(std::future::ready(Ok(closing(refused.into_response()))));
            }
            client
        } else {
            conn.peer.ip()
        };
        req.extensions_mut().insert(ClientAddr(client));
        let deadline = conn.take_first_byte() + self.shared.request_timeout;
        let conn = conn.clone();
        let req = req.map(|body| {
            Body::new(Deadlined {
                body,
                deadline,
                timer: None,
                finished: false,
                conn: conn.clone(),
            })
        });
        let answer = self.shared.router.clone().call(req);
        Box::pin(async move {
            let response = answer.await?;
            if conn.expired.load(Ordering::Relaxed) {
                let late = ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request body did not arrive in time",
                );
                return Ok(closing(late.into_response()));
            }
            Ok(response)
        })
    }
}

/// `response`, with the connection closed after it.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that fails once its deadline has passed without the next bytes. What has
/// arrived by then is still read. Dropped unfinished (the answer did not need it all, or it
/// was refused, as a 413 is), it has the connection linger when it closes.
struct Deadlined {
    body: Incoming,
    deadline: Instant,
    /// Armed the first time the body has to wait.
    timer: Option<Pin<Box<Sleep>>>,
    /// The body's end was read.
    finished: bool,
    conn: Arc<Conn>,
}

impl Drop for Deadlined {
    fn drop(&mut self) {
        // The bytes read for this body did not start a request.
        self.conn.first_byte.store(0, Ordering::Relaxed);
        let unread = !(self.finished || self.body.is_end_stream());
        if unread && !self.conn.expired.load(Ordering::Relaxed) {
            self.conn.linger.store(true, Ordering::Relaxed);
        }
    }
}

/// The error a late body fails with.
#[derive(Debug)]
struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for BodyTimeout {}

impl hyper::body::Body for Deadlined {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(None) => {
                this.finished = true;
                this.conn.first_byte.store(0, Ordering::Relaxed);
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.conn.expired.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(BodyTimeout.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
