//! Issue 20, item 9: one user cannot take the API (and the single store thread behind it) from
//! the others. Their requests beyond `http.user_rate`/`user_burst` are answered 429 with
//! `Retry-After` before they reach the store, so another user's request and `/readyz` (the
//! store's ping, as the watchdog's) still answer promptly during the flood; and a user already
//! joined in `calls.max_live_per_user` live calls cannot start another.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{error_code, http_agent, Api, Daemon, Options, Person};

/// A GET as `bearer`: (status, `Retry-After`, JSON body).
fn get(agent: &ureq::Agent, url: &str, bearer: &str) -> (u16, Option<String>, serde_json::Value) {
    let req = ureq::http::Request::builder()
        .uri(url)
        .header("authorization", format!("Bearer {bearer}"))
        .body(Vec::new())
        .unwrap();
    let mut resp = agent.run(req).expect("an answer");
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.body_mut().read_to_string().unwrap();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (resp.status().as_u16(), retry, json)
}

#[test]
fn a_flooding_user_gets_429s_while_others_and_readyz_answer_promptly() {
    let d = Daemon::start_with(Options {
        http: "user_rate = 5\nuser_burst = 10\n".into(),
        ..Options::default()
    });
    let (mallory, alice) = (Person::new("Mallory"), Person::new("Alice"));
    let base = format!("http://{}", d.http);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, limited) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let flood: Vec<_> = (0..6)
        .map(|_| {
            let (stop, ok, limited) = (stop.clone(), ok.clone(), limited.clone());
            let (url, token) = (format!("{base}/api/calls"), mallory.token.clone());
            std::thread::spawn(move || {
                let agent = http_agent(Duration::from_secs(10));
                let mut first = None;
                while !stop.load(Ordering::Relaxed) {
                    let (status, retry, body) = get(&agent, &url, &token);
                    match status {
                        200 => ok.fetch_add(1, Ordering::Relaxed),
                        429 => {
                            first.get_or_insert((retry, body));
                            limited.fetch_add(1, Ordering::Relaxed)
                        }
                        s => panic!("the flood got {s}"),
                    };
                }
                first
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let agent = http_agent(Duration::from_secs(10));
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        let (status, _, body) = get(&agent, &format!("{base}/api/calls"), &alice.token);
        assert_eq!(status, 200, "{body}");
        let resp = agent
            .get(&format!("{base}/readyz"))
            .call()
            .expect("/readyz");
        assert_eq!(resp.status().as_u16(), 200);
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let firsts: Vec<_> = flood
        .into_iter()
        .filter_map(|t| t.join().unwrap())
        .collect();
    let (ok, limited) = (ok.load(Ordering::Relaxed), limited.load(Ordering::Relaxed));
    // About a second of flooding: the burst and the rate's few, the rest refused.
    assert!(ok <= 10 + 5 * 3, "{ok} of Mallory's requests were served");
    assert!(
        limited > 100,
        "only {limited} of Mallory's requests were refused"
    );
    let (retry, body) = &firsts[0];
    assert_eq!(error_code(body), "rate_limited", "{body}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert!(
        slowest < Duration::from_millis(500),
        "Alice and /readyz took {slowest:?} during the flood"
    );
}

#[test]
fn a_user_in_max_live_per_user_calls_cannot_start_another() {
    let d = Daemon::start_with(Options {
        calls: "max_live_per_user = 2\n".into(),
        ..Options::default()
    });
    let api = Api::new(d.http);
    let (ada, bob) = (Person::new("Ada"), Person::new("Bob"));
    let conversation = uuid::Uuid::new_v4();
    let mut calls = Vec::new();
    for _ in 0..2 {
        let (s, body) = api.initiate(&ada, conversation, "audio", &[&bob]);
        assert_eq!(s, 201, "{body}");
        calls.push(body["callId"].as_str().unwrap().to_owned());
    }
    let (s, body) = api.initiate(&ada, conversation, "audio", &[&bob]);
    assert_eq!((s, error_code(&body)), (409, "too_many_calls"), "{body}");
    // Bob, only invited to both, is in none: he may call.
    let (s, body) = api.initiate(&bob, conversation, "audio", &[&ada]);
    assert_eq!(s, 201, "{body}");
    let bobs = body["callId"].as_str().unwrap().to_owned();
    // One of Ada's ends: she may start one again.
    api.act_ok(&ada, &calls[0], "end");
    let (s, body) = api.initiate(&ada, conversation, "audio", &[&bob]);
    assert_eq!(s, 201, "{body}");
    let third = body["callId"].as_str().unwrap().to_owned();

    // Answering joins a call too: Bob, in his own and in Ada's second, cannot answer her third,
    // which still waits for him; once his own ends, he can.
    api.act_ok(&bob, &calls[1], "answer");
    let (s, body) = api.act(&bob, &third, "answer");
    assert_eq!((s, error_code(&body)), (409, "too_many_calls"), "{body}");
    let (_, call) = api.get_call(&bob, &third);
    let status = call["call"]["participants"][1]["status"].as_str();
    assert!(matches!(status, Some("invited" | "ringing")), "{call}");
    api.act_ok(&bob, &bobs, "end");
    api.act_ok(&bob, &third, "answer");
}
