//! The setup: one live call per pair, over the REST API.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::Args;
use crate::stats::Errors;

/// One setup request, at most.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) struct Setup {
    pub(super) calls: Vec<Option<Uuid>>,
    pub(super) secs: f64,
    pub errors: Errors,
}

pub(super) fn setup(args: &Args, users: &[Uuid], tokens: &[String]) -> Setup {
    let pairs = users.len() / 2;
    let threads = args.setup_threads.min(pairs).max(1);
    let start = Instant::now();
    let results: Vec<Vec<(usize, Result<Uuid, String>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(HTTP_TIMEOUT))
                        .build()
                        .into();
                    (t..pairs)
                        .step_by(threads)
                        .map(|p| (p, make_call(&agent, args.addr, users, tokens, p)))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![(usize::MAX, Err("a setup thread panicked".into()))])
            })
            .collect()
    });
    let mut out = Setup {
        calls: vec![None; pairs],
        secs: start.elapsed().as_secs_f64(),
        errors: Errors::default(),
    };
    for (p, r) in results.into_iter().flatten() {
        match r {
            Ok(call) if p < pairs => out.calls[p] = Some(call),
            Ok(_) => {}
            Err(e) => out.errors.add(format!("setup of pair {p}: {e}")),
        }
    }
    out
}

/// B makes itself known, A calls B, B answers: the call's id.
pub(super) fn make_call(
    agent: &ureq::Agent,
    addr: SocketAddr,
    users: &[Uuid],
    tokens: &[String],
    pair: usize,
) -> Result<Uuid, String> {
    let (a, b) = (2 * pair, 2 * pair + 1);
    // One request as user `user`: the response's body if its status is `want`. With a body,
    // a POST of JSON; without, a GET or an empty POST.
    let request = |method: &str, path: &str, user: usize, body: Option<String>, want: u16| {
        let what = format!("{method} {path}");
        let url = format!("http://{addr}{path}");
        let bearer = format!("Bearer {}", tokens[user]);
        let response = match (method, body) {
            ("GET", _) => agent.get(url).header("authorization", bearer).call(),
            (_, Some(body)) => agent
                .post(url)
                .header("authorization", bearer)
                .header("content-type", "application/json")
                .send(body),
            (_, None) => agent.post(url).header("authorization", bearer).send_empty(),
        };
        let mut response = response.map_err(|e| format!("{what}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("{what}: reading the body: {e}"))?;
        if status != want {
            return Err(format!("{what}: status {status}, expected {want}: {body}"));
        }
        Ok(body)
    };
    request("GET", "/api/calls", b, None, 200)?;
    let body = serde_json::json!({
        "conversationId": Uuid::from_bytes(rand::random()).to_string(),
        "type": "audio",
        "participantIds": [users[b]],
    });
    let created = request(
        "POST",
        "/api/calls/initiate",
        a,
        Some(body.to_string()),
        201,
    )?;
    let created: serde_json::Value =
        serde_json::from_str(&created).map_err(|e| format!("initiate: {e}"))?;
    let call = created
        .get("callId")
        .and_then(|v| v.as_str())
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or("initiate: no callId in the response")?;
    request("POST", &format!("/api/calls/{call}/answer"), b, None, 200)?;
    Ok(call)
}
