//! `GET /metrics`: Prometheus text, through the `metrics` facade and its Prometheus exporter
//! (rendering only; the daemon's own HTTP server serves it).
//!
//! Each metric is counted once, in one place. Recorded where they happen: HTTP requests by
//! route, method and status, and their duration ([`track`], a middleware); store jobs' latency
//! (`switchboard_store_job_seconds`, in the signaling crate); TURN authentication failures by
//! reason, peer-policy refusals by range and dropped challenges (in the relay thread: rare
//! events, counted by label). Read at each scrape from the relay's and the hub's counters
//! ([`Sources`]; the relay's are [`Stats`] atomics): allocations, relayed packets and bytes
//! each way, hairpinned packets, connections, quota refusals, sockets, calls by state and
//! queued webhooks (one store job). Webhook deliveries, failures and drops are counted by the
//! delivery tasks (src/webhooks.rs).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use switchboard_signaling::hub::Hub;
use switchboard_signaling::service::CallService;
use switchboard_signaling::store::StoreError;
use switchboard_turn::io::Stats;

/// Latency buckets, in seconds: a store commit is a few milliseconds, a request more.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// How often histogram samples are folded into their buckets when nobody scrapes.
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the process's recorder: `None` if one is installed already (a second daemon in
/// one process, which only tests would do). [`upkeep`] must run beside it.
pub fn install() -> Option<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .ok()?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).ok()?;
    describe();
    Some(handle)
}

/// Folds the histograms' pending samples into their buckets every [`UPKEEP_EVERY`]. The
/// recorder keeps every sample until then (a scrape does it too): without this, a box nobody
/// scrapes grows by some 150 bytes per call lifecycle (measured by bench/soak.sh), for ever.
pub async fn upkeep(handle: PrometheusHandle) {
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        handle.run_upkeep();
    }
}

fn describe() {
    describe_gauge!("switchboard_turn_allocations", "TURN allocations open now.");
    describe_gauge!(
        "switchboard_sfu_participants",
        "Participants in the SFU's rooms (group calls) now."
    );
    describe_counter!(
        "switchboard_sfu_received_packets_total",
        "RTP packets the SFU received from publishers."
    );
    describe_counter!(
        "switchboard_sfu_forwarded_packets_total",
        "RTP packets the SFU wrote to subscribers."
    );
    describe_counter!(
        "switchboard_sfu_resent_packets_total",
        "RTP packets the SFU sent a subscriber again, by reason (nack: the subscriber reported them lost; probe: a burst measuring its downlink for a better layer)."
    );
    describe_counter!(
        "switchboard_sfu_dropped_datagrams_total",
        "Datagrams the SFU dropped, by reason (unknown_source: no participant's; refused: a participant's connection refused it; send_buffer: the socket's buffer was full; relay_queue: the relay or the SFU was a queue behind the other, for a relayed participant)."
    );
    describe_counter!(
        "switchboard_sfu_relayed_datagrams_total",
        "Datagrams of participants relayed by the built-in TURN relay, passed between it and the SFU inside the process, by direction (from_relay, to_relay)."
    );
    describe_counter!(
        "switchboard_turn_allocations_total",
        "TURN allocations created."
    );
    describe_counter!(
        "switchboard_turn_relayed_packets_total",
        "Payload packets relayed, by direction (to_peer: client to peer)."
    );
    describe_counter!(
        "switchboard_turn_relayed_bytes_total",
        Unit::Bytes,
        "Payload bytes relayed, by direction."
    );
    describe_counter!(
        "switchboard_turn_dropped_packets_total",
        "Payload packets not relayed, by reason (bandwidth: over turn.allocation_bandwidth, user_bandwidth or total_bandwidth)."
    );
    describe_counter!(
        "switchboard_turn_dropped_bytes_total",
        Unit::Bytes,
        "Payload bytes not relayed, by reason."
    );
    describe_counter!(
        "switchboard_turn_auth_failures_total",
        "TURN requests that failed authentication, by reason (challenges excluded)."
    );
    describe_counter!(
        "switchboard_turn_peer_refusals_total",
        "Permissions, channels and sends refused by the peer policy, by range."
    );
    describe_counter!(
        "switchboard_turn_quota_refusals_total",
        "Allocations refused for a quota."
    );
    describe_counter!(
        "switchboard_turn_challenges_dropped_total",
        "Unauthenticated answers (challenges, Binding answers, 400s) not sent over UDP: their source was over its budget (50/s)."
    );
    describe_counter!(
        "switchboard_turn_hairpin_packets_total",
        "Payload packets passed between two of this relay's allocations inside the process."
    );
    describe_gauge!(
        "switchboard_turn_connections",
        "TURN TCP and TLS connections open now."
    );
    describe_counter!(
        "switchboard_turn_connections_total",
        "TURN TCP and TLS connections accepted."
    );
    describe_counter!(
        "switchboard_turn_connections_refused_total",
        "TURN TCP and TLS connections closed at accept, by reason (max_connections, max_connections_per_source, handshakes)."
    );
    describe_gauge!(
        "switchboard_hub_sockets",
        "Signaling sockets attached, both transports."
    );
    describe_gauge!("switchboard_calls", "Live calls, by state.");
    describe_counter!(
        "switchboard_http_requests_total",
        "HTTP requests answered, by route, method and status."
    );
    describe_histogram!(
        "switchboard_http_request_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request (to the response head), by route."
    );
    describe_counter!(
        "switchboard_webhooks_delivered_total",
        "Webhooks delivered (a 2xx answer)."
    );
    describe_counter!(
        "switchboard_webhooks_failed_total",
        "Webhook delivery attempts that failed (no answer, or not a 2xx); each is retried."
    );
    describe_counter!(
        "switchboard_webhooks_dropped_total",
        "Webhooks given up: not delivered within webhooks.max_age."
    );
    describe_gauge!(
        "switchboard_webhooks_queued",
        "Webhook deliveries waiting in the store (one per event and URL)."
    );
    describe_histogram!(
        "switchboard_store_job_seconds",
        Unit::Seconds,
        "Time a request waits for the call store: queue, transaction and commit."
    );
}

