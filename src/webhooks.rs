//! Webhook delivery: posts the events the call store queued (see
//! `switchboard_signaling::webhook`) to each `webhooks.url`, signed, and retries them.
//!
//! One task per URL, each delivering that URL's queue in creation order, one request at a time:
//! it reads a batch of the oldest rows, posts each (one connection per request, bounded by
//! `webhooks.timeout`), deletes it on a 2xx and otherwise records the failure and waits until
//! the row's retry time ([`backoff`]: about 1 s doubling to about 5 min). A row older than
//! `webhooks.max_age` is dropped with a warning. The tasks sleep until the store commits a new
//! row (it wakes them) or the next retry is due, and stop when [`Delivery::stop`] is called.
//! Rows live in the store, so a restart (or a SIGKILL) loses none: delivery is at-least-once,
//! and receivers de-duplicate by the event id.
//!
//! Each request carries `X-Switchboard-Event-Id`, `X-Switchboard-Timestamp` (unix seconds of
//! the attempt) and `X-Switchboard-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`
//! ([`sign`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use metrics::counter;
use switchboard_signaling::store::Pending;
use switchboard_signaling::store::{Store, StoreError};
use switchboard_signaling::time::Timestamp;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::WebhooksConfig;

/// Rows read from the store at a time, per URL.
const BATCH: u32 = 32;
/// The first retry's delay; each later one doubles it, up to [`BACKOFF_CAP`].
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// The pause after the store failed a query, before asking again.
const STORE_PAUSE: Duration = Duration::from_secs(5);
/// How long [`Delivery::stop`] waits for the tasks to notice, once flushing is over.
const STOP_WITHIN: Duration = Duration::from_secs(1);

/// `X-Switchboard-Signature`'s value for `body` sent at `timestamp` (unix seconds):
/// `v1=` and the lowercase hex HMAC-SHA256, keyed with `secret`, of `"<timestamp>.<body>"`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let mut out = String::with_capacity(3 + 64);
    out.push_str("v1=");
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The delay before the next attempt after `failures` failed ones (1 or more): 1 s, 2 s, 4 s,
/// ... capped at 5 min, then scaled by `0.75 + jitter / 2` (`jitter` in `[0, 1)`: ±25 %), so
/// that deliveries failing together do not retry together.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    let base = BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACKOFF_CAP);
    base.mul_f64(0.75 + jitter.clamp(0.0, 1.0) / 2.0)
}

/// The running delivery tasks.
pub struct Delivery {
    stop: CancellationToken,
    flush: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Delivery {
    /// Starts one task per URL of `config`. `wake` changes when the store commits new rows.
    pub fn start(config: &WebhooksConfig, store: Store, wake: watch::Receiver<u64>) -> Delivery {
        let secret: Arc<[u8]> = config
            .secret
            .as_ref()
            .map_or_else(|| Arc::from(&b""[..]), |s| Arc::from(s.expose().as_bytes()));
        let tls = config
            .urls
            .iter()
            .any(|u| u.starts_with("https://"))
            .then(client_tls);
        let stop = CancellationToken::new();
        let flush = CancellationToken::new();
        let mut tasks = Vec::new();
        for url in &config.urls {
            let Some(target) = Target::parse(url) else {
                // Checked by the config already.
                tracing::error!("a webhooks.url is not usable; nothing is sent to it");
                continue;
            };
            let worker = Worker {
                target,
                store: store.clone(),
                secret: secret.clone(),
                tls: tls.clone(),
                timeout: config.timeout,
                max_age: config.max_age,
                stop: stop.clone(),
                flush: flush.clone(),
            };
            tasks.push(tokio::spawn(worker.run(wake.clone())));
        }
        tracing::info!(urls = tasks.len(), "webhook delivery started");
        Delivery { stop, flush, tasks }
    }

    /// Stops the tasks, after letting them send for at most `flush_within` what is queued and
    /// due (the shutdown's own `call.ended` events, say). A request in flight past that is
    /// abandoned, and what is left (rows waiting for a retry included) stays queued and is
    /// sent after the next start.
    pub async fn stop(self, flush_within: Duration) {
        self.flush.cancel();
        let mut tasks = self.tasks;
        let flushed = tokio::time::timeout(flush_within, async {
            for t in &mut tasks {
                let _ = t.await;
            }
        })
        .await;
        if flushed.is_ok() {
            return;
        }
        self.stop.cancel();
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        let ended = tokio::time::timeout(STOP_WITHIN, async {
            for t in &mut tasks {
                let _ = t.await;
            }
        })
        .await;
        if ended.is_err() {
            for a in aborts {
                a.abort();
            }
        }
    }
}

/// The TLS client settings of https:// receivers: the system's CA certificates (the
/// `SSL_CERT_FILE` or `SSL_CERT_DIR` ones if set), on ring.
fn client_tls() -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "webhooks: a CA certificate could not be loaded");
    }
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(
            "webhooks: no CA certificates found (install ca-certificates, or set SSL_CERT_FILE): https:// receivers will fail"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A receiver's URL, taken apart for the connection.
#[derive(Clone, Debug, PartialEq)]
struct Target {
    url: String,
    https: bool,
    /// For the connection and the TLS name (an IPv6 address without its brackets).
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    path: String,
    /// For the log: without the query, which may hold a key.
    shown: String,
}

/// `url` as logs and `check-config` show it: without its query, which may hold a key.
pub fn shown(url: &str) -> String {
    Target::parse(url).map_or_else(|| "(not a URL)".to_owned(), |t| t.shown)
}

impl Target {
    fn parse(url: &str) -> Option<Target> {
        let uri: Uri = url.parse().ok()?;
        let https = match uri.scheme_str()? {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let authority = uri.authority()?;
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let scheme = if https { "https" } else { "http" };
        Some(Target {
            shown: format!("{scheme}://{authority}{}", uri.path()),
            url: url.to_owned(),
            https,
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            authority: authority.as_str().to_owned(),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }
}

/// One URL's delivery task.
struct Worker {
    target: Target,
    store: Store,
    secret: Arc<[u8]>,
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
    max_age: Duration,
    stop: CancellationToken,
    /// Cancelled when the daemon stops: send what is due, then end instead of waiting for
    /// more rows or for a retry's time.
    flush: CancellationToken,
}

impl Worker {
    async fn run(self, mut wake: watch::Receiver<u64>) {
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            // Marked seen before the read: a commit after it wakes the wait below.
            wake.borrow_and_update();
            let url = self.target.url.clone();
            let batch = match self
                .store
                .run(move |db| db.webhook_batch(&url, BATCH))
                .await
            {
                Ok(batch) => batch,
                Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::error!(error = %e, "webhooks: cannot read the queue");
                    if self.flush.is_cancelled() {
                        return;
                    }
                    self.pause(STORE_PAUSE).await;
                    continue;
                }
            };
            if batch.is_empty() {
                if self.flush.is_cancelled() {
                    return;
                }
                tokio::select! {
                    changed = wake.changed() => if changed.is_err() { return },
                    () = self.stop.cancelled() => return,
                    // Read the queue once more: what the stop itself committed goes out.
                    () = self.flush.cancelled() => {}
                }
                continue;
            }
            for row in batch {
                if !self.deliver(row).await || self.stop.is_cancelled() {
                    if self.flush.is_cancelled() {
                        // Failed, or not due yet: it waits for the next start.
                        return;
                    }
                    break;
                }
            }
        }
    }

    /// Sleeps for `d`, or until stopped or flushing.
    async fn pause(&self, d: Duration) {
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            () = self.stop.cancelled() => {}
            () = self.flush.cancelled() => {}
        }
    }

    /// Delivers `row` when it is due: true if it is done with (delivered or dropped), false
    /// if it stays at the head of the queue (failed, or stopped).
    async fn deliver(&self, row: Pending) -> bool {
        let now = Timestamp::now();
        if row.next_at > now {
            let wait = row.next_at.unix_millis() - now.unix_millis();
            self.pause(Duration::from_millis(wait)).await;
            if self.stop.is_cancelled() || self.flush.is_cancelled() {
                return false;
            }
        }
        let now = Timestamp::now();
        if now >= row.created_at + self.max_age {
            tracing::warn!(
                event = %row.event_id, kind = %row.kind, attempts = row.attempts, url = %self.target.shown,
                "webhook dropped: not delivered within webhooks.max_age"
            );
            counter!("switchboard_webhooks_dropped_total").increment(1);
            return self.done(row.seq).await;
        }
        let attempt = tokio::select! {
            r = tokio::time::timeout(self.timeout, self.post(&row)) => r,
            () = self.stop.cancelled() => return false,
        };
        let error = match attempt {
            Ok(Ok(status)) if status.is_success() => {
                counter!("switchboard_webhooks_delivered_total").increment(1);
                tracing::debug!(event = %row.event_id, kind = %row.kind, url = %self.target.shown, "webhook delivered");
                return self.done(row.seq).await;
            }
            Ok(Ok(status)) => format!("answered {status}"),
            Ok(Err(e)) => e,
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        counter!("switchboard_webhooks_failed_total").increment(1);
        let failures = row.attempts.saturating_add(1);
        let next = Timestamp::now() + backoff(failures, rand::random::<f64>());
        tracing::warn!(
            event = %row.event_id, kind = %row.kind, attempts = failures, url = %self.target.shown,
            retry_at = %next, error = %error, "webhook not delivered; retrying"
        );
        let seq = row.seq;
        if let Err(e) = self
            .store
            .run(move |db| db.webhook_retry(seq, failures, next, &error))
            .await
        {
            tracing::error!(error = %e, "webhooks: cannot record a failed delivery");
            self.pause(STORE_PAUSE).await;
        }
        false
    }

    /// The row is done with: deleted. False if the store failed (the row is then sent again).
    async fn done(&self, seq: i64) -> bool {
        match self.store.run(move |db| db.webhook_done(seq)).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "webhooks: cannot remove a delivered row");
                self.pause(STORE_PAUSE).await;
                false
            }
        }
    }

    /// One attempt: the response's status, or why there is none.
    async fn post(&self, row: &Pending) -> Result<StatusCode, String> {
        let t = &self.target;
        let timestamp = Timestamp::now().unix_seconds();
        let signature = sign(&self.secret, timestamp, row.body.as_bytes());
        let header = |v: &str| HeaderValue::from_str(v).map_err(|e| format!("header: {e}"));
        let req = Request::post(t.path.as_str())
            .header(HOST, header(&t.authority)?)
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("switchboard/", env!("CARGO_PKG_VERSION")),
            )
            .header("X-Switchboard-Event-Id", row.event_id.to_string())
            .header("X-Switchboard-Timestamp", timestamp.to_string())
            .header("X-Switchboard-Signature", signature)
            .body(Full::new(Bytes::from(row.body.clone())))
            .map_err(|e| format!("request: {e}"))?;
        let tcp = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(tls) if t.https => {
                let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                    .map_err(|e| format!("tls: {e}"))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("tls: {e}"))?;
                exchange(TokioIo::new(stream), req).await
            }
            None if t.https => Err("tls: no client settings".into()),
            _ => exchange(TokioIo::new(tcp), req).await,
        }
    }
}