/// What a scrape reads.
#[derive(Clone)]
pub struct Sources {
    pub handle: PrometheusHandle,
    pub relay: Arc<Stats>,
    pub hub: Arc<Hub>,
    pub calls: CallService,
}

/// `GET /metrics`.
pub async fn scrape(State(s): State<Sources>) -> Response {
    let r = &s.relay;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    gauge!("switchboard_turn_allocations").set(load(&r.allocations) as f64);
    counter!("switchboard_turn_allocations_total").absolute(load(&r.allocations_total));
    for (direction, packets, bytes) in [
        (
            "to_peer",
            &r.relayed_packets_to_peer,
            &r.relayed_bytes_to_peer,
        ),
        (
            "from_peer",
            &r.relayed_packets_from_peer,
            &r.relayed_bytes_from_peer,
        ),
    ] {
        counter!("switchboard_turn_relayed_packets_total", "direction" => direction)
            .absolute(load(packets));
        counter!("switchboard_turn_relayed_bytes_total", "direction" => direction)
            .absolute(load(bytes));
    }
    counter!("switchboard_turn_dropped_packets_total", "reason" => "bandwidth")
        .absolute(load(&r.dropped_packets));
    counter!("switchboard_turn_dropped_bytes_total", "reason" => "bandwidth")
        .absolute(load(&r.dropped_bytes));
    counter!("switchboard_turn_quota_refusals_total").absolute(load(&r.quota_refusals));
    counter!("switchboard_turn_hairpin_packets_total").absolute(load(&r.hairpin_packets));
    gauge!("switchboard_turn_connections").set(load(&r.connections) as f64);
    counter!("switchboard_turn_connections_total").absolute(load(&r.connections_total));
    if let Some(sfu) = s.calls.sfu_stats() {
        gauge!("switchboard_sfu_participants").set(load(&sfu.participants) as f64);
        counter!("switchboard_sfu_received_packets_total").absolute(load(&sfu.received));
        counter!("switchboard_sfu_forwarded_packets_total").absolute(load(&sfu.forwarded));
        for (reason, n) in [("nack", &sfu.resent), ("probe", &sfu.probes)] {
            counter!("switchboard_sfu_resent_packets_total", "reason" => reason).absolute(load(n));
        }
        for (direction, n) in [
            ("from_relay", &sfu.relayed_in),
            ("to_relay", &sfu.relayed_out),
        ] {
            counter!("switchboard_sfu_relayed_datagrams_total", "direction" => direction)
                .absolute(load(n));
        }
        for (reason, n) in [
            ("unknown_source", &sfu.unknown),
            ("refused", &sfu.refused),
            ("send_buffer", &sfu.send_dropped),
            ("relay_queue", &sfu.relay_dropped),
        ] {
            counter!("switchboard_sfu_dropped_datagrams_total", "reason" => reason)
                .absolute(load(n));
        }
    }
    gauge!("switchboard_hub_sockets").set(s.hub.socket_count() as f64);
    let counts = s
        .calls
        .store()
        .run(|db| Ok::<_, StoreError>((db.live_call_counts()?, db.webhook_depth()?)))
        .await;
    match counts {
        Ok((counts, queued)) => {
            for (state, n) in counts {
                gauge!("switchboard_calls", "state" => state).set(n as f64);
            }
            gauge!("switchboard_webhooks_queued").set(queued as f64);
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count the calls"),
    }
    let body = s.handle.render();
    let content_type = [(
        header::CONTENT_TYPE,
        "text/plain; version=0.0.4; charset=utf-8",
    )];
    (StatusCode::OK, content_type, body).into_response()
}

/// Counts and times every request by its route (the matched path: `/api/calls/{callId}`, not
/// the id), method and status; `unmatched` for a path no route has.
///
/// Every label comes from a set the daemon fixes, never from the client's bytes: a series
/// costs memory until the process exits, so a label a client could vary would let anyone grow
/// the daemon at will (1,000 made-up methods of 100 kB each were 100 MB). Routes are the
/// router's templates, methods one of [`METHODS`] or `other`, statuses numbers.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("switchboard_http_request_seconds", "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    counter!("switchboard_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}

/// The methods counted by name; any other is `other`.
const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// `method` as a label: its name if it is one of [`METHODS`], else `other`.
fn method_label(method: &Method) -> &'static str {
    METHODS
        .iter()
        .find(|m| *m == method)
        .map_or("other", |m| m.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_fixed_set_are_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::OPTIONS), "OPTIONS");
        for made_up in ["TRACE", "CONNECT", "get", "XYZZY"] {
            let m = Method::from_bytes(made_up.as_bytes()).unwrap();
            assert_eq!(method_label(&m), "other", "{made_up}");
        }
    }
}