/// Sends `req` on a new HTTP/1 connection over `io` and returns the response's status (the
/// body is not read; the connection is closed).
async fn exchange<I>(io: I, req: Request<Full<Bytes>>) -> Result<StatusCode, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("http: {e}"))?;
    let send = sender.send_request(req);
    tokio::pin!(conn, send);
    // The connection is driven here until the response head is in; it may also end first
    // (a receiver that answers and closes), with the response already handed over.
    tokio::select! {
        biased;
        r = &mut send => return r.map(|resp| resp.status()).map_err(|e| format!("http: {e}")),
        c = &mut conn => c.map_err(|e| format!("http: {e}"))?,
    }
    send.await
        .map(|resp| resp.status())
        .map_err(|e| format!("http: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Values computed independently (Python's hmac module), so that a receiver's
        // implementation can be checked against them too.
        assert_eq!(
            sign(b"Jefe", 0, b"what do ya want for nothing?"),
            "v1=37f471929915ccd2cbbe79feb84ffcff4f2bb25e15fc41c2506687331ae179cc"
        );
        let sig = sign(b"whsec-test", 1736519400, br#"{"type":"call.ended"}"#);
        assert_eq!(
            sig,
            "v1=7d3f7e6cdae407f5dd50ea65ba81b35637bd75002cae8da980115b8e9e03be3a"
        );
        // Any change to the time, the body or the key changes it.
        assert_ne!(
            sign(b"whsec-test", 1736519401, br#"{"type":"call.ended"}"#),
            sig
        );
        assert_ne!(
            sign(b"whsec-test", 1736519400, br#"{"type":"call.ended" }"#),
            sig
        );
        assert_ne!(
            sign(b"whsec-tesT", 1736519400, br#"{"type":"call.ended"}"#),
            sig
        );
    }

    #[test]
    fn backoff_doubles_from_a_second_to_five_minutes_with_jitter() {
        let mid: Vec<u64> = (1..=12).map(|n| backoff(n, 0.5).as_secs()).collect();
        assert_eq!(mid, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff(1, 0.0), Duration::from_millis(750));
        assert_eq!(backoff(1, 0.999_999).as_millis(), 1249);
        assert_eq!(backoff(10, 0.0), Duration::from_secs(225));
        assert_eq!(backoff(u32::MAX, 1.0), Duration::from_secs(375));
        // Out-of-range jitter is clamped; 0 failures is treated as 1.
        assert_eq!(backoff(0, 7.0), Duration::from_millis(1250));
    }

    #[test]
    fn targets_are_taken_apart() {
        /// A target's parts, to compare at once.
        fn parts(t: &Target) -> (bool, &str, u16, &str, &str) {
            (t.https, &t.host, t.port, &t.authority, &t.path)
        }
        let t = Target::parse("https://chat.example.com/hooks/sb?x=1").unwrap();
        let host = "chat.example.com";
        assert_eq!(parts(&t), (true, host, 443, host, "/hooks/sb?x=1"));
        assert_eq!(t.shown, "https://chat.example.com/hooks/sb");
        let t = Target::parse("http://[::1]:8081").unwrap();
        assert_eq!(parts(&t), (false, "::1", 8081, "[::1]:8081", "/"));
        assert_eq!(Target::parse("ftp://a/"), None);
    }
}
